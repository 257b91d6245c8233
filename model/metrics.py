"""Detection metrics from score files: EER, ISO/IEC 30107-3 APCER/BPCER, DET, bootstrap CIs.

Conventions used everywhere in wakeguard:

- a score is one float per utterance, **higher = more likely bona fide** (live);
- an utterance is accepted as bona fide when ``score >= threshold`` (the rule of
  :class:`wakeguard.edge.scorer.Scorer`), so tied scores always fall on the same side;
- APCER = share of spoof (attack) presentations accepted as bona fide;
  BPCER = share of bona fide presentations rejected (ISO/IEC 30107-3);
- EER follows the ASVspoof reference code: sweep the threshold over every distinct
  score, take the point where |APCER - BPCER| is smallest (the lowest threshold among
  equals) and report the mean of the two there.

Everything here reads the score CSV (protocol columns, then ``score``) or rows with the
same keys, so metrics are always computed from the score files, never ad hoc.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.files import atomic_text
from wakeguard.edge.protocol import KNOWN, LABELS, not_utf8

BONAFIDE, SPOOF = LABELS
NOT_APPLICABLE = ("", "-")
"""Condition values meaning "does not apply to this row" (bona fide rows of attack columns)."""

MAX_CONDITION_VALUES = 100
"""Columns with more distinct values than this are identifiers: no per-value EER."""
DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 0
CI_LEVEL = 0.95
OPERATING_POINTS = ("eer", "bpcer_1pct", "bpcer_5pct")
_BPCER_TARGETS = {"bpcer_1pct": 0.01, "bpcer_5pct": 0.05}


class MetricsError(ValueError):
    """Scores that cannot give the requested metric (a class missing, a malformed score file)."""


# --------------------------------------------------------------------------- error rates


@dataclass(frozen=True)
class ErrorCurve:
    """APCER and BPCER at every candidate threshold, thresholds ascending.

    Candidates are the distinct scores plus one threshold above the maximum (reject
    everything), so the curve runs from (APCER 1, BPCER 0) to (APCER 0, BPCER 1).
    """

    thresholds: np.ndarray
    apcer: np.ndarray
    bpcer: np.ndarray


def _split_scores(
    bonafide: Iterable[float], spoof: Iterable[float]
) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(
        list(bonafide) if not isinstance(bonafide, np.ndarray) else bonafide, dtype=np.float64
    )
    s = np.asarray(list(spoof) if not isinstance(spoof, np.ndarray) else spoof, dtype=np.float64)
    if b.size == 0 or s.size == 0:
        raise MetricsError(f"need both classes: {b.size} bona fide and {s.size} spoof scores")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(s))):
        raise MetricsError("scores contain NaN or infinite values")
    return b.ravel(), s.ravel()


def error_curve(bonafide: Iterable[float], spoof: Iterable[float]) -> ErrorCurve:
    """APCER/BPCER for every threshold that changes a decision (exact, tie-aware)."""
    b, s = _split_scores(bonafide, spoof)
    uniq = np.unique(np.concatenate([b, s]))
    above = np.nextafter(uniq[-1], np.inf)
    thresholds = np.append(uniq, above)
    b_sorted, s_sorted = np.sort(b), np.sort(s)
    # Rejected bona fide: score < t; accepted spoof: score >= t.
    bpcer = np.searchsorted(b_sorted, thresholds, side="left") / b.size
    apcer = 1.0 - np.searchsorted(s_sorted, thresholds, side="left") / s.size
    return ErrorCurve(thresholds, apcer, bpcer)


def compute_eer(bonafide: Iterable[float], spoof: Iterable[float]) -> tuple[float, float]:
    """Equal error rate and its threshold (accept bona fide when ``score >= threshold``).

    The ASVspoof way: the threshold where APCER and BPCER differ least; the EER is their
    mean there. Ties between scores are never split.
    """
    c = error_curve(bonafide, spoof)
    i = int(np.argmin(np.abs(c.apcer - c.bpcer)))
    return float((c.apcer[i] + c.bpcer[i]) / 2.0), float(c.thresholds[i])


def error_rates(
    bonafide: Iterable[float], spoof: Iterable[float], threshold: float
) -> tuple[float, float]:
    """(APCER, BPCER) at one threshold: spoof accepted (``>= t``), bona fide rejected (``< t``)."""
    b, s = _split_scores(bonafide, spoof)
    return float(np.mean(s >= threshold)), float(np.mean(b < threshold))


def threshold_at_bpcer(
    bonafide: Iterable[float], spoof: Iterable[float], target: float
) -> tuple[float, float, float]:
    """The highest threshold whose BPCER is at most ``target``; returns (threshold, APCER, BPCER).

    The highest such threshold gives the lowest APCER for that BPCER budget (ISO/IEC
    30107-3 "APCER at BPCER = x"). With few bona fide trials the achieved BPCER can be
    below the target (BPCER moves in steps of 1/n_bonafide).
    """
    if not 0.0 <= target < 1.0:
        raise MetricsError(f"BPCER target must be in [0, 1), got {target}")
    c = error_curve(bonafide, spoof)
    ok = np.flatnonzero(c.bpcer <= target + 1e-12)
    i = int(ok[-1])  # bpcer is non-decreasing and bpcer[0] == 0, so ok is never empty
    return float(c.thresholds[i]), float(c.apcer[i]), float(c.bpcer[i])


def operating_threshold(
    bonafide: Iterable[float], spoof: Iterable[float], operating_point: str
) -> float:
    """Threshold of a named operating point (``eer``, ``bpcer_1pct``, ``bpcer_5pct``) on these scores."""
    if operating_point == "eer":
        return compute_eer(bonafide, spoof)[1]
    if operating_point in _BPCER_TARGETS:
        return threshold_at_bpcer(bonafide, spoof, _BPCER_TARGETS[operating_point])[0]
    raise MetricsError(
        f"unknown operating point {operating_point!r}; expected one of {OPERATING_POINTS}"
    )


def probit(p: np.ndarray | float, eps: float = 1e-6) -> np.ndarray:
    """Standard normal deviate of a probability (the DET axis), clipped away from 0 and 1."""
    from scipy.stats import norm

    return norm.ppf(np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps))


def det_curve(bonafide: Iterable[float], spoof: Iterable[float]) -> dict[str, list[float]]:
    """DET points: APCER and BPCER per threshold, and their probit-scaled values for plotting.

    Plot ``x = bpcer_probit`` against ``y = apcer_probit`` and label the ticks with
    percentages (see :data:`DET_TICKS`).
    """
    c = error_curve(bonafide, spoof)
    return {
        "threshold": c.thresholds.tolist(),
        "apcer": c.apcer.tolist(),
        "bpcer": c.bpcer.tolist(),
        "apcer_probit": probit(c.apcer).tolist(),
        "bpcer_probit": probit(c.bpcer).tolist(),
    }


DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
"""Error rates (fractions) to mark on DET axes."""


# --------------------------------------------------------------------------- score files


@dataclass
class ScoreTable:
    """Rows of a score file: protocol fields, condition columns and one float score each."""

    rows: list[dict[str, Any]]
    condition_columns: list[str]

    def select(self, split: str | None) -> ScoreTable:
        if split is None:
            return self
        return ScoreTable(
            [r for r in self.rows if r.get("split", "") == split], self.condition_columns
        )

    def scores(self, label: str) -> np.ndarray:
        return np.array([r["score"] for r in self.rows if r["label"] == label], dtype=np.float64)

    def splits(self) -> list[str]:
        return sorted({r.get("split", "") for r in self.rows})


def read_scores(path: str | Path, *, require: Sequence[str] = ()) -> ScoreTable:
    """Read a score CSV (``path,label,speaker,split,<conditions>,score``); errors name file and line.

    ``label`` and ``score`` are always required, the columns in ``require`` too (``path``
    to match rows to a protocol). A path may appear once: a second score for the same
    utterance would count twice, or silently replace the first.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: score file not found")
    try:
        return _read_scores(path, require)
    except UnicodeDecodeError:
        raise MetricsError(not_utf8(path)) from None


