"""Collect your own replay data: a live take of each wake command, then its replay.

Replay detection is device-specific, so users record their own pairs: the talker says a
prompt into the victim microphone (``bonafide``), then the same take is played back through a
chosen loudspeaker and recorded again by the same microphone (``spoof``). Both are written as
16 kHz mono WAV into a dataset folder with the devices as condition columns
(``recording_device``, ``playback_device``, ``session``, ``prompt``).

The replay is recorded a little longer than the take (to cover output latency), then aligned to
the take by cross-correlation and cut to the same length, so the two classes share duration,
leading silence and trailing silence: those must not tell them apart.

Audio I/O goes through an :class:`AudioBackend` (sounddevice in real use, a fake in tests),
keys through a callable and output through a :class:`SessionUI`, so the session logic here
never touches a terminal or a sound card directly. A rerun reads the existing
``protocol.csv`` and continues with the prompts not yet recorded for this speaker, session and
device pair.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol as TypingProtocol

import numpy as np
from wakeguard.edge.audio import SAMPLE_RATE, AudioCheck, check_audio, resample, write_wav
from wakeguard.edge.protocol import PROTOCOL, Row, read_protocol, write_protocol

CANDIDATE_RATES = (16_000, 48_000, 44_100, 32_000, 22_050)
"""Rates tried in order when opening the devices; audio is converted to 16 kHz afterwards."""
CONDITIONS = ("recording_device", "playback_device", "session", "prompt")

ENTER, REDO, SKIP, QUIT = "enter", "r", "s", "q"


class RecordError(ValueError):
    """A recording session that cannot go on (no device, bad prompt file...)."""


class NoMicrophone(RecordError):
    """No input device to record from."""


@dataclass(frozen=True)
class Device:
    """One audio device as the backend reports it."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: int


class AudioBackend(TypingProtocol):
    """What a session needs from the sound system."""

    def devices(self) -> list[Device]: ...

    def default_device(self, kind: str) -> int | None:
        """Index of the system's default ``"input"`` or ``"output"`` device, or None."""
        ...

    def supports(self, device: Device, rate: int, kind: str) -> bool: ...

    def record(self, device: Device, frames: int, rate: int) -> np.ndarray:
        """Record ``frames`` mono samples at ``rate``."""
        ...

    def play_record(self, output: Device, input: Device, audio: np.ndarray, rate: int) -> np.ndarray:
        """Play ``audio`` (mono, ``rate``) on ``output`` while recording as many samples from ``input``."""
        ...


class SoundDeviceBackend:
    """:class:`AudioBackend` on PortAudio through the ``sounddevice`` package."""

    def __init__(self) -> None:
        try:
            import sounddevice as sd
        except OSError as exc:  # the Python package is there, PortAudio is not
            raise RecordError(
                f"cannot open the sound system ({exc}); install PortAudio (Debian/Ubuntu/Raspberry Pi OS: "
                "sudo apt install libportaudio2), then run `wakeguard data record --list-devices`"
            ) from exc
        except ImportError as exc:
            raise RecordError("the sounddevice package is missing: pip install 'wakeguard[edge]'") from exc
        self.sd = sd

    def devices(self) -> list[Device]:
        out = []
        for i, d in enumerate(self.sd.query_devices()):
            out.append(
                Device(i, str(d["name"]), int(d["max_input_channels"]), int(d["max_output_channels"]), int(d["default_samplerate"]))
            )
        return out

    def default_device(self, kind: str) -> int | None:
        pair = self.sd.default.device
        idx = pair[0] if kind == "input" else pair[1]
        return None if idx is None or idx < 0 else int(idx)

    def supports(self, device: Device, rate: int, kind: str) -> bool:
        check = self.sd.check_input_settings if kind == "input" else self.sd.check_output_settings
        try:
            check(device=device.index, samplerate=rate, channels=1, dtype="float32")
            return True
        except Exception:  # PortAudio reports unsupported settings with several exception types
            return False

    def record(self, device: Device, frames: int, rate: int) -> np.ndarray:
        x = self.sd.rec(frames, samplerate=rate, channels=1, dtype="float32", device=device.index)
        self.sd.wait()
        return np.asarray(x[:, 0], dtype=np.float32)

    def play_record(self, output: Device, input: Device, audio: np.ndarray, rate: int) -> np.ndarray:
        x = self.sd.playrec(
            audio.astype(np.float32)[:, None], samplerate=rate, channels=1, dtype="float32", device=(input.index, output.index)
        )
        self.sd.wait()
        return np.asarray(x[:, 0], dtype=np.float32)


