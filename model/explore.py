"""Understand a dataset before training on it: balance, levels, spectra, and what looks wrong.

:func:`explore` reads any dataset in the wakeguard format and writes ``summary.json``,
``summary.md`` and PNG plots: class balance per split and condition; duration, level and
leading/trailing-silence histograms per class; the average long-term spectrum of bona fide
against spoof on a log-frequency axis (the < 500 Hz band that Void relies on is shaded); and
example spectrograms. Warnings cover clipping, silence, sample rates and channel counts other
than 16 kHz mono (read from the file header before conversion), unreadable files (listed, not
fatal), speakers shared between splits, and single features that separate the classes on their
own (the silence/duration shortcuts known from ASVspoof 2017 and 2019 PA).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.audio import (
    MIN_SCORE_SECONDS,
    SAMPLE_RATE,
    SILENCE_DBFS,
    AudioError,
    check_audio,
    load_audio,
)
from wakeguard.edge.files import save_figure, write_text_atomic
from wakeguard.edge.protocol import LABELS, SPLITS, Protocol, Row, ensure_folder, read_protocol

LOW_BAND_HZ = 500.0
"""Upper edge of the low-frequency band highlighted in the spectrum plot (Void's LFP region)."""
LTAS_NPERSEG = 2048
"""Welch segment length for the long-term spectrum: 7.8 Hz bins at 16 kHz."""
SHORTCUT_AUC = 0.75
"""A single trivial feature whose AUC (either direction) reaches this is flagged as a shortcut."""
SILENCE_FRAME_S = 0.02
SILENCE_BELOW_PEAK_DB = 40.0
COLOURS = {"bonafide": "#2a9d8f", "spoof": "#e76f51"}


class ExploreError(ValueError):
    """A dataset that cannot be explored (its audio is not where the protocol says), or the
    libraries for the plots are missing; raised before the output folder is created."""


@dataclass
class FileStats:
    """What was measured on one audio file."""

    row: Row
    path: Path
    rate: int
    channels: int
    duration_s: float
    rms_dbfs: float
    peak: float
    clipped_fraction: float
    lead_silence_s: float
    trail_silence_s: float
    low_band_db: float

    @property
    def silent(self) -> bool:
        return self.rms_dbfs < SILENCE_DBFS

    @property
    def clipped(self) -> bool:
        return self.clipped_fraction > 0.001


# ----------------------------------------------------------------------------- measuring


def edge_silence(x: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[float, float]:
    """Leading and trailing silence in seconds: 20 ms frames more than 40 dB below the loudest."""
    n = int(SILENCE_FRAME_S * rate)
    k = x.size // n
    if k == 0:
        return 0.0, 0.0
    frames = x[: k * n].reshape(k, n).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    threshold = max(db.max() - SILENCE_BELOW_PEAK_DB, SILENCE_DBFS - 10)
    active = np.flatnonzero(db > threshold)
    if active.size == 0:
        return k * SILENCE_FRAME_S, 0.0
    return float(active[0] * SILENCE_FRAME_S), float((k - 1 - active[-1]) * SILENCE_FRAME_S)


def long_term_spectrum(x: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectrum normalised to unit total power (so level does not enter)."""
    from scipy.signal import welch

    nper = min(LTAS_NPERSEG, x.size)
    f, p = welch(x.astype(np.float64), fs=rate, nperseg=nper, nfft=LTAS_NPERSEG)
    total = p.sum()
    return f, (p / total if total > 0 else p)


def log_bands(
    freqs: np.ndarray, power: np.ndarray, per_octave: int = 16, fmin: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """Average power in 1/``per_octave``-octave bands from ``fmin`` to Nyquist (smoothing for
    plots); a band narrower than one FFT bin takes the interpolated value."""
    n = max(1, int(round(per_octave * np.log2(freqs[-1] / fmin))))
    edges = np.geomspace(fmin, freqs[-1], n + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    out = np.interp(centres, freqs, power)
    idx = np.searchsorted(freqs, edges)
    for i in range(n):
        if idx[i + 1] > idx[i]:
            out[i] = power[idx[i] : idx[i + 1]].mean()
    return centres, out


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(pos > neg) with ties counted half (Mann-Whitney U / n1 n2)."""
    neg, pos = np.asarray(neg, float), np.asarray(pos, float)
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    allv = np.concatenate([neg, pos])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size)
    sorted_v = allv[order]
    # average ranks for ties
    i = 0
    while i < allv.size:
        j = i
        while j + 1 < allv.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = ranks[neg.size :].sum()
    return float((r_pos - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def _sample(rows: list[Row], max_files: int | None, seed: int) -> list[Row]:
    """Stratified by (split, label), deterministic; all rows when they fit."""
    if max_files is None or len(rows) <= max_files:
        return list(rows)
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.split, r.label), []).append(i)
    picked: list[int] = []
    for _key, idx in sorted(groups.items()):
        n = max(1, round(max_files * len(idx) / len(rows)))
        picked.extend(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())
    return [rows[i] for i in sorted(picked)]


# ----------------------------------------------------------------------------- summary parts


def _balance(p: Protocol) -> dict[str, Any]:
    per_split: dict[str, dict[str, int]] = {}
    for r in p.rows:
        c = per_split.setdefault(r.split or "(none)", {lab: 0 for lab in LABELS})
        c[r.label] += 1
    order = {s: i for i, s in enumerate(SPLITS)}
    per_split = dict(sorted(per_split.items(), key=lambda kv: order.get(kv[0], len(order))))
    per_condition: dict[str, dict[str, dict[str, int]]] = {}
    for col in p.condition_columns:
        d: dict[str, dict[str, int]] = {}
        for r in p.rows:
            v = r.conditions.get(col, "") or "(none)"
            d.setdefault(v, {lab: 0 for lab in LABELS})[r.label] += 1
        per_condition[col] = dict(sorted(d.items(), key=lambda kv: -sum(kv[1].values())))
    totals = {lab: sum(1 for r in p.rows if r.label == lab) for lab in LABELS}
    return {"total": totals, "per_split": per_split, "per_condition": per_condition}


def _describe(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, float)
    return {
        "mean": round(float(a.mean()), 3),
        "median": round(float(np.median(a)), 3),
        "min": round(float(a.min()), 3),
        "max": round(float(a.max()), 3),
        "std": round(float(a.std()), 3),
    }


FEATURES = {
    "duration_s": "duration",
    "rms_dbfs": "RMS level",
    "peak": "peak level",
    "lead_silence_s": "leading silence",
    "trail_silence_s": "trailing silence",
}


def _warnings(
    p: Protocol,
    stats: list[FileStats],
    unreadable: list[dict[str, str]],
    shortcuts: dict[str, float],
) -> list[str]:
    w: list[str] = []

    def some(items: list[FileStats]) -> str:
        return ", ".join(str(s.path) for s in items[:3]) + (" ..." if len(items) > 3 else "")

    if unreadable:
        w.append(
            f"{len(unreadable)} file(s) unreadable (listed under 'unreadable'): {unreadable[0]['path']}: {unreadable[0]['problem']}"
        )
    clipped = [s for s in stats if s.clipped]
    if clipped:
        w.append(
            f"{len(clipped)} file(s) clipped (> 0.1% of samples at full scale): {some(clipped)}"
        )
    silent = [s for s in stats if s.silent]
    if silent:
        w.append(f"{len(silent)} file(s) silent (RMS < {SILENCE_DBFS:.0f} dBFS): {some(silent)}")
    short = [s for s in stats if s.duration_s < MIN_SCORE_SECONDS]
    if short:
        w.append(
            f"{len(short)} file(s) shorter than {MIN_SCORE_SECONDS} s, which the scorer refuses "
            f"(evaluate lists them as unscored): {some(short)}"
        )
    rates = Counter(s.rate for s in stats if s.rate != SAMPLE_RATE)
    if rates:
        w.append(
            f"{sum(rates.values())} file(s) not at {SAMPLE_RATE} Hz ({', '.join(f'{r} Hz: {n}' for r, n in sorted(rates.items()))}); "
            "they are resampled to 16 kHz when loaded"
        )
    chans = Counter(s.channels for s in stats if s.channels != 1)
    if chans:
        w.append(
            f"{sum(chans.values())} file(s) not mono ({', '.join(f'{c} channels: {n}' for c, n in sorted(chans.items()))}); "
            "channels are averaged when loaded"
        )
    for split, c in _balance(p)["per_split"].items():
        missing = [lab for lab in LABELS if c[lab] == 0]
        if missing:
            w.append(f"split {split!r} has no {' or '.join(missing)} rows")
    by_split: dict[str, set[str]] = {}
    for r in p.rows:
        if r.speaker and r.split:
            by_split.setdefault(r.split, set()).add(r.speaker)
    splits = sorted(by_split)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            shared = by_split[a] & by_split[b]
            if shared:
                w.append(
                    f"{len(shared)} speaker(s) appear in both {a} and {b} (e.g. {sorted(shared)[0]}); splits are not speaker-disjoint"
                )
    for key, value in shortcuts.items():
        if np.isfinite(value) and value >= SHORTCUT_AUC:
            w.append(
                f"{FEATURES[key]} alone separates bona fide from spoof (AUC {value:.2f}): a shortcut a model can learn "
                "instead of the replay channel"
            )
    return w


# ----------------------------------------------------------------------------- plots


def _plot_balance(summary: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    bal = summary["balance"]
    cols = list(bal["per_condition"])[:7]
    n = 1 + len(cols)
    ncols = 1 if n == 1 else 2
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 3.2 * nrows), squeeze=False)
    panels = [("split", bal["per_split"])] + [(c, bal["per_condition"][c]) for c in cols]
    for ax, (title, table) in zip(axes.flat, panels, strict=False):
        items = list(table.items())[:15]
        names = [k for k, _ in items]
        x = np.arange(len(names))
        for j, lab in enumerate(LABELS):
            ax.bar(
                x + (j - 0.5) * 0.4, [v[lab] for _, v in items], 0.4, label=lab, color=COLOURS[lab]
            )
        ax.set_xticks(
            x,
            names,
            rotation=45 if len(names) > 4 else 0,
            ha="right" if len(names) > 4 else "center",
            fontsize=8,
        )
        more = f" (top 15 of {len(table)})" if len(table) > 15 else ""
        ax.set_title(f"rows per {title}{more}", fontsize=10)
        ax.set_ylabel("rows")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _plot_distributions(stats: list[FileStats], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    panels = [
        ("duration_s", "duration (s)"),
        ("rms_dbfs", "RMS level (dBFS)"),
        ("lead_silence_s", "leading silence (s)"),
        ("trail_silence_s", "trailing silence (s)"),
    ]
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        values = {
            lab: np.array([getattr(s, key) for s in stats if s.row.label == lab]) for lab in LABELS
        }
        allv = np.concatenate([v for v in values.values() if v.size]) if stats else np.zeros(1)
        allv = allv[np.isfinite(allv)]
        lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        for lab in LABELS:
            v = values[lab][np.isfinite(values[lab])]
            if v.size:
                ax.hist(v, bins=bins, alpha=0.55, label=f"{lab} (n={v.size})", color=COLOURS[lab])
        ax.set_xlabel(title)
        ax.set_ylabel("files")
        ax.legend(fontsize=8)
    fig.suptitle("per-class distributions (overlap = no shortcut)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _plot_ltas(
    freqs: np.ndarray, ltas: dict[str, np.ndarray], counts: dict[str, int], path: Path
) -> None:
    import matplotlib.pyplot as plt

    fig, (ax, axd) = plt.subplots(
        2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    db = {}
    for lab in ltas:
        f, bands = log_bands(freqs, ltas[lab])
        db[lab] = 10 * np.log10(bands + 1e-15)
    for lab, d in db.items():
        ax.semilogx(f, d, color=COLOURS[lab], label=f"{lab} (n={counts[lab]})", lw=1.5)
    for a in (ax, axd):
        a.axvspan(20, LOW_BAND_HZ, color="#ffd166", alpha=0.25, lw=0)
        a.grid(True, which="both", alpha=0.3)
    ax.text(0.01, 0.98, f"< {LOW_BAND_HZ:.0f} Hz", transform=ax.transAxes, fontsize=9, va="top")
    ax.set_ylabel("relative power (dB, per-file normalised)")
    ax.set_title("average long-term spectrum (1/16-octave bands)")
    ax.legend()
    if len(db) == 2:
        axd.semilogx(f, db["spoof"] - db["bonafide"], color="#264653")
        axd.axhline(0, color="grey", lw=0.8)
    axd.set_ylabel("spoof - bona fide (dB)")
    axd.set_xlabel("frequency (Hz)")
    axd.set_xlim(20, float(freqs[-1]))
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _plot_spectrograms(examples: list[FileStats], path: Path) -> None:
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    fig, axes = plt.subplots(1, len(examples), figsize=(6 * len(examples), 4), squeeze=False)
    for ax, s in zip(axes.flat, examples, strict=True):
        x = load_audio(s.path)
        f, t, p = spectrogram(x, fs=SAMPLE_RATE, nperseg=512, noverlap=352)
        img = 10 * np.log10(p + 1e-12)
        vmax = float(img.max())
        mesh = ax.pcolormesh(t, f, img, shading="auto", vmin=vmax - 80, vmax=vmax, cmap="magma")
        who = f" speaker {s.row.speaker}" if s.row.speaker else ""
        ax.set_title(f"{s.row.label}{who}: {s.path.name}", fontsize=9)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz)")
        fig.colorbar(mesh, ax=ax, label="dB")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _pick_examples(stats: list[FileStats]) -> list[FileStats]:
    """One bona fide and one spoof, from the same speaker when any speaker has both."""
    usable = [s for s in stats if not s.silent]
    by_label = {lab: [s for s in usable if s.row.label == lab] for lab in LABELS}
    # Best: the replay of the same utterance (same speaker, same file name); next: same speaker.
    same_name = {(s.row.speaker, s.path.stem): s for s in by_label["spoof"]}
    for b in by_label["bonafide"]:
        if (b.row.speaker, b.path.stem) in same_name:
            return [b, same_name[(b.row.speaker, b.path.stem)]]
    spk_spoof = {s.row.speaker: s for s in by_label["spoof"] if s.row.speaker}
    for b in by_label["bonafide"]:
        if b.row.speaker and b.row.speaker in spk_spoof:
            return [b, spk_spoof[b.row.speaker]]
    return [by_label[lab][0] for lab in LABELS if by_label[lab]]


# ----------------------------------------------------------------------------- main entry


def _rows_to_measure(dataset: Path, max_files: int | None, seed: int) -> tuple[Protocol, list[Row]]:
    """The protocol and the rows whose audio will be measured. A missing file among them is a
    finding (listed as unreadable); not one of them there is a wrong path, refused."""
    proto = read_protocol(dataset)
    rows = _sample(proto.rows, max_files, seed)
    if not any(r.audio_path(proto.root).exists() for r in rows):
        raise ExploreError(
            f"{proto.file}: none of the {len(rows)} audio files to measure exists (the first is "
            f"{rows[0].audio_path(proto.root)}; relative paths are read from {proto.root})"
        )
    return proto, rows


def _matplotlib() -> Any:
    """matplotlib for the plots, after checking scipy for the spectra too: both come with the
    training extra, and a missing one must fail before the output folder exists."""
    try:
        import matplotlib
        import scipy.signal  # noqa: F401
    except ImportError as exc:
        raise ExploreError(
            f"data explore needs the training extra for its spectra and plots "
            f"({exc.name or exc} missing): pip install 'wakeguard[train]'"
        ) from exc
    return matplotlib


def explore(
    dataset: Path,
    out: Path,
    *,
    max_files: int | None = 2000,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure ``dataset`` and write ``summary.json``, ``summary.md`` and PNGs into ``out``.

    Counts come from every protocol row; audio statistics from at most ``max_files`` files
    (stratified by split and label; ``None`` = all). Unreadable and missing files are listed
    in the summary, not raised, as long as one of them is there. Every input is checked
    before ``out`` is created, so a refused call leaves no folder behind; ``progress(done,
    total)`` is called only after that, before each file and once at the end. Returns the
    summary dict.
    """
    import soundfile as sf

    proto, rows = _rows_to_measure(dataset, max_files, seed)
    _matplotlib().use("Agg")
    out = ensure_folder(out)
    stats: list[FileStats] = []
    unreadable: list[dict[str, str]] = []
    ltas_sum: dict[str, np.ndarray] = {}
    freqs = np.zeros(0)
    for i, row in enumerate(rows):
        if progress is not None:  # the first call comes once every input has passed its checks
            progress(i, len(rows))
        path = row.audio_path(proto.root)
        try:
            try:
                info = sf.info(str(path))
            except Exception as exc:  # header unreadable: load_audio gives the clearer message
                if not path.exists():
                    raise AudioError(path, "file not found") from exc
                raise AudioError(path, f"unreadable header ({exc})") from exc
            x = load_audio(path)
        except AudioError as exc:
            unreadable.append({"path": str(path), "problem": exc.problem})
            continue
        chk = check_audio(x)
        lead, trail = edge_silence(x)
        freqs, spec = long_term_spectrum(x)
        low = float(spec[freqs < LOW_BAND_HZ].sum())
        stats.append(
            FileStats(
                row=row,
                path=path,
                rate=int(info.samplerate),
                channels=int(info.channels),
                duration_s=chk.duration_s,
                rms_dbfs=chk.rms_dbfs,
                peak=chk.peak,
                clipped_fraction=chk.clipped_fraction,
                lead_silence_s=lead,
                trail_silence_s=trail,
                low_band_db=10 * np.log10(max(low, 1e-12)),
            )
        )
        if not chk.silent:
            ltas_sum[row.label] = ltas_sum.get(row.label, 0) + spec
    if progress is not None:
        progress(len(rows), len(rows))

    per_class: dict[str, Any] = {}
    for lab in LABELS:
        ss = [s for s in stats if s.row.label == lab]
        per_class[lab] = {
            "n_files": len(ss),
            **{
                k: _describe([getattr(s, k) for s in ss if np.isfinite(getattr(s, k))])
                for k in FEATURES
            },
            "low_band_db": _describe([s.low_band_db for s in ss]),
            "n_clipped": sum(s.clipped for s in ss),
            "n_silent": sum(s.silent for s in ss),
        }

    def values(key: str, lab: str) -> np.ndarray:
        v = np.array([getattr(s, key) for s in stats if s.row.label == lab], float)
        return v[np.isfinite(v)]

    shortcuts = {}
    for key in FEATURES:
        a = auc(values(key, "bonafide"), values(key, "spoof"))
        shortcuts[key] = round(max(a, 1 - a), 3) if np.isfinite(a) else float("nan")
    low_auc = auc(values("low_band_db", "spoof"), values("low_band_db", "bonafide"))

    counts_ltas = {
        lab: sum(1 for s in stats if s.row.label == lab and not s.silent) for lab in LABELS
    }
    ltas = {lab: ltas_sum[lab] / counts_ltas[lab] for lab in ltas_sum}
    spectrum: dict[str, Any] = {"low_band_hz": LOW_BAND_HZ}
    if ltas:
        # A compact copy of the curves at log-spaced frequencies for other tools (report).
        for lab, curve in ltas.items():
            grid, bands = log_bands(freqs, curve, per_octave=6)
            spectrum["freqs_hz"] = [round(float(g), 1) for g in grid]
            spectrum[f"{lab}_db"] = [round(float(v), 2) for v in 10 * np.log10(bands + 1e-15)]
        for lab in ltas:
            spectrum[f"{lab}_low_band_db"] = round(
                float(10 * np.log10(ltas[lab][freqs < LOW_BAND_HZ].sum() + 1e-15)), 2
            )
        if len(ltas) == 2:
            spectrum["low_band_difference_db"] = round(
                spectrum["spoof_low_band_db"] - spectrum["bonafide_low_band_db"], 2
            )
            spectrum["low_band_auc"] = round(low_auc, 3)

    summary: dict[str, Any] = {
        "dataset": str(Path(dataset).resolve()),
        "n_rows": len(proto.rows),
        "n_measured": len(stats),
        "n_sampled": len(rows),
        "condition_columns": proto.condition_columns,
        "balance": _balance(proto),
        "audio": per_class,
        "sample_rates": {str(k): v for k, v in sorted(Counter(s.rate for s in stats).items())},
        "channels": {str(k): v for k, v in sorted(Counter(s.channels for s in stats).items())},
        "shortcut_auc": shortcuts,
        "spectrum": spectrum,
        "unreadable": unreadable,
        "warnings": [],
        "plots": [],
    }
    if len(rows) < len(proto.rows):
        summary["note"] = (
            f"audio statistics from a stratified sample of {len(rows)} of {len(proto.rows)} files"
        )
    summary["warnings"] = _warnings(proto, stats, unreadable, shortcuts)

    plots = {"balance.png": lambda p: _plot_balance(summary, p)}
    if stats:
        plots["distributions.png"] = lambda p: _plot_distributions(stats, p)
    if ltas:
        plots["spectrum.png"] = lambda p: _plot_ltas(freqs, ltas, counts_ltas, p)
    examples = _pick_examples(stats)
    if examples:
        plots["spectrograms.png"] = lambda p: _plot_spectrograms(examples, p)
        summary["examples"] = [
            {"label": s.row.label, "speaker": s.row.speaker, "path": str(s.path)} for s in examples
        ]
    for name, fn in plots.items():
        fn(out / name)
        summary["plots"].append(name)

    write_text_atomic(
        out / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n"
    )
    write_text_atomic(out / "summary.md", summary_markdown(summary))
    return summary


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def summary_markdown(s: dict[str, Any]) -> str:
    """A human-readable page for ``summary.json``."""
    lines = [f"# Dataset summary: {s['dataset']}", ""]
    lines.append(f"{s['n_rows']} rows; audio measured on {s['n_measured']} files.")
    if s.get("note"):
        lines.append(f"({s['note']}.)")
    lines += ["", "## Class balance", "", "| split | bonafide | spoof |", "|---|---:|---:|"]
    for split, c in s["balance"]["per_split"].items():
        lines.append(f"| {split} | {c['bonafide']} | {c['spoof']} |")
    for col, table in s["balance"]["per_condition"].items():
        lines += ["", f"### {col}", "", "| value | bonafide | spoof |", "|---|---:|---:|"]
        for v, c in list(table.items())[:30]:
            lines.append(f"| {v} | {c['bonafide']} | {c['spoof']} |")
        if len(table) > 30:
            lines.append(f"| ... {len(table) - 30} more | | |")
    lines += [
        "",
        "## Audio per class",
        "",
        "| | " + " | ".join(LABELS) + " |",
        "|---|" + "---:|" * len(LABELS),
    ]
    for key, name in {**FEATURES, "low_band_db": f"power below {LOW_BAND_HZ:.0f} Hz (dB)"}.items():
        cells = []
        for lab in LABELS:
            d = s["audio"][lab].get(key)
            cells.append(
                "-" if d is None else f"{d['median']:.2f} (median), {d['min']:.2f}..{d['max']:.2f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| clipped files | "
        + " | ".join(str(s["audio"][lab]["n_clipped"]) for lab in LABELS)
        + " |"
    )
    lines.append(
        "| silent files | " + " | ".join(str(s["audio"][lab]["n_silent"]) for lab in LABELS) + " |"
    )
    lines += ["", "## Single-feature separability (AUC, 0.5 = none)", ""]
    for key, v in s["shortcut_auc"].items():
        lines.append(f"- {FEATURES[key]}: {v}")
    sp = s["spectrum"]
    if "low_band_difference_db" in sp:
        lines += [
            "",
            f"Long-term spectrum below {LOW_BAND_HZ:.0f} Hz: spoof minus bona fide = {sp['low_band_difference_db']} dB "
            f"(AUC of per-file low-band power {sp['low_band_auc']}).",
        ]
    lines += ["", "## Warnings", ""]
    lines += [f"- {w}" for w in s["warnings"]] or ["- none"]
    if s["unreadable"]:
        lines += ["", "## Unreadable files", ""]
        lines += [f"- {u['path']}: {u['problem']}" for u in s["unreadable"]]
    lines += ["", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in s["plots"]]
    return "\n".join(lines) + "\n"
