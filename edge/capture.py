"""Audio capture: a microphone, a file played in real time (or faster), or a fake, all as 16 kHz mono.

Every source has the same shape. Something produces blocks at the device's native rate and
channel count (the PortAudio callback, or a feeder thread for files and fakes) and only
copies them into a bounded :class:`BlockQueue`; a full queue drops the block and counts an
overrun, it never blocks the producer or grows. The consumer's thread takes blocks out,
averages the channels and resamples with a :class:`~wakeguard.edge.stream_resample.StreamResampler`
in :meth:`AudioSource.blocks`, so the listener sees 16 kHz mono float32 whatever the device
gives (USB microphones often refuse 16 kHz).

A microphone that is missing, busy or unplugged is retried with exponential back-off and
a log line saying which device and why; it never crashes the listener. A file source
checks the file before it starts and plays it through the same queue and converter.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE, AudioError, check_audio_file, to_mono
from .stream_resample import StreamResampler

log = logging.getLogger(__name__)

DISCONTINUITY = None
"""Yielded by :meth:`AudioSource.blocks` where the stream breaks (microphone lost; it is reopened)."""


class CaptureError(OSError):
    """Capture cannot work at all (no PortAudio library, no such device index); not retried."""


# -- the bounded hand-over between producer and consumer -------------------------------------


class BlockQueue:
    """A bounded FIFO of audio blocks; ``offer`` never blocks and drops (and counts) on full."""

    def __init__(self, max_blocks: int):
        if max_blocks < 1:
            raise ValueError(f"max_blocks must be at least 1, got {max_blocks}")
        self._q: queue.Queue[np.ndarray] = queue.Queue(maxsize=max_blocks)
        self.dropped = 0

    @property
    def max_blocks(self) -> int:
        return self._q.maxsize

    def offer(self, block: np.ndarray) -> bool:
        """Real-time producers: enqueue or drop; returns False (and counts) when dropped."""
        try:
            self._q.put_nowait(block)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def put(self, block: np.ndarray, stop: threading.Event) -> bool:
        """Producers that can wait (files): block until there is room or ``stop`` is set."""
        while not stop.is_set():
            try:
                self._q.put(block, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> np.ndarray | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._q.qsize()

    def clear(self) -> None:
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                return


class Converter:
    """Native blocks ``(frames, channels)`` to 16 kHz mono float32, streaming and stateful."""

    def __init__(self, native_rate: int, channels: int, rate: int = SAMPLE_RATE):
        self.native_rate = int(native_rate)
        self.channels = int(channels)
        self.resampler = StreamResampler(self.native_rate, rate)

        self.repaired_blocks = 0
        """Blocks that held NaN, infinite or out-of-range samples (a broken driver), repaired."""

    def __call__(self, block: np.ndarray) -> np.ndarray:
        x = to_mono(block)
        if x.size and not (np.isfinite(x).all() and np.abs(x).max() <= 1.0):
            if self.repaired_blocks == 0:
                log.warning(
                    "input delivered NaN, infinite or out-of-range samples; zeroing/clipping them"
                )
            self.repaired_blocks += 1
            x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        return self.resampler.push(x)

    def flush(self) -> np.ndarray:
        return self.resampler.flush()


# -- sources ---------------------------------------------------------------------------------


class AudioSource:
    """Base: a producer fills :attr:`queue` with native blocks; :meth:`blocks` converts them."""

    description = "audio"

    def __init__(self, *, block_ms: float = 32.0, queue_seconds: float = 2.0):
        if block_ms <= 0 or queue_seconds <= 0:
            raise ValueError("block_ms and queue_seconds must be positive")
        self.block_ms = float(block_ms)
        self.queue_seconds = float(queue_seconds)
        self.queue = BlockQueue(max(2, int(round(queue_seconds * 1000.0 / block_ms))))
        self.status_overruns = 0
        """Overflows the device itself reported (PortAudio input overflow flags)."""
        self.reconnects = 0
        self.native_rate: int | None = None
        self.channels: int | None = None

    @property
    def overruns(self) -> int:
        """Blocks lost: dropped on a full queue plus device-reported overflows."""
        return self.queue.dropped + self.status_overruns

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray | None]:
        """16 kHz mono float32 blocks until the source ends or ``stop`` is set."""
        raise NotImplementedError


class _FeederSource(AudioSource):
    """A source whose native blocks come from a thread reading an array or a file."""

    def __init__(
        self,
        *,
        speed: float = 1.0,
        block_ms: float = 32.0,
        queue_seconds: float = 2.0,
        real_time_drops: bool = False,
    ):
        super().__init__(block_ms=block_ms, queue_seconds=queue_seconds)
        if speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {speed}")
        self.speed = float(speed)
        self.real_time_drops = real_time_drops
        """True: behave like a microphone (drop and count on a full queue); False: wait."""
        self._error: BaseException | None = None
        self.frames_played = 0

    def _native_blocks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _feed(self, stop: threading.Event, done: threading.Event) -> None:
        try:
            t0 = time.monotonic()
            sent = 0
            for block in self._native_blocks():
                if stop.is_set():
                    break
                if self.speed > 0:
                    due = t0 + sent / (self.native_rate * self.speed)
                    delay = due - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        break
                if self.real_time_drops:
                    self.queue.offer(block)
                elif not self.queue.put(block, stop):
                    break
                sent += len(block)
                self.frames_played = sent
        except BaseException as exc:  # handed to the consumer, which raises it
            self._error = exc
        finally:
            done.set()

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray | None]:
        assert self.native_rate is not None and self.channels is not None
        convert = Converter(self.native_rate, self.channels)
        halt = threading.Event()  # set when the consumer stops, for whatever reason
        done = threading.Event()
        feeder = threading.Thread(
            target=self._feed,
            args=(halt, done),
            name=f"wakeguard-feed-{self.description}",
            daemon=True,
        )
        feeder.start()
        try:
            while not stop.is_set():
                block = self.queue.get(timeout=0.05)
                if block is not None:
                    yield convert(block)
                elif done.is_set() and self.queue.qsize() == 0:
                    break
            if self._error is not None:
                raise self._error
            if not stop.is_set():
                tail = convert.flush()
                if tail.size:
                    yield tail
        finally:
            halt.set()
            feeder.join(timeout=2.0)
            self.queue.clear()


class FakeSource(_FeederSource):
    """An in-memory signal played through the capture path (for tests and benchmarks).

    ``audio`` is ``(frames,)`` or ``(frames, channels)`` at ``rate``; ``speed=0`` plays as
    fast as the consumer takes it. ``real_time_drops=True`` makes a full queue drop blocks
    the way a live device does.
    """

    def __init__(
        self,
        audio: np.ndarray,
        rate: int = SAMPLE_RATE,
        *,
        speed: float = 0.0,
        block_ms: float = 32.0,
        queue_seconds: float = 2.0,
        real_time_drops: bool = False,
        name: str = "fake",
    ):
        super().__init__(
            speed=speed,
            block_ms=block_ms,
            queue_seconds=queue_seconds,
            real_time_drops=real_time_drops,
        )
        a = np.asarray(audio, dtype=np.float32)
        self.audio = a if a.ndim == 2 else a.reshape(-1, 1)
        self.native_rate = int(rate)
        self.channels = int(self.audio.shape[1])
        self.description = name

    def _native_blocks(self) -> Iterator[np.ndarray]:
        n = max(1, int(round(self.native_rate * self.block_ms / 1000.0)))
        for i in range(0, len(self.audio), n):
            yield self.audio[i : i + n]


class IterSource(_FeederSource):
    """Native blocks from any iterable (a generator can synthesise hours of audio in bounded memory).

    Each block is ``(frames,)`` or ``(frames, channels)`` at ``rate``.
    """

    def __init__(
        self,
        blocks: Iterable[np.ndarray],
        rate: int = SAMPLE_RATE,
        channels: int = 1,
        *,
        speed: float = 0.0,
        queue_blocks: int = 8,
        name: str = "generator",
    ):
        super().__init__(speed=speed, block_ms=1.0, queue_seconds=queue_blocks / 1000.0)
        self._blocks = blocks
        self.native_rate = int(rate)
        self.channels = int(channels)
        self.description = name

    def _native_blocks(self) -> Iterator[np.ndarray]:
        for b in self._blocks:
            b = np.asarray(b, dtype=np.float32)
            yield b if b.ndim == 2 else b.reshape(-1, 1)


class FileSource(_FeederSource):
    """A WAV/FLAC/OGG file played at ``speed`` times real time (0 = as fast as possible)."""

    def __init__(
        self,
        path: str | Path,
        *,
        speed: float = 1.0,
        block_ms: float = 32.0,
        queue_seconds: float = 2.0,
    ):
        super().__init__(speed=speed, block_ms=block_ms, queue_seconds=queue_seconds)
        import soundfile as sf

        self.path = Path(path)
        self.description = str(self.path)
        check_audio_file(self.path)
        try:
            info = sf.info(str(self.path))
        except Exception as exc:  # libsndfile raises several types; all mean unreadable
            raise AudioError(self.path, f"unreadable audio ({exc})") from exc
        if info.frames == 0:
            raise AudioError(self.path, "no audio samples (empty or truncated file)")
        self.native_rate = int(info.samplerate)
        self.channels = int(info.channels)
        self.duration_s = info.frames / info.samplerate

    def _native_blocks(self) -> Iterator[np.ndarray]:
        import soundfile as sf

        n = max(1, int(round(self.native_rate * self.block_ms / 1000.0)))
        try:
            for block in sf.blocks(str(self.path), blocksize=n, dtype="float32", always_2d=True):
                if not np.all(np.isfinite(block)):
                    raise AudioError(self.path, "audio contains NaN or infinite samples")
                yield block
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(self.path, f"unreadable audio ({exc})") from exc


# -- the microphone --------------------------------------------------------------------------


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    max_input_channels: int
    default_samplerate: float
    hostapi: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "channels": self.max_input_channels,
            "default_rate": self.default_samplerate,
            "hostapi": self.hostapi,
        }


def import_sounddevice() -> Any:
    """The sounddevice module, or :class:`CaptureError` saying what to install."""
    try:
        import sounddevice
    except OSError as exc:  # the module imports but PortAudio itself is missing
        raise CaptureError(
            f"no microphone support: {exc} (on Debian/Pi OS: sudo apt install libportaudio2)"
        ) from exc
    except ImportError as exc:
        raise CaptureError(
            "no microphone support: install sounddevice (pip install sounddevice)"
        ) from exc
    return sounddevice


def list_input_devices(sd: Any = None) -> list[InputDevice]:
    """Every device with input channels, as PortAudio sees it now."""
    sd = sd or import_sounddevice()
    try:
        hostapis = [h["name"] for h in sd.query_hostapis()]
    except Exception:
        hostapis = []
    out = []
    for i, d in enumerate(sd.query_devices()):
        if int(d.get("max_input_channels", 0)) > 0:
            api = d.get("hostapi", -1)
            out.append(
                InputDevice(
                    index=int(d.get("index", i)),
                    name=str(d["name"]),
                    max_input_channels=int(d["max_input_channels"]),
                    default_samplerate=float(d.get("default_samplerate", SAMPLE_RATE)),
                    hostapi=hostapis[api] if 0 <= api < len(hostapis) else "",
                )
            )
    return out


def parse_device(spec: str | int | None) -> str | int | None:
    """``"2"`` -> 2 (an index), ``"USB"`` -> "USB" (a name fragment), ``""``/None -> None (default)."""
    if spec is None:
        return None
    if isinstance(spec, int):
        return spec
    spec = spec.strip()
    if not spec:
        return None
    return int(spec) if spec.lstrip("-").isdigit() else spec


def find_device(
    spec: str | int | None, devices: list[InputDevice], default_index: int | None = None
) -> InputDevice:
    """The input device an index or (case-insensitive) name fragment means; LookupError if none."""
    spec = parse_device(spec)
    if spec is None:
        if default_index is not None:
            for d in devices:
                if d.index == default_index:
                    return d
        if devices:
            return devices[0]
        raise LookupError("no input devices found")
    if isinstance(spec, int):
        for d in devices:
            if d.index == spec:
                return d
        raise LookupError(f"no input device with index {spec} (have {[d.index for d in devices]})")
    exact = [d for d in devices if d.name.lower() == spec.lower()]
    matches = exact or [d for d in devices if spec.lower() in d.name.lower()]
    if not matches:
        raise LookupError(f"no input device named like {spec!r} (have {[d.name for d in devices]})")
    return matches[0]


def _default_input_index(sd: Any) -> int | None:
    """PortAudio's default input device index, if it has one (``sd.default.device`` is a pair)."""
    try:
        default = sd.default.device
        try:
            idx = int(default[0])
        except (TypeError, IndexError):
            idx = int(default)
    except Exception:
        return None
    return idx if idx >= 0 else None