class SessionUI(TypingProtocol):
    """How the session talks to the person recording (Rich in the CLI)."""

    def prompt(self, number: int, total: int, text: str) -> None: ...

    def info(self, message: str) -> None: ...

    def take(self, kind: str, check: AudioCheck, problems: list[str]) -> None: ...


# ----------------------------------------------------------------------------- devices


def list_devices(backend: AudioBackend) -> list[dict[str, object]]:
    """Every device with its channels, default rate and whether it is the system default."""
    din, dout = backend.default_device("input"), backend.default_device("output")
    return [
        {
            "index": d.index,
            "name": d.name,
            "inputs": d.max_input_channels,
            "outputs": d.max_output_channels,
            "default_rate": d.default_rate,
            "default": ", ".join(k for k, i in (("input", din), ("output", dout)) if i == d.index),
        }
        for d in backend.devices()
    ]


def resolve_device(backend: AudioBackend, spec: str | None, kind: str) -> Device:
    """Find a device by index or by (case-insensitive) part of its name; None = system default."""
    devices = backend.devices()
    usable = [d for d in devices if (d.max_input_channels if kind == "input" else d.max_output_channels) > 0]
    if not usable:
        if kind == "input":
            raise NoMicrophone(
                "no microphone found: the sound system reports no input device. Plug one in, then run "
                "`wakeguard data record --list-devices` to check it is seen"
            )
        raise RecordError("no loudspeaker found: no output device. Run `wakeguard data record --list-devices`")
    if spec is None or spec == "":
        idx = backend.default_device(kind)
        match = [d for d in usable if d.index == idx] or usable[:1]
        return match[0]
    if spec.strip().isdigit():
        match = [d for d in usable if d.index == int(spec)]
    else:
        match = [d for d in usable if spec.lower() in d.name.lower()]
    if len(match) == 1:
        return match[0]
    names = "; ".join(f"{d.index}: {d.name}" for d in usable)
    what = "microphone (input)" if kind == "input" else "loudspeaker (output)"
    if not match:
        raise (NoMicrophone if kind == "input" else RecordError)(
            f"no {what} device matches {spec!r}; available: {names}. Run `wakeguard data record --list-devices`"
        )
    raise RecordError(f"{spec!r} matches several {what} devices ({', '.join(d.name for d in match)}); give the index instead")


def choose_rate(backend: AudioBackend, mic: Device, speaker: Device) -> int:
    """The first rate both devices accept: 16 kHz if possible, else a native rate (resampled later)."""
    for rate in (*CANDIDATE_RATES, mic.default_rate, speaker.default_rate):
        if backend.supports(mic, rate, "input") and backend.supports(speaker, rate, "output"):
            return rate
    raise RecordError(f"{mic.name} and {speaker.name} share no sample rate (tried {CANDIDATE_RATES}); pick other devices")


# ----------------------------------------------------------------------------- audio


