"""The runtime configuration of the long-running commands (``serve``, ``listen``): the TOML
file or the built-in defaults, with the command-line flags applied on top. The flags both
commands share map to the same keys here, once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wakeguard.edge.config import RuntimeConfig


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
