"""The shared core: audio boundary, front-end, bundle validation, scorer."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from wakeguard.edge.audio import (
    AudioError,
    check_audio,
    load_audio,
    require_usable,
    resample,
    write_wav,
)
from wakeguard.edge.bundle import BundleError, load_bundle
from wakeguard.edge.frontend import (
    FrontendParams,
    compute_features,
    frontend_from_dict,
    frontend_shape,
)
from wakeguard.edge.scorer import Scorer


def test_resample_keeps_a_tone(tmp_path):
    sr = 44_100
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    y = resample(x, sr, 16_000)
    assert len(y) == 16_000
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * 16_000 / len(y)
    assert abs(peak_hz - 1000) <= 1
    assert 0.95 < np.max(np.abs(y[100:-100])) < 1.05


def test_load_audio_converts_rate_and_channels(tmp_path):
    import soundfile as sf

    stereo = np.stack([np.full(48_000, 0.1), np.full(48_000, 0.3)], axis=1).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 48_000)
    x = load_audio(tmp_path / "s.wav")
    assert x.shape == (16_000,)
    assert abs(float(np.median(x)) - 0.2) < 1e-3


def test_unreadable_audio_names_the_file(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioError, match="broken.wav"):
        load_audio(bad)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")


def _wav_8bit(
    frames: bytes, extra_chunks: bytes = b"", data_size: int | None = None, tail: bytes = b""
) -> bytes:
    """A hand-built 8-bit mono 16 kHz RIFF/WAVE file, so the chunk layout is exactly as given."""
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16_000, 16_000, 1, 8)
    size = len(frames) if data_size is None else data_size
    pad = b"\x00" if len(frames) % 2 else b""
    body = b"WAVE" + fmt + extra_chunks + b"data" + struct.pack("<I", size) + frames + pad + tail
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_truncated_wav_is_refused_with_declared_and_present_sizes(tmp_path):
    import soundfile as sf

    x = 0.3 * np.sin(np.arange(16_000) / 5.0)
    sf.write(tmp_path / "whole.wav", x, 16_000, subtype="PCM_16")
    whole = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated WAV.* 32000 bytes .* 15978 "):
        load_audio(tmp_path / "cut.wav")


def test_wav_size_check_accepts_junk_pad_bytes_and_streaming_sizes(tmp_path):
    frames = (
        np.random.default_rng(0).integers(64, 192, 1601, dtype=np.uint8).tobytes()
    )  # odd: padded
    info = (
        b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"
    )  # odd-sized chunk before the data, with its pad
    cases = {
        "plain": _wav_8bit(frames),
        "list_chunk": _wav_8bit(frames, extra_chunks=info),
        "trailing_junk": _wav_8bit(frames, tail=b"JUNK\x03\x00\x00\x00abc"),
        "no_pad_byte": _wav_8bit(frames)[:-1],
        "streamed": _wav_8bit(frames, data_size=0xFFFFFFFF),
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.wav").write_bytes(data)
        assert len(load_audio(tmp_path / f"{name}.wav")) >= 1601, name  # streamed reads the pad too
    (tmp_path / "cut_after_list.wav").write_bytes(_wav_8bit(frames, extra_chunks=info)[:-600])
    with pytest.raises(AudioError, match="declares 1601 bytes but only 1002"):
        load_audio(tmp_path / "cut_after_list.wav")


def test_silence_check_ignores_a_dc_offset():
    rng = np.random.default_rng(0)
    hiss = 1e-5 * rng.standard_normal(16_000)
    for x in (0.02 + hiss, np.full(16_000, 0.5)):
        with pytest.raises(AudioError, match="silent"):
            require_usable(x.astype(np.float32), "offset.wav")
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)
    require_usable((tone + 0.02).astype(np.float32))  # genuine audio with an offset still passes
    plain, offset = check_audio(tone), check_audio(tone + 0.02)
    assert abs(offset.rms_dbfs - plain.rms_dbfs) < 0.01 and abs(plain.rms_dbfs - -23.0) < 0.1


def test_full_disk_raises_oserror_naming_the_file_and_leaves_no_part_file(tmp_path, monkeypatch):
    import soundfile as sf

    def fill_disk(
        file, *args, **kwargs
    ):  # what libsndfile does on ENOSPC: partial file, "System error."
        Path(file).write_bytes(b"RIFF" + b"\x00" * 4000)
        raise sf.LibsndfileError(2)

    monkeypatch.setattr(sf, "write", fill_disk)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: SimpleNamespace(total=10**6, used=10**6, free=0)
    )
    target = tmp_path / "clips" / "take.wav"
    with pytest.raises(OSError, match=r"cannot write .*take\.wav: disk full") as info:
        write_wav(target, np.zeros(16_000, dtype=np.float32))
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in target.parent.iterdir()) == []
    # A libsndfile failure with room to spare still names the file, as OSError, and cleans up.
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=0, free=10**9)
    )
    with pytest.raises(OSError, match=r"cannot write .*take\.wav: System error"):
        write_wav(target, np.zeros(16_000, dtype=np.float32))
    assert list(target.parent.iterdir()) == []


def test_frontend_shapes_follow_params():
    for kind in ("logspec", "lfcc", "spectral_power", "block_power"):
        p = FrontendParams(kind=kind)
        f = compute_features(
            np.random.default_rng(0).normal(0, 0.1, 16_000 * 3).astype(np.float32), p
        )
        assert f.shape[1:] == frontend_shape(p).input_shape
        assert f.shape[0] == 2  # 3 s: windows at 0 s and 1 s (end-aligned)


HOP500 = dict(kind="spectral_power", frame_length=1024, n_fft=1024, hop_length=500, block_frames=8)
"""The shipped front-end's frames (model/default_config.toml)."""


