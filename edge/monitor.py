"""What the model does in the wild: summary, drift and plots from a decision log, clip export.

Reads the JSON-lines decision log written by :class:`wakeguard.edge.decisionlog.DecisionLog`
(``listen`` and ``serve``), with its rotated backups, and reports verdict counts and rates
over time, score percentiles, latency percentiles (p50/p95/p99) and a drift measure.

Drift: the logged scores are compared with the bundle's dev scores (``calibration_scores``
in the manifest) by the population stability index, ``PSI = sum((a - e) * ln(a / e))`` over
ten bins cut at the reference's deciles. The reference is the mixture of the dev bona fide
and spoof scores weighted by the share of decisions rejected in the log (a home with a TV
that keeps saying the wake word is not drift); if the bona fide scores themselves move, the
shape no longer matches the mixture and PSI rises. Rules of thumb from credit scoring:
below 0.1 stable, 0.1-0.2 a moderate shift, above 0.2 (:data:`PSI_WARNING`) a shift worth
acting on (new microphone, room, voices, an attack the model half-recognises). Small samples
make PSI noisy (about ``(bins - 1) * (1/n + 1/m)`` from sampling alone), so drift is only
reported when PSI also exceeds the 95 % sampling-noise level (chi-square approximation).
PSI against the bona fide scores alone is reported as well.

:func:`export_clips` turns the saved (rejected and borderline) clips into a dataset folder
(``protocol.csv`` + audio): the label is the model's verdict and ``label_confirmed=no``, so
a person listens and confirms or corrects each row before ``train --init-from`` uses it
(``train`` and ``evaluate`` refuse rows still unconfirmed).

numpy only; matplotlib is imported inside :func:`plot_monitor` and is optional.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .decisionlog import DIR_MODE, FILE_MODE, LogContents, read_log, read_records
from .files import atomic_path, save_figure, write_text_atomic

PSI_WARNING = 0.2
"""PSI above this is reported as drift."""
PSI_MODERATE = 0.1
MIN_REFERENCE = 20
"""Fewer reference scores than this give no PSI (the deciles would be noise)."""
MIN_LOGGED = 50
"""Fewer logged scores than this give no PSI."""


# -- numbers -----------------------------------------------------------------------------------


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: np.ndarray) -> np.ndarray:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(qs, cdf, v)


def psi(
    reference: np.ndarray | list[tuple[np.ndarray, float]],
    actual: np.ndarray,
    bins: int = 10,
    eps: float = 1e-4,
) -> float:
    """Population stability index of ``actual`` against ``reference``, bins at the reference's quantiles.

    ``reference`` is one sample, or a mixture given as ``[(sample, weight), ...]``.
    """
    return psi_bins(reference, actual, bins, eps)[0]


def psi_bins(
    reference: np.ndarray | list[tuple[np.ndarray, float]],
    actual: np.ndarray,
    bins: int = 10,
    eps: float = 1e-4,
) -> tuple[float, int]:
    """PSI and the number of bins actually used (tied quantiles merge bins)."""
    parts = (
        reference if isinstance(reference, list) else [(np.asarray(reference, dtype=float), 1.0)]
    )
    parts = [
        (np.asarray(x, dtype=float), float(w)) for x, w in parts if np.asarray(x).size and w > 0
    ]
    actual = np.asarray(actual, dtype=float)
    if not parts or actual.size == 0:
        raise ValueError("PSI needs non-empty reference and actual scores")
    values = np.concatenate([x for x, _ in parts])
    weights = np.concatenate([np.full(x.size, w / x.size) for x, w in parts])
    inner = np.unique(_weighted_quantiles(values, weights, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    e = sum(w * np.histogram(x, edges)[0] / x.size for x, w in parts) / sum(w for _, w in parts)
    a = np.histogram(actual, edges)[0] / actual.size
    e = np.clip(e, eps, None)
    a = np.clip(a, eps, None)
    return float(np.sum((a - e) * np.log(a / e))), len(edges) - 1


_CHI2_95 = {
    1: 3.841,
    2: 5.991,
    3: 7.815,
    4: 9.488,
    5: 11.070,
    6: 12.592,
    7: 14.067,
    8: 15.507,
    9: 16.919,
}
"""95th percentiles of chi-square by degrees of freedom (no scipy on the Pi)."""


def psi_noise95(n_actual: int, n_reference: int, n_bins: int = 10) -> float:
    """PSI that sampling alone exceeds 5 % of the time: ``chi2_95(bins-1) * (1/n + 1/m)``."""
    df = max(1, min(n_bins - 1, 9))
    return _CHI2_95[df] * (1.0 / max(n_actual, 1) + 1.0 / max(n_reference, 1))


def percentiles(
    values: list[float] | np.ndarray, qs: tuple[int, ...] = (50, 95, 99)
) -> dict[str, float] | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    out = {f"p{q}": round(float(np.percentile(v, q)), 3) for q in qs}
    out["max"] = round(float(v.max()), 3)
    out["n"] = int(v.size)
    return out


def record_time(rec: dict[str, Any]) -> float | None:
    """Unix time of a record (``unix_time``, else parsed from ``time``)."""
    t = rec.get("unix_time")
    if isinstance(t, (int, float)):
        return float(t)
    s = rec.get("time")
    if isinstance(s, str):
        try:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    return None


_NICE_BINS_S = (
    1,
    5,
    10,
    30,
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    7 * 86400,
)


def time_bins(t0: float, t1: float, target: int = 24) -> float:
    """A round bin width (second ... week) giving about ``target`` bins over ``[t0, t1]``."""
    span = max(t1 - t0, 1.0)
    for width in _NICE_BINS_S:
        if span / width <= target:
            return float(width)
    return float(_NICE_BINS_S[-1])


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


# -- the summary -----------------------------------------------------------------------------


@dataclass
class Reference:
    """Dev scores of the bundle the log is compared against."""

    version: str
    path: str
    bonafide: list[float]
    spoof: list[float]
    threshold: float | None


def load_reference(model: str | Path | None) -> tuple[Reference | None, str | None]:
    """The bundle's calibration scores, or None and why not (no bundle, none recorded)."""
    from .bundle import BundleError, default_bundle_path, load_bundle

    if model is None and not (default_bundle_path() / "manifest.json").is_file():
        return None, "no bundle given (--model) and no shipped bundle: drift not measured"
    try:
        b = load_bundle(model)
    except BundleError:
        if model is not None:
            raise
        return None, "the shipped bundle cannot be loaded: drift not measured"
    cal = b.calibration_scores
    bona = [float(x) for x in cal.get("bonafide", [])]
    spoof = [float(x) for x in cal.get("spoof", [])]
    try:
        thr = b.threshold()
    except BundleError:
        thr = None
    if not bona:
        return Reference(
            b.version, str(b.path), [], spoof, thr
        ), f"bundle {b.path} records no calibration_scores"
    return Reference(b.version, str(b.path), bona, spoof, thr), None


