"""``wakeguard report``: one self-contained HTML report of a run folder, for stakeholders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, run_cli


def report_cli(
    run: Annotated[
        Path, typer.Argument(help="Run folder (from `wakeguard train` or `wakeguard pipeline`).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="HTML file to write (default: RUN/report/index.html); its PNG figures go to"
            " STEM_figures/ beside it.",
        ),
    ] = None,
) -> None:
    """Build the HTML report: task, data card, DET, histograms, per-condition EER, baselines, int8 vs float."""
    from wakeguard.model.report import build_report

    if out is not None:
        from wakeguard.edge.protocol import ensure_folder

        run_cli(ensure_folder, out.parent, "report folder")
    path = run_cli(build_report, run, out)
    console.print(f"report written to {path}", highlight=False)
    console.print(f"open file://{path.resolve()}", highlight=False)
