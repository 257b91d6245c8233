"""Runtime configuration for ``listen`` and ``serve``: a TOML file plus command-line overrides.

The defaults are the dataclass defaults below; ``wakeguard.toml`` (shipped beside this
module, installed as ``/etc/wakeguard/wakeguard.toml`` on a Pi) spells them out with
comments. A file only needs the keys it changes. Unknown sections or keys, and values of
the wrong type, raise :class:`ConfigError` naming the file, the key and the problem, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .decision import DecisionParams
from .decisionlog import check_log_limits
from .endpoint import EndpointParams

DEFAULT_CONFIG_NAME = "wakeguard.toml"


class ConfigError(ValueError):
    """A configuration file or override that cannot be used."""

    def __init__(self, where: str | Path | None, problem: str):
        self.where = None if where is None else str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(frozen=True)
class ModelConfig:
    bundle: str = ""
    """Model bundle folder; empty = the bundle shipped with the package."""
    operating_point: str = ""
    """``eer``, ``bpcer_1pct`` or ``bpcer_5pct``; empty = the bundle's default."""
    threads: int = 1
    """Inference threads."""


@dataclass(frozen=True)
class CaptureConfig:
    device: str = ""
    """Input device: an index or part of its name; empty = the system default."""
    sample_rate: int = 0
    """Rate to open the device at; 0 = 16 kHz if it accepts that, else its default rate."""
    channels: int = 0
    """Channels to open; 0 = mono if accepted, else what the device needs (mixed to mono)."""
    block_ms: float = 32.0
    """Audio block length handed over by the device callback."""
    queue_seconds: float = 2.0
    """Capacity of the bounded block queue; a full queue drops blocks (counted overruns)."""
    backoff_s: float = 1.0
    """First wait before reopening a missing or lost microphone (doubles each failure)."""
    max_backoff_s: float = 30.0
    """Longest wait between reopening attempts."""
    stall_s: float = 3.0
    """No audio for this long from an open stream counts as a lost device."""
    wait_for_device: bool = False
    """No such input device at the start: wait for one (a service) instead of failing."""


_EP = EndpointParams()  # the endpointer's own defaults: the config repeats none of them


@dataclass(frozen=True)
class EndpointConfig:
    """The ``[endpoint]`` table: :class:`EndpointParams` with ``band_hz`` as two flat keys."""

    frame_ms: float = _EP.frame_ms
    threshold_db: float = _EP.threshold_db
    min_level_dbfs: float = _EP.min_level_dbfs
    floor_rise_db_per_s: float = _EP.floor_rise_db_per_s
    speech_floor_rise_db_per_s: float = _EP.speech_floor_rise_db_per_s
    floor_fall: float = _EP.floor_fall
    max_flatness: float = _EP.max_flatness
    min_band_ratio: float = _EP.min_band_ratio
    band_low_hz: float = _EP.band_hz[0]
    band_high_hz: float = _EP.band_hz[1]
    onset_frames: int = _EP.onset_frames
    pre_roll_s: float = _EP.pre_roll_s
    hangover_s: float = _EP.hangover_s
    post_roll_s: float = _EP.post_roll_s
    min_seconds: float = _EP.min_seconds
    max_seconds: float = _EP.max_seconds

    def params(self) -> EndpointParams:
        kw = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("band_")}
        return EndpointParams(band_hz=(self.band_low_hz, self.band_high_hz), **kw)


@dataclass(frozen=True)
class DecisionConfig:
    threshold: float = math.nan
    """Score threshold; nan (leave it out of the file) = the bundle's operating point."""
    smoothing_alpha: float = 1.0
    smoothing_window_s: float = 3.0
    refractory_s: float = 0.0

    def params(self, bundle_threshold: float) -> DecisionParams:
        t = bundle_threshold if math.isnan(self.threshold) else self.threshold
        return DecisionParams(
            threshold=t,
            smoothing_alpha=self.smoothing_alpha,
            smoothing_window_s=self.smoothing_window_s,
            refractory_s=self.refractory_s,
        )


@dataclass(frozen=True)
class OutputConfig:
    hook: str = ""
    """Command run for each verdict (no shell; use ``sh -c '...'`` for shell syntax)."""
    hook_timeout_s: float = 5.0
    """A hook still running after this is killed."""
    hook_on: str = "all"
    """Which verdicts run the hook: ``all``, ``spoof`` or ``bonafide``."""
    webhook: str = ""
    """URL that receives each verdict as a JSON POST, e.g. ``http://127.0.0.1:8123/wakeguard``."""
    webhook_timeout_s: float = 2.0
    allow_remote_webhook: bool = False
    """Allow a webhook host other than this machine."""
    max_pending: int = 16
    """Verdicts waiting for a hook or webhook beyond this are dropped (and logged)."""


