"""``wakeguard data import``: turn a public replay corpus (or a folder) into a dataset."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .console import console, print_json, run_cli


class CorpusFormat(StrEnum):
    asvspoof2017 = "asvspoof2017"
    asvspoof2019pa = "asvspoof2019pa"
    asvspoof2021pa = "asvspoof2021pa"
    remasc = "remasc"
    folder = "folder"


class SplitName(StrEnum):
    train = "train"
    dev = "dev"
    eval = "eval"


def import_cli(
    fmt: Annotated[CorpusFormat, typer.Argument(metavar="FORMAT", help="Corpus layout.", show_default=False)],
    source: Annotated[Path, typer.Argument(help="The corpus folder as unpacked (or ReMASC's meta.csv).")],
    out: Annotated[Path, typer.Argument(help="Dataset folder to write (protocol.csv, import_report.json).")],
    copy: Annotated[bool, typer.Option("--copy", help="Convert the audio to 16 kHz mono WAV inside OUT instead of referencing the originals by absolute path.")] = False,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="Leave out rows whose audio is missing or whose line is malformed; they are listed in import_report.json.")] = False,
    split: Annotated[SplitName | None, typer.Option("--split", help="Split for rows the corpus gives none (ReMASC, a flat folder).")] = None,
    keys: Annotated[Path | None, typer.Option("--keys", help="ASVspoof 2021 PA: path to trial_metadata.txt when it is not under SOURCE.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a different protocol.csv already in OUT (re-importing the same corpus needs no flag).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the import report as JSON.")] = False,
) -> None:
    """Import a replay corpus into the dataset format, keeping its splits and condition columns.

    FORMAT, its layout, and where to get it (download it yourself; each has a licence):

    * `asvspoof2017`: ASVspoof 2017 v2.0, `ASVspoof2017_V2_{train,dev,eval}/` and `protocol_V2/`
      (https://datashare.ed.ac.uk/handle/10283/3055)
    * `asvspoof2019pa`: ASVspoof 2019 PA, `PA/ASVspoof2019_PA_{train,dev,eval}/flac` and
      `PA/ASVspoof2019_PA_cm_protocols/` (https://datashare.ed.ac.uk/handle/10283/3336)
    * `asvspoof2021pa`: ASVspoof 2021 PA eval, `ASVspoof2021_PA_eval[_partNN]/.../flac` and the
      keys `PA-keys-full/keys/PA/CM/trial_metadata.txt` (https://www.asvspoof.org/index2021.html)
    * `remasc`: ReMASC, `meta.csv` and the WAV files (https://github.com/YuanGongND/ReMASC)
    * `folder`: your own, `bonafide/` and `spoof/` (optionally inside `train/` `dev/` `eval/`)

    Every referenced audio file must exist: a missing file or malformed protocol line
    stops the import, naming the protocol file and line, unless --skip-missing. In a
    folder of your own every file must also open as audio (an empty or half-copied file
    is named); --copy converts, and so checks, every file of any format.
    """
    from wakeguard.model.importers import import_corpus

    if copy and not as_json:
        from rich.progress import Progress

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("converting to 16 kHz WAV", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = run_cli(
                import_corpus, fmt.value, source, out, copy=True, skip_missing=skip_missing,
                split=split.value if split else None, keys=keys, overwrite=overwrite, progress=progress,
            )
    else:
        result = run_cli(
            import_corpus, fmt.value, source, out, copy=copy, skip_missing=skip_missing,
            split=split.value if split else None, keys=keys, overwrite=overwrite,
        )
    if as_json:
        print_json(result.to_dict())
        return
    from rich.table import Table

    table = Table(title=f"imported {fmt.value}")
    table.add_column("split")
    table.add_column("bonafide", justify="right")
    table.add_column("spoof", justify="right")
    for name, c in result.counts().items():
        table.add_row(name, str(c["bonafide"]), str(c["spoof"]))
    console.print(table)
    console.print(f"wrote {result.protocol} ({len(result.rows)} rows)", highlight=False)
    cols = result.to_dict()["condition_columns"]
    console.print(f"condition columns: {', '.join(cols) if cols else '(none)'}", highlight=False)
    for what, n in result.not_used.items():
        console.print(f"not used: {n} {what.replace('_', ' ')}", highlight=False)
    if result.skipped:
        console.print(
            f"[yellow]skipped {len(result.skipped)} row(s)[/] (listed in {Path(result.out) / 'import_report.json'})",
            highlight=False,
        )
