"""The one feature front-end of wakeguard, shared by training and the Pi runtime.

Everything is configured by :class:`FrontendParams`; every model bundle records the
parameters it was trained with, and :func:`frontend_from_dict` refuses parameters this
code cannot reproduce. Derived sizes (frame counts, bins, input shape) come from
:func:`frontend_shape` and nowhere else.

Replay detection lives in the low frequencies (a loudspeaker's bass cut-off, Void's
low-frequency power) and across the whole band (the loudspeaker's high-frequency
response, nonlinear distortion), so the front-end keeps a linear frequency axis at one
resolution from 0 Hz up to Nyquist (31 Hz for these dataclass defaults, 15.6 Hz in the
shipped configuration), and never normalises per frequency bin (that would erase the
channel we are trying to detect). Coarser bins above 1 kHz (``octave_pool_hz``) made
training 4-6x cheaper and eval EER much worse (docs/benchmarks.md, Session 5): the fine
structure of the upper band carries replay cues too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, Literal

import numpy as np

FrontendKind = Literal["logspec", "lfcc", "spectral_power", "block_power"]
KINDS: tuple[str, ...] = ("logspec", "lfcc", "spectral_power", "block_power")


@dataclass(frozen=True, kw_only=True)
class FrontendParams:
    """Feature front-end settings; frozen so one object describes one model's input."""

    kind: FrontendKind = "logspec"
    """Representation: log-power linear spectrogram, LFCC, Void-style block spectral power
    (each block's spectrum normalised to unit sum: spectral shape only), or ``block_power``
    (the same blocks, not normalised: the window keeps its energy envelope over time, e.g.
    the reverberation decaying after the speech)."""
    sample_rate: int = 16_000
    """Audio rate the front-end expects, in Hz."""
    frame_length: int = 512
    """Analysis window length in samples (Hann window, see ``window_taper``)."""
    window_taper: float = 1.0
    """Share of the analysis window in its raised-cosine tapers (a Tukey window): 1.0 is the
    Hann window, smaller keeps more of each frame at full weight. With frames that barely
    overlap a Hann window all but ignores the samples between two frames."""
    hop_length: int = 160
    """Hop between frames in samples."""
    n_fft: int = 512
    """FFT size; bins are spaced ``sample_rate / n_fft`` Hz apart."""
    fmin_hz: float = 0.0
    """Lowest frequency kept."""
    fmax_hz: float = 8_000.0
    """Highest frequency kept."""
    bin_pool: int = 1
    """Average this many adjacent FFT bins into one feature bin (1 = none)."""
    octave_pool_hz: float = 0.0
    """Above this frequency, pool FFT bins so that resolution halves every octave (2 bins
    pooled up to twice this frequency, 4 up to four times, ...): full resolution where a
    loudspeaker's bass cut-off lies, a constant number of bins per octave above. 0 = off.
    Applied after ``bin_pool``; logspec and spectral_power only."""
    n_filters: int = 70
    """LFCC only: number of linear triangular filters between fmin and fmax."""
    n_ceps: int = 20
    """LFCC only: cepstral coefficients kept (including c0)."""
    deltas: bool = True
    """LFCC only: append delta and delta-delta coefficients."""
    block_frames: int = 25
    """spectral_power only: frames summed into one block of the long-term power spectrum."""
    normalize: Literal["utterance_mean", "none"] = "utterance_mean"
    """Subtract one scalar (mean over all bins and frames) per window: removes level, keeps shape."""
    log_floor: float = 1e-10
    """Floor added to power before the logarithm."""
    window_seconds: float = 2.0
    """Length of one model input window; shorter audio is repeat-padded."""
    window_hop_seconds: float = 1.0
    """Hop between windows on longer audio; window scores are averaged in the logit domain."""
    window_slack_seconds: float = 0.0
    """When the windows every ``window_hop_seconds`` leave at most this much audio
    uncovered at the end, they are centred on the audio instead of adding a last window:
    a 2 s command reaches the scorer with the endpointer's 0.3 s pre-roll and 0.2 s
    post-roll, and a window for that last 0.3 s of (mostly) silence would cost a whole
    inference. 0 keeps every window."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["window_taper"] == 1.0:  # a Hann bundle stays readable by runtimes before the field
            del d["window_taper"]
        return d


@dataclass(frozen=True)
class FrontendShape:
    """Sizes derived once from :class:`FrontendParams`."""

    window_samples: int
    window_hop_samples: int
    n_frames: int
    n_fft_bins: int
    bin_lo: int
    bin_hi: int
    n_bins: int
    n_time: int

    @property
    def input_shape(self) -> tuple[int, int]:
        """Model input (time, features) for one window."""
        return (self.n_time, self.n_bins)


def frontend_shape(p: FrontendParams) -> FrontendShape:
    """All derived sizes; everything else asks this function."""
    window_samples = int(round(p.window_seconds * p.sample_rate))
    hop_samples = int(round(p.window_hop_seconds * p.sample_rate))
    n_frames = 1 + (window_samples - p.frame_length) // p.hop_length
    n_fft_bins = p.n_fft // 2 + 1
    hz_per_bin = p.sample_rate / p.n_fft
    bin_lo = int(np.ceil(p.fmin_hz / hz_per_bin))
    bin_hi = min(n_fft_bins, int(np.floor(p.fmax_hz / hz_per_bin)) + 1)
    n_lin = (bin_hi - bin_lo) // p.bin_pool
    n_feat = len(octave_pool_edges(p, bin_lo, n_lin)) if p.octave_pool_hz > 0 else n_lin
    if p.kind == "logspec":
        n_bins, n_time = n_feat, n_frames
    elif p.kind == "lfcc":
        n_bins, n_time = p.n_ceps * (3 if p.deltas else 1), n_frames
    else:
        n_bins, n_time = n_feat, n_frames // p.block_frames
    return FrontendShape(
        window_samples=window_samples,
        window_hop_samples=hop_samples,
        n_frames=n_frames,
        n_fft_bins=n_fft_bins,
        bin_lo=bin_lo,
        bin_hi=bin_lo + n_lin * p.bin_pool,
        n_bins=n_bins,
        n_time=n_time,
    )


@lru_cache(maxsize=32)
def octave_pool_edges(p: FrontendParams, bin_lo: int, n_lin: int) -> tuple[int, ...]:
    """First (``bin_pool``-pooled) bin of every feature bin under ``octave_pool_hz``.

    Bins below the knee stay single; from the knee on, a feature bin is 2 bins wide up to
    twice the knee frequency, 4 up to four times, and so on; the last one may be narrower.
    """
    hz = p.sample_rate / p.n_fft * p.bin_pool
    knee = p.octave_pool_hz / hz
    edges, pos = [], 0
    while pos < n_lin:
        f = (bin_lo / p.bin_pool) + pos  # this bin's index on the pooled axis from 0 Hz
        width = 1 if f < knee else 2 ** (int(np.floor(np.log2(f / knee))) + 1)
        edges.append(pos)
        pos += width
    return tuple(edges)


def validate(p: FrontendParams) -> None:
    """Raise ValueError for parameters the front-end cannot compute."""
    if p.kind not in KINDS:
        raise ValueError(f"unknown front-end kind {p.kind!r}; expected one of {KINDS}")
    if p.sample_rate != 16_000:
        raise ValueError(f"front-end runs at 16000 Hz, got sample_rate={p.sample_rate}")
    if not (0 < p.hop_length <= p.frame_length <= p.n_fft):
        raise ValueError("need 0 < hop_length <= frame_length <= n_fft")
    if not (0 <= p.fmin_hz < p.fmax_hz <= p.sample_rate / 2):
        raise ValueError("need 0 <= fmin_hz < fmax_hz <= sample_rate/2")
    if p.bin_pool < 1 or p.block_frames < 1:
        raise ValueError("bin_pool and block_frames must be >= 1")
    if p.window_hop_seconds <= 0 or p.window_seconds * p.sample_rate < p.frame_length:
        raise ValueError("window must hold at least one frame and hop must be positive")
    if not 0 <= p.window_slack_seconds < p.window_seconds:
        raise ValueError("window_slack_seconds must be >= 0 and shorter than a window")
    if not 0.0 <= p.window_taper <= 1.0:
        raise ValueError(f"window_taper must be between 0 and 1, got {p.window_taper}")
    if p.normalize not in ("utterance_mean", "none"):
        raise ValueError(f"unknown normalize {p.normalize!r}")
    if p.octave_pool_hz < 0 or (p.octave_pool_hz > 0 and p.kind == "lfcc"):
        raise ValueError("octave_pool_hz must be >= 0, and 0 for lfcc (it has its own filters)")
    shape = frontend_shape(p)
    if shape.n_bins < 1 or shape.n_time < 1:
        raise ValueError(f"parameters give an empty feature map {shape.input_shape}")


def frontend_from_dict(d: dict[str, Any]) -> FrontendParams:
    """Rebuild parameters from a bundle manifest; unknown keys mean this code is too old."""
    known = {f.name for f in fields(FrontendParams)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(
            f"front-end parameters {unknown} are unknown to this runtime: upgrade wakeguard"
        )
    p = FrontendParams(**d)
    validate(p)
    return p


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Repeat-pad a too-short signal to ``n`` samples (keeps the channel, unlike zeros)."""
    if x.size >= n:
        return x[:n]
    if x.size == 0:
        return np.zeros(n, dtype=np.float32)
    reps = int(np.ceil(n / x.size))
    return np.tile(x, reps)[:n]


