"""One self-contained HTML report of a run folder, for people who will not read JSON.

:func:`build_report` reads only artefacts already in the run folder (score CSVs, metrics
and baseline JSON, ``quantize/variants.json``, the bundle manifest, the dataset's data
card) and recomputes nothing beyond plots of those scores. Every section that lacks its
input says what is missing instead of failing. Figures are embedded (base64), so the single
HTML file can be mailed around, and also written as PNGs for slides: next to the default
``RUN/report/index.html``, or in ``STEM_figures/`` beside a report written elsewhere
(``--out``), so that they never overwrite files of the user's that share their names.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.endpoint import EndpointParams
from wakeguard.edge.files import write_bytes_atomic, write_text_atomic

from .config import read_json_file
from .metrics import (
    DET_TICKS,
    ROOM_COLUMNS,
    ScoreTable,
    compute_eer,
    det_curve,
    probit,
    read_scores,
)

REPORT_DIR = "report"
REPORT_FILE = "index.html"
TARGET_EER = 0.02
TARGET_INT8_GAP = 0.005
TARGET_BYTES = 250 * 1024
DETECTOR = "detector (int8)"
_COLOURS = {
    "detector (int8)": "#1b6ac9",
    "void": "#d9822b",
    "lfcc_gmm": "#2a9d5c",
    "chance": "#999999",
    "majority": "#bbbbbb",
}


# --------------------------------------------------------------------------- inputs


def _read_json(path: Path) -> Any:
    """``path``'s JSON, or None when it is absent. A file that exists but is not JSON is an
    error naming it: reporting it as "not found" would send the reader looking for a file
    that is there."""
    return read_json_file(path, None)


@dataclass
class RunInputs:
    """What the report found in a run folder; ``missing`` lists what it looked for in vain."""

    run: Path
    config: dict[str, Any] | None = None
    dataset: Path | None = None
    datacard_md: str | None = None
    datacard: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    scores: ScoreTable | None = None
    baselines: list[dict[str, Any]] | None = None
    baseline_scores: dict[str, ScoreTable] = field(default_factory=dict)
    variants: list[dict[str, Any]] | None = None
    manifest: dict[str, Any] | None = None
    member_manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    """An ensemble bundle's members' own manifests, by member name."""
    curves: list[tuple[str, Path]] = field(default_factory=list)
    """Training-curve PNGs: ``("", RUN/curves.png)`` or one per ensemble member."""
    missing: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.missing.append(what)


def gather(run: Path) -> RunInputs:
    """Read every input the report can use; a missing file is noted, a corrupt one raises ValueError."""
    inp = RunInputs(run=run)
    inp.config = _read_json(run / "config.json")
    if inp.config is not None and not isinstance(inp.config, dict):
        raise ValueError(f"{run / 'config.json'}: expected a JSON object")
    if inp.config is None:
        inp.note("config.json (so the dataset and its data card are unknown)")
    elif inp.config.get("dataset"):
        inp.dataset = Path(inp.config["dataset"])
        md, js = inp.dataset / "datacard.md", inp.dataset / "datacard.json"
        if md.is_file():
            inp.datacard_md = md.read_text(encoding="utf-8", errors="replace")
        inp.datacard = _read_json(js) if js.is_file() else None
        if inp.datacard_md is None and inp.datacard is None:
            inp.note(f"data card ({md} / {js})")
    else:
        inp.note("the dataset path in config.json")
    inp.metrics = _read_json(run / "eval" / "metrics.json")
    if inp.metrics is None:
        inp.note("eval/metrics.json (run `wakeguard evaluate --out RUN/eval`)")
    try:
        inp.scores = read_scores(run / "eval" / "scores.csv")
    except (OSError, ValueError):
        inp.note("eval/scores.csv")
    bl = _read_json(run / "baselines" / "baselines.json")
    if isinstance(bl, list):
        inp.baselines = bl
        for b in bl:
            try:
                inp.baseline_scores[b["name"]] = read_scores(
                    run / "baselines" / b.get("scores", f"{b['name']}_scores.csv")
                )
            except (OSError, ValueError, KeyError):
                inp.note(f"baselines/{b.get('name', '?')}_scores.csv")
    else:
        inp.note("baselines/baselines.json")
    v = _read_json(run / "quantize" / "variants.json")
    if isinstance(v, list):
        inp.variants = v
    else:
        inp.note("quantize/variants.json")
    inp.manifest = _read_json(run / "bundle" / "manifest.json")
    if inp.manifest is None:
        inp.note("bundle/manifest.json")
    for m in (inp.manifest or {}).get("members") or []:
        mm = _read_json(run / "bundle" / str(m.get("path", "")) / "manifest.json")
        if isinstance(mm, dict):
            inp.member_manifests[str(m.get("name"))] = mm
        else:
            inp.note(f"bundle/{m.get('path')}/manifest.json")
    record = _read_json(run / "ensemble.json")
    if isinstance(record, dict):
        for m in record.get("members") or []:
            member_run = Path(str(m.get("run", "")))
            png = (member_run if member_run.is_absolute() else run / member_run) / "curves.png"
            if png.is_file():
                inp.curves.append((str(m.get("name")), png))
            else:
                inp.note(f"{png} (training curves of member {m.get('name')})")
    elif (run / "curves.png").is_file():
        inp.curves.append(("", run / "curves.png"))
    else:
        inp.note("curves.png (training curves)")
    return inp


# --------------------------------------------------------------------------- figures


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    return fig


def _png(fig, tight: bool = True) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _eval_split(inp: RunInputs) -> str | None:
    split = (inp.metrics or {}).get("split")
    return None if split in (None, "all") else split


def _systems(inp: RunInputs) -> dict[str, ScoreTable]:
    """Score tables on the evaluated split: the detector first, then the baselines."""
    out: dict[str, ScoreTable] = {}
    split = _eval_split(inp) or "eval"
    if inp.scores is not None:
        out[DETECTOR] = inp.scores
    for name, table in inp.baseline_scores.items():
        t = table.select(split)
        if t.rows:
            out[name] = t
    return out


@dataclass
class DetPlot:
    """The DET figure and what it shows: the curves drawn and those outside its axes."""

    png: bytes
    drawn: list[str]
    """Legend labels of the curves on the plot (the EER line included)."""
    off_plot: dict[str, float]
    """Systems whose whole curve lies outside the plotted range, with their EER."""

    def caption(self, text: str) -> str:
        """``text`` plus a sentence naming the curves that were left off, if any."""
        if not self.off_plot:
            return text
        names = ", ".join(f"{n} (EER {100 * e:.1f}%)" for n, e in self.off_plot.items())
        return (
            f"{text}. Not drawn: {names}, whose curves lie outside the plotted range; "
            "the baseline table lists them"
        )


DET_EDGE_MARGIN = 0.03
"""A curve must come this far (fraction of the axis span) inside the plot to count as drawn."""


def _inside(xs: np.ndarray, ys: np.ndarray, lo: float, hi: float) -> bool:
    """Whether a ``steps-post`` path has a visible stretch inside the square ``(lo, hi)``.

    Each step is a horizontal then a vertical segment, so a sparse curve can cross the plot
    with no vertex inside it; every segment is checked against the square shrunk by
    :data:`DET_EDGE_MARGIN` (a curve grazing the corner is not visible either).
    """
    pad = DET_EDGE_MARGIN * (hi - lo)
    a, b = lo + pad, hi - pad

    def overlaps(u0: np.ndarray, u1: np.ndarray) -> np.ndarray:
        return np.maximum(np.minimum(u0, u1), a) <= np.minimum(np.maximum(u0, u1), b)

    across = (ys[:-1] > a) & (ys[:-1] < b) & overlaps(xs[:-1], xs[1:])  # horizontal parts
    down = (xs[1:] > a) & (xs[1:] < b) & overlaps(ys[:-1], ys[1:])  # vertical parts
    point = (xs > a) & (xs < b) & (ys > a) & (ys < b)
    return bool(across.any() or down.any() or point.any())


def det_figure(systems: dict[str, ScoreTable]) -> DetPlot:
    """DET curves on probit axes; the range widens past 50 % only when some system needs it.

    The range follows the real systems, so near the 50 % corner the chance and majority
    baselines usually lie outside it (majority's curve is two corner points). A curve with
    no visible stretch is left out of the plot and the legend rather than listed with no
    line; :attr:`DetPlot.off_plot` and a note under the legend name it with its EER.
    """
    fig = _figure(7.6, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    worst = 0.0
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for name, t in systems.items():
        b, s = t.scores("bonafide"), t.scores("spoof")
        if b.size == 0 or s.size == 0:
            continue
        eer = compute_eer(b, s)[0]
        if name not in ("chance", "majority"):  # the range follows the real systems
            worst = max(worst, eer)
        d = det_curve(b, s)
        curves[name] = (np.asarray(d["bpcer_probit"]), np.asarray(d["apcer_probit"]), eer)
    upper = 0.5 if worst <= 0.35 else 0.95
    lim = (float(probit(0.0005)), float(probit(upper)))
    off_plot: dict[str, float] = {}
    for name, (xs, ys, eer) in curves.items():
        if not _inside(xs, ys, *lim):
            off_plot[name] = eer
            continue
        ax.plot(
            xs,
            ys,
            label=name,
            color=_COLOURS.get(name),
            lw=2.2 if name == DETECTOR else 1.4,
            drawstyle="steps-post",
        )
    marks = [
        t for t in (*DET_TICKS, 0.6, 0.8, 0.9) if t < upper and not (upper > 0.5 and t == 0.002)
    ]
    ticks = probit(np.array(marks))
    labels = [f"{100 * t:g}" for t in marks]
    ax.plot(lim, lim, ls=":", color="#666666", lw=0.8, label="EER line")
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xlabel("BPCER: live speech rejected (%)")
    ax.set_ylabel("APCER: replays accepted (%)")
    ax.set_title("DET curve (eval split; lower left is better)")
    ax.grid(True, alpha=0.3)
    ax.set_aspect("equal")
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    if off_plot:
        note = "\n".join(f"{n}: EER {100 * e:.1f}%" for n, e in off_plot.items())
        ax.annotate(
            f"not drawn (outside\nthe plotted range):\n{note}",
            xy=(0.0, 0.0),
            xycoords=legend,
            xytext=(4, -8),
            textcoords="offset points",
            va="top",
            fontsize=7.5,
            color="#555555",
        )
    drawn = ax.get_legend_handles_labels()[1]
    return DetPlot(_png(fig), drawn, off_plot)


def histogram_figure(table: ScoreTable, thresholds: dict[str, float]) -> bytes:
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    b, s = table.scores("bonafide"), table.scores("spoof")
    both = np.concatenate([b, s])
    bins = np.linspace(both.min(), both.max() + 1e-9, 50)
    ax.hist(s, bins=bins, alpha=0.6, color="#d1495b", label=f"spoof (replay), n={s.size}")
    ax.hist(b, bins=bins, alpha=0.6, color="#1b6ac9", label=f"bona fide (live), n={b.size}")
    styles = {"eer": "-", "bpcer_1pct": "--", "bpcer_5pct": ":"}
    for name, thr in thresholds.items():
        ax.axvline(
            thr,
            color="black",
            ls=styles.get(name, "-."),
            lw=1.2,
            label=f"threshold {name} = {thr:+.2f}",
        )
    ax.set_xlabel("score (higher = more likely live)")
    ax.set_ylabel("utterances")
    ax.set_title("Detector scores per class (eval split)")
    ax.legend(fontsize=8)
    return _png(fig)


MAX_CONDITION_VALUES = 15
"""Condition columns with more values than this (e.g. a source-file id) are left out of the bar chart."""


def plotted_conditions(
    per_condition: dict[str, dict[str, dict[str, Any]]],
) -> tuple[list[str], list[str]]:
    """(columns drawn, columns left out for having no or too many values)."""
    shown = [c for c, v in per_condition.items() if 0 < len(v) <= MAX_CONDITION_VALUES]
    return shown, [c for c in per_condition if c not in shown]


def condition_figure(
    per_condition: dict[str, dict[str, dict[str, Any]]],
    baseline_pc: dict[str, dict[str, Any]] | None = None,
) -> bytes | None:
    """Horizontal EER bars per condition value, detector beside the classical baselines."""
    cols, _ = plotted_conditions(per_condition)
    if not cols:
        return None
    systems = [(DETECTOR, per_condition)] + list((baseline_pc or {}).items())
    ncols = 2 if len(cols) > 1 else 1
    nrows = int(np.ceil(len(cols) / ncols))
    row_vals = [
        max(len(per_condition[c]) for c in cols[r * ncols : (r + 1) * ncols]) for r in range(nrows)
    ]
    fig = _figure(6.5 * ncols, sum(0.9 + 0.22 * len(systems) * v for v in row_vals) + 0.4)
    gs = fig.add_gridspec(
        nrows, ncols, height_ratios=[0.9 + 0.22 * len(systems) * v for v in row_vals]
    )
    h = 0.8 / len(systems)
    for k, col in enumerate(cols):
        ax = fig.add_subplot(gs[k // ncols, k % ncols])
        values = list(per_condition[col])
        y = np.arange(len(values))
        for j, (name, pc) in enumerate(systems):
            eers = [(pc.get(col, {}).get(v) or {}).get("eer") for v in values]
            bars = ax.barh(
                y + j * h,
                [100 * (e or 0.0) for e in eers],
                height=h,
                color=_COLOURS.get(name, "#999999"),
                label=name,
            )
            ax.bar_label(
                bars,
                labels=["n/a" if e is None else f"{100 * e:.1f}" for e in eers],
                fontsize=7,
                padding=2,
            )
        ax.set_yticks(
            y + h * (len(systems) - 1) / 2,
            [f"{v} ({per_condition[col][v]['n_spoof']})" for v in values],
            fontsize=8,
        )
        ax.invert_yaxis()
        ax.set_xlabel("EER (%)", fontsize=8)
        ax.set_title(f"EER by {col}", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.18)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(systems), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return _png(fig, tight=False)


# --------------------------------------------------------------------------- HTML pieces


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * float(x):.{digits}f}%"


def _ci(pair: Any) -> str:
    return "" if not pair else f" <span class=ci>[{_pct(pair[0])}, {_pct(pair[1])}]</span>"


def _rooms_ci(m: dict[str, Any]) -> str:
    """The EER interval that also resamples the rooms, where the protocol names them."""
    c = m.get("ci_rooms") or {}
    if not c.get("eer"):
        return ""
    n = next((v for k, v in c.items() if k.startswith("n_units_")), "?")
    return f"<div class=note>[{_pct(c['eer'][0])}, {_pct(c['eer'][1])}] resampling the {n} rooms too</div>"


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    if not any(header):
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table class='{cls}'><tbody>{body}</tbody></table>"
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _missing(what: str) -> str:
    return f"<p class=missing>Not available: {_e(what)}.</p>"


def markdown_to_html(md: str) -> str:
    """The subset of Markdown data cards use: headings, paragraphs, lists, tables, bold, code."""

    def inline(t: str) -> str:
        t = _e(t)
        t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
        t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
        return t

    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif m := re.match(r"^(#{1,6})\s+(.*)", line):
            level = min(6, len(m.group(1)) + 2)  # the card sits inside the report's own sections
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in block[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            out.append(
                _table(
                    [inline(c) for c in block[0]], [[inline(c) for c in r] for r in body], "card"
                )
            )
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                item = re.sub(r"^\s*[-*]\s+", "", lines[i])
                items.append(f"<li>{inline(item)}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while (
                i < len(lines)
                and lines[i].strip()
                and not re.match(r"^(#|\||\s*[-*]\s)", lines[i].lstrip())
            ):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{inline(' '.join(para))}</p>")
    return "\n".join(out)


@dataclass
class Figures:
    """PNG files written next to the report, embedded in the HTML too."""

    folder: Path
    written: list[Path] = field(default_factory=list)

    def img(self, name: str, png: bytes | None, alt: str) -> str:
        if png is None:
            return _missing(alt)
        path = self.folder / name
        write_bytes_atomic(path, png)
        self.written.append(path)
        data = base64.b64encode(png).decode("ascii")
        return f"<figure><img alt='{_e(alt)}' src='data:image/png;base64,{data}'><figcaption>{_e(alt)}</figcaption></figure>"


def _safe(section: Callable[[], str], title: str) -> str:
    """A section that fails to render says so; the rest of the report still builds."""
    try:
        return section()
    except Exception as exc:  # a report must degrade, not vanish, on one bad input
        return f"<p class=missing>{_e(title)} could not be drawn: {_e(type(exc).__name__)}: {_e(exc)}</p>"


# --------------------------------------------------------------------------- sections


def _headline(inp: RunInputs) -> str:
    m = inp.metrics
    if m is None:
        return _missing("evaluation metrics of the int8 bundle (eval/metrics.json)")
    ci = m.get("ci") or {}
    bl = {b["name"]: b for b in inp.baselines or []}
    split = m.get("split", "eval")
    rows = [
        f"<div class=big>{_pct(m['eer'])}</div><div>equal error rate on the {_e(split)} split{_ci(ci.get('eer'))}{_rooms_ci(m)}</div>",
        f"<div class=big>{_pct(m['apcer'])}</div><div>of replays accepted (APCER) at the shipped threshold</div>",
        f"<div class=big>{_pct(m['bpcer'])}</div><div>of live speech rejected (BPCER) at that threshold</div>",
    ]
    size = (inp.manifest or {}).get("model_bytes") or m.get("model_bytes")
    if size:
        what = (
            f"int8 model files ({len(inp.member_manifests)} networks)"
            if inp.member_manifests
            else "int8 model file"
        )
        rows.append(f"<div class=big>{size / 1024:.0f} KB</div><div>{what}</div>")
    lat = m.get("latency_ms")
    if lat:
        rows.append(
            f"<div class=big>{lat['median']:.1f} ms</div><div>median scoring time per utterance on this machine (p95 {lat['p95']:.1f} ms)</div>"
        )
    cards = "".join(f"<div class=card>{r}</div>" for r in rows)
    best = min(
        (
            b
            for n, b in bl.items()
            if n in ("void", "lfcc_gmm") and b.get(f"eer_{split}") is not None
        ),
        key=lambda b: b[f"eer_{split}"],
        default=None,
    )
    line = ""
    if best is not None and m.get("eer") is not None:
        verdict = "better than" if m["eer"] < best[f"eer_{split}"] else "not better than"
        line = f"<p>The detector is <b>{verdict}</b> the strongest classical baseline ({_e(best['name'])}, EER {_pct(best[f'eer_{split}'])}) on the same utterances.</p>"
    return f"<div class=cards>{cards}</div>{line}"


def _targets(inp: RunInputs) -> str:
    rows = []
    m = inp.metrics
    split = (m or {}).get("split", "eval")

    def verdict(ok: bool | None) -> str:
        return (
            "<span class=na>not measured</span>"
            if ok is None
            else ("<span class=ok>met</span>" if ok else "<span class=bad>not met</span>")
        )

    eer = None if m is None else m["eer"]
    rows.append(
        [
            "int8 bundle EER ≤ 2.0% (eval)",
            _pct(eer),
            verdict(None if eer is None else eer <= TARGET_EER),
        ]
    )
    var = {v.get("variant"): v for v in inp.variants or []}
    f32, i8 = var.get("float32", {}).get("eer_eval"), var.get("int8", {}).get("eer_eval")
    gap = None if f32 is None or i8 is None else i8 - f32
    rows.append(
        [
            "int8 no more than 0.5 points worse than float32",
            "–" if gap is None else f"{100 * gap:+.2f} points",
            verdict(None if gap is None else gap <= TARGET_INT8_GAP),
        ]
    )
    for name in ("void", "lfcc_gmm"):
        b = next((x for x in inp.baselines or [] if x.get("name") == name), None)
        be = None if b is None else b.get(f"eer_{split}")
        ok = None if eer is None or be is None else eer < be
        rows.append(
            [
                f"better EER than {name}",
                "–" if be is None else f"{_pct(eer)} vs {_pct(be)}",
                verdict(ok),
            ]
        )
    size = (inp.manifest or {}).get("model_bytes") or var.get("int8", {}).get("bytes")
    rows.append(
        [
            "int8 .tflite ≤ 250 KB" + (" (all members together)" if inp.member_manifests else ""),
            "–" if size is None else f"{size / 1024:.1f} KB",
            verdict(None if size is None else size <= TARGET_BYTES),
        ]
    )
    return _table(["target", "measured", ""], rows)


def _task() -> str:
    return """
<p>A smart speaker wakes up when it hears its wake word. Anyone who can play a recording of
the owner's voice near it (a phone, a Bluetooth speaker, a TV) can wake it and give commands.
wakeguard listens to each utterance after the wake word and decides whether it came from a
<b>live talker</b> (<i>bona fide</i>) or was <b>replayed through a loudspeaker</b> (<i>spoof</i>).
Loudspeakers leave traces: small speakers cannot reproduce bass, they colour the spectrum and
distort at high levels, and a replay of a recording made in a room passes through two rooms and two microphones
instead of one; a clean recording (an advert, a synthetic voice) played straight through a loudspeaker carries only
the loudspeaker's traces.</p>
<p>The model gives each utterance one score: the higher, the more likely it is live. A threshold
turns the score into a decision. Moving the threshold trades the two mistakes against each other:
letting a replay through, or refusing a real person.</p>"""


def _datacard(inp: RunInputs) -> str:
    parts = []
    if inp.dataset is not None:
        parts.append(f"<p>Dataset folder: <code>{_e(inp.dataset)}</code></p>")
    if inp.datacard_md:
        parts.append(f"<div class=datacard>{markdown_to_html(inp.datacard_md)}</div>")
    elif inp.datacard:
        parts.append(f"<pre>{_e(json.dumps(inp.datacard, indent=1)[:6000])}</pre>")
    else:
        parts.append(
            _missing(
                "the data card (datacard.md / datacard.json in the dataset folder named by config.json)"
            )
        )
    return "".join(parts)


def _spectrum(inp: RunInputs, figs: Figures) -> str:
    """The explore step's average spectrum of live vs replayed speech: what the detector looks for."""
    png = inp.run / "explore" / "spectrum.png"
    if not png.is_file():
        return _missing("explore/spectrum.png (run `wakeguard data explore --out RUN/explore`)")
    return figs.img(
        "spectrum.png",
        png.read_bytes(),
        "Average spectrum of live and replayed utterances (explore step); the band below 500 Hz is where small loudspeakers cut the bass",
    )


def _results(inp: RunInputs, figs: Figures) -> str:
    parts = []
    systems = _systems(inp)
    if systems:

        def det() -> str:
            plot = det_figure(systems)
            caption = plot.caption("DET curve: detector and baselines on the eval split")
            return figs.img("det.png", plot.png, caption)

        parts.append(_safe(det, "DET curve"))
        if DETECTOR not in systems:
            parts.append(
                _missing(
                    "the detector's eval scores (eval/scores.csv); the DET shows baselines only"
                )
            )
    else:
        parts.append(
            _missing("score files for a DET curve (eval/scores.csv, baselines/*_scores.csv)")
        )
    if inp.scores is not None:
        thr: dict[str, float] = {}
        if inp.manifest and isinstance(inp.manifest.get("thresholds"), dict):
            thr = {k: float(v) for k, v in inp.manifest["thresholds"].items()}
        elif inp.metrics:
            thr = {inp.metrics.get("operating_point", "eer"): float(inp.metrics["threshold"])}
        parts.append(
            _safe(
                lambda: figs.img(
                    "histogram.png",
                    histogram_figure(inp.scores, thr),
                    "Score histograms with the bundle's operating thresholds (fixed on dev)",
                ),
                "Score histograms",
            )
        )
    else:
        parts.append(_missing("eval/scores.csv for the score histograms"))
    if inp.metrics and inp.metrics.get("per_condition"):
        split = _eval_split(inp) or "eval"
        bpc = {}
        for b in inp.baselines or []:
            if b.get("name") in ("void", "lfcc_gmm") and b.get(f"metrics_{split}"):
                bpc[b["name"]] = b[f"metrics_{split}"].get("per_condition", {})
        pc = inp.metrics["per_condition"]
        parts.append(
            _safe(
                lambda: figs.img(
                    "conditions.png",
                    condition_figure(pc, bpc or None),
                    "EER per condition value (detector and classical baselines); in brackets the number of replays",
                ),
                "Per-condition EER",
            )
        )
        left_out = plotted_conditions(pc)[1]
        if left_out:
            parts.append(
                f"<p class=note>Not drawn (no values, or more than {MAX_CONDITION_VALUES}): {_e(', '.join(left_out))}; see the table.</p>"
            )
        parts.append(_condition_table(inp.metrics["per_condition"]))
    else:
        parts.append(_missing("per-condition results (eval/metrics.json)"))
    return "".join(parts)


def _condition_table(pc: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = []
    for col, values in pc.items():
        for i, (v, d) in enumerate(values.items()):
            if i == MAX_CONDITION_VALUES:
                rows.append([_e(col), f"… {len(values) - i} more in eval/metrics.json", "", "", ""])
                break
            rows.append(
                [
                    _e(col),
                    _e(v),
                    _pct(d.get("eer")),
                    str(d.get("n_spoof")),
                    f"{d.get('n_bonafide')} ({_e(d.get('bonafide', ''))})",
                ]
            )
    note = "<p class=note>Each condition's replays are compared with the live utterances of the same condition where live utterances carry it (e.g. room), otherwise with all live utterances (e.g. loudspeaker).</p>"
    return (
        "<details><summary>Per-condition table</summary>"
        + _table(["condition", "value", "EER", "spoof", "bona fide compared"], rows)
        + note
        + "</details>"
    )


def _baseline_table(inp: RunInputs) -> str:
    split = _eval_split(inp) or "eval"
    rows = []
    m = inp.metrics
    if m is not None:
        ci = m.get("ci") or {}
        dev_eer = next(
            (v.get("eer_dev") for v in inp.variants or [] if v.get("variant") == "int8"), None
        )
        rows.append(
            [
                f"<b>{DETECTOR}</b>",
                _pct(dev_eer),
                f"<b>{_pct(m['eer'])}</b>{_ci(ci.get('eer'))}",
                _pct(m["apcer"]),
                _pct(m["bpcer"]),
                _pct(m["apcer_at_bpcer_1pct"]),
                _pct(m["apcer_at_bpcer_5pct"]),
            ]
        )
    for b in inp.baselines or []:
        bm = b.get(f"metrics_{split}") or {}
        ci = bm.get("ci") or {}
        rows.append(
            [
                _e(b["name"]) + f"<div class=note>{_e(b.get('description', ''))}</div>",
                _pct(b.get("eer_dev")),
                _pct(b.get(f"eer_{split}")) + _ci(ci.get("eer")),
                _pct(bm.get("apcer")),
                _pct(bm.get("bpcer")),
                _pct(bm.get("apcer_at_bpcer_1pct")),
                _pct(bm.get("apcer_at_bpcer_5pct")),
            ]
        )
    if not rows:
        return _missing("detector metrics and baselines")
    out = _table(
        [
            "system",
            "dev EER",
            f"{_e(split)} EER [95% CI]",
            "APCER",
            "BPCER",
            "APCER @ BPCER 1%",
            "APCER @ BPCER 5%",
        ],
        rows,
    )
    out += "<p class=note>APCER/BPCER at each system's own threshold fixed on dev (the detector: the bundle's shipped threshold). Intervals resample speakers.</p>"
    if inp.baselines is None:
        out += _missing("baselines/baselines.json (run the baselines step)")
    return out


def _variants(inp: RunInputs) -> str:
    if not inp.variants:
        return _missing("quantize/variants.json (float vs int8 comparison)")
    rows = []
    for v in inp.variants:
        rows.append(
            [
                _e(v.get("variant")),
                "–" if v.get("bytes") is None else f"{v['bytes'] / 1024:.1f} KB",
                _pct(v.get("eer_dev")),
                _pct(v.get("eer_eval")),
                "–" if v.get("latency_ms") is None else f"{v['latency_ms']:.1f} ms",
            ]
        )
    names = {v.get("variant") for v in inp.variants}
    note = (
        ""
        if {"float32", "int8"} <= names
        else _missing(f"variants {sorted({'float32', 'int8'} - names)} in variants.json")
    )
    return (
        _table(["variant", "size", "dev EER", "eval EER", "median latency / utterance"], rows)
        + note
        + "<p class=note>Every variant is scored through the same edge runtime code (front-end + LiteRT), not the Keras model. Only int8 ships.</p>"
    )


def _input_row(mf: dict[str, Any]) -> str:
    """One network's input: features, resolution, windows and the model's input shape."""
    fe = mf.get("frontend", {})
    detail = []
    if fe.get("n_fft") and fe.get("sample_rate"):
        detail.append(f"{fe['sample_rate'] / fe['n_fft']:.1f} Hz bins")
    if fe.get("octave_pool_hz"):
        detail.append(f"pooled per octave above {fe['octave_pool_hz'] / 1000:g} kHz")
    if fe.get("hop_length") and fe.get("sample_rate"):
        hop_s = fe["hop_length"] / fe["sample_rate"]
        if fe.get("kind") in ("spectral_power", "block_power") and fe.get("block_frames"):
            detail.append(f"blocks of {fe['block_frames'] * hop_s:.3g} s")
        else:  # one feature row per frame
            detail.append(f"frames every {hop_s * 1000:.3g} ms")
    return (
        f"{_e(fe.get('kind'))} features{' (' + ', '.join(detail) + ')' if detail else ''}, "
        f"{fe.get('window_seconds')} s windows every {fe.get('window_hop_seconds')} s"
        + (
            f" (centred when they leave at most {fe['window_slack_seconds']} s uncovered)"
            if fe.get("window_slack_seconds")
            else ""
        )
        + f"; input shape {_e(mf.get('input_shape'))}"
    )


def _model(inp: RunInputs) -> str:
    mf = inp.manifest
    if mf is None:
        return _missing("bundle/manifest.json")
    rows = [["version", _e(mf.get("version", "unknown"))]]
    if inp.member_manifests:
        rows.append(
            [
                "ensemble",
                f"{len(inp.member_manifests)} networks, {mf.get('model_bytes', 0) / 1024:.1f} KB together; "
                "the score is the mean of their calibrated scores, calibrated again on dev",
            ]
        )
        for name, mm in inp.member_manifests.items():
            rows.append(
                [
                    f"member {_e(name)}",
                    f"{mm.get('model_bytes', 0) / 1024:.1f} KB; " + _input_row(mm),
                ]
            )
    else:
        rows += [
            ["model file", f"{_e(mf.get('model_file'))}, {mf.get('model_bytes', 0) / 1024:.1f} KB"],
            ["input", _input_row(mf)],
        ]
    trim = (mf.get("input_policy") or {}).get("trim", "none")
    ep = EndpointParams()
    rows.append(
        [
            "what is scored",
            "the span of a recording's commands, as the live listener's endpointer cuts it "
            f"({ep.pre_roll_s:g} s before the first to {ep.post_roll_s:g} s after the last), so "
            "silence around them does not move the score; dev was scored the same way to calibrate"
            if trim == "speech"
            else "the whole recording",
        ]
    )
    rows += [
        [
            "thresholds (fixed on dev)",
            ", ".join(
                f"{_e(k)} = {float(v):+.3f}" for k, v in (mf.get("thresholds") or {}).items()
            ),
        ],
        ["default operating point", _e(mf.get("default_operating_point", "eer"))],
    ]
    lat = (inp.metrics or {}).get("latency_ms")
    if lat:
        rows.append(
            [
                "scoring time per utterance (this machine, 1 thread)",
                f"median {lat['median']:.1f} ms, p95 {lat['p95']:.1f} ms, max {lat['max']:.1f} ms",
            ]
        )
    else:
        rows.append(["scoring time", "not measured (no eval/metrics.json)"])
    return (
        _table(["", ""], rows, "kv")
        + "<p class=note>Latency here is measured on the build machine; on a Raspberry Pi run <code>wakeguard bench</code>.</p>"
    )


def _curves(inp: RunInputs, figs: Figures) -> str:
    if not inp.curves:
        return _missing("curves.png (training curves)")
    return "".join(
        figs.img(
            f"curves-{name}.png" if name else "curves.png",
            png.read_bytes(),
            f"Training curves{f' of member {name}' if name else ''} (loss and dev EER per epoch)",
        )
        for name, png in inp.curves
    )


_MEANING = """
<dl>
<dt>APCER (attack presentation classification error rate)</dt>
<dd>The share of replays that were accepted as live. A replay attack succeeds this often.</dd>
<dt>BPCER (bona fide presentation classification error rate)</dt>
<dd>The share of live utterances that were rejected as replays. A real user is refused this often and has to repeat the command.</dd>
<dt>EER (equal error rate)</dt>
<dd>Where APCER and BPCER are equal when the threshold is moved. One number to compare systems, independent of where the threshold is set; lower is better. It is not the error rate at the shipped threshold.</dd>
<dt>APCER at BPCER 1% / 5%</dt>
<dd>How many replays get through when the threshold is set so that only 1 in 100 (or 5 in 100) live commands is refused: the ISO/IEC 30107-3 way to state a security level at a usability cost.</dd>
<dt>95% confidence interval</dt>
<dd>The range the figure would plausibly take with other speakers of the same kind: computed by resampling speakers (not single utterances) N_BOOT times. Few speakers give wide intervals. Where the test names its rooms, a second interval resamples the rooms too (each trial counted as often as its speaker and its room were drawn): with few rooms it is the wider and the more honest one.</dd>
<dt>DET curve</dt>
<dd>Every threshold at once: replays accepted against live speech rejected, on probit axes. Curves nearer the lower left are better.</dd>
</dl>"""

_LIMITS = """
<ul>
<li>The detector was <b>trained and evaluated on simulated replays</b>: LibriSpeech read English speech
passed through simulated loudspeakers, rooms and microphones (one measured phone loudspeaker and
microphone; the rest are models). The eval split holds speakers, rooms and devices not used in training,
but it comes from the same simulator.</li>
<li><b>Not seen</b>: real rooms and real loudspeakers played back by a real attacker, smart-speaker microphone
arrays and their echo cancellation, far-field and very noisy conditions, other languages, children's voices,
conversational and emotional speech, whispering, and any deliberate attempt to evade the detector
(e.g. pre-equalising the replay to undo the loudspeaker's response).</li>
<li><b>Clean recordings played straight through a loudspeaker</b> (a broadcast or an advert, a synthetic
voice, a close-up recording of the owner) have no attacker's room or recorder. The default corpus plays a fifth
of the low-quality loudspeakers' replays (phones, most laptops) that way, and the detector catches most of those;
played through Bluetooth and smart speakers they remain a blind spot: most get through (docs/benchmarks.md,
"Sessions 22&ndash;24").</li>
<li>Simulated replays are easier than real ones. Public results show detectors that look near-perfect on
simulated replays falling to chance on real ones (ASVspoof 2021 PA baselines: 38–45% EER). Treat these
numbers as an upper bound until the bundle is checked on real recordings.</li>
<li>Figures come from a limited number of speakers; see the confidence intervals.</li>
ROOMS</ul>"""


def _limits(inp: RunInputs) -> str:
    """The fixed limits, and what this run's eval split says about its rooms."""
    m = inp.metrics or {}
    col = next((c for c in ROOM_COLUMNS if c in (m.get("per_condition") or {})), None)
    rooms = (m.get("per_condition") or {}).get(col) or {} if col else {}
    eers = [v["eer"] for v in rooms.values() if v.get("eer") is not None]
    item = ""
    if len(eers) >= 2:
        ci = (m.get("ci_rooms") or {}).get("eer")
        spread = (
            f" Resampling the rooms as well as the speakers, its EER interval is {_pct(ci[0])} to {_pct(ci[1])}."
            if ci
            else ""
        )
        item = (
            f"<li><b>Few rooms.</b> The {_e(m.get('split', 'eval'))} split was heard in "
            f"{len(eers)} rooms; the EER per room ranged from {_pct(min(eers))} to "
            f"{_pct(max(eers))}.{spread} The room a detector has not heard is what costs it "
            "most on these simulations: a live talker a metre or more away in a reverberant "
            'room can sound like a replay in a dry one (docs/benchmarks.md, "Session 7"). '
            "Expect a wider spread in real homes.</li>"
        )
    return _LIMITS.replace("ROOMS", item)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1060px;margin:24px auto;padding:0 20px;color:#1d2330;line-height:1.45}
h1{margin-bottom:0}h2{border-bottom:2px solid #e3e7ee;padding-bottom:4px;margin-top:36px}
.sub{color:#5b6475;margin-top:4px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{flex:1 1 170px;background:#f4f7fb;border-radius:8px;padding:12px 14px}
.big{font-size:28px;font-weight:600;color:#1b6ac9}
table{border-collapse:collapse;margin:10px 0;font-size:14px}
th,td{border:1px solid #d8dde6;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#eef2f7}
.ci{color:#5b6475;font-size:12px}.note{color:#5b6475;font-size:13px}
.missing{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}.na{color:#5b6475}
figure{margin:14px 0}img{max-width:100%;border:1px solid #e3e7ee}figcaption{color:#5b6475;font-size:13px}
.datacard{background:#fafbfc;border:1px solid #e3e7ee;padding:4px 16px;max-height:700px;overflow:auto}
@media print{.datacard{max-height:none;overflow:visible}details::details-content{content-visibility:visible;display:block}}
dt{font-weight:600;margin-top:8px}dd{margin-left:18px}
code{background:#eef2f7;padding:0 3px;border-radius:3px}
"""


_PRINT_SCRIPT = """<script>
// On paper every collapsed section is printed open (the CSS rule does it where the
// browser knows ::details-content); the sections the reader had closed close again after.
let closedForPrint = [];
addEventListener("beforeprint", () => {
  closedForPrint = [...document.querySelectorAll("details:not([open])")];
  closedForPrint.forEach((d) => (d.open = true));
});
addEventListener("afterprint", () => closedForPrint.forEach((d) => (d.open = false)));
</script>"""


def build_report(run: Path, out: Path | None = None) -> Path:
    """Write the HTML report of run folder ``run`` (default ``RUN/report/index.html``); returns its path."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run folder not found")
    # config.json is the one file every run (single or ensemble) has from its first
    # step; without it the folder is not a run and every section would be empty.
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run}: not a run folder (no config.json)")
    default = run / REPORT_DIR / REPORT_FILE
    out = Path(out) if out is not None else default
    if out.is_dir():
        raise ValueError(f"{out} is a folder; give the HTML file to write")
    if out.suffix.lower() not in (".html", ".htm"):
        what = "exists and is not an HTML file" if out.exists() else "does not end in .html"
        raise ValueError(f"{out} {what}; give the HTML file to write (e.g. report.html)")
    out.parent.mkdir(parents=True, exist_ok=True)
    inp = gather(run)
    figs = Figures(out.parent if out == default else out.with_name(f"{out.stem}_figures"))
    version = (inp.manifest or {}).get("version", "unknown")
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        ("Summary", lambda: _headline(inp) + _targets(inp)),
        ("The task", _task),
        ("The data", lambda: _datacard(inp) + _spectrum(inp, figs)),
        ("Results on unseen speakers, rooms and devices", lambda: _results(inp, figs)),
        ("Detector beside the baselines", lambda: _baseline_table(inp)),
        ("Float vs int8", lambda: _variants(inp)),
        ("Model size and latency", lambda: _model(inp)),
        ("Training", lambda: _curves(inp, figs)),
        (
            "What the numbers mean",
            lambda: _MEANING.replace(
                "N_BOOT", str(((inp.metrics or {}).get("ci") or {}).get("n_boot", "many"))
            ),
        ),
        ("Limits: what this model has not seen", lambda: _limits(inp)),
    ]
    body = "".join(f"<h2>{_e(title)}</h2>{_safe(fn, title)}" for title, fn in sections)
    if inp.missing:
        body += (
            "<h2>Inputs not found</h2><ul>"
            + "".join(f"<li>{_e(m)}</li>" for m in inp.missing)
            + "</ul>"
        )
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wakeguard report: {_e(run.name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style>{_PRINT_SCRIPT}</head>
<body><h1>wakeguard: live or replayed?</h1>
<p class=sub>Run <code>{_e(run.resolve())}</code> · bundle {_e(version)} · report built {created}</p>
{body}
<p class=note>Generated by <code>wakeguard report</code> from the run folder's score files and JSON; nothing here is typed in by hand.</p>
</body></html>
"""
    return write_text_atomic(out, doc)