@dataclass
class MonitorSummary:
    """Everything ``wakeguard monitor`` reports (JSON via :meth:`to_dict`)."""

    log: str
    n_records: int
    bad_lines: int
    first: str | None
    last: str | None
    verdicts: dict[str, int]
    rejection_rate: float | None
    borderline: int
    sources: dict[str, int]
    model_versions: dict[str, int]
    score: dict[str, float] | None
    latency_ms: dict[str, float] | None
    added_ms: dict[str, float] | None
    level_dbfs: dict[str, float] | None
    duration_s: dict[str, float] | None
    drift: dict[str, Any]
    rates: list[dict[str, Any]]
    bin_seconds: float | None
    clips: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(
    records: list[dict[str, Any]],
    reference: Reference | None = None,
    *,
    log: str = "",
    bad_lines: int = 0,
    bad_note: str | None = None,
    no_reference_reason: str | None = None,
) -> MonitorSummary:
    """Counts, rates over time, percentiles and drift of a list of decision records.

    ``records`` are valid (see :func:`wakeguard.edge.decisionlog.record_problem`);
    ``bad_note`` says which lines of the log were skipped and why.
    """
    warnings: list[str] = []
    n = len(records)
    verdicts: dict[str, int] = {}
    sources: dict[str, int] = {}
    versions: dict[str, int] = {}
    for r in records:
        verdicts[str(r.get("verdict"))] = verdicts.get(str(r.get("verdict")), 0) + 1
        sources[str(r.get("source", "?"))] = sources.get(str(r.get("source", "?")), 0) + 1
        versions[str(r.get("model_version", "?"))] = (
            versions.get(str(r.get("model_version", "?")), 0) + 1
        )
    scores = np.asarray([float(r["score"]) for r in records], dtype=float)
    times = [record_time(r) for r in records]
    known = [t for t in times if t is not None]
    rates: list[dict[str, Any]] = []
    width = None
    if known:
        t0, t1 = min(known), max(known)
        width = time_bins(t0, t1)
        start = math.floor(t0 / width) * width
        nb = int((t1 - start) // width) + 1
        counts = {v: np.zeros(nb, dtype=int) for v in sorted(verdicts)}
        sums = np.zeros(nb)
        for r, t in zip(records, times, strict=True):
            if t is None:
                continue
            i = int((t - start) // width)
            counts[str(r.get("verdict"))][i] += 1
            sums[i] += float(r["score"])
        for i in range(nb):
            row: dict[str, Any] = {"start": _iso(start + i * width)}
            total = 0
            for v, c in counts.items():
                row[v] = int(c[i])
                total += int(c[i])
            row["n"] = total
            row["rejection_rate"] = round(row.get("spoof", 0) / total, 4) if total else None
            row["mean_score"] = round(sums[i] / total, 4) if total else None
            rates.append(row)
    rejection = verdicts.get("spoof", 0) / n if n else None
    if bad_lines:
        warnings.append(bad_note or f"{bad_lines} unreadable line(s) in {log or 'the log'} skipped")
    if len(versions) > 1:
        warnings.append(f"the log mixes model versions {sorted(versions)}: compare like with like")

    drift: dict[str, Any] = {"threshold": PSI_WARNING, "psi": None, "psi_bonafide": None}
    if reference is None:
        drift["note"] = no_reference_reason or "no reference bundle"
    else:
        drift.update(
            {
                "reference": reference.path,
                "reference_version": reference.version,
                "n_reference_bonafide": len(reference.bonafide),
                "n_reference_spoof": len(reference.spoof),
            }
        )
        if reference.version not in versions:
            warnings.append(
                f"reference bundle version {reference.version!r} is not the version in the log "
                f"({', '.join(sorted(versions))}): drift compares different models"
            )
        if len(reference.bonafide) < MIN_REFERENCE:
            drift["note"] = no_reference_reason or (
                f"only {len(reference.bonafide)} reference bona fide scores (< {MIN_REFERENCE}): drift not measured"
            )
        elif n < MIN_LOGGED:
            drift["note"] = f"only {n} logged decisions (< {MIN_LOGGED}): drift not measured"
        else:
            share = verdicts.get("spoof", 0) / n if reference.spoof else 0.0
            mixture = [
                (np.asarray(reference.bonafide), 1.0 - share),
                (np.asarray(reference.spoof), share),
            ]
            p, used = psi_bins(mixture, scores)
            noise = psi_noise95(n, len(reference.bonafide) + len(reference.spoof), used)
            drift["psi"] = round(p, 4)
            drift["psi_bonafide"] = round(psi(np.asarray(reference.bonafide), scores), 4)
            drift["replay_share"] = round(share, 4)
            drift["noise_95"] = round(noise, 4)
            if p > PSI_WARNING and p > noise:
                drift["level"] = "drift"
            elif p > PSI_MODERATE and p > noise:
                drift["level"] = "moderate"
            else:
                drift["level"] = "stable"
            if drift["level"] == "drift":
                warnings.append(
                    f"score drift: PSI {p:.3f} > {PSI_WARNING} against the bundle's dev scores "
                    f"(mixed at the logged rejection rate {100 * share:.1f}%; sampling noise alone "
                    f"reaches {noise:.3f}): new microphone, room or voices? Look at the clips, consider retraining"
                )
            elif p > PSI_WARNING:
                drift["note"] = (
                    f"PSI {p:.3f} is within sampling noise ({noise:.3f}): log more decisions"
                )
    clip_paths = [r["clip"] for r in records if r.get("clip")]
    clips = {"listed": len(clip_paths), "present": sum(Path(p).is_file() for p in clip_paths)}
    return MonitorSummary(
        log=log,
        n_records=n,
        bad_lines=bad_lines,
        first=_iso(min(known)) if known else None,
        last=_iso(max(known)) if known else None,
        verdicts=verdicts,
        rejection_rate=None if rejection is None else round(rejection, 4),
        borderline=sum(bool(r.get("borderline")) for r in records),
        sources=sources,
        model_versions=versions,
        score=percentiles(scores, (5, 50, 95)) if n else None,
        latency_ms=percentiles([r.get("latency_ms") for r in records]),
        added_ms=percentiles([r.get("added_ms") for r in records]),
        level_dbfs=percentiles([r.get("level_dbfs") for r in records], (5, 50, 95)),
        duration_s=percentiles([r.get("duration_s") for r in records], (5, 50, 95)),
        drift=drift,
        rates=rates,
        bin_seconds=width,
        clips=clips,
        warnings=warnings,
    )


def monitor(
    log: str | Path, model: str | Path | None = None
) -> tuple[MonitorSummary, list[dict[str, Any]], Reference | None]:
    """Read a decision log (and its backups) and summarise it against a bundle's reference scores."""
    contents = read_log(log)
    if not contents.records:
        raise ValueError(_no_records(contents))
    reference, why = load_reference(model)
    summary = summarize(
        contents.records,
        reference,
        log=str(log),
        bad_lines=len(contents.bad),
        bad_note=contents.describe_bad(),
        no_reference_reason=why,
    )
    return summary, contents.records, reference


def _no_records(contents: LogContents) -> str:
    names = ", ".join(str(f) for f in contents.files)
    if not contents.bad:
        return f"{names}: the decision log is empty (no decisions logged yet)"
    first = contents.bad[0]
    return (
        f"{names} holds no decision records ({len(contents.bad)} unreadable line(s); "
        f"{first.file.name} line {first.line}: {first.problem}): "
        "is it a decision log written by listen or serve (--log)?"
    )


# -- plots -----------------------------------------------------------------------------------


class PlottingUnavailable(ImportError):
    """matplotlib is not installed (the text summary still works)."""


def plot_monitor(
    summary: MonitorSummary,
    records: list[dict[str, Any]],
    reference: Reference | None,
    out_dir: str | Path,
) -> list[Path]:
    """Write ``verdict_rates.png``, ``scores.png`` and ``latency.png``; returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlottingUnavailable(
            "plots need matplotlib (pip install matplotlib); the text summary is complete without it"
        ) from exc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    thresholds = [float(r["threshold"]) for r in records if r.get("threshold") is not None]
    threshold = (
        float(np.median(thresholds)) if thresholds else (reference.threshold if reference else None)
    )

    # 1. Verdicts over time: counts, rejection rate, mean score.
    if summary.rates:
        starts = [datetime.fromisoformat(r["start"]) for r in summary.rates]
        width_days = (summary.bin_seconds or 3600) / 86400
        fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True, constrained_layout=True)
        bona = np.array([r.get("bonafide", 0) for r in summary.rates])
        spoof = np.array([r.get("spoof", 0) for r in summary.rates])
        axes[0].bar(
            starts,
            bona,
            width=width_days * 0.9,
            align="edge",
            color="tab:green",
            label="bonafide (passed)",
        )
        axes[0].bar(
            starts,
            spoof,
            width=width_days * 0.9,
            align="edge",
            bottom=bona,
            color="tab:red",
            label="spoof (rejected)",
        )
        axes[0].set_ylabel("decisions per bin")
        axes[0].set_ylim(0, max(1, int((bona + spoof).max())) * 1.3)  # room for the legend
        axes[0].legend(loc="upper left", fontsize=8)
        axes[0].set_title(
            f"{summary.n_records} decisions, {_bin_label(summary.bin_seconds)} bins ({summary.log})",
            fontsize=9,
        )
        rr = np.array(
            [np.nan if r["rejection_rate"] is None else r["rejection_rate"] for r in summary.rates]
        )
        axes[1].plot([s + _half(summary) for s in starts], 100 * rr, "o-", color="tab:red", ms=3)
        axes[1].set_ylabel("rejected (%)")
        top = float(np.nanmax(rr)) * 100 if np.isfinite(rr).any() else 0.0
        axes[1].set_ylim(0, min(100.0, max(5.0, top * 1.2)))
        ms = np.array(
            [np.nan if r["mean_score"] is None else r["mean_score"] for r in summary.rates]
        )
        axes[2].plot(
            [s + _half(summary) for s in starts],
            ms,
            "o-",
            color="tab:blue",
            ms=3,
            label="mean logged score",
        )
        if reference is not None and reference.bonafide:
            axes[2].axhline(
                float(np.mean(reference.bonafide)),
                color="tab:green",
                ls="--",
                lw=1,
                label="dev bona fide mean",
            )
        if threshold is not None:
            axes[2].axhline(threshold, color="k", ls=":", lw=1, label=f"threshold {threshold:+.2f}")
        axes[2].set_ylabel("score")
        axes[2].legend(loc="best", fontsize=8)
        axes[2].set_xlabel("time (UTC)")
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator()
        axes[2].xaxis.set_major_locator(locator)
        axes[2].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        p = out / "verdict_rates.png"
        save_figure(fig, p, dpi=110)
        plt.close(fig)
        paths.append(p)

    # 2. Score distribution against the bundle's dev scores.
    scores = np.asarray([float(r["score"]) for r in records])
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    pool = [scores]
    if reference is not None:
        pool += [np.asarray(reference.bonafide), np.asarray(reference.spoof)]
    allv = np.concatenate([v for v in pool if v.size])
    lo, hi = np.percentile(allv, [0.5, 99.5]) if allv.size else (-1.0, 1.0)
    pad = 0.05 * max(hi - lo, 1e-3)
    edges = np.linspace(lo - pad, hi + pad, 41)
    ax.hist(
        np.clip(scores, edges[0], edges[-1]),
        bins=edges,
        density=True,
        color="tab:blue",
        alpha=0.45,
        label=f"logged (n={scores.size})",
    )
    if reference is not None and reference.bonafide:
        ax.hist(
            np.clip(reference.bonafide, edges[0], edges[-1]),
            bins=edges,
            density=True,
            histtype="step",
            lw=1.8,
            color="tab:green",
            label=f"dev bona fide (n={len(reference.bonafide)})",
        )
    if reference is not None and reference.spoof:
        ax.hist(
            np.clip(reference.spoof, edges[0], edges[-1]),
            bins=edges,
            density=True,
            histtype="step",
            lw=1.8,
            color="tab:red",
            label=f"dev spoof (n={len(reference.spoof)})",
        )
    share = summary.drift.get("replay_share")
    if reference is not None and reference.bonafide and reference.spoof and share is not None:
        width = np.diff(edges)
        mix = (1 - share) * np.histogram(np.clip(reference.bonafide, edges[0], edges[-1]), edges)[
            0
        ] / len(reference.bonafide) + share * np.histogram(
            np.clip(reference.spoof, edges[0], edges[-1]), edges
        )[0] / len(reference.spoof)
        ax.stairs(
            mix / width,
            edges,
            color="k",
            ls="--",
            lw=1.2,
            label=f"dev mixture at {100 * share:.0f}% rejected (PSI reference)",
        )
    if threshold is not None:
        ax.axvline(threshold, color="k", ls=":", lw=1.2, label=f"threshold {threshold:+.2f}")
    d = summary.drift
    title = "score distribution (higher = more likely live)"
    if d.get("psi") is not None:
        flag = "  DRIFT" if d.get("level") == "drift" else ""
        title += f"; PSI {d['psi']:.3f} vs dev scores (warn > {PSI_WARNING}, noise {d['noise_95']:.3f}){flag}"
    else:
        title += f"; {d.get('note', 'no drift measure')}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    p = out / "scores.png"
    save_figure(fig, p, dpi=110)
    plt.close(fig)
    paths.append(p)

    # 3. Latency.
    lat = np.asarray([float(r["latency_ms"]) for r in records if r.get("latency_ms") is not None])
    added = np.asarray([float(r["added_ms"]) for r in records if r.get("added_ms") is not None])
    if lat.size:
        fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
        top = float(np.percentile(np.concatenate([lat, added]) if added.size else lat, 99.5)) * 1.15
        bins = np.linspace(0, max(top, 1e-3), 50)
        ax.hist(
            np.clip(lat, 0, bins[-1]),
            bins=bins,
            color="tab:purple",
            alpha=0.6,
            label="scoring (front-end + inference)",
        )
        if added.size:
            ax.hist(
                np.clip(added, 0, bins[-1]),
                bins=bins,
                histtype="step",
                lw=1.5,
                color="tab:orange",
                label="added by the wake proxy (detection in -> out)",
            )
        for q, ls in ((50, "-"), (95, "--"), (99, ":")):
            v = float(np.percentile(lat, q))
            ax.axvline(v, color="k", ls=ls, lw=1, label=f"scoring p{q} {v:.1f} ms")
        ax.set_xlabel("milliseconds")
        ax.set_ylabel("decisions")
        ax.set_title(
            f"latency per decision (n={lat.size}; values above {bins[-1]:.0f} ms shown in the last bin)",
            fontsize=9,
        )
        ax.legend(fontsize=8)
        p = out / "latency.png"
        save_figure(fig, p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def _bin_label(seconds: float | None) -> str:
    if not seconds:
        return "?"
    for unit, s in (("week", 7 * 86400), ("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= s and seconds % s == 0:
            return f"{int(seconds // s)} {unit}"
    return f"{seconds:.0f} s"


def _half(summary: MonitorSummary):
    from datetime import timedelta

    return timedelta(seconds=(summary.bin_seconds or 0) / 2)


# -- export ----------------------------------------------------------------------------------


@dataclass
class ExportResult:
    dataset: str
    exported: int
    already_there: int
    missing: int
    labels: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


EXPORT_COLUMNS = (
    "label_confirmed",
    "verdict",
    "score",
    "threshold",
    "borderline",
    "time",
    "source",
    "model_version",
    "level_dbfs",
)


def _split_for(name: str, dev_fraction: float) -> str:
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "dev" if h < dev_fraction else "train"


def export_clips(
    log: str | Path, dataset_dir: str | Path, dev_fraction: float = 0.2
) -> ExportResult:
    """Copy the log's saved clips into a dataset folder with a ``protocol.csv`` to confirm.

    Labels come from the verdicts (``spoof`` for rejected clips, ``bonafide`` for passed
    borderline ones) with ``label_confirmed=no``; ``split`` is ``train`` or ``dev`` by a
    stable hash of the clip name. Running it again adds only new clips. Files are private
    (0600 in a 0700 folder): they are recordings of people's homes.
    """
    from .protocol import PROTOCOL, Row, read_protocol, write_protocol

    if not 0.0 <= dev_fraction <= 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1], got {dev_fraction}")
    records, _ = read_records(log)
    out = Path(dataset_dir)
    audio_dir = out / "audio"
    for d in (out, audio_dir):
        d.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(d, DIR_MODE)
    rows: list[Row] = []
    existing: set[str] = set()
    if (out / PROTOCOL).is_file():
        proto = read_protocol(out)
        rows = list(proto.rows)
        existing = {Path(r.path).name for r in rows}
    exported = already = missing = 0
    labels: dict[str, int] = {}
    for r in records:
        clip = r.get("clip")
        if not clip:
            continue
        src = Path(clip)
        if src.name in existing:
            already += 1
            continue
        if not src.is_file():
            missing += 1  # deleted by the clip cap since it was logged
            continue
        dst = audio_dir / src.name
        with atomic_path(dst, mode=FILE_MODE) as tmp:
            shutil.copyfile(src, tmp)
        label = "spoof" if r.get("verdict") == "spoof" else "bonafide"
        labels[label] = labels.get(label, 0) + 1
        rows.append(
            Row(
                path=f"audio/{src.name}",
                label=label,
                speaker="",
                split=_split_for(src.name, dev_fraction),
                conditions={
                    "label_confirmed": "no",
                    "verdict": str(r.get("verdict", "")),
                    "score": f"{float(r['score']):.6f}",
                    "threshold": ""
                    if r.get("threshold") is None
                    else f"{float(r['threshold']):.6f}",
                    "borderline": "yes" if r.get("borderline") else "no",
                    "time": str(r.get("time", "")),
                    "source": str(r.get("source", "")),
                    "model_version": str(r.get("model_version", "")),
                    "level_dbfs": "" if r.get("level_dbfs") is None else str(r["level_dbfs"]),
                },
            )
        )
        existing.add(src.name)
        exported += 1
    if rows:
        cols = list(EXPORT_COLUMNS)
        for row in rows:
            for c in row.conditions:
                if c not in cols:
                    cols.append(c)
        write_protocol(out / PROTOCOL, rows, cols, mode=FILE_MODE)
        _write_export_card(out, len(rows))
    return ExportResult(str(out), exported, already, missing, labels)


def _write_export_card(out: Path, n: int) -> None:
    text = (
        "# Clips exported from a wakeguard decision log\n\n"
        f"{n} clip(s) saved in the wild (rejected, or within the borderline margin of the threshold).\n\n"
        "**The labels are the model's own verdicts, not ground truth.** Every row has\n"
        "`label_confirmed=no`. Listen to each clip, correct `label` where the model was wrong,\n"
        "set `label_confirmed=yes`, and drop the rows you cannot decide, before fine-tuning with\n"
        "`wakeguard train --init-from BUNDLE` on this folder (merged with the original training\n"
        "data, so the model does not forget it). `wakeguard train` and `wakeguard evaluate` refuse\n"
        "rows whose `label_confirmed` is not `yes` (rows merged in from other data may leave it empty).\n"
        "`split` is train/dev by a stable hash of the name.\n\n"
        "These are recordings made in someone's home: keep the folder private (it is created 0700).\n"
    )
    p = out / "datacard.md"
    write_text_atomic(p, text, mode=FILE_MODE)


__all__ = [
    "ExportResult",
    "MonitorSummary",
    "PSI_WARNING",
    "PlottingUnavailable",
    "Reference",
    "export_clips",
    "load_reference",
    "monitor",
    "plot_monitor",
    "psi",
    "summarize",
]