def window_starts(n_samples: int, p: FrontendParams) -> list[int]:
    """First sample of every model window of an ``n_samples`` utterance.

    Short audio (at most one window) gives one window at 0, repeat-padded. Longer audio
    gives a window every ``window_hop_seconds``; if they leave at most
    ``window_slack_seconds`` uncovered at the end they are centred on the audio (so a
    window and a bit is one centred window), otherwise a last window ends at the end of
    the audio. Starts are moved back onto the frame grid (by less than one ``hop_length``)
    when the window hop is a whole number of frames, so that every window's frames are
    frames of the whole utterance and the spectrogram is computed once
    (:func:`compute_features`).
    """
    s = frontend_shape(p)
    if n_samples <= s.window_samples:
        return [0]
    grid = _on_frame_grid(p)
    starts = list(range(0, n_samples - s.window_samples + 1, s.window_hop_samples))
    tail = n_samples - (starts[-1] + s.window_samples)
    if tail <= int(round(p.window_slack_seconds * p.sample_rate)):
        shift = tail // 2
        shift -= shift % p.hop_length if grid else 0
        return [i + shift for i in starts]
    last = n_samples - s.window_samples
    if grid:
        last -= last % p.hop_length
    if starts[-1] != last:
        starts.append(last)
    return starts


