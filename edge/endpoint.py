"""Endpointing of spoken commands: where an utterance starts and ends in a live stream.

A frame-based voice activity detector (10 ms frames at 16 kHz) with:

- an energy test against an **adaptive noise floor** (falls quickly to quiet frames, rises
  slowly, so a steady fan or hum becomes the floor, speech does not);
- a **spectral check**: a frame counts as voice only if its spectrum is not flat (spectral
  flatness) and enough of its power lies in the speech band, which rejects hiss, clicks and
  mains hum that are loud enough to pass the energy test;
- **onset** after a few voiced frames, **pre-roll** (audio kept from before the onset, so
  the first consonant is not cut), **hangover** (the utterance ends only after this much
  unvoiced audio, so pauses between words do not split a command), **post-roll** (trailing
  audio kept), **minimum** length (shorter bursts are dropped) and **maximum** length (a
  longer utterance is cut there and marked truncated; the detector then waits for the talker
  to stop before looking for the next command).

Pure: no I/O and no clocks. Time is counted in samples, audio is processed in whole frames
and a partial frame is carried to the next call, so the segments found do not depend on how
the stream is chunked. The state is a dataclass (:class:`EndpointState`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from .audio import SAMPLE_RATE


@dataclass(frozen=True, kw_only=True)
class EndpointParams:
    """Voice activity detection and utterance length settings."""

    frame_ms: float = 10.0
    """Analysis frame length (frames do not overlap)."""
    threshold_db: float = 9.0
    """A frame must be this many dB above the noise floor to count as loud."""
    min_level_dbfs: float = -55.0
    """A frame quieter than this is never voice, whatever the floor."""
    floor_rise_db_per_s: float = 6.0
    """How fast the noise floor may rise towards louder frames outside speech (it falls at once)."""
    speech_floor_rise_db_per_s: float = 1.0
    """The same inside an utterance: slow, so a long command does not raise the floor over itself."""
    floor_fall: float = 0.5
    """Fraction of the way the floor moves down towards a quieter frame, per frame."""
    max_flatness: float = 0.45
    """Spectral flatness (geometric / arithmetic mean power) above this is noise, not voice."""
    min_band_ratio: float = 0.35
    """Share of frame power between ``band_hz`` needed to count as voice."""
    band_hz: tuple[float, float] = (200.0, 4000.0)
    """The speech band for the spectral check."""
    onset_frames: int = 3
    """Voiced frames in a row that start an utterance."""
    pre_roll_s: float = 0.3
    """Audio kept from before the onset."""
    hangover_s: float = 0.7
    """Unvoiced audio that ends an utterance."""
    post_roll_s: float = 0.2
    """Audio kept after the last voiced frame (at most the hangover)."""
    min_seconds: float = 0.3
    """Shorter utterances (without pre/post-roll) are dropped."""
    max_seconds: float = 6.0
    """Longer utterances are cut here and marked truncated."""
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.frame_ms <= 0 or self.frame_samples < 16:
            raise ValueError(f"frame_ms must give at least 16 samples, got {self.frame_ms}")
        if self.onset_frames < 1:
            raise ValueError("onset_frames must be at least 1")
        for name in ("pre_roll_s", "hangover_s", "post_roll_s", "min_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_seconds <= self.min_seconds:
            raise ValueError(
                f"max_seconds ({self.max_seconds}) must exceed min_seconds ({self.min_seconds})"
            )
        if not 0 < self.floor_fall <= 1:
            raise ValueError("floor_fall must be in (0, 1]")

    @property
    def frame_samples(self) -> int:
        return int(round(self.sample_rate * self.frame_ms / 1000.0))

    def frames(self, seconds: float) -> int:
        return int(round(seconds * 1000.0 / self.frame_ms))


@dataclass(frozen=True)
class FrameInfo:
    """What the detector measured on one frame."""

    level_dbfs: float
    flatness: float
    band_ratio: float


def frames_info(frames: np.ndarray, p: EndpointParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RMS level (dBFS, -120 for digital silence), spectral flatness (geometric / arithmetic
    mean power, DC excluded) and speech-band share of every row of ``frames``, with one
    batched FFT. The endpointer analyses a block this way; scoring a whole file frame by
    frame spent most of its time in per-frame FFTs.
    Frames below ``min_level_dbfs``, which are never voice, get no FFT (flatness 1, share 0),
    so a quiet room costs the always-on listener only the levels."""
    x = np.asarray(frames, dtype=np.float64)
    n = x.shape[1]
    ms = np.einsum("ij,ij->i", x, x) / max(n, 1)
    level = np.full(len(x), -120.0)
    live = ms > 1e-12
    level[live] = 10.0 * np.log10(ms[live])
    flatness = np.ones(len(x))
    band_ratio = np.zeros(len(x))
    loud = np.flatnonzero(level >= p.min_level_dbfs)
    if loud.size:
        n_fft = 1 << (n - 1).bit_length()
        spec = (np.abs(np.fft.rfft(x[loud] * _hann(n), n_fft, axis=1)) ** 2)[:, 1:]
        total = spec.sum(axis=1)
        ok = total > 1e-20
        idx = loud[ok]
        sp, tot = spec[ok], total[ok]
        flatness[idx] = np.exp(np.mean(np.log(sp + 1e-20), axis=1)) / (tot / sp.shape[1])
        band_ratio[idx] = sp[:, _band_mask(n_fft, p.sample_rate, p.band_hz)].sum(axis=1) / tot
    return level, flatness, band_ratio


