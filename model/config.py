"""Training configuration: one dataclass per section, loaded from TOML or JSON, with dotted overrides.

A config file holds the sections ``frontend`` (the fields of
:class:`wakeguard.edge.frontend.FrontendParams`), ``model``, ``augment``, ``train``,
``quantize`` and ``ensemble`` (several networks, each the base config plus its own
overrides; empty = one network). Anything not given takes the default from ``model/default_config.toml``
(applied over the dataclass defaults below, which are generic starting points; the TOML
holds the settings chosen by measurement). Overrides on the command line address one field
each, ``train.epochs=20 frontend.kind=lfcc``, and are parsed to the field's type.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from wakeguard.edge.bundle import TRIM_POLICIES
from wakeguard.edge.frontend import FrontendParams, frontend_from_dict

SCORE_HEADS = ("dense", "one_class")
"""``model.score_head`` values (see :class:`ModelConfig`)."""
HEAD_ACTIVATIONS = ("relu", "leaky_relu")
"""``model.head_activation`` values (see :class:`ModelConfig`)."""
KEEP_POLICIES = ("best_dev", "final_average")
"""``train.keep`` values (see :class:`TrainConfig`)."""


@dataclass
class ModelConfig:
    """Shape of the compact detector (see :mod:`wakeguard.model.detector`)."""

    stem_channels: int = 16
    """Channels of the first (strided) convolution."""
    stem_time_stride: int = 0
    """Stride of the first convolution along time (0 = 2 when the window has at least 8
    frames, else 1). A larger stride lets short frames (fine time resolution) in at the
    cost of coarse ones: the rest of the network sees as many steps as before."""
    stem_time_kernel: int = 3
    """Length of the first convolution's kernel along time, in frames; at least the stride,
    so that no frame is skipped."""
    block_channels: list[int] = field(default_factory=lambda: [24, 32, 48, 64])
    """Channels of each depthwise-separable block; each block halves time and frequency."""
    head_units: int = 32
    """Units of the hidden dense layer before the logit (0 = straight to the logit)."""
    head_activation: str = "relu"
    """Activation of that layer with the ``dense`` score head: ``relu``, or ``leaky_relu``
    (slope 0.1 below zero). With ReLU a class the network is sure of can switch every unit
    off, and all its recordings then get one logit, the last layer's bias: session 24's
    network gave 286 of eval's 396 live commands exactly its highest score."""
    dropout: float = 0.3
    """Dropout before each dense layer."""
    bn_momentum: float = 0.9
    """Batch-norm moving-average momentum; 0.9 settles within an epoch on small datasets (0.99 did not)."""
    time_pool: str = "mean"
    """How the head summarises time: ``mean`` or ``mean_max`` (average and maximum, concatenated)."""
    freq_pool: str = "keep"
    """How the head treats frequency: ``keep`` (flatten per-band features, position matters) or ``mean``."""
    head_channels: int = 0
    """Channels of a 1x1 convolution before the head (0 = none). With ``freq_pool="keep"`` the
    dense head sees bands x channels inputs, so most parameters sit there; narrowing the
    channels first shrinks it without touching the convolutional trunk."""
    score_head: str = "dense"
    """``dense``: a dense layer's logit, trained with binary cross-entropy. ``one_class``: the
    cosine between the (linear) embedding and one learned bona fide direction, times
    ``cosine_scale``, trained with the OC-softmax loss (``train.one_class_margins``)."""
    cosine_scale: float = 20.0
    """Scale of the cosine score with ``score_head="one_class"`` (OC-softmax's alpha)."""


