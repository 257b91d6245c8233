"""``wakeguard serve``: a Wyoming service that screens wake-ups (proxy) or any audio (screen).

Settings come from the runtime configuration (``--config FILE``, else the built-in defaults;
see ``edge/wakeguard.toml``): the ``[serve]``, ``[model]``, ``[log]`` and ``[metrics]`` tables,
with the command-line flags applied on top.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .console import EXIT_BAD_INPUT, console, print_error, print_json, run_cli
from .runtime_flags import (
    ClipsDirOption,
    ConfigThreadsOption,
    LogOption,
    MetricsHostOption,
    MetricsPortOption,
    ModelOption,
    OperatingPointOption,
    runtime_config,
)

if TYPE_CHECKING:
    from wakeguard.edge.config import RuntimeConfig
    from wakeguard.edge.wyoming_service import ServeSummary


def resolve_config(
    config: Path | None,
    *,
    uri: str | None = None,
    upstream: str | None = None,
    mode: str | None = None,
    wake_seconds: float | None = None,
    buffer_seconds: float | None = None,
    max_seconds: float | None = None,
    clip_cap_mb: float | None = None,
    borderline: float | None = None,
    **common: Any,
) -> RuntimeConfig:
    """The TOML file (or the defaults) with the flags given (not None) applied on top; the
    flags every runtime command shares (``model``, ``threads``, ``log``...) go by name to
    :func:`~wakeguard.tools.runtime_flags.runtime_config`."""
    return runtime_config(
        config,
        **common,
        **{
            "serve.uri": uri,
            "serve.upstream": upstream,
            "serve.mode": mode,
            "serve.wake_seconds": wake_seconds,
            "serve.buffer_seconds": buffer_seconds,
            "serve.max_screen_seconds": max_seconds,
            "log.clip_cap_bytes": None if clip_cap_mb is None else int(clip_cap_mb * 1_000_000),
            "log.borderline_margin": borderline,
        },
    )


def serve(
    cfg: RuntimeConfig | None = None, *, on_ready: Callable[[str], None] | None = None
) -> ServeSummary:
    """Load the bundle (refusing a corrupt or mismatched one), then serve until SIGTERM/SIGINT.

    ``cfg`` is the resolved configuration (None = the built-in defaults). Returns the
    :class:`~wakeguard.edge.wyoming_service.ServeSummary` after a clean stop.
    """
    import asyncio

    from wakeguard.edge.bundle import load_bundle
    from wakeguard.edge.config import RuntimeConfig
    from wakeguard.edge.scorer import Scorer
    from wakeguard.edge.wyoming_service import Decider, ServiceConfig, WakeguardService

    cfg = cfg or RuntimeConfig()
    s, lg = cfg.serve, cfg.log
    if lg.clips_dir and not lg.path:
        raise ValueError(
            "--clips-dir ([log] clips_dir) needs --log ([log] path): clips are listed in the decision log"
        )
    bundle = load_bundle(cfg.model.bundle or None)
    wake_seconds = s.wake_seconds or bundle.frontend.window_seconds  # 0 = one model window
    config = ServiceConfig(
        uri=s.uri,
        upstream=s.upstream or None,
        mode=(s.mode or None),  # type: ignore[arg-type]  # check() refuses anything else
        wake_seconds=wake_seconds,
        buffer_seconds=max(s.buffer_seconds, wake_seconds),
        max_screen_seconds=s.max_screen_seconds,
        connect_timeout_s=s.connect_timeout_s,
        shutdown_grace_s=s.shutdown_grace_s,
    )
    config.check()
    scorer = Scorer.from_bundle(
        bundle, operating_point=cfg.model.operating_point or None, num_threads=cfg.model.threads
    )
    telemetry = None
    dlog = None
    try:
        if cfg.metrics.port:  # 0 = no metrics
            from wakeguard.edge.telemetry import Telemetry

            telemetry = Telemetry(
                port=cfg.metrics.port, host=cfg.metrics.host, model_version=bundle.version
            )
            telemetry.start()
        if lg.path:
            from wakeguard.edge.decisionlog import DecisionLog

            dlog = DecisionLog(
                lg.path,
                max_bytes=lg.max_bytes,
                backups=lg.backups,
                clips_dir=lg.clips_dir or None,
                clip_cap_bytes=lg.clip_cap_bytes,
                borderline_margin=lg.borderline_margin,
                strict_open=True,  # a wrong --log path fails now; a full disk never stops it
            )
        decider = Decider(
            scorer, model_version=bundle.version, decision_log=dlog, telemetry=telemetry
        )
        service = WakeguardService(config, decider)
        return asyncio.run(service.run(on_ready=on_ready))
    finally:
        if dlog is not None:
            dlog.close()
        if telemetry is not None:
            telemetry.stop()


def serve_cli(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML configuration: its serve, model, log and metrics tables (flags override it).",
        ),
    ] = None,
    uri: Annotated[
        str | None,
        typer.Option(
            help="Where to listen: tcp://HOST:PORT or unix://PATH (default: tcp://127.0.0.1:10400, localhost only)."
        ),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="The real wake-word service (e.g. tcp://127.0.0.1:10401): turns on the wake proxy (default: none)."
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="proxy or screen (default: proxy with --upstream, else screen)."),
    ] = None,
    model: ModelOption = None,
    operating_point: OperatingPointOption = None,
    threads: ConfigThreadsOption = None,
    wake_seconds: Annotated[
        float | None,
        typer.Option(
            help="Seconds of audio before a detection scored as the wake word (default: one model window)."
        ),
    ] = None,
    buffer_seconds: Annotated[
        float | None,
        typer.Option(help="Audio kept per proxied connection, seconds (default: 10)."),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(help="Longest utterance held for direct screening, seconds (default: 30)."),
    ] = None,
    log: LogOption = None,
    clips_dir: ClipsDirOption = None,
    clip_cap_mb: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Size cap of the clip folder, MB, oldest deleted first (default: 50).",
        ),
    ] = None,
    borderline: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Clips are saved when |score - threshold| is below this (default: 1)."
        ),
    ] = None,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Status lines as JSON.")] = False,
) -> None:
    """Screen wake-ups for the Home Assistant / Rhasspy voice stack over the Wyoming protocol.

    Proxy: point the satellite's --wake-uri here and --upstream at the real wake-word service; detections from replayed audio are swallowed.

    Screen: audio-start/chunk/stop in, a wakeguard-verdict event out.

    Defaults come from --config FILE (its serve, model, log and metrics tables) when given; flags override it.

    SIGTERM finishes the current decision and exits 0.
    """
    from wakeguard.edge.telemetry import TelemetryError
    from wakeguard.edge.wyoming_service import ServiceError

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = run_cli(
        resolve_config,
        config,
        uri=uri,
        upstream=upstream,
        mode=mode,
        model=model,
        operating_point=operating_point,
        threads=threads,
        wake_seconds=wake_seconds,
        buffer_seconds=buffer_seconds,
        max_seconds=max_seconds,
        log=log,
        clips_dir=clips_dir,
        clip_cap_mb=clip_cap_mb,
        borderline=borderline,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )

    def ready(bound: str) -> None:
        if as_json:
            print_json({"event": "listening", "uri": bound, "config": cfg.source})
        else:
            console.print(
                f"listening on {bound} (config: {cfg.source})", highlight=False, markup=False
            )
            console.file.flush()

    try:
        summary = run_cli(serve, cfg, on_ready=ready)
    except (ServiceError, TelemetryError) as exc:
        print_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    if as_json:
        print_json({"event": "stopped", **summary.to_dict()})
    else:
        console.print(f"stopped after {summary.decisions} decision(s)", highlight=False)