@pytest.mark.parametrize(
    "kw",
    [
        HOP500,
        {**HOP500, "window_slack_seconds": 0.5},
        {**HOP500, "octave_pool_hz": 1000.0},
        dict(kind="logspec"),
        dict(kind="logspec", bin_pool=2, octave_pool_hz=500.0),
        dict(kind="lfcc"),
        dict(kind="spectral_power", window_hop_seconds=0.333),  # 5328 samples: off the frame grid
    ],
)
@pytest.mark.parametrize("n", [16_000, 32_000, 32_001, 36_800, 36_999, 70_000])
def test_utterance_features_equal_per_window_features(kw, n):
    """One spectrogram per utterance, sliced per window, gives exactly the features of
    each window computed on its own."""
    from wakeguard.edge.frontend import split_windows, window_features, window_starts

    p = FrontendParams(**kw)
    s = frontend_shape(p)
    x = np.random.default_rng(n).normal(0, 0.1, n).astype(np.float32)
    whole = compute_features(x, p)
    alone = np.stack([window_features(w, p) for w in split_windows(x, p)])
    assert np.array_equal(whole, alone)
    if n <= s.window_samples:
        assert window_starts(n, p) == [0] and len(whole) == 1
        return
    # The last window ends at the end, moved back by less than one hop onto the frame grid
    # (not moved at all when the window hop is off the grid); with slack, a grid centred on
    # the audio leaves at most half the slack (plus the snap) at the end.
    gap = n - (window_starts(n, p)[-1] + s.window_samples)
    on_grid = s.window_hop_samples % p.hop_length == 0
    half_slack = int(round(p.window_slack_seconds * p.sample_rate)) // 2
    assert 0 <= gap < p.hop_length + half_slack if on_grid else 0 <= gap <= half_slack