def _read_scores(path: Path, require: Sequence[str]) -> ScoreTable:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in ("label", *require, "score"):
            if col not in header:
                raise MetricsError(f"{path}: no {col!r} column; header is {header}")
        conds = [c for c in header if c not in (*KNOWN, "score")]
        rows: list[dict[str, Any]] = []
        first_line: dict[str, int] = {}
        for lineno, rec in enumerate(reader, start=2):
            label = (rec.get("label") or "").strip()
            if label not in LABELS:
                raise MetricsError(f"{path}:{lineno}: label {label!r} is not one of {LABELS}")
            try:
                score = float(rec["score"])
            except (TypeError, ValueError) as exc:
                raise MetricsError(
                    f"{path}:{lineno}: score {rec.get('score')!r} is not a number"
                ) from exc
            if not np.isfinite(score):
                raise MetricsError(f"{path}:{lineno}: score is {score}")
            row: dict[str, Any] = {k: (rec.get(k) or "").strip() for k in (*KNOWN, *conds)}
            row["score"] = score
            if row["path"] in first_line:
                raise MetricsError(
                    f"{path}:{lineno}: path {row['path']} is scored twice "
                    f"(first on line {first_line[row['path']]})"
                )
            if row["path"]:
                first_line[row["path"]] = lineno
            rows.append(row)
    return ScoreTable(rows, conds)