@dataclass
class AugmentConfig:
    """Training-time augmentation, applied to feature windows (the dB domain) inside the graph."""

    time_masks: int = 2
    """SpecAugment: number of time masks per window."""
    time_mask_max: int = 20
    """SpecAugment: widest time mask, in frames."""
    freq_masks: int = 2
    """SpecAugment: number of frequency masks per window."""
    freq_mask_max: int = 12
    """SpecAugment: widest frequency mask, in feature bins."""
    noise_prob: float = 0.5
    """Probability of adding a coloured noise floor (power-domain addition in dB features)."""
    noise_snr_db: list[float] = field(default_factory=lambda: [10.0, 40.0])
    """Range of the signal-to-noise ratio of that floor, in dB."""
    eq_prob: float = 0.5
    """Probability of a smooth random equaliser curve (microphone/room colouring)."""
    eq_db: float = 3.0
    """Largest gain of the random equaliser at any frequency, in dB."""
    eq_axis: str = "linear"
    """Frequency axis the equaliser curve is smooth on: ``linear`` or ``log`` (above 100 Hz,
    as microphone and port responses are: the same detail per octave)."""
    edge_silence_prob: float = 0.0
    """Probability that a window's first or last frames are replaced by silence 30-90 dB
    below its loudest frame: quiet noise, or (one time in three) a flat floor like digital
    zeros. Real recordings' edges are quieter than the simulator's room noise, and the
    network leaned towards "live" on them (docs/benchmarks.md, "Session 16")."""
    edge_silence_frames: int = 8
    """Most frames replaced (8 frames of the shipped front-end: 0.5 s)."""
    mixup_alpha: float = 0.0
    """Mixup (Zhang et al., 2018), 0 = off: each window is mixed with another of its batch,
    features and label alike, in proportion ``lam : 1 - lam`` with ``lam`` drawn from
    Beta(alpha, alpha) and folded to at least 0.5, so the window keeps its weight and room
    label (the room classifier's). Not with the ``one_class`` score head."""

    def __post_init__(self) -> None:
        if self.eq_axis not in ("linear", "log"):
            raise ValueError(f"eq_axis must be 'linear' or 'log', not {self.eq_axis!r}")


@dataclass
class TrainConfig:
    """Optimisation and model selection."""

    epochs: int = 30
    """Most epochs to train."""
    batch_size: int = 64
    """Windows per batch."""
    learning_rate: float = 2e-3
    """Peak learning rate (cosine decay to 5 % of it)."""
    weight_decay: float = 1e-3
    """Decoupled weight decay (AdamW)."""
    patience: int = 6
    """Early stopping: epochs without a better dev EER before stopping."""
    seed: int = 0
    """Seed for weights, shuffling and augmentation."""
    train_eer_max_utterances: int = 600
    """Utterances of the train split scored each epoch to report train EER (overfitting)."""
    label_smoothing: float = 0.0
    """Label smoothing of the binary cross-entropy."""
    one_class_margins: list[float] = field(default_factory=lambda: [0.9, 0.2])
    """OC-softmax margins with ``model.score_head="one_class"``: the loss pushes a live
    window's cosine above the first and a replay's below the second (the paper's 0.9, 0.2)."""
    swa_start: int = 0
    """Stochastic weight averaging (Izmailov et al., 2018): from this epoch on, the weights at
    the end of each epoch are averaged, batch-norm statistics re-estimated on train, and the
    average competes with the epoch's own weights for the dev-EER checkpoint (0: off)."""
    select_average: bool = False
    """With ``swa_start``: from that epoch on only the weight average competes for the
    checkpoint, not the epoch's own weights. Dev EER cannot tell a lucky single epoch from
    a better network (one dev utterance is 0.2 points); the average is the one that holds
    on unseen splits (docs/benchmarks.md, "Session 20")."""
    keep: str = "best_dev"
    """Which weights the run keeps: ``best_dev``, the candidate with the best dev EER, or
    ``final_average``, the weight average from ``swa_start`` to the last epoch trained (early
    stopping still watches dev EER). A dev split of a few hundred utterances ranks averages
    that differ by one utterance; the longest average is the one that holds on unseen
    splits (docs/benchmarks.md, "Session 21")."""
    balance_classes: bool = True
    """Weight the loss so both labels count equally."""
    threads: int = 0
    """TensorFlow CPU threads (0 = TensorFlow's choice)."""
    domain_adversarial: float = 0.0
    """Weight of a domain-adversarial loss (Ganin et al., 2016): a classifier of the train
    rows' ``domain_column`` reads the pooled trunk output through a gradient-reversal layer,
    so the trunk learns features that do not tell the domains apart (0: off). Its weight
    ramps up from 0 over training, as in the paper."""
    domain_column: str = "room"
    """Condition column whose values are the domains of ``domain_adversarial`` and
    ``group_dro``."""
    group_dro: float = 0.0
    """Step size of a group DRO (Sagawa et al., 2020) over the ``domain_column`` domains, at
    epoch granularity: after each epoch every domain's weight is multiplied by exp(step x
    its mean train loss), so the rooms the network does worst in count more in the next
    epoch (0: off). Window weights keep mean 1 and stay within a factor of 5."""
    distill_from: list[str] = field(default_factory=list)
    """Teachers for knowledge distillation (Hinton et al., 2015): run or bundle folders with a
    ``model.keras`` and this run's front-end. Each train window's target becomes
    ``(1 - distill_weight) * label + distill_weight * sigmoid(mean teacher logit)``, so one
    network can learn what an ensemble of teachers knows (empty: off)."""
    distill_weight: float = 0.5
    """Share of the teachers' soft target in each window's target (with ``distill_from``)."""
    frame_offsets: int = 1
    """Framings of each train recording: with ``k`` > 1 its windows are also computed with
    the audio moved by ``i * hop_length // k`` samples (i = 1..k-1), and every batch takes
    each window from one of the ``k`` framings at random, so the network meets a command's
    frames at more than one phase of the frame grid (1: off; dev is never moved)."""


