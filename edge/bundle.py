"""Model bundles: a ``.tflite`` plus a JSON manifest, validated before anything runs.

A bundle is a folder holding ``manifest.json`` and the model file it names. The manifest
records the front-end parameters, the input length policy, the score calibration, the
named operating thresholds, the metrics measured at export, the data fingerprint and the
version. :func:`load_bundle` refuses a bundle that is corrupt (checksum), from a newer
format, or whose front-end this runtime cannot reproduce, with the reason.

An ensemble bundle (format version 2) holds several networks, each with its own front-end.
Every member is a complete single-network bundle in a subfolder (so ``screen --model
BUNDLE/MEMBER`` and ``train --init-from BUNDLE/MEMBER`` work on one member alone); the top
manifest lists the members with their model checksums, and its calibration and thresholds
apply to the fused score: the mean of the members' calibrated scores (linear score fusion,
as in ASVspoof system fusions), calibrated again on dev.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .audio import MIN_SCORE_SECONDS
from .files import atomic_path, write_bytes_atomic, write_text_atomic
from .frontend import FrontendParams, frontend_from_dict, frontend_shape
from .protocol import is_finite_number

BUNDLE_FORMAT = "wakeguard-bundle"
FORMAT_VERSION = 3
SINGLE_FORMAT_VERSION = 1
"""Single-network bundles that score whole files are still written as version 1, which
older runtimes read."""
ENSEMBLE_FORMAT_VERSION = 2
"""Ensembles that score whole files are written as version 2."""
TRIM_FORMAT_VERSION = 3
"""Bundles calibrated on trimmed recordings (``input_policy.trim`` other than ``none``) are
written as version 3: a runtime of format 2 or older cannot trim, and would score whole
files against a calibration fitted on cut ones, so it refuses them instead."""

TRIM_POLICIES = ("none", "speech")
"""How a recording is cut before scoring (``input_policy.trim``): ``none``, whole; ``speech``,
to the span the live listener's endpointer finds (the calibration is fitted the same way)."""

MANIFEST = "manifest.json"
OPERATING_POINTS = ("eer", "bpcer_1pct", "bpcer_5pct")
"""Named thresholds every bundle carries: equal error rate, BPCER 1 %, BPCER 5 %."""


class BundleError(ValueError):
    """A bundle that cannot be used, with the path and the reason."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"model bundle {path}: {problem}")


@dataclass(frozen=True)
class Calibration:
    """Affine map from the network's raw logit to the score: ``score = scale * logit + offset``.

    Fitted by logistic regression on dev scores, so a score is a log-likelihood ratio
    (natural log) of bona fide vs spoof and 0 is the equal-prior Bayes threshold.
    """

    scale: float = 1.0
    offset: float = 0.0

    def apply(self, logit: float) -> float:
        return self.scale * logit + self.offset


IDENTITY = Calibration()


@dataclass(frozen=True)
class BundleMember:
    """One network of a bundle: its model, its front-end and the calibration of its own logit.

    In a single-network bundle the member's calibration is the identity and the bundle's
    calibration maps the logit; in an ensemble each member carries the calibration fitted
    when it was quantised alone, so members' scores are on one scale before they are averaged.
    """

    name: str
    frontend: FrontendParams
    calibration: Calibration
    model_bytes: bytes = field(repr=False)


@dataclass(frozen=True)
class Bundle:
    """A validated model bundle: one member, or an ensemble of several."""

    path: Path
    manifest: dict[str, Any]
    members: tuple[BundleMember, ...]
    calibration: Calibration
    thresholds: dict[str, float]

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    @property
    def frontend(self) -> FrontendParams:
        """The first member's front-end; every member shares its sample rate and window policy."""
        return self.members[0].frontend

    @property
    def model_bytes(self) -> bytes:
        """The model of a single-network bundle (an ensemble has one per member)."""
        if self.is_ensemble:
            raise BundleError(
                self.path, f"an ensemble of {len(self.members)} networks has no single model file"
            )
        return self.members[0].model_bytes

    @property
    def total_model_bytes(self) -> int:
        """Size of every member's model together (what the device stores and loads)."""
        return sum(len(m.model_bytes) for m in self.members)

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "unknown"))

    @property
    def default_operating_point(self) -> str:
        return str(self.manifest.get("default_operating_point", "eer"))

    def threshold(self, name: str | None = None) -> float:
        """Score threshold of a named operating point (default: the manifest's default)."""
        key = name or self.default_operating_point
        if key not in self.thresholds:
            raise BundleError(
                self.path, f"no operating point {key!r}; has {sorted(self.thresholds)}"
            )
        return self.thresholds[key]

    @property
    def trim(self) -> str:
        """``speech``: a recording is scored over :func:`~wakeguard.edge.endpoint.speech_span`,
        the span the live listener would hand over; ``none`` (bundles before it): whole."""
        return str(self.manifest.get("input_policy", {}).get("trim", "none"))

    @property
    def min_seconds(self) -> float:
        return float(self.manifest.get("input_policy", {}).get("min_seconds", MIN_SCORE_SECONDS))

    @property
    def calibration_scores(self) -> dict[str, list[float]]:
        """Reference dev scores per label (for drift monitoring), possibly empty."""
        return dict(self.manifest.get("calibration_scores", {}))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_bundle_path() -> Path:
    """The bundle shipped inside the package, built by ``wakeguard pipeline``."""
    return Path(str(resources.files("wakeguard.edge.assets") / "default"))


