"""``wakeguard monitor``: summary, drift and plots of a decision log; export saved clips as a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from wakeguard.edge.files import write_text_atomic

from .console import console, err_console, print_json, run_cli


def _check_output_folder(path: Path, option: str) -> None:
    """Refuse an output folder that is a file, or lies under one, before any work is done."""
    from wakeguard.edge.protocol import file_in_the_way

    blocker = path if path.is_file() else file_in_the_way(path)
    if blocker is not None:
        raise ValueError(f"{option} {path}: {blocker} is a file, not a folder")


def monitor_run(
    log: Path,
    model: Path | None = None,
    out: Path | None = None,
    export: Path | None = None,
    dev_fraction: float = 0.2,
) -> dict[str, Any]:
    """Summarise ``log`` (plots into ``out`` if given, clips into ``export`` if given)."""
    import json

    from wakeguard.edge.monitor import PlottingUnavailable, export_clips, monitor, plot_monitor

    if out is not None:
        _check_output_folder(out, "--out")
    if export is not None:
        _check_output_folder(export, "--export")
        if not 0.0 <= dev_fraction <= 1.0:
            raise ValueError(f"--dev-fraction must be in [0, 1], got {dev_fraction}")
    summary, records, reference = monitor(log, model)
    notes: list[str] = []
    if out is not None:
        try:
            summary.plots = [str(p) for p in plot_monitor(summary, records, reference, out)]
        except PlottingUnavailable as exc:
            notes.append(str(exc))
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            out / "summary.json", json.dumps(summary.to_dict(), indent=2, default=str) + "\n"
        )
    result: dict[str, Any] = {"summary": summary.to_dict(), "notes": notes}
    if export is not None:
        result["export"] = export_clips(log, export, dev_fraction).to_dict()
    return result


def _fmt(d: dict[str, float] | None, unit: str = "") -> str:
    if not d:
        return "-"
    return "  ".join(f"{k} {v:g}{unit}" for k, v in d.items() if k != "n")


def monitor_cli(
    log: Annotated[
        Path,
        typer.Argument(
            help="Decision log (JSON lines) from listen or serve; rotated backups are read too."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Bundle whose dev scores are the drift reference (default: the shipped bundle).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write PNG plots and summary.json here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Copy saved clips into this dataset folder (protocol.csv, labels to confirm).",
        ),
    ] = None,
    dev_fraction: Annotated[
        float, typer.Option(help="Share of exported clips put in the dev split.")
    ] = 0.2,
) -> None:
    """Summarise a decision log: verdict rates over time, score drift (PSI) against the bundle's dev scores, latency percentiles."""
    result = run_cli(monitor_run, log, model, out, export, dev_fraction)
    s = result["summary"]
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    t = Table(title=f"decision log {s['log']}", show_header=False, title_justify="left")
    t.add_row("decisions", f"{s['n_records']}  ({s['first']} .. {s['last']})")
    verdicts = "  ".join(f"{k} {v}" for k, v in sorted(s["verdicts"].items()))
    rr = s["rejection_rate"]
    t.add_row("verdicts", f"{verdicts}   rejected {100 * rr:.1f}%" if rr is not None else verdicts)
    t.add_row("borderline", str(s["borderline"]))
    t.add_row("sources", "  ".join(f"{k} {v}" for k, v in s["sources"].items()))
    t.add_row("model versions", "  ".join(f"{k} {v}" for k, v in s["model_versions"].items()))
    t.add_row("score", _fmt(s["score"]))
    t.add_row("latency", _fmt(s["latency_ms"], " ms"))
    if s["added_ms"]:
        t.add_row("added by proxy", _fmt(s["added_ms"], " ms"))
    t.add_row("level", _fmt(s["level_dbfs"], " dBFS"))
    t.add_row("duration", _fmt(s["duration_s"], " s"))
    d = s["drift"]
    if d.get("psi") is not None:
        colour = (
            "red" if d["level"] == "drift" else "yellow" if d["level"] == "moderate" else "green"
        )
        t.add_row(
            "drift (PSI)",
            f"[{colour}]{d['psi']:.3f} vs dev scores ({d['level']}; warn > {d['threshold']}, "
            f"sampling noise {d['noise_95']:.3f})[/]   {d['psi_bonafide']:.3f} vs dev bona fide only",
        )
    else:
        t.add_row("drift (PSI)", d.get("note", "-"))
    t.add_row("clips", f"{s['clips']['present']} saved of {s['clips']['listed']} logged")
    console.print(t)
    for w in s["warnings"]:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    for n in result["notes"]:
        err_console.print(f"[yellow]note:[/] {n}", highlight=False, soft_wrap=True)
    for p in s["plots"]:
        console.print(f"plot: {p}", highlight=False)
    if "export" in result:
        e = result["export"]
        labels = ", ".join(f"{k} {v}" for k, v in e["labels"].items()) or "none"
        console.print(
            f"exported {e['exported']} clip(s) to {e['dataset']} ({labels}); {e['already_there']} already there, "
            f"{e['missing']} deleted by the clip cap. Labels are the model's verdicts: confirm them "
            "(label_confirmed column); train and evaluate refuse unconfirmed rows.",
            highlight=False,
        )
