"""``wakeguard listen``: screen live commands from a microphone (or a file played in real time).

One JSON line per command on stdout; progress, warnings and the microphone's retry lines
go to stderr (the journal, under systemd). SIGTERM or Ctrl-C finish the command being
decided, flush the decision log and exit 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .console import EXIT_FAILURE, console, err_console, print_error, print_json, run_cli
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
    from wakeguard.edge.listener import Event, ListenStats


def resolve_config(
    config: Path | None,
    *,
    device: str | None = None,
    wait_for_mic: bool | None = None,
    hook: str | None = None,
    webhook: str | None = None,
    allow_remote_webhook: bool | None = None,
    **common: Any,
) -> RuntimeConfig:
    """The TOML file (or the defaults) with the command-line flags applied on top; the
    flags every runtime command shares (``model``, ``threads``, ``log``...) go by name to
    :func:`~wakeguard.tools.runtime_flags.runtime_config`. Clips without a decision log
    (which lists them) are refused, as ``serve`` refuses them."""
    cfg = runtime_config(
        config,
        **common,
        **{
            "capture.device": device,
            "capture.wait_for_device": wait_for_mic or None,
            "output.hook": hook,
            "output.webhook": webhook,
            "output.allow_remote_webhook": allow_remote_webhook or None,
        },
    )
    if cfg.log.clips_dir and not cfg.log.path:
        where = "" if cfg.source == "defaults" else f"{cfg.source}: "
        raise ValueError(
            f"{where}--clips-dir ([log] clips_dir) needs --log ([log] path): clips are "
            "listed in the decision log"
        )
    return cfg


def listen(
    cfg: RuntimeConfig,
    *,
    input_file: Path | None = None,
    speed: float = 1.0,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> ListenStats:
    """Screen commands until the input ends or ``stop`` is set; returns the session's counters."""
    from wakeguard.edge.bundle import load_bundle
    from wakeguard.edge.capture import FileSource, MicSource
    from wakeguard.edge.listener import HookCommand, Listener, Webhook
    from wakeguard.edge.scorer import Scorer

    stop = stop or threading.Event()
    bundle = load_bundle(cfg.model.bundle or None)
    scorer = Scorer.from_bundle(
        bundle, operating_point=cfg.model.operating_point or None, num_threads=cfg.model.threads
    )
    endpoint = cfg.endpoint.params()
    decision = cfg.decision.params(scorer.threshold)

    if input_file is not None:
        source = FileSource(
            input_file,
            speed=speed,
            block_ms=cfg.capture.block_ms,
            queue_seconds=cfg.capture.queue_seconds,
        )
    else:
        c = cfg.capture
        source = MicSource(
            c.device or None,
            block_ms=c.block_ms,
            queue_seconds=c.queue_seconds,
            sample_rate=c.sample_rate,
            channels=c.channels,
            backoff_s=c.backoff_s,
            max_backoff_s=c.max_backoff_s,
            stall_s=c.stall_s,
            wait_for_device=c.wait_for_device,
        )

    closers: list[Callable[[], None]] = []
    sinks: list[Callable[[Event], None]] = []
    if on_event is not None:
        sinks.append(on_event)
    o = cfg.output
    decision_log = None
    try:
        if o.hook:
            hook = HookCommand(
                o.hook, timeout_s=o.hook_timeout_s, on=o.hook_on, max_pending=o.max_pending
            )
            sinks.append(hook)
            closers.append(hook.close)
        if o.webhook:
            webhook = Webhook(
                o.webhook,
                timeout_s=o.webhook_timeout_s,
                allow_remote=o.allow_remote_webhook,
                max_pending=o.max_pending,
            )
            sinks.append(webhook)
            closers.append(webhook.close)
        if cfg.log.path:
            from wakeguard.edge.decisionlog import DecisionLog

            decision_log = DecisionLog(
                cfg.log.path,
                max_bytes=cfg.log.max_bytes,
                backups=cfg.log.backups,
                clips_dir=cfg.log.clips_dir or None,
                clip_cap_bytes=cfg.log.clip_cap_bytes,
                borderline_margin=cfg.log.borderline_margin,
                strict_open=True,  # a wrong --log path fails now, not after a day of nothing
            )
            closers.append(decision_log.close)
        telemetry = None
        metrics_port = None
        if cfg.metrics.port:
            from wakeguard.edge.telemetry import Telemetry

            telemetry = Telemetry(
                cfg.metrics.port, host=cfg.metrics.host, model_version=bundle.version
            )
            metrics_port = telemetry.start()
            closers.append(telemetry.stop)
        listener = Listener(
            scorer,
            model_version=bundle.version,
            endpoint=endpoint,
            decision=decision,
            sinks=sinks,
            decision_log=decision_log,
            telemetry=telemetry,
        )
        if isinstance(source, MicSource):
            source.check_present()  # "no microphone" before "listening to ..."
        if on_ready is not None:
            on_ready(
                {
                    "source": source.description,
                    "model_version": bundle.version,
                    "threshold": decision.threshold,
                    "metrics_port": metrics_port,
                    "log": cfg.log.path or None,
                }
            )
        stats = listener.run(source, stop)
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception as exc:  # shutting down: report, go on closing the rest
                logging.getLogger("wakeguard").error("while shutting down: %s", exc)
    if decision_log is not None:
        stats.log_write_errors = decision_log.write_errors
    return stats


