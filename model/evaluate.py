"""Evaluate a model bundle on a protocol through the shipped path: front-end + TFLite + calibration.

:func:`score_protocol` scores every row of a protocol with a
:class:`wakeguard.edge.scorer.Scorer` (the code that runs on the Pi) and returns the score
rows; :func:`evaluate` also writes the score CSV and the metrics JSON. Quantisation
evaluates its TFLite variants through :func:`score_protocol` too, so every number in a run
comes from one code path.

:func:`scores_from_files` takes the scores from existing score files instead (another
system's, or several runs' averaged: a score-level ensemble), through the same metrics.

Rows that cannot be scored (unreadable, too short, silent audio) are never dropped
silently: each is kept with its file and reason, counted in the metrics, written to
``unscored.csv`` and, with ``strict=True``, turned into an error.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.audio import AudioError, load_audio
from wakeguard.edge.bundle import load_bundle
from wakeguard.edge.files import atomic_text
from wakeguard.edge.protocol import (
    SPLITS,
    Protocol,
    Row,
    ensure_folder,
    read_protocol,
    require_confirmed,
)
from wakeguard.edge.scorer import Scorer

from .metrics import (
    DEFAULT_N_BOOT,
    compute_metrics,
    read_scores,
    write_metrics,
    write_scores,
)

SCORES_FILE = "scores.csv"
METRICS_FILE = "metrics.json"
UNSCORED_FILE = "unscored.csv"
ALL_SPLITS = "all"


class EvaluationError(ValueError):
    """An evaluation that cannot produce honest metrics (rows unscored in strict mode, one class missing)."""


@dataclass(frozen=True)
class Unscored:
    """A protocol row that could not be scored, and why."""

    path: str
    label: str
    reason: str


@dataclass
class ScoreRun:
    """Scores of one protocol (or split of it) from one scorer."""

    rows: list[dict[str, Any]]
    """Protocol fields and conditions of each scored row, plus ``score`` (float)."""
    condition_columns: list[str]
    unscored: list[Unscored] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    """Front-end + inference time of each scored row."""
    threshold: float = 0.0
    split: str | None = None
    n_rows: int = 0

    def latency_summary(self) -> dict[str, float] | None:
        if not self.latency_ms:
            return None
        lat = np.asarray(self.latency_ms)
        return {
            "mean": float(lat.mean()),
            "median": float(np.median(lat)),
            "p95": float(np.quantile(lat, 0.95)),
            "max": float(lat.max()),
        }


def check_split(split: str | None) -> None:
    """Refuse a split name that no protocol can have (before any model is loaded)."""
    if split is not None and split not in (*SPLITS, ALL_SPLITS):
        raise EvaluationError(f"split {split!r} is not one of {', '.join((*SPLITS, ALL_SPLITS))}")


def resolve_split(protocol: Protocol, split: str | None) -> str | None:
    """``None`` means ``eval`` when the protocol has an eval split, else every row; ``"all"`` means every row."""
    check_split(split)
    if split == ALL_SPLITS:
        return None
    if split is None:
        return "eval" if "eval" in protocol.splits() else None
    if split not in protocol.splits():
        raise EvaluationError(
            f"{protocol.file or protocol.root}: protocol has no rows in split {split!r} "
            f"(has {protocol.splits() or 'no splits'})"
        )
    return split


def _progress():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def score_rows(
    rows: Sequence[Row],
    root: Path,
    scorer: Scorer,
    *,
    progress: bool = False,
    description: str = "scoring",
) -> tuple[list[dict[str, Any]], list[Unscored], list[float]]:
    """Score protocol rows with ``scorer``; unusable audio becomes an :class:`Unscored` entry."""
    scored: list[dict[str, Any]] = []
    unscored: list[Unscored] = []
    latency: list[float] = []
    bar = _progress() if progress else None
    task = bar.add_task(description, total=len(rows)) if bar else None
    if bar:
        bar.start()
    try:
        for row in rows:
            path = row.audio_path(root)
            try:
                audio = load_audio(path)
                result = scorer.score(audio, path=path)
            except AudioError as exc:
                unscored.append(Unscored(row.path, row.label, exc.problem))
            else:
                scored.append({**row.as_dict(), "score": float(result.score)})
                latency.append(float(result.latency_ms))
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    return scored, unscored, latency


def score_protocol(
    protocol: Path | Protocol,
    *,
    scorer: Scorer | None = None,
    bundle: Path | None = None,
    split: str | None = None,
    operating_point: str | None = None,
    threads: int = 1,
    progress: bool = False,
) -> ScoreRun:
    """Score every row of ``protocol`` (one split of it, see :func:`resolve_split`).

    Pass a ready ``scorer`` (e.g. ``Scorer(variant_bytes, frontend, calibration=...)`` for a
    quantisation variant) or a ``bundle`` folder (default: the shipped bundle).

    Rows with an unconfirmed ``label_confirmed`` are refused, as in training: their labels
    are a model's verdicts, and scoring a model against them measures agreement with a
    model, not errors (see :func:`wakeguard.edge.protocol.require_confirmed`).
    """
    proto = protocol if isinstance(protocol, Protocol) else read_protocol(protocol)
    use_split = resolve_split(proto, split)
    rows = proto.where(split=use_split)
    require_confirmed(proto, rows, f"evaluation ({use_split or 'all'} rows)")
    if scorer is None:
        scorer = Scorer.from_bundle(bundle, operating_point=operating_point, num_threads=threads)
    scored, unscored, latency = score_rows(
        rows,
        proto.root,
        scorer,
        progress=progress,
        description=f"scoring {use_split or 'all rows'}",
    )
    return ScoreRun(
        rows=scored,
        condition_columns=list(proto.condition_columns),
        unscored=unscored,
        latency_ms=latency,
        threshold=float(scorer.threshold),
        split=use_split,
        n_rows=len(rows),
    )


def scores_from_files(
    protocol: Path | Protocol,
    files: Sequence[Path],
    *,
    split: str | None = None,
    threshold: float = 0.0,
) -> ScoreRun:
    """Score every row of ``protocol`` (one split of it) by the mean of its scores in ``files``.

    Each file is a score CSV as ``evaluate --out`` or ``quantize`` writes it (``path``,
    ``label``, ..., ``score``); rows are matched on ``path`` as written in the protocol.
    Several files make a score-level ensemble: for the mean to mean anything, their scores
    should be on one scale (wakeguard bundles' calibrated scores are log-likelihood ratios,
    where 0 is the equal-prior threshold). A row missing from any file is unscored, naming
    the file; a row whose label differs between a file and the protocol is an error.
    """
    proto = protocol if isinstance(protocol, Protocol) else read_protocol(protocol)
    use_split = resolve_split(proto, split)
    rows = proto.where(split=use_split)
    require_confirmed(proto, rows, f"evaluation ({use_split or 'all'} rows)")
    if not files:
        raise EvaluationError("no score files given")
    tables = []
    for f in files:
        by_path = {r["path"]: r for r in read_scores(f, require=("path",)).rows}
        if rows and not any(r.path in by_path for r in rows):
            raise EvaluationError(
                f"{f}: none of the {len(rows)} rows of {proto.file or proto.root} is in it "
                f"(paths are matched as written; first protocol path: {rows[0].path})"
            )
        tables.append((Path(f), by_path))
    scored: list[dict[str, Any]] = []
    unscored: list[Unscored] = []
    for row in rows:
        found = []
        for f, by_path in tables:
            hit = by_path.get(row.path)
            if hit is None:
                unscored.append(Unscored(row.path, row.label, f"not in {f}"))
                break
            if hit["label"] != row.label:
                raise EvaluationError(
                    f"{f}: {row.path} is labelled {hit['label']!r} there and {row.label!r} in the protocol"
                )
            found.append(float(hit["score"]))
        else:
            scored.append({**row.as_dict(), "score": float(np.mean(found))})
    return ScoreRun(
        rows=scored,
        condition_columns=list(proto.condition_columns),
        unscored=unscored,
        threshold=float(threshold),
        split=use_split,
        n_rows=len(rows),
    )


def write_unscored(path: Path, unscored: Sequence[Unscored]) -> Path:
    """Write ``unscored.csv`` (path, label, reason) atomically."""
    with atomic_text(path) as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "reason"])
        for u in unscored:
            w.writerow([u.path, u.label, u.reason])
    return path


def single_class_metrics(
    rows: Sequence[dict[str, Any]], *, threshold: float, operating_point: str
) -> dict[str, Any]:
    """Metrics of live-only (or replay-only) data, e.g. recordings exported from a device.

    Only the error rate of the class present is defined (BPCER for bona fide, APCER for
    spoof) at the given threshold; every metric needing both classes is null.
    """
    scores = np.array([r["score"] for r in rows], dtype=np.float64)
    label = rows[0]["label"]
    rate = (
        float(np.mean(scores < threshold))
        if label == "bonafide"
        else float(np.mean(scores >= threshold))
    )
    speakers = {str(r.get("speaker", "")) for r in rows} - {""}
    n_bonafide = len(rows) if label == "bonafide" else 0
    n_spoof = len(rows) - n_bonafide
    return {
        "eer": None,
        "eer_threshold": None,
        "n_bonafide": n_bonafide,
        "n_spoof": n_spoof,
        "n_speakers": len(speakers),
        "operating_point": operating_point,
        "threshold": float(threshold),
        "threshold_source": "given",
        "apcer": rate if label == "spoof" else None,
        "bpcer": rate if label == "bonafide" else None,
        "apcer_at_bpcer_1pct": None,
        "apcer_at_bpcer_5pct": None,
        "ci": None,
        "per_condition": {},
        "note": (
            f"only {label} rows were scored ({n_bonafide} bonafide, {n_spoof} spoof): "
            "EER and APCER at a BPCER need both labels"
        ),
    }


def metrics_for_run(
    run: ScoreRun, *, operating_point: str, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """Metrics JSON of a :class:`ScoreRun` at its scorer's threshold, plus what could not be scored."""
    labels = {r["label"] for r in run.rows}
    if not labels:
        raise EvaluationError(
            f"no row could be scored ({len(run.unscored)} unscored of {run.n_rows}; "
            f"first: {run.unscored[0].path}: {run.unscored[0].reason})"
            if run.unscored
            else "no rows to score"
        )
    if labels == {"bonafide", "spoof"}:
        m = compute_metrics(
            run.rows,
            run.condition_columns,
            threshold=run.threshold,
            operating_point=operating_point,
            n_boot=n_boot,
            seed=seed,
        )
    else:
        m = single_class_metrics(run.rows, threshold=run.threshold, operating_point=operating_point)
    m["split"] = run.split or ALL_SPLITS
    m["n_rows"] = run.n_rows
    m["n_unscored"] = len(run.unscored)
    m["unscored"] = [{"path": u.path, "label": u.label, "reason": u.reason} for u in run.unscored]
    m["latency_ms"] = run.latency_summary()
    return m


