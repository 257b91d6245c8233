"""``wakeguard data explore``: statistics, plots and warnings for any dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, print_json, run_cli


def explore_cli(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder (with protocol.csv) or the protocol CSV itself.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for summary.json, summary.md and the PNGs (default: DATASET/explore).")] = None,
    max_files: Annotated[int, typer.Option("--max-files", min=0, help="Measure at most this many audio files (stratified sample); 0 = all.")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Class balance, duration/level/silence histograms, bona fide vs spoof long-term spectrum,
    example spectrograms, and warnings (clipping, silence, odd rates or channels, unreadable
    files, speaker overlap between splits, single-feature shortcuts)."""
    from wakeguard.edge.protocol import protocol_file
    from wakeguard.model.explore import explore

    # explore() checks every input before it creates OUT: a refused call leaves no folder
    out = out if out is not None else protocol_file(dataset).parent / "explore"
    limit = None if max_files <= 0 else max_files
    if as_json:
        summary = run_cli(explore, dataset, out, max_files=limit)
        print_json(summary)
        return
    from rich.progress import Progress

    bar = Progress(console=console, transient=True)
    task = bar.add_task("measuring audio", total=None)

    def progress(done: int, total: int) -> None:
        bar.start()  # explore reports first once every input has passed its checks
        bar.update(task, completed=done, total=total)

    try:
        summary = run_cli(explore, dataset, out, max_files=limit, progress=progress)
    finally:
        if bar.live.is_started:  # a refused call prints its error and nothing else
            bar.stop()
    _print_summary(summary, out)


def _print_summary(s: dict, out: Path) -> None:
    from rich.table import Table

    t = Table(title=f"{s['n_rows']} rows, {s['n_measured']} files measured")
    t.add_column("split")
    t.add_column("bonafide", justify="right")
    t.add_column("spoof", justify="right")
    for split, c in s["balance"]["per_split"].items():
        t.add_row(split, str(c["bonafide"]), str(c["spoof"]))
    console.print(t)
    a = Table(title="audio per class (median)")
    a.add_column("")
    for lab in ("bonafide", "spoof"):
        a.add_column(lab, justify="right")
    for key, name in (
        ("duration_s", "duration (s)"),
        ("rms_dbfs", "RMS (dBFS)"),
        ("lead_silence_s", "leading silence (s)"),
        ("trail_silence_s", "trailing silence (s)"),
        ("low_band_db", "power < 500 Hz (dB)"),
    ):
        cells = [s["audio"][lab].get(key) for lab in ("bonafide", "spoof")]
        a.add_row(name, *("-" if c is None else f"{c['median']:.2f}" for c in cells))
    console.print(a)
    if s.get("note"):
        console.print(s["note"], highlight=False)
    for w in s["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"wrote {out / 'summary.md'}, {out / 'summary.json'} and {', '.join(s['plots'])}", highlight=False)
