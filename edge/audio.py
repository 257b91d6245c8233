"""Audio at the boundary: read any file, convert to 16 kHz mono float32, check it is usable.

Every entry point (training data, evaluation, ``screen``, ``listen --input``) reads audio
through :func:`load_audio`, so rate and channel conversion happen in exactly one place.
Problems raise :class:`AudioError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import errno
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_path

SAMPLE_RATE = 16_000
"""The rate every front-end and model in wakeguard works at."""

SILENCE_DBFS = -60.0
"""An utterance whose RMS level (DC offset removed) is below this is treated as silence."""

CLIP_LEVEL = 0.999
"""Samples at or above this absolute value count as clipped."""

MIN_SCORE_SECONDS = 0.3
"""Audio shorter than this (about a syllable) is not scored: the default of a bundle's
``input_policy.min_seconds``."""


class AudioError(ValueError):
    """Audio that cannot be used, with the file it came from and the reason."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}")


@dataclass(frozen=True)
class AudioCheck:
    """What :func:`check_audio` found in one utterance."""

    duration_s: float
    rms_dbfs: float
    peak: float
    clipped_fraction: float

    @property
    def silent(self) -> bool:
        return self.rms_dbfs < SILENCE_DBFS

    @property
    def clipped(self) -> bool:
        return self.clipped_fraction > 0.001


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels: ``(frames, channels)`` or ``(frames,)`` to ``(frames,)``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise AudioError(None, f"expected 1-D or 2-D audio, got shape {x.shape}")
    return x.mean(axis=1, dtype=np.float32)


def _design_lowpass(up: int, down: int, taps_per_phase: int = 24) -> np.ndarray:
    """Kaiser-windowed sinc low-pass for a rational resampler (cut-off at the lower Nyquist)."""
    factor = max(up, down)
    n = 2 * taps_per_phase * factor + 1
    cutoff = 0.95 / factor  # fraction of the upsampled Nyquist, a little guard band
    t = np.arange(n) - (n - 1) / 2
    h = cutoff * np.sinc(cutoff * t) * np.kaiser(n, 8.6)
    return h * up / h.sum()


def resample(x: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Rational polyphase resampling in numpy (no scipy on the Pi).

    Upsample by ``up``, low-pass, downsample by ``down`` where ``up/down = new/orig``;
    computed per output phase (one strided matrix-vector product per phase) so the cost is
    proportional to the output length. :class:`wakeguard.edge.stream_resample.StreamResampler`
    gives the same samples block by block for live audio.
    """
    from .stream_resample import resample_polyphase

    x = np.asarray(x, dtype=np.float32)
    if orig_rate == new_rate or x.size == 0:
        return x
    if orig_rate <= 0 or new_rate <= 0:
        raise AudioError(None, f"invalid sample rates {orig_rate} -> {new_rate}")
    return resample_polyphase(x, orig_rate, new_rate)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a WAV/FLAC/OGG file as mono float32 at ``sample_rate``.

    Raises :class:`AudioError` for a missing, unreadable, truncated or empty file.
    """
    import soundfile as sf

    path = Path(path)
    check_audio_file(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types; all mean unreadable
        raise AudioError(path, f"unreadable audio ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples (empty or truncated file)")
    x = to_mono(data)
    if not np.all(np.isfinite(x)):
        raise AudioError(path, "audio contains NaN or infinite samples")
    if rate != sample_rate:
        x = resample(x, rate, sample_rate)
    return x


def check_audio_file(path: Path) -> None:
    """AudioError for a path that is missing, a folder, or a truncated WAV: what every reader
    (whole-file or streamed) checks before libsndfile, which plays a cut WAV without a word."""
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file")
    sizes = _wav_data_sizes(path)
    if sizes is not None and sizes[1] < sizes[0]:
        raise AudioError(
            path,
            f"truncated WAV: its data chunk declares {sizes[0]} bytes but only {sizes[1]} are present",
        )


def _wav_data_sizes(path: Path) -> tuple[int, int] | None:
    """Declared and present bytes of a RIFF/WAVE file's data chunk, from its chunk headers.

    None when the file is not RIFF/WAVE, has no complete data chunk header, or declares
    0 or 0xFFFFFFFF bytes (what recorders write while streaming, size unknown). libsndfile
    reads a truncated data chunk without complaint, so this is the only place it shows.
    """
    try:
        with path.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = path.stat().st_size
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
                if chunk_id == b"data":
                    if chunk_size in (0, 0xFFFFFFFF):
                        return None
                    return chunk_size, size - pos - 8
                pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    except OSError:
        return None  # unreadable: libsndfile says why
    return None


def check_audio(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> AudioCheck:
    """Duration, level, peak and clipping of one utterance.

    The level is the RMS after removing the mean: a DC offset is not sound, and left in it
    would let a silent recording from an offset microphone pass the silence check.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return AudioCheck(0.0, -np.inf, 0.0, 0.0)
    rms = float(np.std(x, dtype=np.float64))
    return AudioCheck(
        duration_s=x.size / sample_rate,
        rms_dbfs=20 * np.log10(max(rms, 1e-10)),
        peak=float(np.max(np.abs(x))),
        clipped_fraction=float(np.mean(np.abs(x) >= CLIP_LEVEL)),
    )


def require_usable(x: np.ndarray, path: str | Path | None = None, min_seconds: float = 0.1) -> None:
    """Raise :class:`AudioError` for audio too short or silent to score."""
    info = check_audio(x)
    if info.duration_s < min_seconds:
        raise AudioError(path, f"too short to score ({info.duration_s:.3f} s < {min_seconds} s)")
    if info.silent and info.rms_dbfs <= -199.0:  # the 1e-10 floor: no variation at all
        what = "every sample is zero" if info.peak == 0.0 else "every sample has the same value"
        raise AudioError(path, f"silent (digital silence: {what})")
    if info.silent:
        raise AudioError(path, f"silent (RMS {info.rms_dbfs:.1f} dBFS < {SILENCE_DBFS:.0f} dBFS)")


def write_wav(path: str | Path, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV, creating the folder; a full disk raises OSError naming the file."""
    import soundfile as sf

    x = np.clip(x, -1.0, 1.0)
    with atomic_path(path) as tmp:
        try:
            sf.write(str(tmp), x, sample_rate, subtype="PCM_16", format="WAV")
        except sf.SoundFileError as exc:  # libsndfile reports a full disk as "System error."
            if _no_room_for(tmp, 44 + 2 * np.size(x)):
                raise OSError(errno.ENOSPC, "disk full") from exc
            raise OSError(errno.EIO, str(exc)) from exc


def _no_room_for(tmp: Path, nbytes: int) -> bool:
    """Whether the disk holding the partly written ``tmp`` lacks the rest of ``nbytes``."""
    try:
        written = tmp.stat().st_size if tmp.exists() else 0
        return shutil.disk_usage(tmp.parent).free < nbytes - written
    except OSError:
        return False
