"""``wakeguard demo``: the live terminal demo (Rich Live) of wakeguard screening commands.

The screen shows the input level, voice activity, the last verdicts with score bars and
latency, and which device (or file) is in use. Audio goes through the same code as
``wakeguard listen``: a capture source (microphone or a file played in real time), the
:class:`~wakeguard.edge.listener.Listener` (endpointer, scorer, decision), with the runtime
configuration's defaults (``wakeguard.toml``).

Replay challenge (``--challenge``): the person speaks a wake command; the demo records it,
plays it back through the speaker while still recording, and shows the live take and the
replayed take side by side. With ``--input`` there is no speaker: the replay is simulated
through a phone loudspeaker model (the measured Nexus One response when ``../shared`` is
present), which needs the training extra.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .console import EXIT_BAD_INPUT, console, err_console, print_error, run_cli
from .runtime_flags import ModelOption, OperatingPointOption

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
METER_FLOOR_DB = -60.0
NO_MIC_HINT = (
    "pick an input with --device NAME_OR_INDEX (see: wakeguard demo --list-devices), "
    "or run without a microphone: wakeguard demo --input FILE_OR_FOLDER"
)


class NoMicrophone(ValueError):
    """No usable microphone: says why and how to choose one."""


# ---------------------------------------------------------------- what the screen shows


@dataclass
class Take:
    """One scored command on the screen."""

    label: str
    score: float
    verdict: str
    threshold: float
    latency_ms: float
    duration_s: float
    t_start: float
    source: str


@dataclass
class DemoState:
    """Everything the screen draws; updated by the audio loop, read by the Live refresh."""

    model: str
    model_version: str
    threshold: float
    mode: str
    device: str = ""
    status: str = "starting"
    level_dbfs: float = -120.0
    peak_dbfs: float = -120.0
    voice: bool = False
    audio_s: float = 0.0
    overruns: int = 0
    verdicts: deque = field(default_factory=lambda: deque(maxlen=8))
    counts: dict = field(default_factory=lambda: {"bonafide": 0, "spoof": 0, "skipped": 0})
    live_take: Take | None = None
    replay_take: Take | None = None
    challenge_note: str = ""
    rounds: list = field(default_factory=list)
    """(live verdict, replay verdict) of every finished challenge round."""
    unplayable: list = field(default_factory=list)
    """Errors of the input files that could not be played (the others still are)."""
    finished: bool = False

    def feed(self, block: Any, voice: bool) -> None:
        """Level (RMS dBFS, with a decaying peak hold) and voice activity of the newest block."""
        import numpy as np

        if len(block):
            ms = float(np.mean(np.square(block, dtype=np.float64)))
            self.level_dbfs = 10 * math.log10(ms) if ms > 1e-12 else -120.0
            self.audio_s += len(block) / 16_000
        self.peak_dbfs = max(self.level_dbfs, self.peak_dbfs - 1.5)
        self.voice = voice

    def add(self, take: Take) -> None:
        self.verdicts.appendleft(take)
        self.counts[take.verdict] = self.counts.get(take.verdict, 0) + 1


def _bar(fraction: float, width: int, colour: str, marker: float | None = None) -> Text:
    fraction = min(max(fraction, 0.0), 1.0)
    n = int(round(fraction * width))
    cells = ["█"] * n + ["░"] * (width - n)
    t = Text()
    mpos = None if marker is None else min(width - 1, max(0, int(round(marker * width))))
    for i, c in enumerate(cells):
        if i == mpos:
            t.append("│", style="bold white")
        else:
            t.append(c, style=colour if c == "█" else "grey37")
    return t


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 40.0), -40.0)))


def verdict_text(verdict: str) -> Text:
    if verdict == "bonafide":
        return Text("LIVE ✓ accepted", style="bold green")
    return Text("REPLAY ✗ rejected", style="bold red")


def score_bar(score: float, threshold: float, width: int = 16) -> Text:
    """The score squashed to 0..1 (logistic; the score is a log-likelihood ratio) with the threshold marked."""
    colour = "green" if score >= threshold else "red"
    t = _bar(_sigmoid(score), width, colour, marker=_sigmoid(threshold))
    t.append(f" {score:+6.2f}")
    return t


def level_meter(state: DemoState, width: int = 36) -> Text:
    frac = (max(state.level_dbfs, METER_FLOOR_DB) - METER_FLOOR_DB) / -METER_FLOOR_DB
    colour = "red" if state.level_dbfs > -3 else "yellow" if state.level_dbfs > -12 else "green"
    peak = (max(state.peak_dbfs, METER_FLOOR_DB) - METER_FLOOR_DB) / -METER_FLOOR_DB
    t = _bar(frac, width, colour, marker=peak if state.peak_dbfs > METER_FLOOR_DB else None)
    level = "  -inf" if state.level_dbfs <= -119 else f"{state.level_dbfs:6.1f}"
    t.append(f" {level} dBFS")
    return t


def _take_panel(title: str, take: Take | None, waiting: str) -> Panel:
    if take is None:
        return Panel(Text(waiting, style="dim"), title=title, width=44)
    body = Group(
        verdict_text(take.verdict),
        score_bar(take.score, take.threshold),
        Text(f"{take.duration_s:.2f} s of audio, verdict in {take.latency_ms:.1f} ms", style="dim"),
    )
    style = "green" if take.verdict == "bonafide" else "red"
    return Panel(body, title=title, border_style=style, width=44)


def render(state: DemoState) -> Group:
    """The whole screen for one refresh."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold cyan")
    head.add_column()
    head.add_row("input", state.device or "-")
    head.add_row("model", f"{state.model} (version {state.model_version}, threshold {state.threshold:+.3f})")
    head.add_row("level", level_meter(state))
    vad = Text("● speech", style="bold green") if state.voice else Text("○ silence", style="dim")
    head.add_row("voice", vad)
    head.add_row(
        "status",
        Text(f"{state.status}   [{state.audio_s:6.1f} s of audio, {state.overruns} overruns]"),
    )
    parts: list[Any] = [Panel(head, title="wakeguard demo", border_style="cyan")]
    if state.mode == "challenge":
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            _take_panel("1 · live take", state.live_take, "say a wake command..."),
            _take_panel("2 · replayed take", state.replay_take, "waiting for the live take"),
        )
        parts.append(grid)
        if state.challenge_note:
            parts.append(Text(state.challenge_note, style="bold"))
    table = Table(title="last verdicts", expand=False, show_edge=False)
    table.add_column("source", no_wrap=True, max_width=22)
    table.add_column("at", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("score (│ = threshold)", no_wrap=True)
    table.add_column("latency", justify="right", no_wrap=True)
    for v in state.verdicts:
        table.add_row(
            v.source,
            f"{v.t_start:6.2f} s",
            verdict_text(v.verdict),
            score_bar(v.score, v.threshold),
            f"{v.latency_ms:6.1f} ms",
        )
    parts.append(table)
    c = state.counts
    hint = "" if state.finished else "   (Ctrl-C to stop)"
    parts.append(
        Text(
            f"{c.get('bonafide', 0)} live, {c.get('spoof', 0)} replay, {c.get('skipped', 0)} skipped{hint}",
            style="dim",
        )
    )
    return Group(*parts)


class _Screen:
    """A renderable that draws the current state at every Live refresh."""

    def __init__(self, state: DemoState):
        self.state = state

    def __rich__(self) -> Group:
        return render(self.state)


# ---------------------------------------------------------------- the audio side


class RecordingScorer:
    """Wraps the edge scorer and keeps the audio of the last command it scored (for replay)."""

    def __init__(self, scorer: Any):
        self.scorer = scorer
        self.threshold = scorer.threshold
        self.last_audio: Any = None

    def score(self, audio: Any, path: Any = None, *, endpointed: bool = False) -> Any:
        self.last_audio = audio
        return self.scorer.score(audio, path, endpointed=endpointed)


@dataclass
class DemoSetup:
    """What the audio loop needs: the scorer and the runtime configuration."""

    scorer: RecordingScorer
    bundle: Any
    cfg: Any

    def listener(self, sink: Any) -> Any:
        from wakeguard.edge.listener import Listener

        return Listener(
            self.scorer,
            model_version=self.bundle.version,
            endpoint=self.cfg.endpoint.params(),
            decision=self.cfg.decision.params(self.scorer.threshold),
            sinks=[sink],
        )


def audio_files(path: Path) -> list[Path]:
    """A file, or the audio files in a folder (sorted)."""
    from wakeguard.edge.audio import AudioError

    if not path.exists():
        raise AudioError(path, "file or folder not found")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise AudioError(path, f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
    return files


def _take(ev: Any, label: str, source: str) -> Take:
    return Take(label, ev.score, ev.verdict, ev.threshold, ev.latency_ms, ev.duration_s, ev.t_start, source)


def _sink(state: DemoState, source: str, out: list | None = None) -> Any:
    from wakeguard.edge.listener import VerdictEvent

    def sink(ev: Any) -> None:
        if isinstance(ev, VerdictEvent):
            take = _take(ev, "", source)
            state.add(take)
            if out is not None:
                out.append(take)
        else:
            state.counts["skipped"] += 1

    return sink


def _pump(state: DemoState, source: Any, listener: Any, stop: threading.Event) -> None:
    """Play one source through the listener, updating the meter."""
    from wakeguard.edge.capture import DISCONTINUITY

    for block in source.blocks(stop):
        if block is DISCONTINUITY:
            listener.finish()
            continue
        listener.process(block)
        state.feed(block, listener.endpointer.in_speech)
        state.overruns = source.overruns
    listener.finish()
    state.voice = False


def run_files(state: DemoState, setup: DemoSetup, files: list[Path], speed: float, stop: threading.Event) -> None:
    from wakeguard.edge.audio import AudioError
    from wakeguard.edge.capture import FileSource

    for f in files:
        if stop.is_set():
            return
        try:
            src = FileSource(f, speed=speed, block_ms=setup.cfg.capture.block_ms)
        except AudioError as exc:  # one bad file in a folder: say so after, play the rest
            state.unplayable.append(str(exc))
            continue
        state.device = f"file {f.name} ({src.native_rate} Hz, {src.channels} ch, {src.duration_s:.1f} s, speed {speed:g}x)"
        state.status = f"playing {f.name}"
        _pump(state, src, setup.listener(_sink(state, f.name)), stop)
    played = len(files) - len(state.unplayable)
    state.status = f"done: {played} file(s)" + (
        f", {len(state.unplayable)} could not be played" if state.unplayable else ""
    )


def simulated_replay(audio: Any, seed: int = 0) -> tuple[Any, str]:
    """The take played through a phone loudspeaker model and picked up again (no hardware)."""
    import numpy as np

    try:
        from wakeguard.model import devices
    except ImportError as exc:
        raise ValueError(
            "--challenge with --input simulates the replay with the training extra's loudspeaker "
            f"model ({exc.name or exc} missing): pip install 'wakeguard[train]', or use a microphone and speaker"
        ) from exc
    from .bench_cmd import shared_speech_dir

    rng = np.random.default_rng(seed)
    shared = shared_speech_dir()
    dev_dir = shared.parent / "devices" if shared is not None else None
    if dev_dir is not None and (dev_dir / "nexus-one-front-speaker-ir.wav").is_file():
        speaker = devices.measured_loudspeaker(dev_dir, rng)
        how = "measured Nexus One loudspeaker"
    else:
        speaker = devices.make_loudspeaker("demo-phone", "phone", rng)
        how = "simulated phone loudspeaker"
    played = speaker.play(np.asarray(audio, dtype=np.float64))
    y = played[0] if isinstance(played, tuple) else played  # (output, amplifier gain)
    y = y / (np.sqrt(np.mean(y**2)) + 1e-12) * np.sqrt(np.mean(np.square(audio, dtype=np.float64)))
    return np.clip(y, -1, 1).astype(np.float32), how


def _quiet(seconds: float, seed: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed).normal(0, 10 ** (-70 / 20), int(seconds * 16_000)).astype(np.float32)


def run_file_challenge(
    state: DemoState, setup: DemoSetup, files: list[Path], speed: float, stop: threading.Event
) -> None:
    """Each file is the live take; its replay through a loudspeaker model is the second take."""
    import numpy as np
    from wakeguard.edge.capture import FakeSource, FileSource

    for i, f in enumerate(files):
        if stop.is_set():
            return
        state.live_take = state.replay_take = None
        state.challenge_note = ""
        src = FileSource(f, speed=speed, block_ms=setup.cfg.capture.block_ms)
        state.device = f"file {f.name} (no microphone: replay simulated)"
        state.status = f"round {i + 1}: live take from {f.name}"
        live: list[Take] = []
        _pump(state, src, setup.listener(_sink(state, f.name, live)), stop)
        if not live or setup.scorer.last_audio is None:
            state.challenge_note = f"{f.name}: no command found in the file"
            continue
        state.live_take = live[0]
        take_audio = setup.scorer.last_audio
        replayed, how = simulated_replay(take_audio, seed=i)
        state.status = f"round {i + 1}: replaying the take through a {how}"
        stream = np.concatenate([_quiet(0.5, i), replayed, _quiet(1.0, i + 1)])
        fake = FakeSource(stream, speed=speed, block_ms=setup.cfg.capture.block_ms, name=f"replay of {f.name}")
        rep: list[Take] = []
        _pump(state, fake, setup.listener(_sink(state, f"↻ {f.name}", rep)), stop)
        state.replay_take = max(rep, key=lambda t: t.duration_s) if rep else None
        _finish_round(state)
    state.status = f"done: {len(files)} round(s)"


def _finish_round(state: DemoState) -> None:
    live, rep = state.live_take, state.replay_take
    if rep is None:
        state.challenge_note = "the replay was not picked up: turn the speaker up or move it closer"
        return
    state.rounds.append((live.verdict if live else None, rep.verdict))
    if live is not None and live.verdict == "bonafide" and rep.verdict == "spoof":
        state.challenge_note = "✓ told apart: the live take was accepted and the replay rejected"
    else:
        state.challenge_note = (
            f"✗ not told apart this time (live: {live.verdict if live else '-'}, replay: {rep.verdict})"
        )


# ---------------------------------------------------------------- microphone and speaker


def list_devices() -> list[dict[str, Any]]:
    """Every PortAudio device with its input/output channels and default rate."""
    from wakeguard.edge.capture import CaptureError, import_sounddevice

    try:
        sd = import_sounddevice()
    except CaptureError as exc:
        raise NoMicrophone(str(exc)) from exc
    try:
        default_in, default_out = sd.default.device
    except Exception:
        default_in = default_out = -1
    out = []
    for i, d in enumerate(sd.query_devices()):
        out.append(
            {
                "index": int(d.get("index", i)),
                "name": str(d["name"]),
                "inputs": int(d["max_input_channels"]),
                "outputs": int(d["max_output_channels"]),
                "default_rate": float(d["default_samplerate"]),
                "default": ("in " if i == default_in else "") + ("out" if i == default_out else ""),
            }
        )
    return out


def _check_microphone(device: str | None) -> Any:
    """The input device to use, or :class:`NoMicrophone` with how to pick one."""
    from wakeguard.edge.capture import (
        CaptureError,
        find_device,
        import_sounddevice,
        list_input_devices,
    )

    try:
        sd = import_sounddevice()
        inputs = list_input_devices(sd)
    except CaptureError as exc:
        raise NoMicrophone(f"{exc}; {NO_MIC_HINT}") from exc
    if not inputs:
        raise NoMicrophone(f"no microphone found; {NO_MIC_HINT}")
    try:
        default_in = sd.default.device[0]
    except Exception:
        default_in = None
    try:
        return find_device(device, inputs, default_in if isinstance(default_in, int) and default_in >= 0 else None)
    except LookupError as exc:
        raise NoMicrophone(f"{exc}; {NO_MIC_HINT}") from exc


class Speaker:
    """Plays a 16 kHz take through an output device at the rate the device wants."""

    def __init__(self, device: str | None):
        from wakeguard.edge.capture import import_sounddevice, parse_device

        self.sd = import_sounddevice()
        self.device = parse_device(device)
        try:
            info = self.sd.query_devices(self.device, "output")
        except Exception as exc:
            raise NoMicrophone(f"no output device {device!r} ({exc}); see wakeguard demo --list-devices") from exc
        self.name = str(info["name"])
        self.rate = int(info["default_samplerate"])
        self.ends_at = 0.0

    def play(self, audio: Any) -> float:
        """Start playback (returns at once); the time it will end, on the monotonic clock."""
        from wakeguard.edge.audio import resample

        y = resample(audio, 16_000, self.rate) if self.rate != 16_000 else audio
        self.sd.play(y, samplerate=self.rate, device=self.device)
        self.ends_at = time.monotonic() + len(y) / self.rate
        return self.ends_at


def run_mic(state: DemoState, setup: DemoSetup, device: str | None, stop: threading.Event) -> None:
    from wakeguard.edge.capture import MicSource

    dev = _check_microphone(device)
    c = setup.cfg.capture
    src = MicSource(dev.index, block_ms=c.block_ms, queue_seconds=c.queue_seconds, backoff_s=c.backoff_s)
    state.device = f"microphone {dev.index}: {dev.name}"
    state.status = "listening: say a command"
    _pump(state, src, setup.listener(_sink(state, "mic")), stop)


def run_mic_challenge(
    state: DemoState, setup: DemoSetup, device: str | None, output: str | None, rounds: int, stop: threading.Event
) -> None:
    """Live take from the microphone, replayed through the speaker while still recording."""
    from wakeguard.edge.capture import DISCONTINUITY, MicSource

    dev = _check_microphone(device)
    speaker = Speaker(output)
    c = setup.cfg.capture
    src = MicSource(dev.index, block_ms=c.block_ms, queue_seconds=c.queue_seconds, backoff_s=c.backoff_s)
    state.device = f"microphone {dev.index}: {dev.name} → speaker: {speaker.name}"
    phase, heard = "live", []
    listener = setup.listener(_sink(state, "live", heard))
    state.status = "round 1: say a wake command"
    deadline = 0.0
    for block in src.blocks(stop):
        if block is DISCONTINUITY:
            listener.finish()
            continue
        listener.process(block)
        state.feed(block, listener.endpointer.in_speech)
        now = time.monotonic()
        if phase == "live" and heard:
            state.live_take, state.replay_take, state.challenge_note = heard[-1], None, ""
            take_audio = setup.scorer.last_audio
            listener.finish()
            heard = []
            listener = setup.listener(_sink(state, "replay", heard))
            deadline = speaker.play(take_audio) + 1.5
            phase = "replay"
            state.status = f"round {len(state.rounds) + 1}: replaying the take through {speaker.name}"
        elif phase == "replay" and now > deadline:
            listener.finish()
            state.replay_take = max(heard, key=lambda t: t.duration_s) if heard else None
            _finish_round(state)
            if rounds and len(state.rounds) >= rounds:
                break
            phase, deadline = "show", now + 4.0
            state.status = "result (next round in a few seconds)"
        elif phase == "show" and now > deadline:
            heard = []
            listener = setup.listener(_sink(state, "live", heard))
            phase = "live"
            state.status = f"round {len(state.rounds) + 1}: say a wake command"
    state.status = f"done: {len(state.rounds)} round(s)"


# ---------------------------------------------------------------- the command


def demo(
    *,
    inputs: Path | None,
    device: str | None,
    output_device: str | None,
    challenge: bool,
    model: Path | None,
    operating_point: str | None,
    speed: float,
    rounds: int,
    live: bool = True,
) -> DemoState:
    """Run the demo until the input ends, the rounds are done, or Ctrl-C; returns the final state."""
    from rich.live import Live
    from wakeguard.edge.bundle import load_bundle
    from wakeguard.edge.config import load_config
    from wakeguard.edge.scorer import Scorer

    if speed < 0:
        raise ValueError("--speed must be >= 0 (0 = as fast as possible)")
    files = audio_files(inputs) if inputs is not None else None
    if files is None:
        _check_microphone(device)  # fail before drawing anything
    cfg = load_config(None)
    bundle = load_bundle(model)
    scorer = RecordingScorer(Scorer.from_bundle(bundle, operating_point=operating_point, num_threads=1))
    setup = DemoSetup(scorer, bundle, cfg)
    scorer.scorer.raw_logit(_quiet(2.0, 0))  # warm up: the first invoke sets up XNNPACK, not the talker's wait
    state = DemoState(
        model=str(bundle.path),
        model_version=bundle.version,
        threshold=scorer.threshold,
        mode="challenge" if challenge else ("files" if files else "microphone"),
    )
    stop = threading.Event()
    with Live(_Screen(state), console=console, refresh_per_second=10, transient=False) as view:
        try:
            if files is not None and challenge:
                run_file_challenge(state, setup, files, speed, stop)
            elif files is not None:
                run_files(state, setup, files, speed, stop)
            elif challenge:
                run_mic_challenge(state, setup, device, output_device, rounds, stop)
            else:
                run_mic(state, setup, device, stop)
        except KeyboardInterrupt:
            stop.set()
            state.status = "stopped"
        state.voice = False
        state.finished = True
        view.refresh()
    return state


def demo_cli(
    inputs: Annotated[Path | None, typer.Option("--input", "-i", help="Audio file or folder of files to play instead of a microphone.")] = None,
    device: Annotated[str | None, typer.Option("--device", "-d", help="Input device: index or part of its name (see --list-devices).")] = None,
    output_device: Annotated[str | None, typer.Option("--output-device", help="Speaker for --challenge: index or part of its name.")] = None,
    list_devices_flag: Annotated[bool, typer.Option("--list-devices", help="List audio devices and exit.")] = False,
    challenge: Annotated[bool, typer.Option("--challenge", help="Replay challenge: record a live take, replay it, show both verdicts.")] = False,
    model: ModelOption = None,
    operating_point: OperatingPointOption = None,
    speed: Annotated[float, typer.Option(help="File playback speed (1 = real time, 0 = as fast as possible).")] = 1.0,
    rounds: Annotated[
        int, typer.Option(min=0, help="Challenge rounds with a microphone (0 = until Ctrl-C).")
    ] = 0,
) -> None:
    """Live terminal demo: level meter, voice activity, verdicts with score bars and latency."""
    if list_devices_flag:
        devs = run_cli(list_devices)  # NoMicrophone is a ValueError: message + exit 2
        if not devs:
            err_console.print("no audio devices found", highlight=False)
            return
        t = Table(title="audio devices")
        for col in ("index", "name", "inputs", "outputs", "default rate", "default"):
            t.add_column(col)
        for d in devs:
            t.add_row(str(d["index"]), d["name"], str(d["inputs"]), str(d["outputs"]), f"{d['default_rate']:.0f}", d["default"])
        console.print(t)
        return
    state = run_cli(
        demo,
        inputs=inputs,
        device=device,
        output_device=output_device,
        challenge=challenge,
        model=model,
        operating_point=operating_point,
        speed=speed,
        rounds=rounds,
    )
    if state.unplayable:
        console.line()  # the final screen may end mid-line
    for problem in state.unplayable:
        print_error(problem)
    heard = state.counts["bonafide"] or state.counts["spoof"]
    if state.mode != "challenge" and not heard and state.status != "stopped":
        console.print("[yellow]no command was heard[/] (too quiet or too short?)", highlight=False)
    if state.unplayable:
        raise typer.Exit(EXIT_BAD_INPUT)
