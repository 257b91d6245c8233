"""``wakeguard evaluate``: score a protocol with a model bundle and report EER, APCER, BPCER."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .console import console, err_console, print_json, run_cli
from .runtime_flags import ModelOption, ThreadsOption

MAX_TABLE_VALUES = 15
"""Condition columns with more values than this (e.g. a source-file id) are summarised in one line."""


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ci(pair: list[float] | None) -> str:
    return "" if not pair else f"[{100 * pair[0]:.2f}, {100 * pair[1]:.2f}]"


def print_metrics(m: dict[str, Any]) -> None:
    """Rich tables for people: headline metrics, per-condition EER, unscored rows."""
    from rich.table import Table

    ci = m.get("ci") or {}
    t = Table(
        title=f"{m.get('split', '')} split: {m['n_bonafide']} bona fide, {m['n_spoof']} spoof, {_count(m.get('n_speakers', 0), 'speaker')}"
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    # the crossed interval (speakers and rooms resampled) where the protocol names rooms
    cis = [ci] + ([m["ci_rooms"]] if m.get("ci_rooms") else [])
    for c in cis:
        t.add_column(
            f"{int(100 * c.get('level', 0.95))}% CI (by {c.get('unit', 'speaker')})",
            justify="right",
        )
    t.add_row("EER", _pct(m["eer"]), *(_ci(c.get("eer")) for c in cis))
    t.add_row(
        f"APCER @ {m['operating_point']} threshold {m['threshold']:+.3f}",
        _pct(m["apcer"]),
        *(_ci(c.get("apcer")) for c in cis),
    )
    t.add_row(
        f"BPCER @ {m['operating_point']} threshold {m['threshold']:+.3f}",
        _pct(m["bpcer"]),
        *(_ci(c.get("bpcer")) for c in cis),
    )
    t.add_row(
        "APCER @ BPCER 1%",
        _pct(m["apcer_at_bpcer_1pct"]),
        *(_ci(c.get("apcer_at_bpcer_1pct")) for c in cis),
    )
    t.add_row(
        "APCER @ BPCER 5%",
        _pct(m["apcer_at_bpcer_5pct"]),
        *(_ci(c.get("apcer_at_bpcer_5pct")) for c in cis),
    )
    lat = m.get("latency_ms")
    if lat:
        t.add_row(
            "latency per utterance (median / p95)",
            f"{lat['median']:.1f} / {lat['p95']:.1f} ms",
            *("" for _ in cis),
        )
    console.print(t)
    if m.get("note"):
        console.print(f"note: {m['note']}", highlight=False, markup=False, soft_wrap=True)
    many = []
    for col, values in (m.get("per_condition") or {}).items():
        if not values or len(values) > MAX_TABLE_VALUES:
            n = len(values) or (m.get("per_condition_skipped") or {}).get(col, 0)
            many.append(f"{col} ({n} values)")
            continue
        ct = Table(title=f"EER by {col}")
        ct.add_column(col)
        ct.add_column("EER", justify="right")
        ct.add_column("bona fide", justify="right")
        ct.add_column("spoof", justify="right")
        for v, d in values.items():
            ct.add_row(
                v, _pct(d["eer"]), f"{d['n_bonafide']} ({d.get('bonafide', '')})", str(d["n_spoof"])
            )
        console.print(ct)
    if many:
        console.print(
            f"EER by {', '.join(many)}: too many values to print; see metrics.json (--out) or --json.",
            highlight=False,
        )
    if m.get("n_unscored"):
        err_console.print(
            f"[yellow]{m['n_unscored']} of {m.get('n_rows')} rows could not be scored:[/]",
            highlight=False,
        )
        for u in m["unscored"][:20]:
            err_console.print(f"  {u['path']}: {u['reason']}", highlight=False)
        if m["n_unscored"] > 20:
            err_console.print(f"  ... and {m['n_unscored'] - 20} more", highlight=False)


def evaluate_cli(
    protocol: Annotated[
        Path, typer.Option("--protocol", "-p", help="Protocol CSV or dataset folder.")
    ],
    model: ModelOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write scores.csv, metrics.json (and unscored.csv) here."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics as one JSON object.")
    ] = False,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="train, dev, eval or all (default: eval if the protocol has it, else all rows).",
        ),
    ] = None,
    operating_point: Annotated[
        str | None,
        typer.Option(
            "--operating-point",
            help="Bundle threshold for APCER/BPCER: eer, bpcer_1pct or bpcer_5pct (default: the bundle's).",
        ),
    ] = None,
    threads: ThreadsOption = 1,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Fail (exit 2) if any row cannot be scored; otherwise they are listed and counted.",
        ),
    ] = False,
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Bootstrap replicates for the confidence intervals (by speaker; 0: none).",
        ),
    ] = 1000,
    scores: Annotated[
        list[Path] | None,
        typer.Option(
            "--scores",
            help="Evaluate this score CSV (e.g. another system's, or RUN/quantize/int8_eval_scores.csv) "
            "instead of running a model; repeat it to average several per utterance (an ensemble).",
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="With --scores: the threshold for APCER/BPCER (default 0, the equal-prior "
            "threshold of calibrated scores).",
        ),
    ] = None,
) -> None:
    """Score every row of a protocol with the int8 bundle (or take scores from --scores) and compute EER, APCER and BPCER."""
    from wakeguard.model.evaluate import evaluate

    m = run_cli(
        evaluate,
        protocol,
        bundle=model,
        out=out,
        split=split,
        operating_point=operating_point,
        threads=threads,
        progress=not as_json,
        strict=strict,
        n_boot=bootstrap,
        score_files=scores or (),
        threshold=threshold,
    )
    if as_json:
        print_json(m)
    else:
        print_metrics(m)
        if out is not None:
            console.print(f"scores and metrics written to {out}", highlight=False)