@dataclass
class QuantizeConfig:
    """Conversion and calibration."""

    representative_windows: int = 300
    """Train windows fed to the int8 converter for activation ranges."""
    calibration_scores_per_label: int = 300
    """Dev scores per label stored in the bundle for drift monitoring."""
    latency_utterances: int = 20
    """Dev utterances timed per variant (front-end plus inference, one thread)."""
    trim: str = "speech"
    """The bundle's input policy (``edge.bundle.TRIM_POLICIES``): ``speech`` scores a recording
    over the span the live listener's endpointer would hand over, and dev and eval are scored
    that way to calibrate, so the silence around a command does not move its score; ``none``,
    whole files (bundles before session 16)."""


@dataclass
class EnsembleConfig:
    """Networks trained on the same data and fused by averaging their calibrated scores.

    Each member is ``{name = "...", overrides = ["section.key=value", ...]}``: the base
    config (every other section) with those overrides, then the command line's overrides
    again, so ``train.epochs=1`` on the command line reaches every member. No members
    (``ensemble.members=[]``) trains the base config as one network.
    """

    members: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = []
        for i, m in enumerate(self.members):
            if not isinstance(m, dict) or set(m) - {"name", "overrides"} or "name" not in m:
                raise ValueError(f"member {i} must be {{name = ..., overrides = [...]}}, not {m!r}")
            name, over = m["name"], m.get("overrides", [])
            if (
                not isinstance(name, str)
                or not name
                or not all(c.isalnum() or c in "-_" for c in name)
            ):
                raise ValueError(
                    f"member name {name!r}: use letters, digits, - and _ (it names a folder)"
                )
            if not isinstance(over, list) or not all(isinstance(o, str) for o in over):
                raise ValueError(
                    f"member {name!r}: overrides must be a list of section.key=value strings"
                )
            if any(o.strip().startswith("ensemble.") for o in over):
                raise ValueError(f"member {name!r}: a member cannot override the ensemble")
            names.append(name)
        if len(set(names)) != len(names):
            raise ValueError(f"member names must differ: {names}")


@dataclass
class Config:
    """Everything one training run needs, besides the dataset."""

    frontend: FrontendParams = field(default_factory=FrontendParams)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frontend": self.frontend.to_dict(),
            "model": asdict(self.model),
            "augment": asdict(self.augment),
            "train": asdict(self.train),
            "quantize": asdict(self.quantize),
            "ensemble": asdict(self.ensemble),
        }


SECTIONS: dict[str, type] = {
    "frontend": FrontendParams,
    "model": ModelConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "quantize": QuantizeConfig,
    "ensemble": EnsembleConfig,
}