def evaluate(
    protocol: Path,
    *,
    bundle: Path | None = None,
    out: Path | None = None,
    split: str | None = None,
    operating_point: str | None = None,
    threads: int = 1,
    progress: bool = True,
    strict: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    score_files: Sequence[Path] = (),
    threshold: float | None = None,
) -> dict[str, Any]:
    """Score a protocol with a bundle and return the metrics JSON (also written to ``out``).

    With ``score_files`` no model runs: the scores are the mean of those files' scores per
    row (:func:`scores_from_files`), and APCER/BPCER are at ``threshold`` (default 0.0).

    ``out`` receives ``scores.csv`` (one row per scored utterance), ``metrics.json`` and,
    when rows could not be scored, ``unscored.csv``. The operating threshold is the
    bundle's (``operating_point`` picks a named one); EER and the BPCER operating points
    are computed from the scores. With ``strict`` any unscored row raises
    :class:`EvaluationError` (after the files are written).
    """
    check_split(split)
    if score_files and (bundle is not None or operating_point is not None):
        raise EvaluationError(
            "give either score files or a model (with its operating point), not both"
        )
    if not score_files and threshold is not None:
        raise EvaluationError(
            "a threshold is only given with score files; a bundle has its own (--operating-point)"
        )
    if out is not None:
        ensure_folder(out)
    if score_files:
        b, op = None, "given"
        run = scores_from_files(
            protocol, score_files, split=split, threshold=0.0 if threshold is None else threshold
        )
    else:
        b = load_bundle(bundle)
        op = operating_point or b.default_operating_point
        scorer = Scorer.from_bundle(b, operating_point=op, num_threads=threads)
        run = score_protocol(protocol, scorer=scorer, split=split, progress=progress)
    if out is not None:
        out = Path(out)
        write_scores(out / SCORES_FILE, run.rows, run.condition_columns)
        if run.unscored:
            write_unscored(out / UNSCORED_FILE, run.unscored)
        else:
            (out / UNSCORED_FILE).unlink(missing_ok=True)
    m = metrics_for_run(run, operating_point=op, n_boot=n_boot)
    m["protocol"] = str(protocol)
    if b is None:
        m["score_files"] = [str(f) for f in score_files]
    else:
        m["bundle"] = str(b.path)
        m["bundle_version"] = b.version
        m["model_bytes"] = b.total_model_bytes
        m["threads"] = threads
    if out is not None:
        m["score_file"] = str(out / SCORES_FILE)
        write_metrics(out / METRICS_FILE, m)
    if strict and run.unscored:
        first = "; ".join(f"{u.path}: {u.reason}" for u in run.unscored[:3])
        raise EvaluationError(
            f"{len(run.unscored)} of {run.n_rows} rows could not be scored ({first}{' ...' if len(run.unscored) > 3 else ''})"
        )
    return m