def test_audio_slightly_longer_than_a_window_is_scored_as_its_centre():
    from wakeguard.edge.frontend import window_starts

    p = FrontendParams(**HOP500, window_slack_seconds=0.5)
    s = frontend_shape(p)
    # 2.3 s: the endpointer's 2 s command with pre- and post-roll -> one centred window
    n = 36_800
    (start,) = window_starts(n, p)
    assert start % p.hop_length == 0 and abs(start - (n - s.window_samples) / 2) < p.hop_length
    x = np.random.default_rng(5).normal(0, 0.1, n).astype(np.float32)
    f = compute_features(x, p)
    assert f.shape[0] == 1
    from wakeguard.edge.frontend import window_features

    assert np.array_equal(f[0], window_features(x[start : start + s.window_samples], p))
    # 4.3 s: three windows a second apart, centred (the 0.3 s tail is within the slack)
    starts = window_starts(68_800, p)
    assert len(starts) == 3 and np.diff(starts).tolist() == [16_000, 16_000]
    assert abs(starts[0] - 2_400) < p.hop_length
    # beyond the slack, a last window at the end again; with no slack, 2.3 s is two windows
    assert len(window_starts(s.window_samples + 8_001, p)) == 2
    assert len(window_starts(n, FrontendParams(window_slack_seconds=0.0))) == 2
    with pytest.raises(ValueError, match="slack"):
        frontend_from_dict({**p.to_dict(), "window_slack_seconds": 2.5})


@pytest.mark.parametrize("kind", ["spectral_power", "logspec"])
def test_octave_pooling_keeps_the_bass_and_halves_resolution_every_octave(kind):
    """With ``octave_pool_hz`` every feature bin is the mean of a run of FFT bins: single
    below the knee, 2 wide up to twice the knee, 4 up to four times, ...; and a model
    input with it is the pooled version of the same input without it."""
    from wakeguard.edge.frontend import octave_pool_edges

    base = {**HOP500, "kind": kind}
    flat = FrontendParams(**base, normalize="none")
    pooled = FrontendParams(**base, normalize="none", octave_pool_hz=1000.0)
    s = frontend_shape(flat)
    edges = octave_pool_edges(pooled, s.bin_lo, s.bin_hi - s.bin_lo)
    widths = np.diff(np.append(edges, s.bin_hi - s.bin_lo))
    hz = 16_000 / 1024  # 15.6 Hz per FFT bin
    assert (widths[: int(1000 / hz)] == 1).all()  # 0-1 kHz: 64 single bins
    assert set(widths[(np.asarray(edges) * hz >= 1000) & (np.asarray(edges) * hz < 2000)]) == {2}
    assert set(widths[(np.asarray(edges) * hz >= 4000) & (np.asarray(edges) < 512)]) == {8}
    assert frontend_shape(pooled).n_bins == len(edges) == 64 + 32 + 32 + 32 + 1  # + Nyquist
    x = np.random.default_rng(3).normal(0, 0.1, 40_000).astype(np.float32)
    a, b = compute_features(x, flat), compute_features(x, pooled)
    assert b.shape[1:] == frontend_shape(pooled).input_shape
    # undo the log, pool the linear power by hand, compare
    lin = 10 ** (a / 10.0) - flat.log_floor
    ref = np.add.reduceat(lin, edges, axis=-1) / widths
    if kind == "spectral_power":  # each pooled block is normalised to sum 1 before the log
        ref = ref / ref.sum(axis=-1, keepdims=True)
    assert np.allclose(10 ** (b / 10.0) - pooled.log_floor, ref, rtol=1e-3, atol=1e-9)
    again = frontend_from_dict(json.loads(json.dumps(pooled.to_dict())))
    assert again == pooled
    with pytest.raises(ValueError, match="octave_pool_hz"):
        frontend_from_dict({**FrontendParams(kind="lfcc").to_dict(), "octave_pool_hz": 500.0})


