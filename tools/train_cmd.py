"""``wakeguard train``: train the detector on a dataset and write a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, print_error, print_json, run_cli


def train_cli(
    dataset: Annotated[
        Path | None,
        typer.Argument(
            help="Dataset folder (or its protocol.csv) with train and dev splits; with --resume, default: the run's."
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Config overrides, section.key=value, e.g. train.epochs=20 frontend.kind=lfcc."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file (TOML or JSON); default: the packaged default_config.toml.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run folder to write (default: runs/train-TIME)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="Start from the weights of a bundle or run folder (fine-tune on new data).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes for feature extraction.")] = 2,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object.")
    ] = False,
) -> None:
    """Train the replay detector; the checkpoint with the best dev EER is kept (early stopping on dev)."""
    import time

    from wakeguard.model.config import ConfigError, load_config
    from wakeguard.model.train import train

    if dataset is not None and "=" in str(dataset) and not dataset.exists():
        overrides = [str(dataset), *(overrides or [])]  # `train --resume --out R train.epochs=40`
        dataset = None
    if dataset is None and not resume:
        print_error("give the DATASET folder to train on")
        raise typer.Exit(2)
    if resume and out is None:
        print_error("--resume needs --out RUN (the run to continue)")
        raise typer.Exit(2)
    run = out or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")

    def work():
        if resume and not (run / "config.json").is_file():
            raise ValueError(f"{run} is not a run folder (no config.json)")
        try:
            # --resume keeps the run's own config; overrides (e.g. train.epochs=40) still apply
            cfg = load_config(run if resume else config, overrides or [])
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        say = (
            (lambda s: None)
            if as_json
            else (lambda s: console.print(s, highlight=False, markup=False))
        )
        from wakeguard.model.ensemble import fine_tune_config, train_ensemble

        # what is fine-tuned decides the architecture: one network stays one, an
        # ensemble's members each start from their namesake
        if init_from is not None and not resume:
            cfg = fine_tune_config(cfg, init_from, overrides or [])
        fit = train_ensemble if cfg.ensemble.members else train
        return fit(
            dataset,
            run,
            cfg,
            resume=resume,
            init_from=init_from,
            workers=workers,
            progress=not as_json,
            log=say,
        )

    result = run_cli(work)
    if as_json:
        print_json(result.to_dict())
        return
    members = getattr(result, "members", None)
    for name, r in members or [(None, result)]:
        averaged = (
            f" (weights averaged over epochs {r.averaged_from}-{r.best_epoch})" if r.averaged_from else ""
        )
        console.print(
            (f"member {name}: " if name else "")
            + f"{r.dev_eer_label} [bold]{r.dev_eer:.2%}[/] at epoch {r.best_epoch}{averaged} "
            f"(train EER {r.train_eer:.2%}, {r.n_params:,} parameters, {r.seconds:.0f} s)"
        )
    if members:
        console.print("the ensemble's fused dev EER is measured when it is quantised")
    console.print(f"run folder: {result.run}  (next: wakeguard quantize {result.run})")
