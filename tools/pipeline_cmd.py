"""``wakeguard pipeline``: the main job end to end, printing where the report is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import EXIT_FAILURE, console, print_error, print_json, run_cli


def pipeline_cli(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Training config overrides, section.key=value (e.g. train.epochs=10)."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run folder for everything the pipeline writes.")
    ] = Path("runs/pipeline"),
    size: Annotated[
        str, typer.Option("--size", help="Simulated corpus size: tiny, small or default.")
    ] = "default",
    seed: Annotated[int, typer.Option("--seed", help="Seed for the corpus and for training.")] = 0,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Training config file (TOML or JSON).")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="Use this dataset instead of simulating one.")
    ] = None,
    skip: Annotated[
        list[str] | None,
        typer.Option(
            "--skip",
            help="Leave out a step (repeatable): simulate, explore, baselines, train, quantize, evaluate, report.",
        ),
    ] = None,
    install_default: Annotated[
        bool,
        typer.Option(
            "--install-default",
            help="Copy the resulting bundle into edge/assets/default (the shipped model).",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Delete a simulator build already in OUT/dataset first (one an older version "
            "or other options made); without it a matching build is resumed, any other refused.",
        ),
    ] = False,
    workers: Annotated[int, typer.Option(help="Worker processes for simulation and features.")] = 2,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Simulate a corpus, explore it, run the baselines, train, quantize, evaluate on eval, build the report."""
    from wakeguard.model.config import ConfigError, load_config
    from wakeguard.model.pipeline import PipelineError, pipeline

    def work():
        try:
            cfg = load_config(config, overrides or [])
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        say = (
            (lambda s: None)
            if as_json
            else (lambda s: console.print(s, highlight=False, markup=False))
        )
        return pipeline(
            out,
            size=size,
            seed=seed,
            config=cfg,
            skip=tuple(skip or ()),
            dataset=dataset,
            install_default=install_default,
            overwrite=overwrite,
            workers=workers,
            progress=not as_json,
            log=say,
        )

    from wakeguard.edge.protocol import ensure_folder

    run_cli(ensure_folder, out, "run folder")
    try:
        result = run_cli(work)
    except PipelineError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_FAILURE) from exc
    if as_json:
        print_json(result.to_dict())
        return
    total = sum(s.get("seconds", 0) for s in result.steps)
    console.print(f"pipeline finished in {total / 60:.1f} min; run folder {result.out}")
    eer = result.summary.get("eval_eer_int8_bundle")
    if eer is not None:
        console.print(f"int8 bundle eval EER: [bold]{eer:.2%}[/]")
    if result.bundle:
        console.print(f"bundle: {result.bundle}")
    if result.installed:
        console.print(f"installed as the default bundle: {result.installed}")
    if result.report:
        console.print(f"report: [bold]{result.report}[/]")