RUN_KEYS = {"dataset", "init_from"}
"""Keys a run's ``config.json`` records beside the sections: what it trained on and from."""


class ConfigError(ValueError):
    """A config file or override that cannot be applied, with the reason."""


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low:g}"


_POSITIVE: tuple[Callable[[Any], bool], str] = (lambda v: v > 0, "> 0")
_PROBABILITY: tuple[Callable[[Any], bool], str] = (lambda v: 0 <= v <= 1, "in [0, 1]")
_FRACTION: tuple[Callable[[Any], bool], str] = (lambda v: 0 <= v < 1, "in [0, 1)")

RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model.stem_channels": _at_least(1),
    "model.block_channels": (
        lambda v: len(v) > 0 and all(c >= 1 for c in v),
        "a non-empty list of channel counts >= 1",
    ),
    "model.head_units": _at_least(0),
    "model.dropout": _FRACTION,
    "model.bn_momentum": _FRACTION,
    "model.head_channels": _at_least(0),
    "model.score_head": (lambda v: v in SCORE_HEADS, " or ".join(map(repr, SCORE_HEADS))),
    "model.head_activation": (
        lambda v: v in HEAD_ACTIVATIONS,
        " or ".join(map(repr, HEAD_ACTIVATIONS)),
    ),
    "model.cosine_scale": _POSITIVE,
    "augment.time_masks": _at_least(0),
    "augment.time_mask_max": _at_least(0),
    "augment.freq_masks": _at_least(0),
    "augment.freq_mask_max": _at_least(0),
    "augment.noise_prob": _PROBABILITY,
    "augment.noise_snr_db": (
        lambda v: len(v) == 2 and v[0] <= v[1],
        "two numbers [low, high] with low <= high",
    ),
    "augment.eq_prob": _PROBABILITY,
    "augment.eq_db": _at_least(0),
    "augment.edge_silence_prob": _PROBABILITY,
    "augment.edge_silence_frames": _at_least(1),
    "augment.mixup_alpha": _at_least(0),
    "train.epochs": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.learning_rate": _POSITIVE,
    "train.weight_decay": _at_least(0),
    # early stopping is checked before each epoch: 0 would stop before the first one
    "train.patience": _at_least(1),
    "train.train_eer_max_utterances": _at_least(1),
    "train.label_smoothing": _FRACTION,
    "train.one_class_margins": (
        lambda v: len(v) == 2 and -1 <= v[1] < v[0] <= 1,
        "two cosines [live, replay] with -1 <= replay < live <= 1",
    ),
    "train.swa_start": _at_least(0),
    "train.keep": (lambda v: v in KEEP_POLICIES, " or ".join(repr(p) for p in KEEP_POLICIES)),
    "train.threads": _at_least(0),
    "train.domain_adversarial": _at_least(0),
    "train.group_dro": _at_least(0),
    "train.distill_weight": _PROBABILITY,
    "train.frame_offsets": _at_least(1),
    "quantize.representative_windows": _at_least(1),
    "quantize.calibration_scores_per_label": _at_least(1),
    "quantize.latency_utterances": _at_least(0),
    "quantize.trim": (
        lambda v: v in TRIM_POLICIES,
        " or ".join(repr(p) for p in TRIM_POLICIES),
    ),
}
"""Allowed range of the numeric settings, checked with the types (file and overrides alike):
a value outside would crash deep in training (``batch_size=0``) or silently do nothing
(``epochs=0``), after the features were computed and half a run folder written."""


def default_config_path() -> Path:
    return Path(str(resources.files("wakeguard.model") / "default_config.toml"))


def _section_from_dict(name: str, d: dict[str, Any]) -> Any:
    cls = SECTIONS[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in [{name}]: {unknown}; known: {sorted(known)}")
    hints = get_type_hints(cls)
    values = {k: _coerce(v, hints[k], f"{name}.{k}") for k, v in d.items()}
    for k, v in values.items():
        check = RANGES.get(f"{name}.{k}")
        if check is not None and not check[0](v):
            raise ConfigError(f"{name}.{k} must be {check[1]}, got {v!r}")
    if name == "frontend":
        try:
            return frontend_from_dict({**FrontendParams().to_dict(), **values})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[frontend]: {exc}") from exc
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"[{name}]: {exc}") from exc