def test_block_power_keeps_the_envelope_that_spectral_power_normalises_away():
    """The same blocks of frames; spectral_power divides each block's spectrum by its
    sum, block_power keeps the block's level, so speech and the pause after it differ."""
    x = np.random.default_rng(4).normal(0, 0.1, 32_000).astype(np.float32)
    x[16_000:] *= 0.01  # the second second 40 dB quieter
    shape = FrontendParams(**HOP500, normalize="none")
    level = FrontendParams(**{**HOP500, "kind": "block_power"}, normalize="none")
    a, b = compute_features(x, shape)[0], compute_features(x, level)[0]
    assert a.shape == b.shape == frontend_shape(level).input_shape
    lin = 10 ** (b / 10.0)
    assert np.allclose(10 ** (a / 10.0), lin / lin.sum(axis=1, keepdims=True), rtol=1e-3)
    loud, quiet = b[:3].mean(), b[-3:].mean()
    assert 38 < loud - quiet < 42
    assert abs(a[:3].mean() - a[-3:].mean()) < 1.0


@pytest.mark.parametrize("n", [16_000, 32_000, 36_800, 70_000])
def test_members_framing_alike_share_one_spectrogram(n):
    """compute_features_many equals compute_features per front-end, whether or not the
    front-ends share their frames."""
    from dataclasses import replace

    from wakeguard.edge.frontend import compute_features_many, spectrogram_key

    base = FrontendParams(**HOP500, window_slack_seconds=0.5)
    params = [
        base,
        replace(base, block_frames=4),
        replace(base, kind="block_power"),
        replace(base, n_fft=2048, frame_length=2048, octave_pool_hz=2000.0, block_frames=4),
        replace(base, kind="spectral_power", window_hop_seconds=0.333),  # off the grid
        replace(base, kind="spectral_power", window_hop_seconds=0.333, block_frames=4),
    ]
    assert spectrogram_key(params[0]) == spectrogram_key(params[2]) != spectrogram_key(params[3])
    x = np.random.default_rng(n).normal(0, 0.1, n).astype(np.float32)
    many = compute_features_many(x, params)
    assert len(many) == len(params)
    for p, f in zip(params, many, strict=True):
        assert np.array_equal(f, compute_features(x, p))


def test_frontend_is_level_invariant():
    x = np.random.default_rng(1).normal(0, 0.1, 32_000).astype(np.float32)
    p = FrontendParams()
    a, b = compute_features(x, p), compute_features(x * 0.1, p)
    diff = np.abs(a - b)
    assert np.median(diff) < 1e-3 and np.quantile(diff, 0.99) < 0.05  # only floor-limited bins move


