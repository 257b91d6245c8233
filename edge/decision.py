"""Turn per-utterance scores into verdicts: threshold, smoothing, refractory time.

Pure: no audio, no model, no clock. Each call to :meth:`Decider.decide` takes one
utterance's calibrated score and its time span on the stream and returns a
:class:`Decision`. The state between calls is a dataclass (:class:`DecisionState`).

- **threshold**: ``score >= threshold`` is ``bonafide`` (higher score = more likely live).
- **smoothing**: utterances that follow each other within ``smoothing_window_s`` are one
  interaction with one talker (a wake word and its command); the verdict uses an
  exponential moving average of their scores, ``s = alpha * score + (1 - alpha) * s_prev``.
  ``alpha = 1`` (the default) scores every utterance on its own.
- **refractory time**: an utterance that starts less than ``refractory_s`` after the
  previous *reported* utterance ended is a fragment of it (the endpointer split a command
  at a long pause, or an echo): it is decided but marked ``suppressed``, and the listener
  does not report it again. ``0`` (the default) reports every utterance.
"""

from __future__ import annotations

from dataclasses import dataclass

from .scorer import BONAFIDE, SPOOF


@dataclass(frozen=True, kw_only=True)
class DecisionParams:
    """Settings of the verdict logic."""

    threshold: float = 0.0
    """Scores at or above this are bona fide."""
    smoothing_alpha: float = 1.0
    """Weight of the newest score in the moving average (1 = no smoothing)."""
    smoothing_window_s: float = 3.0
    """A gap longer than this between utterances starts a new interaction (resets smoothing)."""
    refractory_s: float = 0.0
    """Utterances starting sooner than this after the last reported one are suppressed."""

    def __post_init__(self) -> None:
        if not 0.0 < self.smoothing_alpha <= 1.0:
            raise ValueError(f"smoothing_alpha must be in (0, 1], got {self.smoothing_alpha}")
        if self.smoothing_window_s < 0 or self.refractory_s < 0:
            raise ValueError("smoothing_window_s and refractory_s must not be negative")


@dataclass
class DecisionState:
    smoothed: float | None = None
    last_end: float | None = None
    """End time of the previous utterance (any)."""
    last_reported_end: float | None = None
    n_decided: int = 0
    n_suppressed: int = 0


@dataclass(frozen=True)
class Decision:
    """The outcome for one utterance."""

    verdict: str
    score: float
    """The utterance's own score."""
    smoothed_score: float
    """The score the verdict was taken on (equals ``score`` without smoothing)."""
    threshold: float
    suppressed: bool
    """Inside the refractory time of the previous reported utterance: not reported."""


class Decider:
    def __init__(self, params: DecisionParams | None = None):
        self.params = params or DecisionParams()
        self.state = DecisionState()

    def reset(self) -> None:
        self.state = DecisionState()

    def decide(self, score: float, t_start: float, t_end: float) -> Decision:
        """Decide one utterance spanning ``t_start .. t_end`` seconds of the stream."""
        p, s = self.params, self.state
        if t_end < t_start:
            raise ValueError(f"utterance ends before it starts ({t_start} > {t_end})")
        new_interaction = s.last_end is None or t_start - s.last_end > p.smoothing_window_s
        if new_interaction or s.smoothed is None:
            smoothed = float(score)
        else:
            smoothed = p.smoothing_alpha * float(score) + (1.0 - p.smoothing_alpha) * s.smoothed
        suppressed = (
            p.refractory_s > 0
            and s.last_reported_end is not None
            and t_start - s.last_reported_end < p.refractory_s
        )
        s.smoothed = smoothed
        s.last_end = t_end
        s.n_decided += 1
        if suppressed:
            s.n_suppressed += 1
        else:
            s.last_reported_end = t_end
        verdict = BONAFIDE if smoothed >= p.threshold else SPOOF
        return Decision(verdict, float(score), smoothed, p.threshold, suppressed)


__all__ = ["BONAFIDE", "SPOOF", "Decider", "Decision", "DecisionParams", "DecisionState"]