def frame_info(frame: np.ndarray, p: EndpointParams) -> FrameInfo:
    """Level, spectral flatness and speech-band share of one frame (see :func:`frames_info`)."""
    level, flatness, band_ratio = frames_info(np.asarray(frame)[None, :], p)
    return FrameInfo(float(level[0]), float(flatness[0]), float(band_ratio[0]))


_BANDS: dict[tuple[int, int, tuple[float, float]], np.ndarray] = {}


def _band_mask(n_fft: int, rate: int, band_hz: tuple[float, float]) -> np.ndarray:
    key = (n_fft, rate, tuple(band_hz))
    m = _BANDS.get(key)
    if m is None:
        freqs = np.arange(1, n_fft // 2 + 1) * rate / n_fft
        m = _BANDS[key] = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    return m


_HANN: dict[int, np.ndarray] = {}


def _hann(n: int) -> np.ndarray:
    w = _HANN.get(n)
    if w is None:
        w = _HANN[n] = np.hanning(n + 2)[1:-1]
    return w


class Phase(StrEnum):
    SILENCE = "silence"
    SPEECH = "speech"
    WAIT_SILENCE = "wait_silence"
    """After a truncated utterance: wait for the talker to stop before the next onset."""


@dataclass(frozen=True)
class Segment:
    """One endpointed utterance (times in samples of the 16 kHz stream)."""

    start: int
    """First sample (including pre-roll)."""
    end: int
    """One past the last sample (including post-roll)."""
    audio: np.ndarray
    decided_at: int
    """Stream position at which the end was decided (end of hangover or of the maximum)."""
    truncated: bool
    sample_rate: int = SAMPLE_RATE

    @property
    def t_start(self) -> float:
        return self.start / self.sample_rate

    @property
    def t_end(self) -> float:
        return self.end / self.sample_rate

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / self.sample_rate

    @property
    def level_dbfs(self) -> float:
        if self.audio.size == 0:
            return -120.0
        ms = float(np.mean(np.square(self.audio, dtype=np.float64)))
        return 10.0 * np.log10(ms) if ms > 1e-12 else -120.0


@dataclass
class EndpointState:
    """Everything the detector carries between calls."""

    position: int = 0
    """Samples consumed in whole frames so far."""
    carry: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    """A partial frame waiting for more audio."""
    floor_db: float | None = None
    phase: Phase = Phase.SILENCE
    voiced_run: int = 0
    unvoiced_run: int = 0
    history: deque = field(default_factory=deque)
    """Recent frames (silence phase): the pre-roll plus the onset run."""
    utterance: list = field(default_factory=list)
    """Frames of the utterance being collected."""
    utt_start: int = 0
    onset_at: int = 0
    """Stream position of the first frame of the onset run."""
    last_voiced_end: int = 0
    """Stream position just after the last voiced frame of the current utterance."""
    dropped_short: int = 0
    """Utterances dropped for being shorter than ``min_seconds``."""
    truncated: int = 0


class Endpointer:
    """Feed 16 kHz mono float32 blocks of any size; get back finished :class:`Segment` objects."""

    def __init__(self, params: EndpointParams | None = None):
        self.params = params or EndpointParams()
        self.state = EndpointState()
        p = self.params
        self._fs = p.frame_samples
        self._pre = p.frames(p.pre_roll_s)
        self._hang = max(p.frames(p.hangover_s), 1)
        self._post = min(p.frames(p.post_roll_s), self._hang)
        self._max_frames = p.frames(p.max_seconds)
        self._min_samples = int(round(p.min_seconds * p.sample_rate))
        self._rise = p.floor_rise_db_per_s * p.frame_ms / 1000.0
        self._speech_rise = p.speech_floor_rise_db_per_s * p.frame_ms / 1000.0

    @property
    def in_speech(self) -> bool:
        return self.state.phase == Phase.SPEECH

    def push(self, block: np.ndarray) -> list[Segment]:
        """Process a block; returns the utterances that ended inside it (usually none)."""
        s = self.state
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        if not np.isfinite(x).all():  # one NaN would poison the noise floor for good
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        if s.carry.size:
            x = np.concatenate([s.carry, x])
        n_frames = len(x) // self._fs
        out: list[Segment] = []
        frames = x[: n_frames * self._fs].reshape(n_frames, self._fs)
        level, flatness, band_ratio = frames_info(frames, self.params)
        for i in range(n_frames):
            seg = self._frame(frames[i], level[i], flatness[i], band_ratio[i])
            if seg is not None:
                out.append(seg)
        s.carry = x[n_frames * self._fs :].copy()
        return out

    def flush(self) -> list[Segment]:
        """End of stream: finish an utterance in progress (if long enough), then reset."""
        s = self.state
        out: list[Segment] = []
        if s.phase == Phase.SPEECH:
            seg = self._finish(truncated=False, keep_frames=len(s.utterance))
            if seg is not None:
                out.append(seg)
        dropped, truncated = s.dropped_short, s.truncated
        self.state = EndpointState(position=s.position, dropped_short=dropped, truncated=truncated)
        return out

    # -- one frame -------------------------------------------------------------------------

    def _voiced(self, level: float, flatness: float, band_ratio: float) -> bool:
        p, s = self.params, self.state
        if s.floor_db is None:
            s.floor_db = level
        loud = level >= p.min_level_dbfs and level >= s.floor_db + p.threshold_db
        voiced = bool(loud and flatness <= p.max_flatness and band_ratio >= p.min_band_ratio)
        if level < s.floor_db:
            s.floor_db += p.floor_fall * (level - s.floor_db)
        else:
            rise = self._speech_rise if s.phase == Phase.SPEECH else self._rise
            s.floor_db = min(level, s.floor_db + rise)
        return voiced

    def _frame(
        self, frame: np.ndarray, level: float, flatness: float, band_ratio: float
    ) -> Segment | None:
        s = self.state
        voiced = self._voiced(float(level), float(flatness), float(band_ratio))
        start = s.position
        s.position += len(frame)
        if s.phase == Phase.SILENCE:
            s.history.append(frame)
            while len(s.history) > self._pre + self.params.onset_frames:
                s.history.popleft()
            s.voiced_run = s.voiced_run + 1 if voiced else 0
            if s.voiced_run >= self.params.onset_frames:
                s.phase = Phase.SPEECH
                s.utterance = list(s.history)
                s.history.clear()
                s.utt_start = s.position - len(s.utterance) * self._fs
                s.onset_at = s.position - self.params.onset_frames * self._fs
                s.unvoiced_run = 0
                s.last_voiced_end = s.position
            return None
        if s.phase == Phase.WAIT_SILENCE:
            s.unvoiced_run = 0 if voiced else s.unvoiced_run + 1
            if s.unvoiced_run >= self._hang:
                s.phase = Phase.SILENCE
                s.voiced_run = 0
                s.history.clear()
            return None
        # SPEECH
        s.utterance.append(frame)
        if voiced:
            s.unvoiced_run = 0
            s.last_voiced_end = start + len(frame)
        else:
            s.unvoiced_run += 1
        if s.unvoiced_run >= self._hang:
            keep = len(s.utterance) - s.unvoiced_run + self._post
            return self._finish(truncated=False, keep_frames=keep)
        if len(s.utterance) >= self._max_frames:
            return self._finish(truncated=True, keep_frames=len(s.utterance))
        return None

    def _finish(self, *, truncated: bool, keep_frames: int) -> Segment | None:
        s = self.state
        frames = s.utterance[:keep_frames]
        decided_at = s.position
        speech_samples = s.last_voiced_end - s.onset_at
        s.utterance = []
        s.unvoiced_run = 0
        s.voiced_run = 0
        s.phase = Phase.WAIT_SILENCE if truncated else Phase.SILENCE
        if truncated:
            s.truncated += 1
        if speech_samples < self._min_samples and not truncated:
            s.dropped_short += 1
            return None
        audio = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
        return Segment(
            start=s.utt_start,
            end=s.utt_start + len(audio),
            audio=audio,
            decided_at=decided_at,
            truncated=truncated,
            sample_rate=self.params.sample_rate,
        )


def speech_span(x: np.ndarray, params: EndpointParams | None = None) -> tuple[int, int] | None:
    """Where the commands in a recording are, as the live listener would cut them: from the
    first command's pre-roll to the last one's post-roll, in samples; None if it finds none.

    A file is followed by the hangover's length of digital silence, so a command that runs to
    the end of the file ends as one in a stream would, not with everything after it kept."""
    p = params or EndpointParams()
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    ep = Endpointer(p)
    tail = np.zeros((ep._hang + 1) * ep._fs, dtype=np.float32)
    segments = ep.push(np.concatenate([x, tail])) + ep.flush()
    if not segments:
        return None
    return segments[0].start, min(segments[-1].end, x.size)


__all__ = [
    "EndpointParams",
    "EndpointState",
    "Endpointer",
    "FrameInfo",
    "Phase",
    "Segment",
    "frame_info",
    "frames_info",
    "speech_span",
]