class MicSource(AudioSource):
    """A live microphone through sounddevice/PortAudio, reopened with back-off when it fails.

    The PortAudio callback only copies each block into the bounded queue. The stream is
    opened at 16 kHz mono when the device accepts that, else at its default rate with one
    channel (or as many as it insists on); :meth:`blocks` converts.
    """

    def __init__(
        self,
        device: str | int | None = None,
        *,
        block_ms: float = 32.0,
        queue_seconds: float = 2.0,
        sample_rate: int = 0,
        channels: int = 0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stall_s: float = 3.0,
        wait_for_device: bool = False,
        sd_module: Any = None,
        sleep: Callable[[threading.Event, float], bool] | None = None,
    ):
        super().__init__(block_ms=block_ms, queue_seconds=queue_seconds)
        self.device = parse_device(device)
        self.wait_for_device = bool(wait_for_device)
        self.want_rate = int(sample_rate)
        self.want_channels = int(channels)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.stall_s = float(stall_s)
        self._sd = sd_module
        self._sleep = sleep or (lambda ev, s: ev.wait(s))
        self.description = (
            f"microphone {self.device!r}" if self.device is not None else "default microphone"
        )
        self.open_failures = 0

    @property
    def sd(self) -> Any:
        if self._sd is None:
            self._sd = import_sounddevice()
        return self._sd

    def _settings(self, dev: InputDevice) -> tuple[int, int]:
        """The rate and channel count to open ``dev`` with."""
        sd = self.sd
        rates = [self.want_rate] if self.want_rate else [SAMPLE_RATE, int(dev.default_samplerate)]
        chans = [self.want_channels] if self.want_channels else [1, dev.max_input_channels]
        for rate in rates:
            for ch in chans:
                try:
                    sd.check_input_settings(
                        device=dev.index, samplerate=rate, channels=ch, dtype="float32"
                    )
                    return int(rate), int(ch)
                except Exception:
                    continue
        return int(rates[-1]), int(chans[-1])

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's thread: copy and hand over, nothing else.
        if status and getattr(status, "input_overflow", False):
            self.status_overruns += 1
        self.queue.offer(indata.copy())

    def _open(self) -> Any:
        sd = self.sd
        devices = list_input_devices(sd)
        default_in = _default_input_index(sd)
        dev = find_device(self.device, devices, default_in)
        rate, ch = self._settings(dev)
        stream = sd.InputStream(
            device=dev.index,
            samplerate=rate,
            channels=ch,
            dtype="float32",
            blocksize=max(1, int(round(rate * self.block_ms / 1000.0))),
            callback=self._callback,
        )
        stream.start()
        self.native_rate, self.channels = rate, ch
        self.description = f"microphone {dev.index} ({dev.name})"
        return stream

    def _missing(self, exc: Exception) -> CaptureError:
        return CaptureError(
            f"{self.description}: {exc}; plug one in, pick another with --device "
            "(wakeguard listen --list-devices), or pass --wait-for-mic to wait for it"
        )

    def check_present(self) -> None:
        """CaptureError now if the microphone does not exist and the source would not wait for
        it, so a command can say so before it announces that it is listening."""
        if self.wait_for_device:
            return
        sd = self.sd
        try:
            find_device(self.device, list_input_devices(sd), _default_input_index(sd))
        except LookupError as exc:
            raise self._missing(exc) from exc

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray | None]:
        delay = self.backoff_s
        first = True
        while not stop.is_set():
            try:
                stream = self._open()
            except CaptureError:
                raise
            except Exception as exc:  # PortAudioError, LookupError, device busy ...
                if isinstance(exc, LookupError) and first and not self.wait_for_device:
                    # No such device at the start: a person at a terminal wants to know now;
                    # a service (--wait-for-mic) waits for the microphone to be plugged in.
                    raise self._missing(exc) from exc
                self.open_failures += 1
                log.warning("%s unavailable (%s); retrying in %.1f s", self.description, exc, delay)
                if self._sleep(stop, delay):
                    return
                delay = min(delay * 2, self.max_backoff_s)
                continue
            if not first:
                self.reconnects += 1
            first = False
            log.info(
                "%s open: %d Hz, %d channel(s)", self.description, self.native_rate, self.channels
            )
            delay = self.backoff_s
            convert = Converter(self.native_rate, self.channels)
            last = time.monotonic()
            lost = ""
            try:
                while not stop.is_set():
                    block = self.queue.get(timeout=0.1)
                    if block is not None:
                        last = time.monotonic()
                        yield convert(block)
                        continue
                    if not getattr(stream, "active", True):
                        lost = "stream stopped"
                        break
                    if time.monotonic() - last > self.stall_s:
                        lost = f"no audio for {self.stall_s:.0f} s"
                        break
            finally:
                try:
                    stream.close()
                except Exception as exc:
                    log.debug("closing %s: %s", self.description, exc)
                self.queue.clear()
            if lost:
                log.warning("%s lost (%s, unplugged?); reopening", self.description, lost)
                tail = convert.flush()
                if tail.size:
                    yield tail
                yield DISCONTINUITY  # the command in progress ends here, not at the reopen


__all__ = [
    "DISCONTINUITY",
    "AudioSource",
    "BlockQueue",
    "CaptureError",
    "Converter",
    "FakeSource",
    "FileSource",
    "InputDevice",
    "IterSource",
    "MicSource",
    "find_device",
    "import_sounddevice",
    "list_input_devices",
    "parse_device",
]