def align_replay(take: np.ndarray, replay: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """Cut ``replay`` to ``take``'s length, starting at the lag (0..max_lag) of best correlation."""
    n = take.size
    if replay.size < n:
        replay = np.concatenate([replay, np.zeros(n - replay.size, np.float32)])
    max_lag = max(0, min(max_lag, replay.size - n))
    size = 1 << int(np.ceil(np.log2(replay.size + n)))
    corr = np.fft.irfft(np.fft.rfft(replay, size) * np.conj(np.fft.rfft(take, size)), size)[: max_lag + 1]
    lag = int(np.argmax(corr)) if np.any(take) else 0
    return replay[lag : lag + n].astype(np.float32), lag


def take_problems(check: AudioCheck) -> list[str]:
    """Why a take should be redone (empty = fine)."""
    problems = []
    if check.silent:
        problems.append(f"silent (RMS {check.rms_dbfs:.1f} dBFS): is the microphone muted or too far?")
    if check.clipped:
        problems.append(f"clipped ({100 * check.clipped_fraction:.1f}% of samples at full scale): speak softer or lower the gain")
    return problems


def _check(native: np.ndarray, x16: np.ndarray, rate: int) -> AudioCheck:
    """Level of the 16 kHz audio; peak and clipping from the device-rate samples (resampling
    smears clipped peaks and overshoots full scale)."""
    c = check_audio(x16)
    raw = check_audio(native, rate)
    return AudioCheck(c.duration_s, c.rms_dbfs, raw.peak, raw.clipped_fraction)


def read_prompts(path: Path | None = None) -> list[str]:
    """Prompts one a line; blank lines and ``#`` comments ignored. Default: the shipped list."""
    path = Path(path) if path is not None else Path(__file__).with_name("wake_commands.txt")
    if not path.is_file():
        raise RecordError(f"{path}: prompt file not found")
    prompts = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise RecordError(f"{path}: no prompts in the file")
    return prompts


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "x"


# ----------------------------------------------------------------------------- session


@dataclass
class SessionSettings:
    """One recording session: who, where to, with which devices, and how long each take is."""

    out: Path
    prompts: list[str]
    speaker: str = "speaker1"
    session: str = "default"
    input_device: str | None = None
    output_device: str | None = None
    seconds: float = 3.0
    split: str = ""
    replay_pad_seconds: float = 0.5


@dataclass
class SessionResult:
    """What a session did."""

    protocol: Path
    recorded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    already_done: int = 0
    remaining: int = 0
    quit: bool = False
    rate: int = SAMPLE_RATE
    input_device: str = ""
    output_device: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "protocol": str(self.protocol),
            "recorded": len(self.recorded),
            "skipped": len(self.skipped),
            "already_done": self.already_done,
            "remaining": self.remaining,
            "quit": self.quit,
            "rate": self.rate,
            "input_device": self.input_device,
            "output_device": self.output_device,
        }


def _key(raw: str) -> str:
    k = (raw or "").strip().lower()
    return ENTER if k in ("", "\r", "\n", "y", "a") else k[:1]


def _review(ui: SessionUI, keys: Callable[[], str], check: AudioCheck, redo_label: str, silent_message: str) -> str:
    """Ask accept / redo / skip / quit for a take; a silent take cannot be accepted."""
    while True:
        ui.info(f"Enter: accept   {redo_label}   s: skip   q: quit")
        k = _key(keys())
        if k == ENTER and check.silent:
            ui.info(silent_message)
            continue
        if k in (ENTER, REDO, SKIP, QUIT):
            return k


def _existing(out: Path) -> list[Row]:
    return read_protocol(out).rows if (out / PROTOCOL).is_file() else []


