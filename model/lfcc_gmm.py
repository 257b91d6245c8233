"""LFCC-GMM baseline (the ASVspoof baseline family): two diagonal GMMs over LFCC frames.

Frames come from the shared front-end (:mod:`wakeguard.edge.frontend`, kind ``lfcc``: 70
linear filters to 8 kHz, 20 cepstra with c0, deltas and delta-deltas, 32 ms frames every
10 ms), so the baseline sees exactly the LFCCs the detector could. One GMM is fitted to
bona fide frames and one to spoof frames (a random subsample of the training frames, to
keep fitting to seconds); an utterance's score is the mean over its frames of
``log p(frame | bona fide) - log p(frame | spoof)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.frontend import FrontendParams, compute_features, frontend_shape

from .saved_model_file import load_model_file, save_model_file

LFCC = FrontendParams(kind="lfcc", window_hop_seconds=2.0)
"""Front-end settings of the baseline: the shared ``lfcc`` defaults, windows back to back
(hop = window length) so long utterances do not count their frames twice."""
N_DIMS = frontend_shape(LFCC).n_bins
MODEL_FORMAT = "wakeguard-lfcc-gmm"


def lfcc_frames(audio: np.ndarray) -> np.ndarray:
    """LFCC frames of an utterance ``(frames, 60)`` float32 (the front-end's windows, stacked)."""
    return compute_features(audio, LFCC).reshape(-1, N_DIMS)


def _sample_frames(
    utts: Sequence[np.ndarray], max_frames: int, rng: np.random.Generator
) -> np.ndarray:
    """At most ``max_frames`` frames drawn uniformly from all utterances."""
    lengths = np.array([u.shape[0] for u in utts])
    total = int(lengths.sum())
    if total == 0:
        raise ValueError("no LFCC frames to fit a GMM on")
    pick = np.sort(rng.choice(total, size=min(max_frames, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    utt = np.searchsorted(starts, pick, side="right") - 1
    return np.stack([utts[u][i - starts[u]] for u, i in zip(utt, pick, strict=True)]).astype(
        np.float32
    )


@dataclass
class LfccGmm:
    """Bona fide and spoof GMMs; ``score`` = mean frame log-likelihood ratio."""

    bonafide: Any
    spoof: Any
    n_components: int

    @classmethod
    def fit(
        cls,
        bonafide_utts: Sequence[np.ndarray],
        spoof_utts: Sequence[np.ndarray],
        *,
        n_components: int = 64,
        max_frames: int = 30_000,
        max_iter: int = 60,
        seed: int = 0,
    ) -> LfccGmm:
        """Fit one diagonal GMM per class on up to ``max_frames`` random frames of that class."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture
        from threadpoolctl import threadpool_limits

        rng = np.random.default_rng(seed)
        models = []
        for utts in (bonafide_utts, spoof_utts):
            frames = _sample_frames(utts, max_frames, rng)
            gmm = GaussianMixture(
                n_components=min(n_components, max(1, frames.shape[0] // 10)),
                covariance_type="diag",
                max_iter=max_iter,
                reg_covar=1e-3,
                init_params="k-means++",
                random_state=seed,
            )
            # One BLAS thread: faster than OpenBLAS's pool on a shared 2-core machine.
            # EM is capped at max_iter on purpose, so its convergence warning is noise.
            with threadpool_limits(1), warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                models.append(gmm.fit(frames))
        return cls(bonafide=models[0], spoof=models[1], n_components=n_components)

    def score_frames(self, frames: np.ndarray) -> float:
        """Mean log-likelihood ratio of one utterance's frames (higher = bona fide)."""
        return float(self._llr(np.asarray(frames, dtype=np.float64)).mean())

    def _llr(self, f: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self.bonafide.score_samples(f) - self.spoof.score_samples(f)

    def score_many(self, utts: Sequence[np.ndarray], chunk: int = 256) -> np.ndarray:
        """Scores of many utterances, evaluating the GMMs on ``chunk`` utterances' frames at a time."""
        out = []
        for i in range(0, len(utts), chunk):
            part = utts[i : i + chunk]
            lengths = np.array([u.shape[0] for u in part])
            llr = self._llr(np.concatenate(part).astype(np.float64))
            out.append(
                np.add.reduceat(llr, np.concatenate([[0], np.cumsum(lengths)[:-1]])) / lengths
            )
        return np.concatenate(out) if out else np.zeros(0)

    def score_audio(self, audio: np.ndarray) -> float:
        return self.score_frames(lfcc_frames(audio))

    def save(self, path: str | Path) -> Path:
        return save_model_file(
            path,
            MODEL_FORMAT,
            {
                "bonafide": self.bonafide,
                "spoof": self.spoof,
                "n_components": self.n_components,
                "frontend": LFCC.to_dict(),
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> LfccGmm:
        d = load_model_file(path, MODEL_FORMAT, "LFCC-GMM")
        if d.get("frontend") != LFCC.to_dict():
            raise ValueError(f"{path}: fitted on different LFCC settings than this code computes")
        return cls(bonafide=d["bonafide"], spoof=d["spoof"], n_components=int(d["n_components"]))
