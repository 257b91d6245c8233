"""The flags that several commands share, declared once, and the runtime configuration of the
long-running commands (``serve``, ``listen``) with those flags applied.

Each flag is a ``typing.Annotated`` alias that a command gives as its parameter's type
(``model: ModelOption = None``); the default stays with the command. A command that means
something else by a flag declares its own: ``evaluate --operating-point`` picks the threshold
for APCER/BPCER, and ``serve --config`` and ``listen --config`` read different tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from wakeguard.edge.config import RuntimeConfig

ModelOption = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="Model bundle folder (default: the shipped bundle)."),
]
OperatingPointOption = Annotated[
    str | None,
    typer.Option(
        "--operating-point",
        help="Threshold: eer, bpcer_1pct or bpcer_5pct (default: the bundle's).",
    ),
]
ThreadsOption = Annotated[int, typer.Option("--threads", min=1, help="Inference threads.")]
"""For the one-shot commands; the default (1) is the parameter's."""

# The flags of serve and listen: None keeps the --config file's value (or the built-in default
# the help names); runtime_config() maps each to its key. Their --threads has no range: a
# config file can set it too, so the bundle loader, where both arrive, refuses one below 1.
ConfigThreadsOption = Annotated[
    int | None, typer.Option("--threads", help="Inference threads (default: 1).")
]
LogOption = Annotated[
    Path | None, typer.Option("--log", help="Decision log (JSON lines, rotated; default: none).")
]
ClipsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--clips-dir",
        help="Save rejected and borderline audio here (private, size-capped; needs --log, which lists them; default: none).",
    ),
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus metrics on this port (default: 0 = no metrics).",
    ),
]
MetricsHostOption = Annotated[
    str | None,
    typer.Option("--metrics-host", help="Address for the metrics endpoint (default: 127.0.0.1)."),
]


def runtime_config(
    config: Path | None,
    *,
    model: Path | None = None,
    operating_point: str | None = None,
    threads: int | None = None,
    log: Path | None = None,
    clips_dir: Path | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    **keys: Any,
) -> RuntimeConfig:
    """``config`` (or the defaults) with every flag that is not None applied: the shared
    flags by name, a command's own as dotted keys in ``keys`` (``{"serve.uri": ...}``)."""
    from wakeguard.edge.config import load_config, with_overrides

    return with_overrides(
        load_config(config),
        {
            "model.bundle": None if model is None else str(model),
            "model.operating_point": operating_point,
            "model.threads": threads,
            "log.path": None if log is None else str(log),
            "log.clips_dir": None if clips_dir is None else str(clips_dir),
            "metrics.port": metrics_port,
            "metrics.host": metrics_host,
            **keys,
        },
    )
