"""Score one utterance: front-end, LiteRT inference, calibration, verdict.

The same code path scores every model variant (int8, float16, float32) in evaluation, in
``screen``, in ``listen`` and in the Wyoming service, so what is measured is what ships.
An ensemble bundle runs each member's front-end and network on the utterance, averages the
members' calibrated scores and calibrates that mean (:mod:`wakeguard.edge.bundle`).

A bundle whose input policy trims (``speech``) is scored over the span of a recording that
the live listener's endpointer would hand over (:func:`trim_to_policy`), so how much silence
a file has around its command does not move its score; the listener's own segments are
already that span.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import MIN_SCORE_SECONDS, SAMPLE_RATE, require_usable
from .bundle import IDENTITY, TRIM_POLICIES, Bundle, BundleError, Calibration, load_bundle
from .endpoint import speech_span
from .frontend import FrontendParams, compute_features, compute_features_many
from .litert import ModelInvalid, make_interpreter

BONAFIDE = "bonafide"
SPOOF = "spoof"


@dataclass(frozen=True)
class ScoreResult:
    """One utterance's outcome."""

    score: float
    """Calibrated score, higher = more likely live."""
    verdict: str
    """``bonafide`` or ``spoof`` at the threshold used."""
    threshold: float
    latency_ms: float
    """Front-end plus inference wall time."""
    n_windows: int
    command_found: bool | None = None
    """Whether the input policy's trim found a command in the recording (scored whole when
    not); None when nothing was looked for (the policy keeps the whole recording, or the
    audio came from the live listener's endpointer already)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "verdict": self.verdict,
            "threshold": round(self.threshold, 6),
            "latency_ms": round(self.latency_ms, 3),
            "n_windows": self.n_windows,
        }


class TFLiteModel:
    """A TFLite model that maps one feature window to one raw logit; handles int8 (de)quantisation."""

    def __init__(self, model_bytes: bytes, num_threads: int | None = None):
        self.interpreter = make_interpreter(model_bytes, num_threads)
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self.input_dtype = np.dtype(self._in["dtype"])
        self.input_shape = tuple(int(v) for v in self._in["shape"])
        self._in_scale, self._in_zero = self._in["quantization"]
        self._out_scale, self._out_zero = self._out["quantization"]

    def logit(self, window: np.ndarray) -> float:
        """Raw logit of one ``(time, bins)`` feature window."""
        x = window.reshape(self.input_shape)
        if self.input_dtype == np.int8 or self.input_dtype == np.uint8:
            info = np.iinfo(self.input_dtype)
            q = np.round(x / self._in_scale + self._in_zero)
            x = np.clip(q, info.min, info.max).astype(self.input_dtype)
        else:
            x = x.astype(self.input_dtype)
        self.interpreter.set_tensor(self._in["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out["index"]).reshape(-1)[0]
        if self._out["dtype"] in (np.int8, np.uint8):
            return float((float(y) - self._out_zero) * self._out_scale)
        return float(y)


def cut_to_policy(audio: np.ndarray, trim: str) -> tuple[np.ndarray, bool | None]:
    """``audio`` cut as the input policy ``trim`` says, and whether a command was found in it:
    ``speech``, to its :func:`~wakeguard.edge.endpoint.speech_span` (whole, and False, when
    no command is found in it); ``none``, unchanged (and None: nothing was looked for)."""
    if trim == "none":
        return audio, None
    if trim != "speech":
        raise ValueError(f"trim {trim!r} is not one of {list(TRIM_POLICIES)}")
    span = speech_span(audio)
    return (audio, False) if span is None else (audio[span[0] : span[1]], True)


def trim_to_policy(audio: np.ndarray, trim: str) -> np.ndarray:
    """``audio`` cut as the input policy ``trim`` says (see :func:`cut_to_policy`)."""
    return cut_to_policy(audio, trim)[0]


@dataclass
class ScorerMember:
    """One network of a scorer: front-end, model and the calibration of its own logit."""

    name: str
    frontend: FrontendParams
    model: TFLiteModel
    calibration: Calibration = IDENTITY

    def logit(self, feats: np.ndarray) -> float:
        """Mean window logit of one utterance's feature windows, calibrated for fusion."""
        return self.calibration.apply(float(np.mean([self.model.logit(w) for w in feats])))