def _on_frame_grid(p: FrontendParams) -> bool:
    return frontend_shape(p).window_hop_samples % p.hop_length == 0


def split_windows(x: np.ndarray, p: FrontendParams) -> np.ndarray:
    """Cut an utterance into model windows ``(n_windows, window_samples)`` at
    :func:`window_starts`."""
    s = frontend_shape(p)
    x = np.asarray(x, dtype=np.float32)
    if x.size <= s.window_samples:
        return fit_length(x, s.window_samples)[None, :]
    return np.stack([x[i : i + s.window_samples] for i in window_starts(x.size, p)])


@lru_cache(maxsize=8)
def analysis_window(n: int, taper: float = 1.0) -> np.ndarray:
    """Periodic Tukey window of ``n`` samples, ``taper`` of it in the two cosine tapers
    (1.0 = Hann, 0.0 = rectangular)."""
    i = np.arange(n)
    if taper >= 1.0:
        return (0.5 - 0.5 * np.cos(2 * np.pi * i / n)).astype(np.float32)
    w = np.ones(n)
    if taper > 0.0:
        edge = np.minimum(i, n - i) / n  # distance to the frame's edge, periodic
        ramp = edge < taper / 2
        w[ramp] = 0.5 - 0.5 * np.cos(2 * np.pi * edge[ramp] / taper)
    return w.astype(np.float32)


