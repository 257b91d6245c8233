"""``wakeguard data simulate``: build the simulated replay corpus from real bona fide speech."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import console, err_console, print_json, run_cli


def simulate_dataset(
    out: Path,
    size: str,
    seed: int,
    speech: Path | None,
    workers: int,
    overwrite: bool,
    progress: bool,
    oracle: str = "",
    directivity: bool = False,
    direct_share: float | None = None,
    direct_quality: str | None = None,
) -> dict[str, Any]:
    """Build (or resume) the corpus; returns the data card plus the build time."""
    from wakeguard.model.simulate import remove_build, simulate

    if overwrite:
        remove_build(out)
    t0 = time.perf_counter()
    folder = simulate(
        out,
        size=size,
        seed=seed,
        speech_dir=speech,
        workers=workers,
        progress=progress,
        oracle=oracle,
        directivity=directivity,
        direct_share=direct_share,
        direct_quality=direct_quality,
    )
    card = json.loads((folder / "datacard.json").read_text())
    card["build_seconds"] = round(time.perf_counter() - t0, 1)
    return card


def simulate_cli(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Dataset folder to create (or resume).")
    ] = Path("data/simulated"),
    size: Annotated[
        str,
        typer.Option(
            help="tiny (a few dozen files, for tests), small, or default (sized for `wakeguard pipeline`)."
        ),
    ] = "default",
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same corpus.")
    ] = 0,
    speech: Annotated[
        Path | None,
        typer.Option(
            "--speech",
            help="Folder of bona fide speech (default: ../shared/speech or $WAKEGUARD_SHARED/speech).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    overwrite: Annotated[
        bool, typer.Option(help="Delete an earlier build in --out first (only a simulator build).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the data card as JSON.")] = False,
    oracle: Annotated[
        str,
        typer.Option(
            help="Study builds only: train and dev share eval's rooms, devices (loudspeakers, "
            "recorders, microphones), mics (victim microphones) or all; eval is unchanged. "
            "Shows which unseen condition makes eval hard; never train a model to ship on one."
        ),
    ] = "",
    directivity: Annotated[
        bool,
        typer.Option(
            "--directivity",
            help="Study option: talkers and loudspeakers radiate with their directivity (the "
            "room's reflections carry 1/Q of the power per band); off by default, every source "
            "omnidirectional. docs/benchmarks.md, Session 13.",
        ),
    ] = False,
    direct_share: Annotated[
        float | None,
        typer.Option(
            "--direct-share",
            min=0.0,
            max=1.0,
            show_default=False,
            help="Share of the replays through a real loudspeaker of --direct-quality that "
            "play the source recording itself, with no attacker's room or recorder (a "
            "broadcast, a studio or synthetic voice, a close-up recording). Default 0.2; 0 "
            "builds build 8's corpus, with none. docs/benchmarks.md, Sessions 22-24.",
        ),
    ] = None,
    direct_quality: Annotated[
        str | None,
        typer.Option(
            "--direct-quality",
            show_default=False,
            help="Which loudspeakers play direct replays: low (phones, laptops; the default), "
            "high (Bluetooth, smart speakers) or all (ASVspoof 2019 PA's qualities). "
            "docs/benchmarks.md, Session 23.",
        ),
    ] = None,
) -> None:
    """Simulate live and replayed commands (rooms, loudspeakers, microphones, noise) from real speech.

    An interrupted build resumes where it stopped when run again with the same options.
    """
    from wakeguard.edge.protocol import ensure_folder

    run_cli(ensure_folder, out, "dataset folder")
    card = run_cli(
        simulate_dataset,
        out,
        size,
        seed,
        speech,
        workers,
        overwrite,
        not as_json,
        oracle,
        directivity,
        direct_share,
        direct_quality,
    )
    if as_json:
        print_json(card)
        return
    from rich.table import Table

    table = Table(
        title=f"{out} ({card['n_utterances']} utterances, {card['hours']} h, {card['build_seconds']} s)"
    )
    for col in ("split", "speakers", "bonafide", "spoof"):
        table.add_column(col)
    for split, c in card["counts"].items():
        table.add_row(
            split,
            str(card["speakers_per_split"].get(split, "")),
            str(c["bonafide"]),
            str(c["spoof"]),
        )
    console.print(table)
    audit = card["shortcut_audit"]
    if audit.get("passed") is None:
        console.print(f"shortcut audit not run: {audit.get('reason')}")
    elif audit["passed"]:
        console.print(
            f"shortcut audit passed: lowest eval EER {audit['min_eer']:.1%} (>= {audit['threshold']:.0%})"
        )
    else:
        err_console.print(
            f"[bold yellow]warning:[/] shortcut audit failed: eval EER {audit['min_eer']:.1%} < {audit['threshold']:.0%}; see datacard.md"
        )
    console.print(f"data card: {out / 'datacard.md'}")