def run_session(settings: SessionSettings, backend: AudioBackend, keys: Callable[[], str], ui: SessionUI) -> SessionResult:
    """Record every prompt not yet done for this speaker, session and device pair.

    After each accepted pair the protocol is rewritten (atomically), so an interrupted session
    loses at most the pair in progress. Keys: Enter accepts (or starts a take), ``r`` redoes,
    ``s`` skips the prompt, ``q`` quits.
    """
    out = Path(settings.out)
    if settings.seconds <= 0.3:
        raise RecordError(f"--seconds must be more than 0.3 s, got {settings.seconds}")
    mic = resolve_device(backend, settings.input_device, "input")
    spk = resolve_device(backend, settings.output_device, "output")
    rate = choose_rate(backend, mic, spk)
    rows = _existing(out)
    done = {
        r.conditions.get("prompt")
        for r in rows
        if r.label == "spoof"
        and r.speaker == settings.speaker
        and r.conditions.get("session") == settings.session
        and r.conditions.get("recording_device") == mic.name
        and r.conditions.get("playback_device") == spk.name
    }
    todo = [(i, p) for i, p in enumerate(settings.prompts) if p not in done]
    result = SessionResult(
        protocol=out / PROTOCOL,
        already_done=len(settings.prompts) - len(todo),
        rate=rate,
        input_device=mic.name,
        output_device=spk.name,
    )
    if result.already_done:
        ui.info(f"resuming: {result.already_done} of {len(settings.prompts)} prompts already recorded with these devices")
    folder = Path("audio") / _slug(settings.speaker) / _slug(settings.session) / f"{_slug(mic.name, 24)}__{_slug(spk.name, 24)}"
    frames = int(round(settings.seconds * rate))
    pad = int(round(settings.replay_pad_seconds * rate))

    for number, (index, prompt) in enumerate(todo, start=1):
        ui.prompt(result.already_done + number, len(settings.prompts), prompt)
        # --- live take
        take: np.ndarray | None = None
        while take is None:
            ui.info(f"Enter: record {settings.seconds:.1f} s on '{mic.name}' (say the prompt)   s: skip   q: quit")
            k = _key(keys())
            if k == QUIT:
                result.quit = True
                break
            if k == SKIP:
                break
            ui.info("recording... speak now")
            x = backend.record(mic, frames, rate)
            x16 = resample(x, rate, SAMPLE_RATE)
            check = _check(x, x16, rate)
            problems = take_problems(check)
            ui.take("live take", check, problems)
            k = _review(ui, keys, check, "r: redo", "a silent take cannot be used: r to redo, s to skip")
            if k == ENTER:
                take = x16
            elif k in (SKIP, QUIT):
                result.quit = k == QUIT
                break
        if take is None:
            if not result.quit:
                result.skipped.append(prompt)
                continue
            break
        # --- replay of the accepted take
        replay: np.ndarray | None = None
        while replay is None:
            ui.info(f"replaying through '{spk.name}' and recording on '{mic.name}'...")
            played = resample(take, SAMPLE_RATE, rate) if rate != SAMPLE_RATE else take
            played = np.concatenate([played, np.zeros(pad, np.float32)])
            y = backend.play_record(spk, mic, played, rate)
            y16 = resample(y, rate, SAMPLE_RATE)
            aligned, lag = align_replay(take, y16, int(settings.replay_pad_seconds * SAMPLE_RATE))
            check = _check(y, aligned, rate)
            problems = take_problems(check)
            ui.take(f"replay (latency {1000 * lag / SAMPLE_RATE:.0f} ms)", check, problems)
            k = _review(
                ui,
                keys,
                check,
                "r: replay again",
                "a silent replay cannot be used (is the loudspeaker on?): r to replay again, s to skip",
            )
            if k == ENTER:
                replay = aligned
            elif k in (SKIP, QUIT):
                result.quit = k == QUIT
                break
        if replay is None:
            if not result.quit:
                result.skipped.append(prompt)
                continue
            break
        # --- write the pair
        stem = f"{index + 1:03d}_{_slug(prompt)}"
        pair = []
        for label, audio in (("bonafide", take), ("spoof", replay)):
            rel = (folder / f"{stem}_{label}.wav").as_posix()
            write_wav(out / rel, audio)
            conditions = {
                "recording_device": mic.name,
                "playback_device": spk.name if label == "spoof" else "",
                "session": settings.session,
                "prompt": prompt,
            }
            pair.append(Row(rel, label, settings.speaker, settings.split, conditions))
        rows = [r for r in rows if r.path not in {p.path for p in pair}] + pair
        cols = list(dict.fromkeys([*(c for r in rows for c in r.conditions), *CONDITIONS]))
        write_protocol(out, rows, cols)
        result.recorded.append(prompt)
        ui.info(f"saved {stem} (bonafide + spoof)")
    result.remaining = len(todo) - len(result.recorded)
    return result
