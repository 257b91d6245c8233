"""``wakeguard screen``: score audio files with a model bundle, one line per file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape

from .console import console, err_console, print_json, run_cli
from .runtime_flags import ModelOption, OperatingPointOption, ThreadsOption


@dataclass(frozen=True)
class ScreenedFile:
    path: str
    score: float | None
    verdict: str | None
    latency_ms: float | None
    error: str | None = None
    warnings: tuple[str, ...] = ()
    """Problems that did not stop the scoring (see :func:`audio_warnings`), each naming what was found."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "score": self.score,
            "verdict": self.verdict,
            "latency_ms": self.latency_ms,
        }
        if self.error:
            d["error"] = self.error
        if self.warnings:
            d["warnings"] = list(self.warnings)
        return d


def audio_warnings(
    audio: np.ndarray, native_rate: int | None = None, command_found: bool | None = None
) -> tuple[str, ...]:
    """What is worth telling about scoreable audio: clipping distorts, but a clipped command
    is still a command, so it is scored and flagged rather than refused; audio in which the
    live listener's endpointer finds no command (steady noise, a hum) is scored too, but the
    score of something that is not speech means little; and a file recorded below 16 kHz
    (``native_rate``) has no sound above half its rate, where much of the replay evidence
    is, while every live command the model learned from had the whole band.
    ``command_found``: what the scorer's trim found already (None: look here)."""
    from wakeguard.edge.audio import SAMPLE_RATE, check_audio
    from wakeguard.edge.endpoint import speech_span

    found: list[str] = []
    if native_rate is not None and native_rate < SAMPLE_RATE:
        found.append(
            f"recorded at {native_rate} Hz: nothing above {native_rate // 2} Hz, while the model "
            f"learned from live commands recorded at {SAMPLE_RATE} Hz; the score may be less reliable"
        )
    info = check_audio(audio)
    if info.clipped:
        found.append(
            f"clipped: {info.clipped_fraction:.2%} of samples at full scale; the score may be less reliable"
        )
    if command_found is None:
        command_found = speech_span(audio) is not None
    if not command_found:
        found.append(
            "no command found by the endpointer `wakeguard listen` uses (steady noise, or "
            "speech too quiet against it?); a score of audio that is not speech means little"
        )
    return tuple(found)


def _native_rate(path: Path) -> int | None:
    """The sample rate the file was recorded at (before load_audio converts it)."""
    import soundfile as sf

    try:
        return int(sf.info(str(path)).samplerate)
    except Exception:  # load_audio read it already; a second look failing only loses a warning
        return None


def screen(
    files: list[Path],
    model: Path | None = None,
    operating_point: str | None = None,
    threads: int = 1,
) -> list[ScreenedFile]:
    """Score each file; a file that cannot be scored gets its error, the others still run.

    A scored file also gets its warnings (see :func:`audio_warnings`)."""
    from wakeguard.edge.audio import AudioError, load_audio
    from wakeguard.edge.scorer import Scorer

    scorer = Scorer.from_bundle(model, operating_point=operating_point, num_threads=threads)
    out = []
    for f in files:
        try:
            audio = load_audio(f)
            r = scorer.score(audio, path=f)
            native_rate = _native_rate(f)
            out.append(
                ScreenedFile(
                    str(f),
                    round(r.score, 4),
                    r.verdict,
                    round(r.latency_ms, 2),
                    warnings=audio_warnings(audio, native_rate, r.command_found),
                )
            )
        except AudioError as exc:
            out.append(ScreenedFile(str(f), None, None, None, str(exc)))
    return out


def screen_cli(
    files: Annotated[
        list[Path], typer.Argument(help="Audio files (WAV, FLAC, ...); any rate or channel count.")
    ],
    model: ModelOption = None,
    operating_point: OperatingPointOption = None,
    threads: ThreadsOption = 1,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per file and line: path, score, verdict, latency_ms; plus error "
            "(then score, verdict, latency_ms are null) or a warnings list, only when there is one.",
        ),
    ] = False,
) -> None:
    """Score audio files: higher score = more likely a live talker; verdict bonafide or spoof.

    Each file is scored over the span of its commands, as the live listener would cut it
    (the shipped bundle's input policy), so the silence around them does not move the score.
    Files that cannot be scored (unreadable, truncated, too short, silent) print an error on
    stderr and the others still run; exit code 2 if any failed. Clipped files, files recorded
    below 16 kHz, and files in which the listener's endpointer finds no command (scored
    whole) get a warning on stderr (a "warnings" list in --json). Screen the recording as the
    device heard it: a lossy copy (MP3, AAC) carries codec traces that replays also carry,
    and may score as one.
    """
    results = run_cli(screen, files, model, operating_point, threads)
    failed = 0
    for r in results:
        if as_json:
            print_json(r.to_dict())
        elif r.error:
            err_console.print(f"[red]error:[/] {escape(r.error)}", highlight=False, soft_wrap=True)
        else:
            for w in r.warnings:
                err_console.print(
                    f"[yellow]warning:[/] {escape(r.path)}: {escape(w)}",
                    highlight=False,
                    soft_wrap=True,
                )
            colour = "green" if r.verdict == "bonafide" else "red"
            console.print(
                f"{escape(r.path)}\t{r.score:+.3f}\t[{colour}]{r.verdict}[/]\t{r.latency_ms:.1f} ms",
                highlight=False,
                soft_wrap=True,
            )
        failed += r.error is not None
    if failed:
        raise typer.Exit(2)