def _read_manifest(folder: Path) -> dict[str, Any]:
    mpath = folder / MANIFEST
    if not folder.exists():
        raise BundleError(folder, "not found")
    if not mpath.is_file():
        raise BundleError(folder, f"no {MANIFEST} (is this a bundle folder?)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(folder, f"{MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(folder, f"{MANIFEST} is not a {BUNDLE_FORMAT} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            folder, f"format_version {version!r} is newer than this runtime ({FORMAT_VERSION})"
        )
    return manifest


def _shown(value: Any) -> str:
    """A manifest value as the file holds it (JSON), shortened."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(folder: Path, key: str, value: Any, *, minimum: float | None = None) -> float:
    """``value`` as a float, or a BundleError naming the manifest field ``key``."""
    if not is_finite_number(value) or (minimum is not None and value < minimum):
        at_least = "" if minimum is None else f" >= {minimum:g}"
        raise BundleError(
            folder, f"{MANIFEST}: {key} must be a number{at_least}, got {_shown(value)}"
        )
    return float(value)


def _integer(folder: Path, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleError(folder, f"{MANIFEST}: {key} must be a whole number, got {_shown(value)}")
    return value


def _mapping(folder: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(folder, f"{MANIFEST}: {key} must be a mapping, got {_shown(value)}")
    return value


def _thresholds(folder: Path, manifest: dict[str, Any]) -> dict[str, float]:
    thresholds = manifest["thresholds"]
    if not isinstance(thresholds, dict) or not thresholds:
        raise BundleError(
            folder, f"{MANIFEST}: thresholds must be a non-empty mapping, got {_shown(thresholds)}"
        )
    return {str(k): _number(folder, f"thresholds.{k}", v) for k, v in thresholds.items()}


def _calibration(folder: Path, manifest: dict[str, Any]) -> Calibration:
    cal = _mapping(folder, "calibration", manifest.get("calibration", {}))
    return Calibration(
        _number(folder, "calibration.scale", cal.get("scale", 1.0)),
        _number(folder, "calibration.offset", cal.get("offset", 0.0)),
    )


def _check_policy(folder: Path, manifest: dict[str, Any]) -> None:
    """The optional fields read after loading (input policy, reference scores) have usable types."""
    policy = _mapping(folder, "input_policy", manifest.get("input_policy", {}))
    if "min_seconds" in policy:
        _number(folder, "input_policy.min_seconds", policy["min_seconds"], minimum=0.0)
    if policy.get("trim", "none") not in TRIM_POLICIES:
        raise BundleError(
            folder,
            f"{MANIFEST}: input_policy.trim {policy['trim']!r} is not one of {list(TRIM_POLICIES)}",
        )
    scores = _mapping(folder, "calibration_scores", manifest.get("calibration_scores", {}))
    for label, values in scores.items():
        if not isinstance(values, list) or not all(is_finite_number(v) for v in values):
            raise BundleError(
                folder, f"{MANIFEST}: calibration_scores.{label} must be a list of numbers"
            )


_FRONTEND_TYPES = {f.name: type(getattr(FrontendParams(), f.name)) for f in fields(FrontendParams)}


def _frontend(folder: Path, value: Any) -> FrontendParams:
    """Front-end parameters from the manifest, each field of the type the runtime computes with."""
    d = _mapping(folder, "frontend", value)
    for key, v in d.items():
        want = _FRONTEND_TYPES.get(key)  # unknown keys: frontend_from_dict names them
        if want is float:
            _number(folder, f"frontend.{key}", v)
        elif want is int:
            _integer(folder, f"frontend.{key}", v)
        elif want is not None and not isinstance(v, want):
            raise BundleError(
                folder, f"{MANIFEST}: frontend.{key} must be a {want.__name__}, got {_shown(v)}"
            )
    try:
        return frontend_from_dict(d)
    except (TypeError, ValueError) as exc:
        raise BundleError(folder, f"front-end parameters cannot be reproduced: {exc}") from exc


def _load_single(folder: Path, manifest: dict[str, Any]) -> Bundle:
    for key in ("model_file", "model_sha256", "frontend", "thresholds", "sample_rate"):
        if key not in manifest:
            raise BundleError(folder, f"{MANIFEST} lacks {key!r}")
    name = manifest["model_file"]
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise BundleError(
            folder, f"{MANIFEST}: model_file must be a file name in the bundle, got {_shown(name)}"
        )
    model_path = folder / name
    try:
        model_bytes = model_path.read_bytes()
    except OSError as exc:
        raise BundleError(folder, f"cannot read model file {model_path.name} ({exc})") from exc
    if sha256_bytes(model_bytes) != manifest["model_sha256"]:
        raise BundleError(
            folder, f"{model_path.name} is corrupt: sha256 does not match the manifest"
        )
    frontend = _frontend(folder, manifest["frontend"])
    if _integer(folder, "sample_rate", manifest["sample_rate"]) != frontend.sample_rate:
        raise BundleError(folder, "sample_rate disagrees with the front-end parameters")
    expected = manifest.get("input_shape")
    if expected is not None and not isinstance(expected, list):
        raise BundleError(folder, f"{MANIFEST}: input_shape must be a list, got {_shown(expected)}")
    if expected is not None and expected != list(frontend_shape(frontend).input_shape):
        raise BundleError(
            folder,
            f"model input {expected} does not match the front-end's {list(frontend_shape(frontend).input_shape)}",
        )
    member = BundleMember(str(manifest.get("name", "model")), frontend, IDENTITY, model_bytes)
    _check_policy(folder, manifest)
    return Bundle(
        folder, manifest, (member,), _calibration(folder, manifest), _thresholds(folder, manifest)
    )


WINDOW_POLICY = ("sample_rate", "window_seconds", "window_hop_seconds", "window_slack_seconds")
"""Front-end fields every member of an ensemble shares: one utterance, one set of windows."""


def _load_ensemble(folder: Path, manifest: dict[str, Any]) -> Bundle:
    for key in ("members", "thresholds", "sample_rate"):
        if key not in manifest:
            raise BundleError(folder, f"{MANIFEST} lacks {key!r}")
    listed = manifest["members"]
    if not isinstance(listed, list) or not listed:
        raise BundleError(folder, "members must be a non-empty list")
    members = []
    for i, entry in enumerate(listed):
        if not isinstance(entry, dict) or not {"name", "path", "model_sha256"} <= set(entry):
            raise BundleError(folder, f"member {i} needs name, path and model_sha256")
        sub = folder / str(entry["path"])
        if sub.resolve().parent != folder.resolve():
            raise BundleError(
                folder, f"member {entry['name']!r}: path {entry['path']!r} is not a subfolder"
            )
        try:
            part = _load_single(sub, _read_manifest(sub))
        except BundleError as exc:
            raise BundleError(folder, f"member {entry['name']!r}: {exc}") from exc
        if part.manifest.get("model_sha256") != entry["model_sha256"]:
            raise BundleError(
                folder,
                f"member {entry['name']!r}: its model is not the one this ensemble was built with",
            )
        only = part.members[0]
        members.append(
            BundleMember(str(entry["name"]), only.frontend, part.calibration, only.model_bytes)
        )
    first = members[0].frontend
    for m in members[1:]:
        for key in WINDOW_POLICY:
            if getattr(m.frontend, key) != getattr(first, key):
                raise BundleError(
                    folder,
                    f"member {m.name!r} has {key} {getattr(m.frontend, key)}, "
                    f"member {members[0].name!r} {getattr(first, key)}: members must share it",
                )
    if _integer(folder, "sample_rate", manifest["sample_rate"]) != first.sample_rate:
        raise BundleError(folder, "sample_rate disagrees with the members' front-ends")
    _check_policy(folder, manifest)
    return Bundle(
        folder,
        manifest,
        tuple(members),
        _calibration(folder, manifest),
        _thresholds(folder, manifest),
    )


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load and validate a bundle folder (or its ``manifest.json``); default: the shipped one."""
    path = default_bundle_path() if path is None else Path(path)
    folder = path.parent if path.name == MANIFEST else path
    manifest = _read_manifest(folder)
    if "members" in manifest:
        return _load_ensemble(folder, manifest)
    return _load_single(folder, manifest)


def _input_policy(frontend: FrontendParams, trim: str = "none") -> dict[str, Any]:
    if trim not in TRIM_POLICIES:
        raise ValueError(f"trim {trim!r} is not one of {list(TRIM_POLICIES)}")
    return {
        "trim": trim,
        "window_seconds": frontend.window_seconds,
        "window_hop_seconds": frontend.window_hop_seconds,
        "window_slack_seconds": frontend.window_slack_seconds,
        "short_audio": "repeat-pad",
        "aggregate": "mean of window logits",
        "min_seconds": MIN_SCORE_SECONDS,
    }


def _decision_fields(calibration: Calibration, thresholds: dict[str, float]) -> dict[str, Any]:
    """How a bundle turns its logit into a verdict: calibration, thresholds, convention."""
    return {
        "calibration": {"scale": calibration.scale, "offset": calibration.offset},
        "thresholds": thresholds,
        "default_operating_point": "eer",
        "score_convention": "higher = more likely bona fide (live)",
    }


def decision_digest(calibration: Calibration, thresholds: dict[str, float], trim: str) -> str:
    """sha256 of how a bundle turns audio's logit into a verdict: calibration, thresholds and
    input policy. Part of the bundle's version, so a recalibrated bundle is a new version."""
    fields = {**_decision_fields(calibration, thresholds), "trim": trim}
    return sha256_bytes(json.dumps(fields, sort_keys=True).encode())


def _format_version(trim: str, plain: int) -> int:
    return plain if trim == "none" else TRIM_FORMAT_VERSION


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def write_bundle(
    folder: str | Path,
    model_bytes: bytes,
    frontend: FrontendParams,
    *,
    thresholds: dict[str, float],
    calibration: Calibration = Calibration(),
    model_file: str = "model.tflite",
    trim: str = "none",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle folder; the manifest's checksum and input shape are computed here.
    ``trim``: the input policy the calibration was fitted under (see :attr:`Bundle.trim`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": _format_version(trim, SINGLE_FORMAT_VERSION),
        "model_file": model_file,
        "model_sha256": sha256_bytes(model_bytes),
        "model_bytes": len(model_bytes),
        "sample_rate": frontend.sample_rate,
        "frontend": frontend.to_dict(),
        "input_shape": list(frontend_shape(frontend).input_shape),
        "input_policy": _input_policy(frontend, trim),
        **_decision_fields(calibration, thresholds),
    }
    manifest.update(extra or {})
    write_bytes_atomic(folder / model_file, model_bytes)
    _write_manifest(folder, manifest)
    return folder


def write_ensemble_bundle(
    folder: str | Path,
    members: list[tuple[str, Bundle]],
    *,
    thresholds: dict[str, float],
    calibration: Calibration,
    extra: dict[str, Any] | None = None,
    copy_extra: tuple[str, ...] = (),
) -> Path:
    """Write an ensemble bundle: each ``(name, single-network bundle)`` is copied to ``folder/name``.

    ``copy_extra`` names further files of each member folder to copy when present (the
    Keras weights that ``train --init-from`` fine-tunes).
    """
    folder = Path(folder)
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0][1].frontend
    trim = members[0][1].trim
    for name, b in members:
        if b.trim != trim:
            raise BundleError(
                b.path, f"member {name!r}: input_policy.trim {b.trim!r} differs from {trim!r}"
            )
        for key in WINDOW_POLICY:
            if getattr(b.frontend, key) != getattr(first, key):
                raise BundleError(
                    b.path,
                    f"member {name!r}: {key} differs from the first member's; members must share it",
                )
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, b in members:
        if b.is_ensemble:
            raise BundleError(b.path, "an ensemble cannot be a member of another ensemble")
        if not name or "/" in name or name.startswith(".") or name == MANIFEST:
            raise ValueError(f"member name {name!r} cannot be a folder name")
        sub = folder / name
        sub.mkdir(exist_ok=True)
        files = [b.manifest["model_file"], *[f for f in copy_extra if (b.path / f).is_file()]]
        for f in [*files, MANIFEST]:  # manifest last: a half-copied member fails its checksum
            with atomic_path(sub / f) as tmp:
                shutil.copyfile(b.path / f, tmp)
        entries.append({"name": name, "path": name, "model_sha256": b.manifest["model_sha256"]})
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": _format_version(trim, ENSEMBLE_FORMAT_VERSION),
        "members": entries,
        "fusion": "mean of the members' calibrated scores, then the calibration below",
        "model_bytes": sum(b.total_model_bytes for _, b in members),
        "sample_rate": first.sample_rate,
        "input_policy": _input_policy(first, trim),
        **_decision_fields(calibration, thresholds),
    }
    manifest.update(extra or {})
    _write_manifest(folder, manifest)
    load_bundle(folder)  # read back as a Pi would
    return folder