def list_devices() -> list[dict[str, Any]]:
    from wakeguard.edge.capture import list_input_devices

    return [d.to_dict() for d in list_input_devices()]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s wakeguard %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )


def _no_command_found(path: Path, min_seconds: float) -> str:
    """Why a file gave no command: too short or silent as a whole (which ``screen`` refuses
    too), or no stretch in it that sounds like speech."""
    from wakeguard.edge.audio import AudioError, load_audio, require_usable

    try:
        require_usable(load_audio(path), min_seconds=min_seconds)
    except AudioError as exc:
        return f"no command found in {path}: it is {exc.problem}"
    return (
        f"no command found in {path}: silence, steady noise, or speech too quiet against it "
        "(wakeguard screen scores a whole file regardless)"
    )


def listen_cli(
    input_file: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="Play this WAV/FLAC instead of the microphone."),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(help="With --input: playback speed (1 = real time, 0 = as fast as possible)."),
    ] = 1.0,
    device: Annotated[
        str | None, typer.Option("--device", "-d", help="Input device: index or part of its name.")
    ] = None,
    list_devices_flag: Annotated[
        bool, typer.Option("--list-devices", help="List input devices and exit.")
    ] = False,
    wait_for_mic: Annotated[
        bool,
        typer.Option(
            "--wait-for-mic",
            help="No such microphone at the start: wait for one to be plugged in (a service) "
            "instead of failing.",
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML configuration (flags override it).")
    ] = None,
    model: ModelOption = None,
    operating_point: OperatingPointOption = None,
    hook: Annotated[
        str | None,
        typer.Option(
            help="Command run per verdict, with WAKEGUARD_VERDICT, WAKEGUARD_SCORE, ... set."
        ),
    ] = None,
    webhook: Annotated[
        str | None,
        typer.Option(help="POST each verdict as JSON here, e.g. http://127.0.0.1:8123/path."),
    ] = None,
    allow_remote_webhook: Annotated[
        bool, typer.Option("--allow-remote-webhook", help="Allow a webhook on another machine.")
    ] = False,
    log: LogOption = None,
    clips_dir: ClipsDirOption = None,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = None,
    threads: ConfigThreadsOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")
    ] = False,
) -> None:
    """Screen live commands: one JSON line per command (score, verdict, latency) on stdout."""
    _setup_logging(verbose)
    if list_devices_flag:
        devices = run_cli(list_devices)
        if not devices:
            err_console.print("no input devices found")
        for d in devices:
            console.print(
                f"{d['index']:>3}  {d['name']}  ({d['channels']} ch, {d['default_rate']:.0f} Hz, {d['hostapi']})",
                highlight=False,
            )
        return
    if input_file is not None and (device is not None or wait_for_mic):
        flag = "--device" if device is not None else "--wait-for-mic"
        print_error(
            f"{flag} chooses a microphone, but --input plays a file instead: give one or the other"
        )
        raise typer.Exit(2)
    from wakeguard.edge.listener import SkippedEvent
    from wakeguard.edge.telemetry import TelemetryError

    cfg = run_cli(
        resolve_config,
        config,
        device=device,
        wait_for_mic=wait_for_mic,
        model=model,
        operating_point=operating_point,
        threads=threads,
        hook=hook,
        webhook=webhook,
        allow_remote_webhook=allow_remote_webhook,
        log=log,
        clips_dir=clips_dir,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    logger = logging.getLogger("wakeguard")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        logger.info("%s: finishing the current command and stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_event(ev: Event) -> None:
        if isinstance(ev, SkippedEvent):
            logger.info("skipped %.2f-%.2f s: %s", ev.t_start, ev.t_end, ev.reason)
        else:
            print_json(ev.to_dict())

    def on_ready(info: dict[str, Any]) -> None:
        extra = f", metrics on port {info['metrics_port']}" if info["metrics_port"] else ""
        logger.info(
            "listening to %s with model %s (threshold %.3f)%s",
            info["source"],
            info["model_version"],
            info["threshold"],
            extra,
        )

    try:
        stats = run_cli(
            listen,
            cfg,
            input_file=input_file,
            speed=speed,
            on_event=on_event,
            stop=stop,
            on_ready=on_ready,
        )
    except TelemetryError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_FAILURE) from exc
    s = stats.to_dict()
    p95 = s["latency_p95_ms"]
    logger.info(
        "stopped: %.1f s of audio, %d commands, %d verdicts, %d skipped, %d overruns%s",
        s["audio_seconds"],
        s["segments"],
        s["verdicts"],
        s["skipped"],
        s["overruns"],
        f", latency p95 {p95:.1f} ms" if p95 is not None else "",
    )
    if input_file is not None and not s["segments"] and not stop.is_set():
        logger.warning("%s", _no_command_found(input_file, cfg.endpoint.params().min_seconds))
    if s["log_write_errors"]:
        logger.warning(
            "%d decision record(s) or clip(s) could not be written to %s",
            s["log_write_errors"],
            cfg.log.path,
        )
