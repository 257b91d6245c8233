"""``wakeguard screen``: score audio files with a model bundle, one line per file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import console, err_console, print_json, run_cli


@dataclass(frozen=True)
class ScreenedFile:
    path: str
    score: float | None
    verdict: str | None
    latency_ms: float | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "score": self.score, "verdict": self.verdict, "latency_ms": self.latency_ms}
        if self.error:
            d["error"] = self.error
        return d


def screen(
    files: list[Path],
    model: Path | None = None,
    operating_point: str | None = None,
    threads: int = 1,
) -> list[ScreenedFile]:
    """Score each file; a file that cannot be scored gets its error, the others still run."""
    from wakeguard.edge.audio import AudioError, load_audio
    from wakeguard.edge.scorer import Scorer

    scorer = Scorer.from_bundle(model, operating_point=operating_point, num_threads=threads)
    out = []
    for f in files:
        try:
            audio = load_audio(f)
            r = scorer.score(audio, path=f)
            out.append(ScreenedFile(str(f), round(r.score, 4), r.verdict, round(r.latency_ms, 2)))
        except AudioError as exc:
            out.append(ScreenedFile(str(f), None, None, None, str(exc)))
    return out


def screen_cli(
    files: Annotated[list[Path], typer.Argument(help="Audio files (WAV, FLAC, ...); any rate or channel count.")],
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Model bundle folder (default: the shipped bundle).")] = None,
    operating_point: Annotated[str | None, typer.Option("--operating-point", help="Threshold: eer, bpcer_1pct or bpcer_5pct (default: the bundle's).")] = None,
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Score audio files: higher score = more likely a live talker; verdict bonafide or spoof."""
    results = run_cli(screen, files, model, operating_point, threads)
    failed = 0
    for r in results:
        if as_json:
            print_json(r.to_dict())
        elif r.error:
            err_console.print(f"[red]error:[/] {r.error}", highlight=False)
        else:
            colour = "green" if r.verdict == "bonafide" else "red"
            console.print(f"{r.path}\t{r.score:+.3f}\t[{colour}]{r.verdict}[/]\t{r.latency_ms:.1f} ms", highlight=False)
        failed += r.error is not None
    if failed:
        raise typer.Exit(2)