class Scorer:
    """Front-end + model(s) + calibration + threshold for whole utterances."""

    def __init__(
        self,
        model_bytes: bytes,
        frontend: FrontendParams,
        *,
        calibration: Calibration | None = None,
        threshold: float = 0.0,
        num_threads: int | None = None,
        min_seconds: float = MIN_SCORE_SECONDS,
        trim: str = "none",
    ):
        self.calibration = Calibration() if calibration is None else calibration
        self.threshold = threshold
        self.min_seconds = min_seconds
        self.trim = trim
        self.members = [ScorerMember("model", frontend, TFLiteModel(model_bytes, num_threads))]

    @classmethod
    def ensemble(
        cls,
        members: list[tuple[str, bytes, FrontendParams, Calibration]],
        *,
        calibration: Calibration | None = None,
        threshold: float = 0.0,
        num_threads: int | None = None,
        min_seconds: float = MIN_SCORE_SECONDS,
        trim: str = "none",
    ) -> Scorer:
        """Several ``(name, model, front-end, member calibration)``; the score fuses them."""
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self = cls.__new__(cls)
        self.calibration = Calibration() if calibration is None else calibration
        self.threshold = threshold
        self.min_seconds = min_seconds
        self.trim = trim
        self.members = []
        for n, d, f, c in members:
            try:
                model = TFLiteModel(d, num_threads)
            except ModelInvalid as exc:
                if len(members) == 1:
                    raise
                raise ModelInvalid(f"member {n!r}: {exc}") from exc
            self.members.append(ScorerMember(n, f, model, c))
        return self

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle | str | Path | None = None,
        *,
        operating_point: str | None = None,
        num_threads: int | None = None,
    ) -> Scorer:
        """A scorer over a bundle; a model the interpreter refuses is a :class:`BundleError`."""
        b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        try:
            return cls.ensemble(
                [(m.name, m.model_bytes, m.frontend, m.calibration) for m in b.members],
                calibration=b.calibration,
                threshold=b.threshold(operating_point),
                num_threads=num_threads,
                min_seconds=b.min_seconds,
                trim=b.trim,
            )
        except ModelInvalid as exc:
            where = "" if b.is_ensemble else f"{b.manifest.get('model_file', 'model')}: "
            raise BundleError(b.path, f"{where}{exc}") from exc

    @property
    def frontend(self) -> FrontendParams:
        """The first member's front-end (all members share the window policy)."""
        return self.members[0].frontend

    @property
    def model(self) -> TFLiteModel:
        """The first member's model (the only one of a single-network scorer)."""
        return self.members[0].model

    def features(self, audio: np.ndarray) -> np.ndarray:
        """The first member's feature windows (see :meth:`member_features` for all)."""
        return compute_features(audio, self.frontend)

    def member_features(self, audio: np.ndarray) -> list[np.ndarray]:
        """Each member's feature windows of one utterance (members whose front-ends frame
        the audio alike share one spectrogram)."""
        return compute_features_many(audio, [m.frontend for m in self.members])

    def fused_logit(self, feats: list[np.ndarray]) -> float:
        """Mean of the members' calibrated utterance logits (the raw logit of one network)."""
        if len(self.members) == 1:
            return self.members[0].logit(feats[0])
        return float(np.mean([m.logit(f) for m, f in zip(self.members, feats, strict=True)]))

    def raw_logit(self, audio: np.ndarray) -> tuple[float, int]:
        """Fused logit before the bundle's calibration, and the number of windows."""
        feats = self.member_features(audio)
        return self.fused_logit(feats), len(feats[0])

    def score(
        self, audio: np.ndarray, path: str | Path | None = None, *, endpointed: bool = False
    ) -> ScoreResult:
        """Score 16 kHz mono float32 audio; raises AudioError if it is too short or silent.

        A recording is first cut as the bundle's input policy says (:func:`trim_to_policy`;
        the latency includes it); ``endpointed``: the audio is already a segment of the
        live listener's endpointer, so it is scored as it is."""
        require_usable(audio, path, self.min_seconds)
        t0 = time.perf_counter()
        found = None
        if not endpointed:
            audio, found = cut_to_policy(audio, self.trim)
        logit, n = self.raw_logit(audio)
        score = self.calibration.apply(logit)
        latency = (time.perf_counter() - t0) * 1000.0
        verdict = BONAFIDE if score >= self.threshold else SPOOF
        return ScoreResult(score, verdict, self.threshold, latency, n, found)


__all__ = [
    "BONAFIDE",
    "SPOOF",
    "SAMPLE_RATE",
    "ScoreResult",
    "Scorer",
    "ScorerMember",
    "TFLiteModel",
    "cut_to_policy",
    "trim_to_policy",
]
