"""Void-style baseline: 97 spectral-power features and an RBF SVM (Ahmed et al., USENIX Security 2020).

Void looks at the time-summed power spectrum of an utterance: loudspeakers cut the bass
and shape the spectrum, so the low-frequency power, the linearity of the cumulative power
and where the high-power peaks sit differ between live speech and replays.

Feature vector (97 values), from the STFT power summed over time (Hann window 512,
hop 128, 2048-point FFT at 16 kHz: 1025 bins of 7.8 Hz), cut into segments of
:data:`SEGMENT_BINS` = 14 bins (109 Hz) and normalised to sum 1:

- ``lfp`` (48): the power of the first 48 segments (0-5.25 kHz), in percent;
- ``ldf`` (2): linearity of the cumulative power curve over all segments: Pearson rho
  against frequency, and the quadratic coefficient q of a 2nd-order fit over frequency
  scaled to [0, 1];
- ``hpf`` (35): peaks of ``lfp`` at or above omega = 0.3 of the highest peak: their count,
  the mean and standard deviation of their segment positions; then a 6th-order polynomial
  fitted to ``lfp`` and evaluated at its first 32 segments (as in the public Void
  re-implementations, which give 3 + 32 = 35 values);
- ``lpcc`` (12): cepstral coefficients c1..c12 of a 12th-order LPC of the whole utterance.

The classifier: standardise, then an RBF SVM (probability estimates off); the score is the
SVM decision function, higher = bona fide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.frontend import FrontendParams, power_spectrogram

from .saved_model_file import load_model_file, save_model_file

STFT = FrontendParams(kind="spectral_power", frame_length=512, hop_length=128, n_fft=2048)
"""STFT settings (only frame_length, hop_length and n_fft are used)."""
SEGMENT_BINS = 14
N_LFP = 48
OMEGA = 0.3
POLY_ORDER = 6
N_POLY_VALUES = 32
LPC_ORDER = 12
N_FEATURES = N_LFP + 2 + 3 + N_POLY_VALUES + LPC_ORDER
assert N_FEATURES == 97

FEATURE_NAMES: tuple[str, ...] = (
    *(f"lfp_{i}" for i in range(N_LFP)),
    "ldf_rho",
    "ldf_q",
    "hpf_n_peaks",
    "hpf_peak_mean",
    "hpf_peak_std",
    *(f"hpf_poly_{i}" for i in range(N_POLY_VALUES)),
    *(f"lpcc_{i + 1}" for i in range(LPC_ORDER)),
)
MODEL_FORMAT = "wakeguard-void-svm"
_EPS = 1e-12


def segment_power(audio: np.ndarray) -> np.ndarray:
    """Time-summed STFT power in segments of :data:`SEGMENT_BINS` bins, normalised to sum 1."""
    spec = power_spectrogram(np.asarray(audio, dtype=np.float32), STFT).sum(
        axis=0, dtype=np.float64
    )
    k = spec.size // SEGMENT_BINS
    seg = spec[: k * SEGMENT_BINS].reshape(k, SEGMENT_BINS).sum(axis=1)
    return seg / (seg.sum() + _EPS)


def linearity_features(power: np.ndarray) -> np.ndarray:
    """Pearson rho of the cumulative power against frequency, and its quadratic coefficient q."""
    cdf = np.cumsum(power)
    f = np.linspace(0.0, 1.0, cdf.size)
    sd = cdf.std()
    rho = 0.0 if sd < _EPS else float(np.corrcoef(cdf, f)[0, 1])
    q = float(np.polyfit(f, cdf, 2)[0])
    return np.array([rho, q])


def high_power_features(lfp: np.ndarray) -> np.ndarray:
    """Peak count, mean and std of peak positions (>= omega * max peak); 32 values of a 6th-order fit."""
    from scipy.signal import find_peaks

    idx, _ = find_peaks(lfp)
    if idx.size:
        idx = idx[lfp[idx] >= OMEGA * lfp[idx].max()]
    stats = [float(idx.size), float(idx.mean()), float(idx.std())] if idx.size else [0.0, 0.0, 0.0]
    x = np.linspace(0.0, 1.0, lfp.size)
    fit = np.polyval(np.polyfit(x, lfp, POLY_ORDER), x[:N_POLY_VALUES])
    return np.concatenate([stats, fit])


def lpc(x: np.ndarray, order: int = LPC_ORDER) -> np.ndarray:
    """LPC polynomial ``[1, a1, ..., a_order]`` by the autocorrelation method (Levinson-Durbin)."""
    from scipy.linalg import solve_toeplitz

    x = np.asarray(x, dtype=np.float64)
    x = x * np.hamming(x.size)
    r = np.array(
        [float((x[: x.size - k] * x[k:]).sum()) for k in range(order + 1)]
    )  # no BLAS: its threads stall on busy machines
    r[0] *= 1.0 + 1e-9  # white-noise correction keeps the system well conditioned
    if r[0] <= _EPS:
        return np.concatenate([[1.0], np.zeros(order)])
    a = solve_toeplitz(r[:order], -r[1 : order + 1])
    return np.concatenate([[1.0], a])


def lpcc(a: np.ndarray, n_ceps: int = LPC_ORDER) -> np.ndarray:
    """Cepstrum c1..c_n of the all-pole model ``1 / A(z)`` with ``A = [1, a1, ..., ap]``."""
    p = a.size - 1
    alpha = -a[1:]  # predictor coefficients
    c = np.zeros(n_ceps + 1)
    for m in range(1, n_ceps + 1):
        acc = alpha[m - 1] if m <= p else 0.0
        for k in range(max(1, m - p), m):
            acc += (k / m) * c[k] * alpha[m - k - 1]
        c[m] = acc
    return c[1:]


def void_features(audio: np.ndarray) -> np.ndarray:
    """The 97 Void features of 16 kHz mono audio, float64 ``(97,)`` (order: :data:`FEATURE_NAMES`)."""
    power = segment_power(audio)
    lfp = power[:N_LFP] * 100.0
    feats = np.concatenate(
        [lfp, linearity_features(power), high_power_features(lfp), lpcc(lpc(audio))]
    )
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class VoidModel:
    """Standardiser + RBF SVM over :func:`void_features`; ``score`` = SVM decision value."""

    scaler: Any
    svm: Any
    c: float

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        is_bonafide: np.ndarray,
        *,
        c_grid: tuple[float, ...] = (1.0, 10.0, 100.0),
        dev: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> VoidModel:
        """Fit on feature rows; with ``dev`` features/labels pick C from ``c_grid`` by dev EER."""
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        from .metrics import compute_eer

        scaler = StandardScaler().fit(x)
        xs = scaler.transform(x)
        y = np.asarray(is_bonafide, dtype=int)
        grid = c_grid if dev is not None else c_grid[len(c_grid) // 2 : len(c_grid) // 2 + 1]
        best: tuple[float, float, Any] | None = None
        for c in grid:
            svm = SVC(kernel="rbf", C=c, gamma="scale", class_weight="balanced")
            svm.fit(xs, y)
            if dev is None:
                best = (0.0, c, svm)
                break
            s = svm.decision_function(scaler.transform(dev[0]))
            eer = compute_eer(s[dev[1] == 1], s[dev[1] == 0])[0]
            if best is None or eer < best[0]:
                best = (eer, c, svm)
        assert best is not None
        return cls(scaler=scaler, svm=best[2], c=best[1])

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Scores of feature rows ``(n, 97)``: higher = bona fide."""
        return self.svm.decision_function(self.scaler.transform(np.atleast_2d(x)))

    def score_audio(self, audio: np.ndarray) -> float:
        """Features + SVM for one utterance (what ``bench`` times)."""
        return float(self.decision(void_features(audio)[None, :])[0])

    def save(self, path: str | Path) -> Path:
        return save_model_file(
            path,
            MODEL_FORMAT,
            {
                "scaler": self.scaler,
                "svm": self.svm,
                "c": self.c,
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> VoidModel:
        d = load_model_file(path, MODEL_FORMAT, "Void")
        return cls(scaler=d["scaler"], svm=d["svm"], c=float(d["c"]))


def load_void_model(path: str | Path) -> VoidModel:
    """A fitted Void model saved by :meth:`VoidModel.save` (``baselines/void_model.joblib``)."""
    return VoidModel.load(path)
