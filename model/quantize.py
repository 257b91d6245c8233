"""Convert a trained run to TFLite, evaluate every variant through the edge runtime, write the bundle.

Variants: ``float32``, ``float16`` (weights), ``dynamic`` (dynamic-range int8 weights) and
``int8`` (full integer: int8 input and output, ``TFLITE_BUILTINS_INT8`` only, so conversion
fails rather than silently leaving an op in float). Each is scored with
:class:`wakeguard.edge.scorer.TFLiteModel` and the mean-of-window-logits rule of
:class:`wakeguard.edge.scorer.Scorer` on the dev and eval splits.

The int8 model becomes the bundle. Its raw logit is calibrated on dev by logistic
regression (balanced classes, so the score is a log-likelihood ratio and 0 is the
equal-prior Bayes threshold), and the named thresholds (EER, BPCER 1 %, BPCER 5 %) are read
off the calibrated dev scores.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.audio import load_audio
from wakeguard.edge.bundle import Calibration, decision_digest, sha256_bytes, write_bundle
from wakeguard.edge.files import atomic_text, write_bytes_atomic, write_text_atomic
from wakeguard.edge.frontend import compute_features
from wakeguard.edge.litert import ModelInvalid
from wakeguard.edge.protocol import ensure_folder, read_protocol, require_confirmed
from wakeguard.edge.scorer import Scorer, trim_to_policy

from .config import config_from_dict, read_json_file, read_json_object
from .detector import load_keras, save_keras
from .metrics import OPERATING_POINTS, compute_eer, compute_metrics, operating_threshold
from .train import (
    KERAS_MODEL,
    Features,
    dataset_features,
    predict_windows,
    require_varied,
    write_scores,
)

VARIANTS = ("float32", "float16", "dynamic", "int8")

Log = Any


@dataclass
class QuantizeResult:
    run: Path
    bundle: Path
    variants: list[dict[str, Any]]
    calibration: Calibration
    thresholds: dict[str, float]
    metrics: dict[str, Any]

    def variant(self, name: str) -> dict[str, Any]:
        return next(v for v in self.variants if v["variant"] == name)


def convert(model: Any, variant: str, representative: np.ndarray | None = None) -> bytes:
    """One TFLite flatbuffer of a Keras model."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "float32":
        pass
    elif variant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("int8 conversion needs representative windows")

        def rep() -> Any:
            for w in representative:
                yield [w[None].astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    else:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    # The converter prints its SavedModel export ("Saved artifact at ...") on stdout, which
    # would corrupt `quantize --json`; it goes to stderr with TensorFlow's other logs.
    with contextlib.redirect_stdout(sys.stderr):
        return bytes(conv.convert())


def runtime_features(feats: Features, root: Path, frontend: Any, trim: str = "none") -> Features:
    """The same rows with float32 windows computed from the audio by the edge front-end, each
    recording cut first as the bundle's input policy ``trim`` says (as the scorer cuts it)."""
    wins = [
        compute_features(trim_to_policy(load_audio(r.audio_path(root)), trim), frontend)
        for r in feats.rows
    ]
    if not wins:
        return feats
    utt = np.concatenate([np.full(len(w), i, dtype=np.int32) for i, w in enumerate(wins)])
    return Features(feats.rows, np.concatenate(wins), utt)


def tflite_logits(scorer: Scorer, feats: Features) -> np.ndarray:
    """Utterance logits through the runtime's model wrapper (mean of window logits)."""
    win = np.array([scorer.model.logit(w.astype(np.float32)) for w in feats.windows])
    return feats.utterance_logits(win)


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Logistic regression of the label on the raw logit, classes weighted equally.

    The L2 penalty (C=1) keeps the slope finite when dev is perfectly separated, where an
    unpenalised fit would make every score +-infinity.
    """
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
    lr.fit(np.asarray(logits, dtype=np.float64)[:, None], labels)
    scale, offset = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"calibration failed: slope {scale} (does the model separate dev at all?)")
    return Calibration(scale=scale, offset=offset)


def operating_thresholds(bonafide: np.ndarray, spoof: np.ndarray) -> dict[str, float]:
    """Score thresholds of every named operating point (EER, BPCER 1 %, BPCER 5 %) on dev."""
    return {op: round(operating_threshold(bonafide, spoof, op), 6) for op in OPERATING_POINTS}


def split_metrics(feats: Features, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """The shared metrics JSON (EER, APCER/BPCER at the bundle threshold, per condition, CIs)."""
    rows = [{**r.as_dict(), "score": float(s)} for r, s in zip(feats.rows, scores, strict=True)]
    conds = list(dict.fromkeys(c for r in feats.rows for c in r.conditions))
    m = compute_metrics(rows, conds, threshold=threshold, operating_point="eer", n_boot=200)
    return m


def _latency_ms(scorer: Scorer, paths: list[Path]) -> float:
    audios = [load_audio(p) for p in paths]
    if not audios:
        return float("nan")
    scorer.raw_logit(audios[0])  # warm-up
    times = []
    for a in audios:
        t0 = time.perf_counter()
        scorer.raw_logit(a)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def variant_line(entry: dict[str, Any], label: str = "") -> str:
    """One progress line of a variant: size, dev and eval EER, latency."""
    ev = "" if entry["eer_eval"] is None else f"  eval EER {entry['eer_eval']:.2%}"
    return (
        f"  {label}{entry['variant']:8s} {entry['bytes'] / 1024:7.1f} KB  dev EER {entry['eer_dev']:.2%}"
        f"{ev}  {entry['latency_ms']:.1f} ms"
    )


def require_both_labels(proto: Any, dataset: Path) -> None:
    """Dev (and eval, when present) must hold both labels: the EER, the calibration and the
    thresholds are undefined on one class. Checked before anything is converted or written."""
    for split in ("dev", "eval"):
        rows = [r for r in proto.rows if r.split == split]
        if not rows and split == "eval":
            continue
        n_b = sum(r.label == "bonafide" for r in rows)
        n_s = sum(r.label == "spoof" for r in rows)
        if not rows:
            raise ValueError(f"{dataset}: no dev split to calibrate on")
        if not n_b or not n_s:
            raise ValueError(
                f"{dataset}: the {split} split needs both labels to calibrate and score; "
                f"it has {n_b} bonafide and {n_s} spoof rows"
            )


def calibration_data(cfg_json: dict[str, Any], dataset: str | Path | None) -> tuple[Any, Path, Any]:
    """A run's config, and the protocol whose dev split calibrates and eval split reports.

    Dev labels calibrate the scores and set the thresholds, eval labels are the reported
    figures, so both must be confirmed; train rows only supply representative inputs, so
    their labels do not matter here.
    """
    cfg = config_from_dict(cfg_json)
    dataset = Path(dataset or cfg_json["dataset"])
    proto = read_protocol(dataset)
    require_confirmed(
        proto,
        [r for r in proto.rows if r.split in ("dev", "eval")],
        "calibration and evaluation (dev and eval splits)",
    )
    require_both_labels(proto, dataset)
    return cfg, dataset, proto


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def recover_stale_stages(folder: Path, log: Log = None) -> None:
    """Clear the stages of ``folder`` that a killed process left (``NAME.part-*``).

    A stage whose process is gone is removed. One that holds the previous outputs
    (``replaced``: killed between moving the old folder aside and moving the new one in)
    while ``folder`` is missing gives them back first, so nothing is lost. Stages of a
    process that is still running, and stages without a readable ``pid`` file, are left.
    """
    for part in sorted(folder.parent.glob(f"{folder.name}.part-*")):
        try:
            pid = int((part / "pid").read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid):  # this process included
            continue
        old = part / "replaced"
        if old.is_dir() and not folder.exists():
            old.rename(folder)
            message = (
                f"{folder}: restored the previous outputs from {part.name}, left by an "
                f"interrupted run (process {pid})"
            )
            if log:
                log(message)
            else:
                print(message, file=sys.stderr)
        shutil.rmtree(part, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(folder: Path, log: Log = None) -> Iterator[Path]:
    """A new, empty folder to write ``folder``'s contents into; it takes ``folder``'s place
    only when the block succeeds.

    The stage is a uniquely named sibling (``NAME.part-*``, holding the writer's ``pid``);
    on an exception it is removed and a previous ``folder`` stays as it was, so a failed
    quantize never leaves a half-written ``quantize/`` behind. A stage that a killed
    process left is cleared the next time (:func:`recover_stale_stages`).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: a file of that name is in the way of the output folder")
    ensure_folder(folder.parent, "run folder")  # names a file in the way, or no permission
    recover_stale_stages(folder, log)
    # the unique parent keeps concurrent stages apart; the stage inside it is made by mkdir,
    # so the folder that moves into place has the usual permissions, not mkdtemp's 0700
    part = Path(tempfile.mkdtemp(prefix=f"{folder.name}.part-", dir=folder.parent))
    try:
        (part / "pid").write_text(str(os.getpid()))
        stage = part / folder.name
        stage.mkdir()
        yield stage
        old = part / "replaced"
        if folder.exists():
            folder.rename(old)
        try:
            stage.rename(folder)
        except BaseException:
            if old.exists():
                old.rename(folder)
            raise
    finally:
        shutil.rmtree(part, ignore_errors=True)


def quantize(
    run: str | Path, *, dataset: str | Path | None = None, workers: int = 2, log: Log | None = None
) -> QuantizeResult:
    """Write ``RUN/quantize/*.tflite``, ``RUN/quantize/variants.json`` and the int8 bundle ``RUN/bundle``.

    ``RUN/quantize`` is built in a staged folder and replaces the previous one only when
    everything succeeded, so a failure leaves the previous outputs as they were.
    """
    log = log or (lambda s: None)
    run = Path(run)
    cfg_file, model_file = run / "config.json", run / KERAS_MODEL
    for f in (cfg_file, model_file):
        if not f.is_file():
            raise FileNotFoundError(f"{run}: not a training run folder (no {f.name})")
    cfg_json = read_json_object(cfg_file)
    # every JSON input is read here, before anything is converted or written, so a corrupt
    # one fails in seconds and names its file
    fingerprint = read_json_file(run / "data_fingerprint.json", {})
    summary = read_json_file(run / "train_summary.json", {})
    cfg, dataset, proto = calibration_data(cfg_json, dataset)
    model = load_keras(model_file)  # before the slow feature extraction

    feats = dataset_features(proto, cfg.frontend, workers=workers)
    tr = feats.split("train")
    # dev and eval go through the runtime's own front-end in float32 (the training cache
    # holds float16), so the scores below are exactly what a Pi computes from the audio
    dev, ev = (
        runtime_features(feats.split(s), proto.root, cfg.frontend, cfg.quantize.trim)
        for s in ("dev", "eval")
    )
    if not dev.rows:
        raise ValueError(f"{dataset}: no dev split to calibrate on")
    rng = np.random.default_rng(cfg.train.seed)
    n_rep = min(cfg.quantize.representative_windows, len(tr.windows))
    representative = tr.windows[np.sort(rng.choice(len(tr.windows), n_rep, replace=False))]

    with staged_folder(run / "quantize", log) as qdir:
        keras_windows = predict_windows(model, dev.windows)
        require_varied(
            keras_windows,
            f"{model_file}: the network",
            "It collapsed in training: train it again with another train.seed or a lower"
            " train.learning_rate.",
        )
        keras_dev = dev.utterance_logits(keras_windows)
        lat_paths = [r.audio_path(proto.root) for r in dev.rows[: cfg.quantize.latency_utterances]]
        variants: list[dict[str, Any]] = []
        logits: dict[str, dict[str, np.ndarray]] = {}
        for name in VARIANTS:
            log(f"converting {name}")
            data = convert(model, name, representative if name == "int8" else None)
            write_bytes_atomic(qdir / f"{name}.tflite", data)
            try:
                scorer = Scorer(data, cfg.frontend, num_threads=1)
            except ModelInvalid as exc:
                raise ModelInvalid(
                    f"{model_file}: the {name} conversion is refused by the runtime ({exc})"
                ) from exc
            logits[name] = {"dev": tflite_logits(scorer, dev)}
            if ev.rows:
                logits[name]["eval"] = tflite_logits(scorer, ev)
            entry: dict[str, Any] = {
                "variant": name,
                "bytes": len(data),
                "eer_dev": _eer(dev, logits[name]["dev"]),
                "eer_eval": _eer(ev, logits[name]["eval"]) if ev.rows else None,
                "latency_ms": round(_latency_ms(scorer, lat_paths), 3),
                "max_abs_logit_diff_vs_keras_dev": round(
                    float(np.max(np.abs(logits[name]["dev"] - keras_dev))), 5
                ),
            }
            variants.append(entry)
            log(variant_line(entry))
        write_text_atomic(qdir / "variants.json", json.dumps(variants, indent=2) + "\n")

        write_logits(qdir / LOGITS_FILE, {"dev": dev, "eval": ev}, logits)

        int8 = (qdir / "int8.tflite").read_bytes()
        cal = calibrate(dev, ev, logits["int8"]["dev"], logits["int8"].get("eval"), qdir, rng, cfg)
        calibration, thresholds, metrics, cal_scores = cal
        bundle_dir = run / "bundle"
        # staged too: a bundle is replaced whole or not at all (a full disk between the model
        # and its manifest would otherwise leave one whose checksum does not match)
        with staged_folder(bundle_dir, log) as staged_bundle:
            write_bundle(
                staged_bundle,
                int8,
                cfg.frontend,
                thresholds=thresholds,
                calibration=calibration,
                trim=cfg.quantize.trim,
                extra=manifest_extra(
                    fingerprint,
                    sha256_bytes(int8),
                    decision_digest(calibration, thresholds, cfg.quantize.trim),
                    metrics=metrics,
                    variants=variants,
                    calibration_scores=cal_scores,
                    training={
                        "summary": summary,
                        "config": {k: v for k, v in cfg_json.items() if k != "dataset"},
                        "dataset": portable_path(cfg_json.get("dataset")),
                        "keras_model": KERAS_MODEL,
                    },
                ),
            )
            # the float weights (no optimizer state) let `train --init-from BUNDLE` fine-tune
            save_keras(model, staged_bundle / KERAS_MODEL)
    return QuantizeResult(run, bundle_dir, variants, calibration, thresholds, metrics)


def portable_path(path: str | None) -> str | None:
    """``path`` relative to the working directory when it lies under it, so a shipped
    manifest does not carry the builder's home or checkout folder; otherwise as given."""
    if not path:
        return path
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path


def manifest_extra(
    fingerprint: dict[str, Any], model_sha256: str, decision_sha256: str, **fields: Any
) -> dict[str, Any]:
    """Version, creation time and the measured fields every bundle manifest records.

    The version reads ``DATE-DATA-MODEL-DECISION``: the day, then the first 8 hex digits of
    the data fingerprint, of the model's sha256 (for an ensemble, of its members' models
    joined) and of :func:`~wakeguard.edge.bundle.decision_digest` (calibration, thresholds,
    input policy). The same network recalibrated is a new version, so a decision log or a
    monitor reference never mixes two ways of deciding under one name.
    """
    created = datetime.now(UTC).replace(microsecond=0)
    version = (
        f"{created:%Y%m%d}-{fingerprint.get('sha256', 'nodata')[:8]}-{model_sha256[:8]}"
        f"-{decision_sha256[:8]}"
    )
    return {
        "version": version,
        "created": created.isoformat().replace("+00:00", "Z"),
        "metrics": fields.pop("metrics"),
        "variants": fields.pop("variants"),
        "data_fingerprint": fingerprint,
        "calibration_scores": fields.pop("calibration_scores"),
        **fields,
    }


def calibrate(
    dev: Features,
    ev: Features,
    dev_logits: np.ndarray,
    eval_logits: np.ndarray | None,
    qdir: Path,
    rng: np.random.Generator,
    cfg: Any,
) -> tuple[Calibration, dict[str, float], dict[str, Any], dict[str, list[float]]]:
    """Calibration, named thresholds and metrics of a bundle's raw utterance logits.

    Writes ``int8_dev_scores.csv`` (and ``int8_eval_scores.csv``) to ``qdir``; returns the
    dev scores kept in the manifest for drift monitoring too.
    """
    calibration = fit_calibration(dev_logits, dev.labels)
    dev_scores = np.array([calibration.apply(v) for v in dev_logits])
    yd = dev.labels
    thresholds = operating_thresholds(dev_scores[yd == 1], dev_scores[yd == 0])
    metrics = {"dev": split_metrics(dev, dev_scores, thresholds["eer"])}
    write_scores(qdir / "int8_dev_scores.csv", dev.rows, dev_scores)
    if ev.rows and eval_logits is not None:
        ev_scores = np.array([calibration.apply(v) for v in eval_logits])
        if len(set(ev.labels.tolist())) == 2:
            metrics["eval"] = split_metrics(ev, ev_scores, thresholds["eer"])
        write_scores(qdir / "int8_eval_scores.csv", ev.rows, ev_scores)
    n_cal = cfg.quantize.calibration_scores_per_label
    cal_scores = {}
    for label, y in (("bonafide", 1), ("spoof", 0)):
        s = dev_scores[yd == y]
        pick = np.sort(rng.choice(s.size, min(n_cal, s.size), replace=False))
        cal_scores[label] = [round(float(v), 4) for v in s[pick]]
    return calibration, thresholds, metrics, cal_scores


LOGITS_FILE = "utterance_logits.csv"
"""Raw utterance logits of every variant on dev and eval (what an ensemble fuses)."""


def write_logits(
    path: Path, splits: dict[str, Features], logits: dict[str, dict[str, np.ndarray]]
) -> Path:
    """One line per dev/eval utterance: path, split, label, then each variant's raw logit."""
    import csv

    names = list(logits)
    with atomic_text(path) as f:
        w = csv.writer(f)
        w.writerow(["path", "split", "label", *names])
        for split, feats in splits.items():
            for i, r in enumerate(feats.rows):
                vals = [repr(float(logits[n][split][i])) for n in names]
                w.writerow([r.path, split, r.label, *vals])
    return path


def read_logits(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{variant: {split: {utterance path: raw logit}}}`` from :func:`write_logits`."""
    import csv

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no utterance logits (quantize the run again)")
    out: dict[str, dict[str, dict[str, float]]] = {}
    with path.open(newline="") as f:
        for rec in csv.DictReader(f):
            for name, v in rec.items():
                if name not in ("path", "split", "label"):
                    out.setdefault(name, {}).setdefault(rec["split"], {})[rec["path"]] = float(v)
    return out


def _eer(feats: Features, logits: np.ndarray) -> float:
    y = feats.labels
    return round(compute_eer(logits[y == 1], logits[y == 0])[0], 6)
