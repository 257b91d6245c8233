"""Model bundles: a ``.tflite`` plus a JSON manifest, validated before anything runs.

A bundle is a folder holding ``manifest.json`` and the model file it names. The manifest
records the front-end parameters, the input length policy, the score calibration, the
named operating thresholds, the metrics measured at export, the data fingerprint and the
version. :func:`load_bundle` refuses a bundle that is corrupt (checksum), from a newer
format, or whose front-end this runtime cannot reproduce, with the reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .frontend import FrontendParams, frontend_from_dict, frontend_shape

BUNDLE_FORMAT = "wakeguard-bundle"
FORMAT_VERSION = 1
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


@dataclass(frozen=True)
class Bundle:
    """A validated model bundle."""

    path: Path
    manifest: dict[str, Any]
    frontend: FrontendParams
    calibration: Calibration
    thresholds: dict[str, float]
    model_bytes: bytes = field(repr=False)

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
            raise BundleError(self.path, f"no operating point {key!r}; has {sorted(self.thresholds)}")
        return self.thresholds[key]

    @property
    def min_seconds(self) -> float:
        return float(self.manifest.get("input_policy", {}).get("min_seconds", 0.3))

    @property
    def calibration_scores(self) -> dict[str, list[float]]:
        """Reference dev scores per label (for drift monitoring), possibly empty."""
        return dict(self.manifest.get("calibration_scores", {}))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_bundle_path() -> Path:
    """The bundle shipped inside the package, built by ``wakeguard pipeline``."""
    return Path(str(resources.files("wakeguard.edge.assets") / "default"))


def load_bundle(path: str | Path | None = None) -> Bundle:
    """Load and validate a bundle folder (or its ``manifest.json``); default: the shipped one."""
    path = default_bundle_path() if path is None else Path(path)
    folder = path.parent if path.name == MANIFEST else path
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
    for key in ("model_file", "model_sha256", "frontend", "thresholds", "sample_rate"):
        if key not in manifest:
            raise BundleError(folder, f"{MANIFEST} lacks {key!r}")
    model_path = folder / manifest["model_file"]
    try:
        model_bytes = model_path.read_bytes()
    except OSError as exc:
        raise BundleError(folder, f"cannot read model file {model_path.name} ({exc})") from exc
    if sha256_bytes(model_bytes) != manifest["model_sha256"]:
        raise BundleError(folder, f"{model_path.name} is corrupt: sha256 does not match the manifest")
    try:
        frontend = frontend_from_dict(manifest["frontend"])
    except (TypeError, ValueError) as exc:
        raise BundleError(folder, f"front-end parameters cannot be reproduced: {exc}") from exc
    if int(manifest["sample_rate"]) != frontend.sample_rate:
        raise BundleError(folder, "sample_rate disagrees with the front-end parameters")
    expected = manifest.get("input_shape")
    if expected is not None and list(expected) != list(frontend_shape(frontend).input_shape):
        raise BundleError(
            folder,
            f"model input {expected} does not match the front-end's {list(frontend_shape(frontend).input_shape)}",
        )
    thresholds = manifest["thresholds"]
    if not isinstance(thresholds, dict) or not thresholds:
        raise BundleError(folder, "thresholds must be a non-empty mapping")
    cal = manifest.get("calibration", {})
    return Bundle(
        path=folder,
        manifest=manifest,
        frontend=frontend,
        calibration=Calibration(float(cal.get("scale", 1.0)), float(cal.get("offset", 0.0))),
        thresholds={str(k): float(v) for k, v in thresholds.items()},
        model_bytes=model_bytes,
    )


def write_bundle(
    folder: str | Path,
    model_bytes: bytes,
    frontend: FrontendParams,
    *,
    thresholds: dict[str, float],
    calibration: Calibration = Calibration(),
    model_file: str = "model.tflite",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle folder; the manifest's checksum and input shape are computed here."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "model_file": model_file,
        "model_sha256": sha256_bytes(model_bytes),
        "model_bytes": len(model_bytes),
        "sample_rate": frontend.sample_rate,
        "frontend": frontend.to_dict(),
        "input_shape": list(frontend_shape(frontend).input_shape),
        "input_policy": {
            "window_seconds": frontend.window_seconds,
            "window_hop_seconds": frontend.window_hop_seconds,
            "window_slack_seconds": frontend.window_slack_seconds,
            "short_audio": "repeat-pad",
            "aggregate": "mean of window logits",
            "min_seconds": 0.3,
        },
        "calibration": {"scale": calibration.scale, "offset": calibration.offset},
        "thresholds": thresholds,
        "default_operating_point": "eer",
        "score_convention": "higher = more likely bona fide (live)",
    }
    manifest.update(extra or {})
    (folder / model_file).write_bytes(model_bytes)
    tmp = folder / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(folder / MANIFEST)
    return folder
