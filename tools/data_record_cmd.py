"""``wakeguard data record``: a guided session that records live takes and their replays."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import console, err_console, print_error, print_json, run_cli


def _sounddevice_backend() -> Any:
    from wakeguard.model.record import SoundDeviceBackend

    return SoundDeviceBackend()


def _read_key() -> str:
    """One key press from the terminal, without waiting for Enter; Ctrl-C interrupts.

    When stdin is not a terminal (a script piped in) a line is one key, and the end of the
    input reads as ``q`` (quit) so that a session cannot wait on input that will never come.
    On a POSIX terminal keys typed before the question are dropped, so a double Enter cannot
    accept a take unseen.
    Its own code: Typer stopped installing Click (0.24 did, 0.26 and 0.29 do not).
    """
    if not sys.stdin.isatty():
        return sys.stdin.readline() or "q"
    if os.name == "nt":
        import msvcrt

        ch = msvcrt.getwch()
    else:
        import termios
        import tty

        fd = sys.stdin.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setraw(fd)  # raw (and typed-ahead input flushed): Ctrl-C arrives as a byte
            ch = os.read(fd, 8).decode(errors="replace")  # an arrow key is several bytes
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
    if "\x03" in ch:
        raise KeyboardInterrupt
    return "q" if ch[:1] in ("\x04", "\x1a") else ch  # Ctrl-D, Ctrl-Z: end of input


# Injection points: tests replace these with a fake backend and a scripted key source.
backend_factory: Callable[[], Any] = _sounddevice_backend
key_source: Callable[[], str] = _read_key


class RichUI:
    """:class:`wakeguard.model.record.SessionUI` on the Rich console."""

    def prompt(self, number: int, total: int, text: str) -> None:
        from rich.panel import Panel

        console.print(Panel(f"[bold]{text}[/]", title=f"prompt {number}/{total}", expand=False), highlight=False)

    def info(self, message: str) -> None:
        console.print(f"[dim]{message}[/]", highlight=False)

    def take(self, kind: str, check: Any, problems: list[str]) -> None:
        level = f"{kind}: {check.duration_s:.1f} s, RMS {check.rms_dbfs:.1f} dBFS, peak {check.peak:.2f}"
        if problems:
            console.print(f"[yellow]{level}[/]", highlight=False)
            for p in problems:
                console.print(f"[bold yellow]  flagged:[/] {p} (r to redo)", highlight=False)
        else:
            console.print(f"[green]{level}[/]", highlight=False)


def record_cli(
    out: Annotated[Path | None, typer.Argument(help="Dataset folder to create or continue (protocol.csv + audio/).")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Prompt file, one command a line (default: the shipped wake-command list).")] = None,
    input_device: Annotated[str | None, typer.Option("--input-device", help="Microphone: index or part of the name (default: system default).")] = None,
    output_device: Annotated[str | None, typer.Option("--output-device", help="Loudspeaker for the replays: index or part of the name.")] = None,
    speaker: Annotated[str, typer.Option("--speaker", help="Name or id of the person speaking.")] = "speaker1",
    session: Annotated[str, typer.Option("--session", help="Session name (room, day...); a rerun with the same name resumes.")] = "default",
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each take in seconds.")] = 3.0,
    split: Annotated[str, typer.Option("--split", help="Split for the rows: train, dev, eval or empty.")] = "",
    list_devices: Annotated[bool, typer.Option("--list-devices", help="List the audio devices and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the session result (or device list) as JSON.")] = False,
) -> None:
    """Record your own data: say each prompt (bona fide), then hear it replayed through the
    chosen loudspeaker and recorded again by the same microphone (spoof).

    Keys: Enter = start / accept, r = redo, s = skip, q = quit. Silent or clipped takes are
    flagged. Stop any time: a rerun with the same OUT, speaker, session and devices continues
    where it stopped.
    """
    from wakeguard.model.record import SessionSettings, read_prompts, run_session
    from wakeguard.model.record import list_devices as devices_of

    backend = run_cli(backend_factory)
    if list_devices:
        devices = run_cli(devices_of, backend)
        if as_json:
            print_json(devices)
            return
        if not devices:
            err_console.print("no audio devices found", highlight=False)
            return
        from rich.table import Table

        t = Table(title="audio devices")
        for col in ("index", "name", "inputs", "outputs", "default rate", "default"):
            t.add_column(col)
        for d in devices:
            t.add_row(str(d["index"]), str(d["name"]), str(d["inputs"]), str(d["outputs"]), str(d["default_rate"]), str(d["default"]))
        console.print(t)
        return
    if out is None:
        print_error("give the dataset folder OUT (or --list-devices)")
        raise typer.Exit(2)
    if split not in ("", "train", "dev", "eval"):
        print_error(f"--split {split!r} is not one of train, dev, eval")
        raise typer.Exit(2)
    settings = SessionSettings(
        out=out,
        prompts=run_cli(read_prompts, prompts),
        speaker=speaker,
        session=session,
        input_device=input_device,
        output_device=output_device,
        seconds=seconds,
        split=split,
    )
    result = run_cli(run_session, settings, backend, key_source, RichUI())
    if as_json:
        print_json(result.to_dict())
        return
    console.print(
        f"recorded {len(result.recorded)} pair(s), skipped {len(result.skipped)}, {result.remaining} prompt(s) left "
        f"({result.already_done} done before); {result.input_device} -> {result.output_device} at {result.rate} Hz; "
        f"protocol: {result.protocol}",
        highlight=False,
    )
