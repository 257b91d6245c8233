"""The endpointer on synthetic streams: segments, pre-roll/hangover, length limits, noise, chunking."""

from __future__ import annotations

import numpy as np
import pytest
from wakeguard.edge.endpoint import Endpointer, EndpointParams, Segment, speech_span

SR = 16_000


def voice(seconds: float, f0: float = 140.0, level: float = 0.1, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic signal with a syllable-rate envelope (passes the spectral check)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 20))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t) ** 2
    x = x * env
    return (level * x / np.sqrt(np.mean(x**2))).astype(np.float32)


def quiet(seconds: float, level_dbfs: float = -65.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 10 ** (level_dbfs / 20), int(seconds * SR))).astype(np.float32)


def run(
    x: np.ndarray, chunk: int, params: EndpointParams | None = None
) -> tuple[list[Segment], Endpointer]:
    ep = Endpointer(params)
    segs: list[Segment] = []
    for i in range(0, len(x), chunk):
        segs += ep.push(x[i : i + chunk])
    segs += ep.flush()
    return segs, ep


def stream(*parts: tuple[str, float]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate ('v', seconds) voice and ('q', seconds) quiet parts; returns audio and voice spans."""
    out, spans, t = [], [], 0.0
    for i, (kind, sec) in enumerate(parts):
        out.append(voice(sec, seed=i) if kind == "v" else quiet(sec, seed=i))
        if kind == "v":
            spans.append((t, t + sec))
        t += sec
    return np.concatenate(out), spans


def test_finds_each_utterance_with_pre_roll_and_post_roll():
    x, spans = stream(
        ("q", 1.0), ("v", 1.2), ("q", 1.5), ("v", 0.8), ("q", 2.0), ("v", 2.5), ("q", 1.0)
    )
    p = EndpointParams()
    segs, _ = run(x, 160, p)
    assert len(segs) == len(spans)
    for seg, (a, b) in zip(segs, spans, strict=True):
        # Starts about pre-roll before the voice, ends about post-roll after it.
        assert a - p.pre_roll_s - 0.05 <= seg.t_start <= a, (seg.t_start, a)
        assert b <= seg.t_end <= b + p.post_roll_s + 0.05, (seg.t_end, b)
        assert seg.audio.size == seg.end - seg.start
        assert not seg.truncated
        # The end is decided one hangover after the voice stops.
        assert seg.decided_at / SR == pytest.approx(b + p.hangover_s, abs=0.05)


@pytest.mark.parametrize("chunk_ms", [10, 64, 512, 3])
def test_chunk_size_invariance(chunk_ms):
    x, _ = stream(
        ("q", 0.7), ("v", 1.0), ("q", 0.9), ("v", 0.4), ("q", 0.3), ("v", 1.5), ("q", 0.6)
    )
    ref, _ = run(x, len(x))
    segs, _ = run(x, int(SR * chunk_ms / 1000))
    assert [(s.start, s.end, s.decided_at, s.truncated) for s in segs] == [
        (s.start, s.end, s.decided_at, s.truncated) for s in ref
    ]
    for a, b in zip(segs, ref, strict=True):
        np.testing.assert_array_equal(a.audio, b.audio)


def test_irregular_chunks_match_too():
    x, _ = stream(("q", 0.5), ("v", 1.0), ("q", 1.0), ("v", 1.0), ("q", 0.8))
    ref, _ = run(x, 160)
    rng = np.random.default_rng(3)
    ep, segs, i = Endpointer(), [], 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        segs += ep.push(x[i : i + n])
        i += n
    segs += ep.flush()
    assert [(s.start, s.end) for s in segs] == [(s.start, s.end) for s in ref]


def test_pause_shorter_than_hangover_does_not_split():
    x, _ = stream(("q", 0.5), ("v", 0.8), ("q", 0.3), ("v", 0.8), ("q", 1.0))
    segs, _ = run(x, 512)
    assert len(segs) == 1
    assert segs[0].duration_s > 1.9


def test_short_bursts_are_dropped_and_counted():
    x, _ = stream(("q", 0.5), ("v", 0.15), ("q", 1.0), ("v", 0.1), ("q", 1.0))
    segs, ep = run(x, 160, EndpointParams(min_seconds=0.3))
    assert segs == []
    assert ep.state.dropped_short == 2


def test_long_speech_is_truncated_then_waits_for_silence():
    x, _ = stream(("q", 0.5), ("v", 5.0), ("q", 1.0), ("v", 1.0), ("q", 1.0))
    p = EndpointParams(max_seconds=2.0)
    segs, ep = run(x, 640, p)
    assert len(segs) == 2
    assert segs[0].truncated and segs[0].duration_s == pytest.approx(2.0, abs=0.011)
    # Nothing from the remaining 3 s of the long utterance; the next command is found.
    assert not segs[1].truncated
    assert segs[1].t_start == pytest.approx(6.5 - p.pre_roll_s, abs=0.06)
    assert ep.state.truncated == 1


def test_utterance_in_progress_is_emitted_by_flush():
    x, _ = stream(("q", 0.5), ("v", 1.0))
    ep = Endpointer()
    assert ep.push(x) == []
    assert ep.in_speech
    segs = ep.flush()
    assert len(segs) == 1 and segs[0].t_end == pytest.approx(1.5, abs=0.01)


def test_loud_white_noise_and_hum_are_not_voice():
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    hiss = np.concatenate([quiet(0.5), rng.normal(0, 0.1, 2 * SR).astype(np.float32), quiet(1.0)])
    hum = np.concatenate(
        [quiet(0.5), (0.2 * np.sin(2 * np.pi * 50 * t[: 2 * SR])).astype(np.float32), quiet(1.0)]
    )
    clicks = quiet(3.0)
    clicks[::1600] = 0.9
    for x in (hiss, hum, clicks):
        segs, _ = run(x, 160)
        assert segs == []


def test_noise_floor_adapts_to_steady_background():
    # A quiet room, then a steady in-band background (low-passed noise, not flat) switches on
    # at 1 s at -30 dBFS; voice 20 dB above it later. The floor climbs to the background
    # (at most one false start while it does), then only the voice counts.
    rng = np.random.default_rng(5)
    n = 18 * SR
    bg = np.convolve(rng.normal(0, 1, n), np.ones(8) / 8, mode="same")
    bg = (bg / np.sqrt(np.mean(bg**2)) * 10 ** (-30 / 20)).astype(np.float32)
    x = quiet(18.0)
    x[SR:] += bg[SR:]
    spans = [(12.5, 14.0), (15.5, 16.5)]
    for a, b in spans:
        v = voice(b - a, level=10 ** (-10 / 20))
        x[int(a * SR) : int(a * SR) + len(v)] += v
    segs, _ = run(x, 512)
    false_starts = [s for s in segs if s.t_start < 2.0]
    found = [s for s in segs if s.t_start >= 2.0]
    assert len(false_starts) <= 1 and all(s.t_end < 12.0 for s in false_starts)
    assert len(found) == 2
    for seg, (a, b) in zip(found, spans, strict=True):
        assert a - 0.4 <= seg.t_start <= a and b <= seg.t_end <= b + 0.3


def test_silence_only_and_digital_zero():
    for x in (np.zeros(3 * SR, dtype=np.float32), quiet(3.0)):
        segs, ep = run(x, 160)
        assert segs == [] and ep.state.dropped_short == 0


@pytest.mark.parametrize(
    "kw",
    [
        {"max_seconds": 0.2, "min_seconds": 0.3},
        {"onset_frames": 0},
        {"hangover_s": -1.0},
        {"frame_ms": 0.5},
    ],
)
def test_bad_params_are_refused(kw):
    with pytest.raises(ValueError):
        EndpointParams(**kw)


def test_speech_span_is_what_the_listener_would_cut_from_a_file():
    """From the first command's pre-roll to the last one's post-roll; a command that runs to
    the end of the file keeps no more than its post-roll would; no command: None."""
    p = EndpointParams()
    x = np.concatenate(
        [quiet(1.5), voice(1.2), quiet(0.6, seed=2), voice(0.8, seed=3), quiet(2.0, seed=4)]
    )
    start, end = speech_span(x, p)
    v0, v1 = int(1.5 * SR), int((1.5 + 1.2 + 0.6 + 0.8) * SR)
    assert v0 - int(p.pre_roll_s * SR) - 3 * p.frame_samples <= start <= v0
    assert v1 <= end <= v1 + int(p.post_roll_s * SR) + 3 * p.frame_samples
    # the same as the listener's segments, streamed
    segs, _ = run(x, 512, p)
    assert (start, end) == (segs[0].start, segs[-1].end)
    # the command at the very end of the file: the span ends with the file
    cut = x[:v1]
    assert speech_span(cut, p)[1] == cut.size
    assert speech_span(quiet(3.0), p) is None
    assert speech_span(np.zeros(SR, np.float32), p) is None