def power_spectrogram(x: np.ndarray, p: FrontendParams) -> np.ndarray:
    """Power spectrum per frame, ``(frames, n_fft//2+1)`` float32, no padding at the edges."""
    x = np.asarray(x, dtype=np.float32)
    if x.size < p.frame_length:
        x = fit_length(x, p.frame_length)
    n_frames = 1 + (x.size - p.frame_length) // p.hop_length
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, p.frame_length), strides=(x.strides[0] * p.hop_length, x.strides[0])
    )
    spec = np.fft.rfft(frames * analysis_window(p.frame_length, p.window_taper), n=p.n_fft, axis=-1)
    return (spec.real**2 + spec.imag**2).astype(np.float32) / p.frame_length


@lru_cache(maxsize=8)
def _octave_pooling(p: FrontendParams) -> tuple[np.ndarray, np.ndarray]:
    """``reduceat`` starts and the width of every feature bin (float32) for octave pooling."""
    s = frontend_shape(p)
    n_lin = (s.bin_hi - s.bin_lo) // p.bin_pool
    starts = np.asarray(octave_pool_edges(p, s.bin_lo, n_lin), dtype=np.intp)
    widths = np.diff(np.append(starts, n_lin)).astype(np.float32)
    return starts, widths


def _pool_bins(power: np.ndarray, p: FrontendParams, s: FrontendShape) -> np.ndarray:
    return _pool_octaves(_pool_uniform(power, p, s), p)


def _pool_octaves(band: np.ndarray, p: FrontendParams) -> np.ndarray:
    if p.octave_pool_hz <= 0:
        return band
    starts, widths = _octave_pooling(p)
    return np.add.reduceat(band, starts, axis=-1) / widths


def _pool_uniform(power: np.ndarray, p: FrontendParams, s: FrontendShape) -> np.ndarray:
    band = power[..., s.bin_lo : s.bin_hi]
    if p.bin_pool == 1:
        return band
    if p.bin_pool < 8:
        # Strided sums in order, then one division: bit-identical to the reshape-mean below
        # (numpy adds fewer than 8 values left to right) and over 10x faster on a window.
        acc = band[..., 0 :: p.bin_pool].copy()
        for j in range(1, p.bin_pool):
            acc += band[..., j :: p.bin_pool]
        return acc / np.asarray(p.bin_pool, dtype=acc.dtype)
    return band.reshape(*band.shape[:-1], -1, p.bin_pool).mean(axis=-1)


@lru_cache(maxsize=8)
def linear_filterbank(p: FrontendParams) -> np.ndarray:
    """Triangular filters equally spaced in Hz, ``(n_fft_bins, n_filters)``."""
    s = frontend_shape(p)
    freqs = np.arange(s.n_fft_bins) * p.sample_rate / p.n_fft
    edges = np.linspace(p.fmin_hz, p.fmax_hz, p.n_filters + 2)
    fb = np.zeros((s.n_fft_bins, p.n_filters), dtype=np.float32)
    for m in range(p.n_filters):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down))
    return fb


@lru_cache(maxsize=8)
def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix ``(n_in, n_out)``."""
    k = np.arange(n_out)[None, :]
    n = np.arange(n_in)[:, None]
    m = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    m[:, 0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def deltas(c: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over time (axis 0) with edge padding, as in HTK."""
    padded = np.pad(c, ((width, width), (0, 0)), mode="edge")
    num = sum(
        k * (padded[width + k : width + k + len(c)] - padded[width - k : width - k + len(c)])
        for k in range(1, width + 1)
    )
    return num / (2 * sum(k * k for k in range(1, width + 1)))