@dataclass(frozen=True)
class LogConfig:
    path: str = ""
    """Decision log (JSON lines); empty = no log."""
    max_bytes: int = 5_000_000
    backups: int = 3
    clips_dir: str = ""
    """Opt-in: save rejected and borderline audio here (files readable by the service user only)."""
    clip_cap_bytes: int = 50_000_000
    borderline_margin: float = 1.0

    def check(self) -> None:
        """ValueError for a size, count or margin that means nothing (what the log checks)."""
        check_log_limits(self.max_bytes, self.backups, self.clip_cap_bytes, self.borderline_margin)


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 0
    """Prometheus metrics port; 0 = no metrics."""
    host: str = "127.0.0.1"

    def check(self) -> None:
        """ValueError for a port no socket can bind."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 1-65535 (or 0 for no metrics), got {self.port}")


def check_durations(settings: Any, names: tuple[str, ...], zero_ok: tuple[str, ...] = ()) -> None:
    """ValueError for a duration among ``settings``' attributes ``names`` that is NaN,
    infinite, negative, or zero where zero has no meaning (those not in ``zero_ok``)."""
    for name in names:
        value = getattr(settings, name)
        if not math.isfinite(value) or value < 0 or (value == 0 and name not in zero_ok):
            what = "0 or more" if name in zero_ok else "a positive number of"
            raise ValueError(f"{name} must be {what} seconds, got {value}")


@dataclass(frozen=True)
class ServeConfig:
    """``wakeguard serve`` (field names follow ``wyoming_service.ServiceConfig``)."""

    uri: str = "tcp://127.0.0.1:10400"
    """Where ``wakeguard serve`` listens."""
    upstream: str = ""
    """The real wake-word service the proxy forwards to, e.g. ``tcp://127.0.0.1:10401``; empty = none."""
    mode: str = ""
    """``proxy`` or ``screen``; empty = proxy when an upstream is set, else screen."""
    wake_seconds: float = 0.0
    """Audio before a detection scored as the wake word; 0 = one model window."""
    buffer_seconds: float = 10.0
    """Audio kept per proxied connection."""
    max_screen_seconds: float = 30.0
    """Longest utterance held for direct screening."""
    connect_timeout_s: float = 5.0
    """Give up connecting to the upstream after this long."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM, wait this long for decisions in flight."""

    def check(self) -> None:
        """ValueError for a duration that cannot work (0 means one model window for
        ``wake_seconds`` and no wait for ``shutdown_grace_s``)."""
        check_durations(
            self,
            ("wake_seconds", "shutdown_grace_s", "buffer_seconds", "max_screen_seconds"),
            zero_ok=("wake_seconds", "shutdown_grace_s"),
        )
        check_durations(self, ("connect_timeout_s",))


@dataclass(frozen=True)
class RuntimeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    source: str = "defaults"
    """Where the values came from (the file path, or ``defaults``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: {
                g.name: getattr(getattr(self, f.name), g.name)
                for g in fields(getattr(self, f.name))
            }
            for f in fields(self)
            if f.name != "source"
        }


SECTIONS = tuple(f.name for f in fields(RuntimeConfig) if f.name != "source")


def default_config_path() -> Path:
    """The commented default configuration shipped with the package."""
    return Path(str(resources.files("wakeguard.edge") / DEFAULT_CONFIG_NAME))


_TAKES_INDEX = frozenset({("capture", "device")})
"""String settings that also take an integer, kept as its string: ``device = 2`` names an
audio device by its index. Any other string setting refuses a number (``uri = 5``)."""


def _coerce(where: str, key: str, value: Any, default: Any, *, takes_index: bool = False) -> Any:
    """Check ``value`` against the default's type: ints are accepted for floats, and for the
    string settings in :data:`_TAKES_INDEX`; nothing else is converted."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(where, f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"{key} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(where, f"{key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if takes_index and isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # device = 2
        if not isinstance(value, str):
            what = "a string or an index" if takes_index else "a string (in quotes)"
            raise ConfigError(where, f"{key} must be {what}, got {value!r}")
        return value
    return value


def _section(cfg: RuntimeConfig, name: str, values: dict[str, Any], where: str) -> RuntimeConfig:
    current = getattr(cfg, name)
    known = {f.name for f in fields(current)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                where, f"unknown key [{name}] {key} (known: {', '.join(sorted(known))})"
            )
        changes[key] = _coerce(
            where,
            f"[{name}] {key}",
            value,
            getattr(current, key),
            takes_index=(name, key) in _TAKES_INDEX,
        )
    try:
        section = replace(current, **changes)
        if name == "endpoint":
            section.params()
        elif name == "decision":
            section.params(0.0)
        elif name in ("serve", "log", "metrics"):
            section.check()
    except ValueError as exc:
        raise ConfigError(where, f"[{name}] {exc}") from exc
    return replace(cfg, **{name: section})


def merge(cfg: RuntimeConfig, data: dict[str, Any], where: str) -> RuntimeConfig:
    """``cfg`` with the sections of a parsed TOML document applied."""
    for name, values in data.items():
        if name not in SECTIONS:
            raise ConfigError(where, f"unknown section [{name}] (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(where, f"[{name}] must be a table")
        cfg = _section(cfg, name, values, where)
    return cfg


def load_config(path: str | Path | None = None) -> RuntimeConfig:
    """Defaults, overlaid with ``path`` when given; ConfigError for a missing or bad file."""
    cfg = RuntimeConfig()
    if path is None:
        return cfg
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "configuration file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"not valid TOML ({exc})") from exc
    return replace(merge(cfg, data, str(path)), source=str(path))


def with_overrides(cfg: RuntimeConfig, overrides: dict[str, Any]) -> RuntimeConfig:
    """Apply ``{"section.key": value}`` overrides (command-line flags); None values are skipped."""
    data: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError("override", f"expected section.key, got {dotted!r}")
        data.setdefault(section, {})[key] = value
    return merge(cfg, data, "command line") if data else cfg


__all__ = [
    "CaptureConfig",
    "ConfigError",
    "DecisionConfig",
    "EndpointConfig",
    "LogConfig",
    "MetricsConfig",
    "ModelConfig",
    "OutputConfig",
    "RuntimeConfig",
    "ServeConfig",
    "default_config_path",
    "load_config",
    "merge",
    "with_overrides",
]