def test_the_analysis_window_tapers_from_hann_to_rectangular():
    from wakeguard.edge.frontend import analysis_window, power_spectrogram

    n = 1024
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    np.testing.assert_allclose(analysis_window(n), hann, atol=1e-7)
    assert np.array_equal(analysis_window(n, 0.0), np.ones(n, np.float32))
    w = analysis_window(n, 0.5)
    assert np.all(w[n // 4 : 3 * n // 4 + 1] == 1.0) and w[0] == 0.0
    assert np.all(np.diff(w[: n // 4 + 1]) > 0)  # the taper rises to the flat middle
    np.testing.assert_allclose(w[1:], w[1:][::-1], atol=1e-6)  # periodic: symmetric about n/2
    # frames that barely overlap: a click near a frame edge is seen by one frame, at the edge
    # of its window, where Hann keeps sin^2(pi 64 / 1024)^2 of its power and the taper ~15x more
    p = FrontendParams(frame_length=1024, hop_length=1000, n_fft=1024)
    x = np.zeros(16_000, np.float32)
    x[2000 + 64] = 1.0  # 64 samples into frame 2 (frame 1 ends at sample 2023)
    hann_power = power_spectrogram(x, p).sum()
    tukey_power = power_spectrogram(x, replace(p, window_taper=0.5)).sum()
    assert tukey_power > 10 * hann_power
    with pytest.raises(ValueError, match="window_taper"):
        frontend_from_dict({**p.to_dict(), "window_taper": 1.5})


def test_a_hann_front_end_is_written_as_before_the_taper_existed():
    p = FrontendParams()
    assert "window_taper" not in p.to_dict()  # older runtimes still read Hann bundles
    assert frontend_from_dict(p.to_dict()) == p
    tapered = FrontendParams(window_taper=0.5)
    assert frontend_from_dict(tapered.to_dict()) == tapered


def test_frontend_rejects_unknown_params():
    with pytest.raises(ValueError, match="upgrade"):
        frontend_from_dict({**FrontendParams().to_dict(), "new_knob": 3})


def test_bundle_round_trip_and_corruption(tiny_bundle, tmp_path, speech_file):
    b = load_bundle(tiny_bundle)
    s = Scorer.from_bundle(b)
    r = s.score(load_audio(speech_file))
    assert r.verdict in ("bonafide", "spoof") and np.isfinite(r.score)
    # Corrupt model bytes are refused with the reason.
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    (bad / "model.tflite").write_bytes(b"\x00" * 100)
    with pytest.raises(BundleError, match="corrupt"):
        load_bundle(bad)
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    m["frontend"]["fmax_hz"] = 4000.0  # shape no longer matches the model input
    (bad / "model.tflite").write_bytes((tiny_bundle / "model.tflite").read_bytes())
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(bad)


def test_a_trimming_bundle_scores_a_file_over_its_speech_span(tiny_bundle, tmp_path, speech_file):
    """input_policy.trim = speech: the silence padded around a command does not change its
    score (it is scored over the span the listener would cut); the listener's own segments,
    and bundles without the policy, are scored as given."""
    import shutil

    from wakeguard.edge.endpoint import speech_span

    trimming = tmp_path / "trimming"
    shutil.copytree(tiny_bundle, trimming)
    m = json.loads((trimming / "manifest.json").read_text())
    assert m["input_policy"]["trim"] == "none"
    m["input_policy"]["trim"] = "speech"
    (trimming / "manifest.json").write_text(json.dumps(m))
    s = Scorer.from_bundle(trimming)
    whole = Scorer.from_bundle(tiny_bundle)
    assert (s.trim, whole.trim) == ("speech", "none")
    x = load_audio(speech_file)[: 3 * 16_000]
    quiet = (1e-4 * np.random.default_rng(0).standard_normal(16_000)).astype(np.float32)
    padded = np.concatenate([quiet, np.zeros(8_000, np.float32), x, quiet])
    a, b = speech_span(padded)
    assert 0 < a and b < padded.size
    assert s.score(padded).score == whole.score(padded[a:b]).score
    assert s.score(padded, endpointed=True).score == whole.score(padded).score
    assert s.score(padded).n_windows < whole.score(padded).n_windows
    # What the trim found is told (screen warns on it without running the endpointer again).
    fan = (0.05 * np.random.default_rng(1).standard_normal(3 * 16_000)).astype(np.float32)
    assert speech_span(fan) is None
    assert [s.score(padded).command_found, s.score(fan).command_found] == [True, False]
    assert s.score(fan).score == whole.score(fan).score  # no command: scored whole
    assert whole.score(padded).command_found is None  # nothing looked for
    assert s.score(padded, endpointed=True).command_found is None


def test_screen_cli_json(tiny_bundle, speech_file, tmp_path):
    write_wav(tmp_path / "silent.wav", np.zeros(16_000, dtype=np.float32))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "wakeguard.tools.cli",
            "screen",
            "--json",
            "--model",
            str(tiny_bundle),
            str(speech_file),
            str(tmp_path / "silent.wav"),
        ],
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 2
    assert lines[0]["verdict"] in ("bonafide", "spoof") and set(lines[0]) >= {
        "path",
        "score",
        "verdict",
        "latency_ms",
    }
    assert "silent" in lines[1]["error"]


def test_screen_warns_about_clipping_and_keeps_long_lines_whole(tiny_bundle, speech_file, tmp_path):
    import soundfile as sf

    folder = tmp_path / ("a-folder-name-long-enough-to-pass-eighty-columns-on-its-own-" * 2 + "[b]")
    clipped = folder / "loud.wav"
    write_wav(clipped, 20 * sf.read(speech_file, dtype="float32")[0])
    missing = folder / "missing.wav"
    base = [sys.executable, "-m", "wakeguard.tools.cli", "screen", "--model", str(tiny_bundle)]
    files = [str(speech_file), str(clipped), str(missing)]
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([*base, *files], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    err = out.stderr.splitlines()
    warning = [line for line in err if line.startswith("warning:")]
    assert len(warning) == 1 and warning[0].startswith(f"warning: {clipped}: clipped: ")
    assert "% of samples at full scale" in warning[0]
    assert f"error: {missing}: file not found" in err
    assert [line.split()[0] for line in out.stdout.splitlines()] == files[:2]

    out = subprocess.run([*base, "--json", *files], capture_output=True, text=True, env=env)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [d["path"] for d in lines] == files
    assert "warnings" not in lines[0] and lines[0]["verdict"] in ("bonafide", "spoof")
    assert set(lines[1]) == {"path", "score", "verdict", "latency_ms", "warnings"}
    assert len(lines[1]["warnings"]) == 1 and lines[1]["warnings"][0].startswith("clipped: ")
    assert lines[1]["verdict"] in ("bonafide", "spoof")
    assert "file not found" in lines[2]["error"]

    # Steady noise is scored, with a warning: the live listener would find no command in it.
    noise = folder / "fan.wav"
    write_wav(noise, 0.05 * np.random.default_rng(0).standard_normal(3 * 16_000))
    out = subprocess.run([*base, "--json", str(noise)], capture_output=True, text=True, env=env)
    (d,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0 and d["verdict"] in ("bonafide", "spoof")
    assert d["warnings"] == [
        "no command found by the endpointer `wakeguard listen` uses (steady noise, or speech "
        "too quiet against it?); a score of audio that is not speech means little"
    ]

    # A recording made at 8 kHz is scored (converted to 16 kHz), with a warning: nothing in it
    # lies above 4 kHz, and every live command the model learned from had the whole band.
    speech, rate = sf.read(speech_file, dtype="float32")
    narrow = folder / "phone-line.wav"
    sf.write(narrow, speech[::2], rate // 2, subtype="PCM_16")
    out = subprocess.run([*base, "--json", str(narrow)], capture_output=True, text=True, env=env)
    (d,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0 and d["verdict"] in ("bonafide", "spoof")
    assert d["warnings"] == [
        "recorded at 8000 Hz: nothing above 4000 Hz, while the model learned from live commands "
        "recorded at 16000 Hz; the score may be less reliable"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["data", "explore", "DATA", "--out", "OUT"],
        ["data", "simulate", "--out", "OUT"],
        ["data", "import", "folder", "DATA", "OUT"],
        ["evaluate", "--protocol", "DATA", "--scores", "DATA/scores.csv", "--out", "OUT"],
        ["report", "RUN", "--out", "OUT/index.html"],
        ["pipeline", "--out", "OUT"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_an_output_folder_under_a_file_is_named_before_any_work(args, tmp_path):
    from typer.testing import CliRunner
    from wakeguard.tools.cli import app

    data = tmp_path / "data"
    for label in ("bonafide", "spoof"):
        write_wav(data / label / "a.wav", 0.1 * np.sin(np.arange(16_000) / 5.0))
    (data / "protocol.csv").write_text(
        "path,label\nbonafide/a.wav,bonafide\nspoof/a.wav,spoof\n", encoding="utf-8"
    )
    (data / "scores.csv").write_text(
        "path,label,score\nbonafide/a.wav,bonafide,1.0\nspoof/a.wav,spoof,-1.0\n", encoding="utf-8"
    )
    (tmp_path / "run").mkdir()
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "out"
    argv = [
        str(out) if a == "OUT" else a.replace("OUT", str(out)).replace("DATA", str(data))
        for a in args
    ]
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert f"{blocker} is a file, not a folder" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt", "run"]


def test_short_help_flag_works_at_every_level():
    from typer.testing import CliRunner
    from wakeguard.tools.cli import app

    runner = CliRunner()
    for args in (["-h"], ["screen", "-h"], ["data", "-h"], ["data", "simulate", "-h"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "Usage:" in r.output, args