def window_features(window: np.ndarray, p: FrontendParams) -> np.ndarray:
    """Features of one window of exactly ``window_samples``: ``(n_time, n_bins)`` float32."""
    return _features_from_power(power_spectrogram(window, p), p)


def _features_from_power(power: np.ndarray, p: FrontendParams) -> np.ndarray:
    """Features of one window from its ``n_frames`` power frames."""
    s = frontend_shape(p)
    if p.kind == "logspec":
        feats = np.log10(_pool_bins(power, p, s) + p.log_floor) * 10.0
    elif p.kind == "lfcc":
        logfb = np.log10(power @ linear_filterbank(p) + p.log_floor) * 10.0
        c = logfb @ _dct_matrix(p.n_filters, p.n_ceps)
        feats = np.concatenate([c, deltas(c), deltas(deltas(c))], axis=1) if p.deltas else c
    else:  # spectral_power / block_power: long-term power, one spectrum per block of frames
        band = _pool_uniform(power, p, s)[: s.n_time * p.block_frames]
        # pooling is linear, so octave-pool the few block sums rather than every frame
        blocks = _pool_octaves(band.reshape(s.n_time, p.block_frames, -1).sum(axis=1), p)
        if p.kind == "spectral_power":
            blocks = blocks / (blocks.sum(axis=1, keepdims=True) + p.log_floor)
        else:  # mean power per frame and bin: the floor means the same as for logspec
            blocks = blocks / p.block_frames
        feats = np.log10(blocks + p.log_floor) * 10.0
    if p.normalize == "utterance_mean" and p.kind != "lfcc":
        feats = feats - feats.mean()
    elif p.normalize == "utterance_mean":
        feats[:, 0] -= feats[:, 0].mean()  # c0 carries the level
    return feats.astype(np.float32)


def window_powers(x: np.ndarray, p: FrontendParams) -> list[np.ndarray]:
    """The power frames of every model window of an utterance (see :func:`compute_features`)."""
    s = frontend_shape(p)
    x = np.asarray(x, dtype=np.float32)
    if x.size <= s.window_samples or not _on_frame_grid(p):
        return [power_spectrogram(w, p) for w in split_windows(x, p)]
    starts = window_starts(x.size, p)
    first = starts[0]
    power = power_spectrogram(x[first : starts[-1] + s.window_samples], p)
    return [power[(i - first) // p.hop_length :][: s.n_frames] for i in starts]


def compute_features(x: np.ndarray, p: FrontendParams) -> np.ndarray:
    """All windows of an utterance: ``(n_windows, n_time, n_bins)`` float32.

    Equal to :func:`window_features` of every window of :func:`split_windows`. When the
    windows lie on the frame grid (the window hop is a whole number of frames), the power
    spectrogram is computed once for the utterance and each window takes its frames from
    it: overlapping windows do not transform the same audio twice.
    """
    return np.stack([_features_from_power(pw, p) for pw in window_powers(x, p)])


def spectrogram_key(p: FrontendParams) -> tuple[Any, ...]:
    """What fixes the power frames of :func:`compute_features`: front-ends with equal keys
    transform an utterance identically, whatever they do with the frames afterwards."""
    return (
        p.sample_rate,
        p.frame_length,
        p.hop_length,
        p.n_fft,
        p.window_seconds,
        p.window_hop_seconds,
        p.window_slack_seconds,
    )


def compute_features_many(x: np.ndarray, params: Sequence[FrontendParams]) -> list[np.ndarray]:
    """:func:`compute_features` of one utterance for several front-ends (an ensemble's
    members), equal to calling it for each; front-ends with the same
    :func:`spectrogram_key` share one power spectrogram of the utterance."""
    out: list[np.ndarray | None] = [None] * len(params)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault(spectrogram_key(p), []).append(i)
    for idx in groups.values():
        powers = window_powers(x, params[idx[0]])
        for i in idx:
            out[i] = np.stack([_features_from_power(pw, params[i]) for pw in powers])
    return [o for o in out if o is not None]
