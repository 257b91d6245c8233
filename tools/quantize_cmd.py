"""``wakeguard quantize``: TFLite variants of a trained run, evaluated through the edge runtime, and the int8 bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, print_json, run_cli


def quantize_cli(
    run: Annotated[Path, typer.Argument(help="Training run folder (from `wakeguard train`).")],
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset", help="Dataset to calibrate and evaluate on (default: the run's)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Processes for feature extraction.")] = 2,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the variants and bundle as one JSON object.")
    ] = False,
) -> None:
    """Convert to float32, float16, dynamic-range and full-int8 TFLite, score each on dev and eval, write RUN/bundle."""
    from wakeguard.model.quantize import quantize

    say = (
        (lambda s: None) if as_json else (lambda s: console.print(s, highlight=False, markup=False))
    )
    result = run_cli(quantize, run, dataset=dataset, workers=workers, log=say)
    if as_json:
        print_json(
            {
                "bundle": str(result.bundle),
                "variants": result.variants,
                "thresholds": result.thresholds,
                "calibration": {
                    "scale": result.calibration.scale,
                    "offset": result.calibration.offset,
                },
            }
        )
        return
    from rich.table import Table

    t = Table(title=f"TFLite variants of {run}")
    for col in ("variant", "size (KB)", "dev EER", "eval EER", "latency (ms)"):
        t.add_column(col, justify="right" if col != "variant" else "left")
    for v in result.variants:
        ev = "n/a" if v["eer_eval"] is None else f"{v['eer_eval']:.2%}"
        t.add_row(
            v["variant"],
            f"{v['bytes'] / 1024:.1f}",
            f"{v['eer_dev']:.2%}",
            ev,
            f"{v['latency_ms']:.1f}",
        )
    console.print(t)
    console.print(f"int8 bundle: {result.bundle}")