def config_from_dict(d: dict[str, Any], base: Config | None = None) -> Config:
    """Build a config from nested sections; keys not given come from ``base`` (or defaults)."""
    base = base or Config()
    unknown = sorted(set(d) - set(SECTIONS) - RUN_KEYS)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    cfg = base
    for name in SECTIONS:
        if name in d:
            if not isinstance(d[name], dict):
                raise ConfigError(f"section {name!r} must be a table/object")
            merged = {**_section_dict(getattr(base, name)), **d[name]}
            cfg = replace(cfg, **{name: _section_from_dict(name, merged)})
    return cfg


def _section_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if isinstance(obj, FrontendParams) else asdict(obj)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the file (TOML or JSON; a run folder's ``config.json`` works), then overrides."""
    cfg = config_from_dict(_read(default_config_path()), Config())
    if path is not None:
        path = Path(path)
        data = _read(path)
        try:
            cfg = config_from_dict(data, cfg)
        except ConfigError as exc:  # name the file: the key alone does not say where it is
            where = path / "config.json" if path.is_dir() else path
            raise ConfigError(f"{where}: {exc}") from exc
    cfg = apply_overrides(cfg, overrides or [])
    general = [o for o in overrides or [] if not o.strip().startswith("ensemble.")]
    if general and cfg.ensemble.members:  # the command line has the last word in every member
        members = [
            {**m, "overrides": [*m.get("overrides", []), *general]} for m in cfg.ensemble.members
        ]
        cfg = replace(cfg, ensemble=EnsembleConfig(members))
    return cfg


def ensemble_members(cfg: Config) -> list[tuple[str, Config]]:
    """Each member's name and full config (one network each); empty for a single network."""
    single = replace(cfg, ensemble=EnsembleConfig())
    out = []
    for m in cfg.ensemble.members:
        try:
            out.append((m["name"], apply_overrides(single, list(m.get("overrides", [])))))
        except ConfigError as exc:
            raise ConfigError(f"ensemble member {m['name']!r}: {exc}") from exc
    return out


def _read(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text())
        return tomllib.loads(path.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse config ({exc})") from exc


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (later ones win), checked together at the end.

    Checking once lets related keys change together (``frontend.n_fft=512
    frontend.frame_length=512``) without an invalid combination in between.
    """
    changes: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(
                f"override {item!r}: unknown section {section!r}; known: {sorted(SECTIONS)}"
            )
        cls = SECTIONS[section]
        hints = get_type_hints(cls)
        if name not in hints or name not in {f.name for f in fields(cls)}:
            raise ConfigError(f"override {item!r}: [{section}] has no key {name!r}")
        changes.setdefault(section, {})[name] = _parse_value(raw.strip(), hints[name], key)
    return config_from_dict(changes, cfg) if changes else cfg


def _parse_value(raw: str, typ: Any, key: str) -> Any:
    """Parse a command-line value: JSON/TOML literals for lists and numbers, bare words as strings."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return _coerce(value, typ, key)


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        return str(value)
    if origin is list:
        (inner,) = get_args(typ)
        if isinstance(value, str):
            value = [_parse_value(v.strip(), inner, key) for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    return value


def config_to_json(cfg: Config, dataset: str | Path | None = None) -> dict[str, Any]:
    d = cfg.to_dict()
    if dataset is not None:
        d["dataset"] = str(dataset)
    return d


def read_json_file(path: Path, default: Any = ...) -> Any:
    """``path``'s JSON; errors name the file (``json`` alone names neither file nor role).

    With ``default`` given, a missing file returns it instead of raising; without, a missing
    file is a FileNotFoundError naming it.
    """
    if not path.is_file():
        if default is not ...:
            return default
        raise FileNotFoundError(f"{path}: not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (not UTF-8 text)") from exc


def read_json_object(path: Path) -> dict[str, Any]:
    """:func:`read_json_file` for files that hold one JSON object (a config, a manifest)."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not valid JSON here (expected an object)")
    return data
