"""Rational polyphase resampling, one-shot and streaming, in numpy (no scipy on the Pi).

USB microphones often refuse 16 kHz and open at 44.1 or 48 kHz, so live audio has to be
resampled block by block. :class:`StreamResampler` keeps the input history its filter
needs between blocks and emits exactly the samples that :func:`wakeguard.edge.audio.resample`
would produce for the whole signal (up to float rounding), whatever the block sizes:
the live path and the file path see the same 16 kHz audio.

The filter is the Kaiser-windowed sinc of :func:`wakeguard.edge.audio._design_lowpass`,
split into ``up`` phases; output sample ``k`` sits at input position ``k * down / up``
and is one dot product of a contiguous input window with the phase's taps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import gcd

import numpy as np


@dataclass(frozen=True)
class PolyphaseFilter:
    """The phase table of one rate pair: ``table[p]`` is applied to a contiguous window."""

    up: int
    down: int
    table: np.ndarray
    """``(up, length)`` float64 taps, ordered to multiply ``x[s : s + length]``."""
    reach: int
    """Output ``k`` reads input ``x[base - reach : base - reach + length]``, ``base = k*down // up``."""

    @property
    def length(self) -> int:
        return int(self.table.shape[1])

    def window_start(self, k: np.ndarray | int) -> np.ndarray | int:
        return (np.asarray(k) * self.down) // self.up - self.reach

    def n_out(self, n_in: int) -> int:
        """Output length for ``n_in`` input samples (the one-shot convention)."""
        return -(-n_in * self.up // self.down)


@lru_cache(maxsize=16)
def polyphase_filter(orig_rate: int, new_rate: int) -> PolyphaseFilter:
    """The phase table for ``orig_rate -> new_rate`` (cached: designing it costs milliseconds)."""
    from .audio import _design_lowpass

    g = gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    h = _design_lowpass(up, down)
    half = (len(h) - 1) // 2
    lo, hi = -(half // up) - 1, half // up + 2  # tap offsets, as in audio.resample
    taps = np.arange(lo, hi)
    phases = np.arange(up)
    hpos = phases[:, None] + taps[None, :] * up + half
    valid = (hpos >= 0) & (hpos < len(h))
    coeff = np.where(valid, h[np.clip(hpos, 0, len(h) - 1)], 0.0)
    # Tap offset t reads x[base - t]: reversing the taps makes the window x[base-(hi-1) : base-lo+1].
    table = np.ascontiguousarray(coeff[:, ::-1])
    table.setflags(write=False)
    return PolyphaseFilter(up=up, down=down, table=table, reach=hi - 1)


_ROWS_PER_PRODUCT = 4096
"""Output rows per product (bounds any temporary)."""


def apply_polyphase(
    f: PolyphaseFilter, x: np.ndarray, x_start: int, k0: int, k1: int
) -> np.ndarray:
    """Output samples ``k0 <= k < k1`` from ``x``, whose first sample has input index ``x_start``.

    Input outside ``x`` counts as zero. Work is grouped by phase: outputs ``k, k+up, ...``
    share one phase and their windows step by ``down`` samples, so each group is one
    strided view times one tap vector.
    """
    n = k1 - k0
    out = np.zeros(max(n, 0), dtype=np.float64)
    if n <= 0:
        return out.astype(np.float32)
    L = f.length
    s_first = int(f.window_start(k0))
    s_last = int(f.window_start(k1 - 1))
    lo, hi = s_first, s_last + L
    # A float64 copy of exactly the input span the outputs read, zero-padded where x ends.
    span = np.zeros(hi - lo, dtype=np.float64)
    a, b = max(lo, x_start), min(hi, x_start + len(x))
    if b > a:
        span[a - lo : b - lo] = x[a - x_start : b - x_start]
    if n < 8 * f.up:
        # Few outputs per phase (short live blocks, e.g. 44.1 kHz with 160 phases): one
        # gather of all windows is cheaper than a Python loop over the phases.
        k = np.arange(k0, k1)
        starts = (k * f.down) // f.up - f.reach - lo
        windows = span[starts[:, None] + np.arange(L)[None, :]]
        out = np.einsum("ij,ij->i", windows, f.table[(k * f.down) % f.up])
        return out.astype(np.float32)
    step = span.strides[0]
    for j in range(min(f.up, n)):
        k = k0 + j
        count = (n - j + f.up - 1) // f.up
        s = int(f.window_start(k)) - lo
        rows = np.lib.stride_tricks.as_strided(
            span[s:], shape=(count, L), strides=(f.down * step, step), writeable=False
        )
        taps = f.table[(k * f.down) % f.up]
        dst = out[j :: f.up]
        # einsum, not @: numpy's own single-threaded loop reads the overlapping windows in
        # place, where BLAS would copy them and, multithreaded, spin on a busy Pi.
        for r in range(0, count, _ROWS_PER_PRODUCT):
            dst[r : r + _ROWS_PER_PRODUCT] = np.einsum(
                "ij,j->i", rows[r : r + _ROWS_PER_PRODUCT], taps
            )
    return out.astype(np.float32)


def resample_polyphase(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """One-shot resampling of a whole signal (what ``audio.resample`` calls)."""
    f = polyphase_filter(orig_rate, new_rate)
    x = np.asarray(x, dtype=np.float32)
    return apply_polyphase(f, x, 0, 0, f.n_out(len(x)))


class StreamResampler:
    """Block-by-block resampling whose concatenated output equals the one-shot result.

    ``push(block)`` returns every output sample whose input window is complete;
    ``flush()`` returns the rest, treating the input after the last sample as zeros.
    Memory is bounded: only the last filter-length of input is kept.
    """

    def __init__(self, orig_rate: int, new_rate: int):
        if orig_rate <= 0 or new_rate <= 0:
            raise ValueError(f"invalid sample rates {orig_rate} -> {new_rate}")
        self.orig_rate = int(orig_rate)
        self.new_rate = int(new_rate)
        self.passthrough = self.orig_rate == self.new_rate
        self._f = None if self.passthrough else polyphase_filter(self.orig_rate, self.new_rate)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # input index of _buf[0]
        self._n_in = 0
        self._k = 0  # next output index

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = self._n_in = self._k = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return block
        self._n_in += len(block)
        self._buf = np.concatenate([self._buf, block]) if len(self._buf) else block.copy()
        f = self._f
        # Largest k whose window ends at or before the input received: base(k) - reach + L <= n_in.
        last_base = self._n_in - f.length + f.reach
        k_end = ((last_base + 1) * f.up - 1) // f.down + 1 if last_base >= 0 else 0
        return self._emit(k_end)

    def flush(self) -> np.ndarray:
        """The remaining output for the input so far; the resampler is then reset."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        out = self._emit(self._f.n_out(self._n_in))
        self.reset()
        return out

    def _emit(self, k_end: int) -> np.ndarray:
        f = self._f
        if k_end <= self._k:
            return np.zeros(0, dtype=np.float32)
        out = apply_polyphase(f, self._buf, self._buf_start, self._k, k_end)
        self._k = k_end
        keep_from = max(int(f.window_start(self._k)), 0)
        if keep_from > self._buf_start:
            drop = min(keep_from - self._buf_start, len(self._buf))
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return out


__all__ = [
    "PolyphaseFilter",
    "StreamResampler",
    "apply_polyphase",
    "polyphase_filter",
    "resample_polyphase",
]
