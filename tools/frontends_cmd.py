"""``wakeguard compare-frontends``: train the same detector on each candidate front-end, compare dev EER."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, print_json, run_cli


def compare_frontends_cli(
    dataset: Annotated[
        Path, typer.Argument(help="Dataset folder (or its protocol.csv) with train and dev splits.")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Config overrides shared by every candidate, section.key=value, e.g. train.epochs=6."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Config file; default: the packaged default_config.toml."
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder for one run per candidate and the table."),
    ] = Path("runs/frontends"),
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Compare only these candidates (repeatable): logspec, lfcc, spectral_power.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes for feature extraction.")] = 2,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the table as one JSON object.")
    ] = False,
) -> None:
    """Train one detector per front-end (log spectrogram, LFCC, Void-style spectral power) and compare them on dev.

    Every candidate gets the same network, recipe and overrides; eval is never looked at. A candidate already trained in --out with the same config is reused, so an interrupted comparison continues where it stopped.
    """
    from wakeguard.model.config import ConfigError
    from wakeguard.model.features_compare import CANDIDATES, candidate_configs, compare_frontends

    unknown = sorted(set(only or ()) - set(CANDIDATES))
    if unknown:
        raise typer.BadParameter(
            f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}",
            param_hint="--only",
        )
    chosen = {k: v for k, v in CANDIDATES.items() if not only or k in only}
    say = (
        (lambda s: None) if as_json else (lambda s: console.print(s, highlight=False, markup=False))
    )

    def work():
        try:
            return compare_frontends(
                dataset,
                out,
                candidates=chosen,
                overrides=overrides or [],
                config=config,
                workers=workers,
                log=say,
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    def check():
        try:
            candidate_configs(dataset, chosen, overrides or [], config)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    from wakeguard.edge.protocol import ensure_folder

    # the dataset and configs first: a bad one must not leave an empty output folder behind
    run_cli(check)
    run_cli(ensure_folder, out)
    table = run_cli(work)
    if as_json:
        print_json({"out": str(out), "results": table})
        return
    console.print((out / "features_compare.md").read_text(), highlight=False, markup=False)
    console.print(f"table: {out / 'features_compare.md'} and {out / 'features_compare.json'}")
