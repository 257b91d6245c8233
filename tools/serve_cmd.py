"""``wakeguard serve``: a Wyoming service that screens wake-ups (proxy) or any audio (screen)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import EXIT_BAD_INPUT, console, err_console, print_json, run_cli


def serve(
    *,
    uri: str = "tcp://127.0.0.1:10400",
    upstream: str | None = None,
    mode: str | None = None,
    model: Path | None = None,
    operating_point: str | None = None,
    threads: int = 1,
    wake_seconds: float | None = None,
    buffer_seconds: float = 10.0,
    max_seconds: float = 30.0,
    log_path: Path | None = None,
    clips_dir: Path | None = None,
    clip_cap_mb: float = 50.0,
    borderline: float = 1.0,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    on_ready: Callable[[str], None] | None = None,
) -> Any:
    """Load the bundle (refusing a corrupt or mismatched one), then serve until SIGTERM/SIGINT.

    Returns the :class:`~wakeguard.edge.wyoming_service.ServeSummary` after a clean stop.
    """
    import asyncio
    import dataclasses

    from wakeguard.edge.bundle import load_bundle
    from wakeguard.edge.decisionlog import DecisionLog
    from wakeguard.edge.scorer import Scorer
    from wakeguard.edge.wyoming_service import Decider, ServiceConfig, WakeguardService

    config = ServiceConfig(
        uri=uri,
        upstream=upstream,
        mode=mode,  # type: ignore[arg-type]
        wake_seconds=wake_seconds if wake_seconds is not None else 2.0,
        buffer_seconds=max(buffer_seconds, wake_seconds or 0.0),
        max_screen_seconds=max_seconds,
    )
    config.check()
    bundle = load_bundle(model)
    if wake_seconds is None:  # score exactly one model window by default
        config = dataclasses.replace(config, wake_seconds=bundle.frontend.window_seconds)
        config.check()
    scorer = Scorer.from_bundle(bundle, operating_point=operating_point, num_threads=threads)
    telemetry = None
    if metrics_port is not None:
        from wakeguard.edge.telemetry import Telemetry

        telemetry = Telemetry(port=metrics_port, host=metrics_host, model_version=bundle.version)
        telemetry.start()
    dlog = None
    if log_path is not None:
        dlog = DecisionLog(
            log_path,
            clips_dir=clips_dir,
            clip_cap_bytes=int(clip_cap_mb * 1_000_000),
            borderline_margin=borderline,
        )
    elif clips_dir is not None:
        raise ValueError("--clips-dir needs --log (clips are listed in the decision log)")
    decider = Decider(scorer, model_version=bundle.version, decision_log=dlog, telemetry=telemetry)
    service = WakeguardService(config, decider)
    try:
        return asyncio.run(service.run(on_ready=on_ready))
    finally:
        if dlog is not None:
            dlog.close()
        if telemetry is not None:
            telemetry.stop()


def serve_cli(
    uri: Annotated[
        str,
        typer.Option(
            help="Where to listen: tcp://HOST:PORT or unix://PATH (localhost unless told otherwise)."
        ),
    ] = "tcp://127.0.0.1:10400",
    upstream: Annotated[
        str | None,
        typer.Option(
            help="The real wake-word service (e.g. tcp://127.0.0.1:10401): turns on the wake proxy."
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="proxy or screen (default: proxy with --upstream, else screen)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Model bundle folder (default: the shipped bundle)."),
    ] = None,
    operating_point: Annotated[
        str | None,
        typer.Option(
            "--operating-point",
            help="Threshold: eer, bpcer_1pct or bpcer_5pct (default: the bundle's).",
        ),
    ] = None,
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    wake_seconds: Annotated[
        float | None,
        typer.Option(
            help="Seconds of audio before a detection scored as the wake word (default: one model window)."
        ),
    ] = None,
    buffer_seconds: Annotated[
        float, typer.Option(help="Audio kept per proxied connection, seconds.")
    ] = 10.0,
    max_seconds: Annotated[
        float, typer.Option(help="Longest utterance held for direct screening, seconds.")
    ] = 30.0,
    log: Annotated[
        Path | None, typer.Option("--log", help="Decision log (JSON lines, rotated).")
    ] = None,
    clips_dir: Annotated[
        Path | None,
        typer.Option(help="Save rejected and borderline audio here (private, size-capped)."),
    ] = None,
    clip_cap_mb: Annotated[
        float, typer.Option(help="Size cap of the clip folder, MB (oldest deleted first).")
    ] = 50.0,
    borderline: Annotated[
        float, typer.Option(help="Clips are saved when |score - threshold| is below this.")
    ] = 1.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (0 = any free port).")
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address for the metrics endpoint.")
    ] = "127.0.0.1",
    as_json: Annotated[bool, typer.Option("--json", help="Status lines as JSON.")] = False,
) -> None:
    """Screen wake-ups for the Home Assistant / Rhasspy voice stack over the Wyoming protocol.

    Proxy: point the satellite's --wake-uri here and --upstream at the real wake-word service; detections from replayed audio are swallowed.

    Screen: audio-start/chunk/stop in, a wakeguard-verdict event out.

    SIGTERM finishes the current decision and exits 0.
    """
    from wakeguard.edge.telemetry import TelemetryError
    from wakeguard.edge.wyoming_service import ServiceError

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def ready(bound: str) -> None:
        if as_json:
            print_json({"event": "listening", "uri": bound})
        else:
            console.print(f"listening on {bound}", highlight=False)
            console.file.flush()

    try:
        summary = run_cli(
            serve,
            uri=uri,
            upstream=upstream,
            mode=mode,
            model=model,
            operating_point=operating_point,
            threads=threads,
            wake_seconds=wake_seconds,
            buffer_seconds=buffer_seconds,
            max_seconds=max_seconds,
            log_path=log,
            clips_dir=clips_dir,
            clip_cap_mb=clip_cap_mb,
            borderline=borderline,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            on_ready=ready,
        )
    except (ServiceError, TelemetryError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    if as_json:
        print_json({"event": "stopped", **summary.to_dict()})
    else:
        console.print(f"stopped after {summary.decisions} decision(s)", highlight=False)
