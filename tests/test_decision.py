"""Decision logic on synthetic score streams: threshold, smoothing, refractory time."""

from __future__ import annotations

import numpy as np
import pytest
from wakeguard.edge.decision import BONAFIDE, SPOOF, Decider, DecisionParams


def feed(d: Decider, stream: list[tuple[float, float, float]]):
    return [d.decide(score, t0, t1) for score, t0, t1 in stream]


def test_threshold_alone_is_score_at_or_above():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 2, 500)
    d = Decider(DecisionParams(threshold=0.7))
    out = feed(d, [(s, 3.0 * i, 3.0 * i + 1.5) for i, s in enumerate(scores)])
    assert [o.verdict for o in out] == [BONAFIDE if s >= 0.7 else SPOOF for s in scores]
    assert all(o.smoothed_score == o.score and not o.suppressed for o in out)
    assert Decider(DecisionParams(threshold=0.7)).decide(0.7, 0, 1).verdict == BONAFIDE


def test_smoothing_averages_one_interaction():
    d = Decider(DecisionParams(threshold=0.0, smoothing_alpha=0.5, smoothing_window_s=2.0))
    a, b = feed(d, [(2.0, 0.0, 1.0), (-1.0, 1.5, 2.5)])
    assert a.smoothed_score == 2.0
    assert b.smoothed_score == pytest.approx(0.5)
    assert b.verdict == BONAFIDE and b.score == -1.0


def test_smoothing_resets_after_a_long_gap():
    d = Decider(DecisionParams(threshold=0.0, smoothing_alpha=0.5, smoothing_window_s=2.0))
    _, b = feed(d, [(2.0, 0.0, 1.0), (-1.0, 3.5, 4.5)])
    assert b.smoothed_score == -1.0 and b.verdict == SPOOF


def test_smoothing_rides_out_an_outlier_in_a_steady_stream():
    # A live talker (scores around +2) with one dropout to -1.5 inside one interaction.
    scores = [2.1, 1.8, 2.3, -1.5, 2.0, 1.9]
    stream = [(s, 1.2 * i, 1.2 * i + 1.0) for i, s in enumerate(scores)]
    raw = feed(Decider(DecisionParams(threshold=0.0)), stream)
    smooth = feed(
        Decider(DecisionParams(threshold=0.0, smoothing_alpha=0.4, smoothing_window_s=1.0)), stream
    )
    assert [o.verdict for o in raw].count(SPOOF) == 1
    assert all(o.verdict == BONAFIDE for o in smooth)


def test_refractory_suppresses_fragments_of_the_reported_command():
    d = Decider(DecisionParams(threshold=0.0, refractory_s=1.0))
    out = feed(
        d,
        [
            (1.0, 0.0, 2.0),  # reported
            (1.0, 2.6, 3.0),  # starts 0.6 s after: fragment, suppressed
            (1.0, 3.5, 4.0),  # 1.5 s after the reported end: suppressed fragments do not extend it
            (-1.0, 5.5, 6.0),  # 1.5 s after the last reported end: reported
        ],
    )
    assert [o.suppressed for o in out] == [False, True, False, False]
    assert out[3].verdict == SPOOF
    assert d.state.n_suppressed == 1 and d.state.n_decided == 4


def test_refractory_zero_reports_everything():
    d = Decider(DecisionParams(threshold=0.0))
    out = feed(d, [(1.0, 0.0, 1.0), (1.0, 1.0, 2.0), (1.0, 2.0, 3.0)])
    assert not any(o.suppressed for o in out)


def test_reset_forgets_history():
    d = Decider(DecisionParams(threshold=0.0, smoothing_alpha=0.1, refractory_s=5.0))
    d.decide(5.0, 0.0, 1.0)
    d.reset()
    o = d.decide(-1.0, 1.2, 2.0)
    assert o.smoothed_score == -1.0 and not o.suppressed


@pytest.mark.parametrize(
    "kw",
    [
        {"smoothing_alpha": 0.0},
        {"smoothing_alpha": 1.5},
        {"refractory_s": -1},
        {"smoothing_window_s": -0.1},
    ],
)
def test_bad_params_are_refused(kw):
    with pytest.raises(ValueError):
        DecisionParams(**kw)


def test_time_going_backwards_is_an_error():
    with pytest.raises(ValueError):
        Decider().decide(0.0, 2.0, 1.0)
