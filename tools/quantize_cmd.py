"""``wakeguard quantize``: TFLite variants of a trained run, evaluated through the edge runtime, and the int8 bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, print_error, print_json, run_cli


def quantize_cli(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Training run folder (from `wakeguard train`; an ensemble run fuses its members), "
            "or several runs to fuse into an ensemble in --out."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="With several runs: the ensemble folder to write."),
    ] = None,
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
    """Convert to float32, float16, dynamic-range and full-int8 TFLite, score each on dev and eval, write RUN/bundle.

    Several runs (each trained on the same dataset, any front-ends) are fused into one
    ensemble bundle in OUT/bundle: the mean of their calibrated scores, calibrated on dev.
    """
    from wakeguard.model.ensemble import ensemble_from_runs, quantize_any

    say = (
        (lambda s: None) if as_json else (lambda s: console.print(s, highlight=False, markup=False))
    )
    if len(runs) > 1:
        if out is None:
            print_error("several runs make an ensemble: give --out DIR for it")
            raise typer.Exit(2)
        run = out
        result = run_cli(ensemble_from_runs, runs, out, dataset=dataset, workers=workers, log=say)
    else:
        if out is not None:
            print_error("--out is for fusing several runs; one run writes RUN/bundle")
            raise typer.Exit(2)
        run = runs[0]
        result = run_cli(quantize_any, run, dataset=dataset, workers=workers, log=say)
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