def write_scores(
    path: str | Path, rows: Sequence[Mapping[str, Any]], condition_columns: Sequence[str]
) -> Path:
    """Write a score CSV atomically: the protocol's columns, then ``score``."""
    path = Path(path)
    fields = [*KNOWN, *condition_columns, "score"]
    with atomic_text(path) as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            rec = {k: r.get(k, "") for k in fields}
            rec["score"] = repr(float(r["score"]))
            w.writerow(rec)
    return path


# --------------------------------------------------------------------------- breakdowns


def natural_key(value: str) -> list[str | int]:
    """Sort key that reads the numbers in a value as numbers: ``8-15`` before ``15-25``,
    ``50-100cm`` before ``100-150cm`` and ``>100cm``."""
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", value))]


def per_condition(
    rows: Sequence[Mapping[str, Any]], condition_columns: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """EER per value of every condition column.

    Rule: for a column and one of its values ``v`` (``''`` and ``'-'`` mean "not
    applicable" and are never a value), the spoof trials are the spoof rows with value
    ``v``; the bona fide trials are the bona fide rows with value ``v`` when there are any
    (conditions that apply to live speech too, e.g. room or recording device), otherwise
    **all** bona fide rows given (attack-only columns such as playback device, where bona
    fide rows hold ``-``). A value with no spoof (or no bona fide) trials gets ``eer`` null.

    A column with more than :data:`MAX_CONDITION_VALUES` distinct values is an identifier
    (e.g. the source file), not a condition: it maps to ``{}`` and :func:`compute_metrics`
    lists it under ``per_condition_skipped`` with its number of values.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    all_bona = np.array([r["score"] for r in rows if r["label"] == BONAFIDE], dtype=np.float64)
    for col in condition_columns:
        groups: dict[str, dict[str, list[float]]] = {}  # value -> label -> scores, one pass
        for r in rows:
            v = str(r.get(col, "") or "")
            if v not in NOT_APPLICABLE:
                groups.setdefault(v, {BONAFIDE: [], SPOOF: []})[r["label"]].append(r["score"])
        res: dict[str, dict[str, Any]] = {}
        if len(groups) > MAX_CONDITION_VALUES:
            out[col] = res
            continue
        for v in sorted(groups, key=natural_key):
            spoof = np.asarray(groups[v][SPOOF], dtype=np.float64)
            bona = np.asarray(groups[v][BONAFIDE], dtype=np.float64)
            pooled = bona.size == 0
            if pooled:
                bona = all_bona
            eer = compute_eer(bona, spoof)[0] if bona.size and spoof.size else None
            res[v] = {
                "eer": eer,
                "n_bonafide": int(bona.size),
                "n_spoof": int(spoof.size),
                "bonafide": "all" if pooled else "same value",
            }
        out[col] = res
    return out


ROOM_COLUMNS = ("room", "environment")
"""Condition columns that name the acoustic environment of a trial (the simulator's and
wakeguard's own protocols say ``room``; the ASVspoof 2019 PA importer ``environment``)."""


def room_column(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The first of :data:`ROOM_COLUMNS` that every row fills with one of at least two
    values, or None: the rooms a crossed bootstrap can resample."""
    for col in ROOM_COLUMNS:
        values = [str(r.get(col, "") or "") for r in rows]
        if all(v and v not in NOT_APPLICABLE for v in values) and len(set(values)) >= 2:
            return col
    return None


def _unit_index(rows: Sequence[Mapping[str, Any]], column: str) -> tuple[np.ndarray, int]:
    """Each row's unit number under ``column`` and the number of units."""
    names: dict[str, int] = {}
    idx = np.array([names.setdefault(str(r.get(column, "")), len(names)) for r in rows])
    return idx, len(names)


def bootstrap_ci(
    rows: Sequence[Mapping[str, Any]],
    *,
    threshold: float,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    level: float = CI_LEVEL,
    crossed_with: str | None = None,
) -> dict[str, Any]:
    """Percentile bootstrap intervals, resampling **speakers** with replacement.

    Every replicate draws as many speakers as there are, with replacement, and keeps all
    their trials (bona fide and spoof), so the interval reflects speaker-to-speaker
    variation rather than pretending trials are independent. Replicates that lose a class
    are skipped (their count is reported). If any row lacks a speaker id the unit falls
    back to the trial, and ``unit`` says so; so does a test of one speaker, whose every
    replicate would draw the same trials (an interval of zero width), and ``fallback`` says why.

    ``crossed_with`` names a second factor crossed with the speakers (the room: every
    speaker is heard in several rooms and every room hears several speakers). Then each
    replicate also draws the rooms with replacement, and a trial counts as often as its
    speaker was drawn times as often as its room was (the "pigeonhole" bootstrap of Owen,
    Annals of Applied Statistics, 2007): the interval then also covers how much the error
    rates depend on which rooms the test happened to have, which a few rooms make wide.
    """
    speakers = [str(r.get("speaker", "")) for r in rows]
    unit = "speaker" if all(speakers) else "trial"
    fallback = None
    if unit == "speaker":
        spk, n_spk = _unit_index(rows, "speaker")
        if n_spk < 2:
            unit, fallback = "trial", "one speaker: resampled by trial, not by speaker"
    if unit == "trial":
        spk, n_spk = np.arange(len(rows)), len(rows)
    if crossed_with:
        other, n_other = _unit_index(rows, crossed_with)
        unit = f"{unit} x {crossed_with}"
    scores = np.array([r["score"] for r in rows], dtype=np.float64)
    is_bona = np.array([r["label"] == BONAFIDE for r in rows])
    rng = np.random.default_rng(seed)
    stats: dict[str, list[float]] = {
        k: [] for k in ("eer", "apcer", "bpcer", "apcer_at_bpcer_1pct", "apcer_at_bpcer_5pct")
    }
    skipped = 0
    for _ in range(n_boot):
        weight = np.bincount(rng.integers(0, n_spk, size=n_spk), minlength=n_spk)[spk]
        if crossed_with:
            weight = (
                weight
                * np.bincount(rng.integers(0, n_other, size=n_other), minlength=n_other)[other]
            )
        idx = np.repeat(np.arange(len(rows)), weight)
        sc, bn = scores[idx], is_bona[idx]
        b, s = sc[bn], sc[~bn]
        if b.size == 0 or s.size == 0:
            skipped += 1
            continue
        c = error_curve(b, s)
        i = int(np.argmin(np.abs(c.apcer - c.bpcer)))
        stats["eer"].append((c.apcer[i] + c.bpcer[i]) / 2.0)
        stats["apcer"].append(float(np.mean(s >= threshold)))
        stats["bpcer"].append(float(np.mean(b < threshold)))
        for key, target in (("apcer_at_bpcer_1pct", 0.01), ("apcer_at_bpcer_5pct", 0.05)):
            ok = np.flatnonzero(c.bpcer <= target + 1e-12)
            stats[key].append(float(c.apcer[ok[-1]]))
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out: dict[str, Any] = {
        "level": level,
        "method": "percentile bootstrap",
        "unit": unit,
        "n_units": n_spk,
        "n_boot": n_boot,
        "n_skipped": skipped,
        "seed": seed,
    }
    if fallback:
        out["fallback"] = fallback
    if crossed_with:
        out["n_units_" + crossed_with] = n_other
    for k, v in stats.items():
        out[k] = [float(np.quantile(v, lo_q)), float(np.quantile(v, hi_q))] if v else None
    return out


# --------------------------------------------------------------------------- metrics JSON


def compute_metrics(
    rows: Sequence[Mapping[str, Any]],
    condition_columns: Sequence[str] = (),
    *,
    threshold: float | None = None,
    operating_point: str = "eer",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """The metrics JSON for scored rows (dicts with ``label``, ``score``, ``speaker``, conditions).

    ``threshold`` is the operating threshold (e.g. a bundle's, fixed on dev); when it is
    None it is derived from these very scores at ``operating_point`` (an oracle threshold,
    flagged by ``threshold_source``).
    """
    bona = np.array([r["score"] for r in rows if r["label"] == BONAFIDE], dtype=np.float64)
    spoof = np.array([r["score"] for r in rows if r["label"] == SPOOF], dtype=np.float64)
    eer, eer_thr = compute_eer(bona, spoof)
    source = "given"
    if threshold is None:
        threshold = operating_threshold(bona, spoof, operating_point)
        source = "these scores"
    apcer, bpcer = error_rates(bona, spoof, threshold)
    t1, a1, b1 = threshold_at_bpcer(bona, spoof, 0.01)
    t5, a5, b5 = threshold_at_bpcer(bona, spoof, 0.05)
    speakers = {str(r.get("speaker", "")) for r in rows} - {""}
    rooms = room_column(rows)
    return {
        "eer": eer,
        "eer_threshold": eer_thr,
        "n_bonafide": int(bona.size),
        "n_spoof": int(spoof.size),
        "n_speakers": len(speakers),
        "operating_point": operating_point,
        "threshold": float(threshold),
        "threshold_source": source,
        "apcer": apcer,
        "bpcer": bpcer,
        "apcer_at_bpcer_1pct": a1,
        "bpcer_achieved_1pct": b1,
        "threshold_at_bpcer_1pct": t1,
        "apcer_at_bpcer_5pct": a5,
        "bpcer_achieved_5pct": b5,
        "threshold_at_bpcer_5pct": t5,
        "ci": bootstrap_ci(rows, threshold=float(threshold), n_boot=n_boot, seed=seed),
        "ci_rooms": (
            bootstrap_ci(
                rows, threshold=float(threshold), n_boot=n_boot, seed=seed, crossed_with=rooms
            )
            if rooms
            else None
        ),
        "per_condition": per_condition(rows, condition_columns),
        "per_condition_skipped": _identifier_columns(rows, condition_columns),
    }


def _identifier_columns(
    rows: Sequence[Mapping[str, Any]], condition_columns: Sequence[str]
) -> dict[str, int]:
    """Condition columns left out of :func:`per_condition` for having too many values, with their count."""
    out = {}
    for col in condition_columns:
        n = len({str(r.get(col, "") or "") for r in rows} - set(NOT_APPLICABLE))
        if n > MAX_CONDITION_VALUES:
            out[col] = n
    return out


def metrics_from_scores(
    scores_csv: str | Path,
    threshold: float | None = None,
    operating_point: str = "eer",
    *,
    split: str | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Metrics JSON (see the helper guide's format) computed from a score CSV.

    ``split`` keeps only rows of that split (all rows when None).
    """
    table = read_scores(scores_csv).select(split)
    if not table.rows:
        raise MetricsError(f"{scores_csv}: no rows for split {split!r}")
    m = compute_metrics(
        table.rows,
        table.condition_columns,
        threshold=threshold,
        operating_point=operating_point,
        n_boot=n_boot,
        seed=seed,
    )
    m["split"] = split
    m["score_file"] = str(scores_csv)
    return m


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write metrics JSON atomically."""
    path = Path(path)
    with atomic_text(path) as fh:
        fh.write(json.dumps(metrics, indent=2) + "\n")
    return path
