"""``wakeguard bench`` through the CLI, and the MAC count against a hand count (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from wakeguard.tools.cli import app

runner = CliRunner()


def _bench_json(*args: str) -> dict:
    res = runner.invoke(app, ["bench", "--json", "--repeats", "3", "--warmup", "1", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_mac_count_matches_hand_count(tiny_bundle: Path):
    from wakeguard.edge.profiling import count_macs, parameter_count

    model = (tiny_bundle / "model.tflite").read_bytes()
    macs = count_macs(model)
    # tiny net: input (197, 257, 1) -> Conv2D(4, 3x3, stride 2, valid) -> (98, 128, 4) -> GAP -> Dense(1)
    conv = 98 * 128 * 4 * (3 * 3 * 1)
    dense = 4 * 1
    assert macs.to_dict()["by_op"] == {"CONV_2D": conv, "FULLY_CONNECTED": dense}
    assert macs.total == conv + dense
    assert "MEAN" in macs.other_ops
    assert parameter_count(model) == 4 * 9 + 4 + 4  # conv kernel + conv bias + dense kernel


def test_bench_json_has_every_stage_and_figure(tiny_bundle: Path, tmp_path: Path):
    r = _bench_json("--model", str(tiny_bundle), "--no-baseline", "--plot", str(tmp_path / "b.png"))
    assert set(r["stages"]) == {"int8"}
    assert set(r["stages"]["int8"]) == {"1s", "2s", "4s"}
    for per in r["stages"]["int8"].values():
        assert set(per) == {"conversion", "frontend", "inference", "score", "e2e"}
        for v in per.values():
            assert 0 < v["p50"] <= v["p95"] <= v["p99"]
            assert 0 < v["cpu_p50"] <= v["cpu_p95"] <= v["cpu_p99"]
            assert v["n"] == 3
        assert per["e2e"]["scored_s"] > 0.3  # the listener endpointed and scored the command
    assert r["model_bytes"] == (tiny_bundle / "model.tflite").stat().st_size
    assert r["macs"]["per_window"] == 98 * 128 * 4 * 9 + 4
    assert r["macs"]["windows_per_command"] == {"1s": 1, "2s": 1, "4s": 3}
    assert {p["name"] for p in r["physical"]} == {"Cortex-A72", "Cortex-A76"}
    assert r["rss_mb"] > 0 and r["footprint"]["heavy_modules_imported"] == []
    assert r["rtf"]["int8"]["2s"] > 0
    for key in ("cpu", "cores", "python", "runtime"):
        assert r["machine"][key]
    assert any("float32" in n for n in r["notes"]) and any("baseline" in n for n in r["notes"])
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_float_variant_side_by_side(tiny_bundle: Path, tmp_path: Path):
    """A float32 model found beside a run's bundle is benched in the same run, with ratios."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_bundle, run / "bundle")
    (run / "quantize").mkdir()
    shutil.copy(tiny_bundle / "model.tflite", run / "quantize" / "float32.tflite")  # any valid model will do
    r = _bench_json("--model", str(run / "bundle"), "--no-baseline")
    assert set(r["stages"]) == {"int8", "float32"}
    assert "conversion" not in r["stages"]["float32"]["2s"]  # the same for every variant: shown once
    assert r["float_model"].endswith("float32.tflite")
    assert set(r["ratios"]["float32_e2e_p95/int8_e2e_p95"]) == {"1s", "2s", "4s"}
    assert r["ratios"]["float32_score_p50/int8_score_p50"]["2s"] > 0


def test_bench_scores_the_float_variant_under_the_bundles_input_policy() -> None:
    """The float32 variant is scored as the bundle scores a file (trimmed to its commands):
    without the trim its score stage timed less work than int8's."""
    from wakeguard.edge.bundle import load_bundle
    from wakeguard.tools.bench_cmd import variant_scorers

    bundle = load_bundle(None)  # the shipped bundle, which trims
    assert bundle.trim == "speech"
    scorers = variant_scorers(bundle, [bundle.path / "model.tflite"], threads=1)
    assert [s.trim for s in scorers.values()] == ["speech", "speech"]
    assert scorers["float32"].threshold == scorers["int8"].threshold
    assert variant_scorers(bundle, None, threads=1).keys() == {"int8"}


def test_bench_void_baseline_and_stream(tiny_bundle: Path):
    """The Void-style baseline runs beside the model; the listener's CPU cost on idle and busy streams."""
    pytest.importorskip("sklearn")
    r = _bench_json("--model", str(tiny_bundle), "--stream", "--stream-seconds", "9", "--stream-speed", "0")
    assert set(r["stages"]) == {"int8", "void"}
    assert r["void"]["support_vectors"] > 0
    assert r["ratios"]["void_e2e_p95/int8_e2e_p95"]["2s"] > 0
    idle, busy = r["stream"]["modes"]["idle"], r["stream"]["modes"]["commands"]
    assert idle["verdicts"] == 0 and busy["verdicts"] >= 1 and r["stream"]["commands_placed"] == 2
    assert idle["audio_s"] == pytest.approx(9.0, abs=0.05)
    assert idle["cpu_ms_per_audio_s"] > 0 and busy["cpu_ms_per_audio_s"] > 0


def test_bench_table_for_people(tiny_bundle: Path):
    res = runner.invoke(app, ["bench", "--model", str(tiny_bundle), "--repeats", "2", "--warmup", "0", "--no-baseline"])
    assert res.exit_code == 0, res.output
    assert "e2e" in res.output and "CPU p95" in res.output and "Cortex-A72" in res.output
    assert "peak resident memory" in res.output


def test_bench_bad_inputs_are_clear(tmp_path: Path, tiny_bundle: Path):
    res = runner.invoke(app, ["bench", "--model", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "nope" in res.output and "not found" in res.output
    res = runner.invoke(app, ["bench", "--model", str(tiny_bundle), "--float-model", str(tmp_path / "f.tflite")])
    assert res.exit_code == 2 and "f.tflite" in res.output
    res = runner.invoke(app, ["bench", "--model", str(tiny_bundle), "--repeats", "0"])
    assert res.exit_code == 2 and "repeats" in res.output


def test_percentiles():
    from wakeguard.edge.profiling import percentiles

    p = percentiles(range(1, 101))
    assert (p.p50, p.p95, p.p99, p.n) == (50.5, pytest.approx(95.05), pytest.approx(99.01), 100)
    with pytest.raises(ValueError):
        percentiles([])


PI_BLOCKER = """
import importlib.abc, sys
BLOCKED = ("tensorflow", "keras", "librosa", "sklearn", "scipy", "matplotlib")
class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {name!r} (blocked: as on a Pi)", name=name)
        return None
sys.meta_path.insert(0, _Refuse())
from wakeguard.tools.cli import main
sys.argv = ["wakeguard", *sys.argv[1:]]
main()
"""


def test_bench_on_a_pi_without_training_libraries(tiny_bundle: Path, tmp_path: Path):
    """No scikit-learn/scipy/matplotlib/TensorFlow: the model is benched, the baseline skipped with a note."""
    import subprocess
    import sys

    base = [sys.executable, "-c", PI_BLOCKER, "bench", "--model", str(tiny_bundle), "--repeats", "2", "--warmup", "0"]
    r = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out["stages"]) == {"int8"}
    assert any("Void-style baseline skipped" in n for n in out["notes"])
    r = subprocess.run([*base, "--plot", str(tmp_path / "p.png")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "needs matplotlib" in r.stderr


@pytest.mark.parametrize("pool", [2, 3, 4, 7, 8])
def test_fast_bin_pooling_is_bit_identical(pool: int):
    """The front-end's strided bin pooling (a bench finding) equals the plain reshape-mean bit for bit."""
    import numpy as np
    from wakeguard.edge.frontend import (
        FrontendParams,
        frontend_shape,
        power_spectrogram,
        window_features,
    )

    p = FrontendParams(bin_pool=pool)
    s = frontend_shape(p)
    x = np.random.default_rng(pool).normal(0, 0.1, s.window_samples).astype(np.float32)
    band = power_spectrogram(x, p)[:, s.bin_lo : s.bin_hi]
    reference = np.log10(band.reshape(band.shape[0], -1, pool).mean(axis=-1) + p.log_floor) * 10.0
    reference = (reference - reference.mean()).astype(np.float32)
    assert np.array_equal(window_features(x, p), reference)


def test_bench_checks_its_options_before_measuring(tmp_path: Path, tiny_bundle: Path, monkeypatch):
    """A missing or empty --speech folder, a negative --warmup and a --plot that cannot be
    written are refused (exit 2) up front, naming what is wrong; nothing is measured."""
    from wakeguard.tools import bench_cmd

    def measured(cfg):
        raise AssertionError("measured before checking the options")

    monkeypatch.setattr(bench_cmd, "run_bench", measured)
    base = ["bench", "--model", str(tiny_bundle), "--repeats", "2", "--no-baseline"]
    res = runner.invoke(app, [*base, "--speech", str(tmp_path / "nonexist")])
    assert res.exit_code == 2 and "nonexist" in res.output and "not found" in res.output
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("x")
    res = runner.invoke(app, [*base, "--speech", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no FLAC files" in res.output and "empty" in res.output
    res = runner.invoke(app, [*base, "--warmup", "-1"])
    assert res.exit_code == 2 and "warmup" in res.output
    (tmp_path / "afile").write_text("x")
    res = runner.invoke(app, [*base, "--plot", str(tmp_path / "afile" / "x.png")])
    assert res.exit_code == 2 and "plot folder" in res.output and "afile" in res.output
    res = runner.invoke(app, [*base, "--plot", str(tmp_path)])
    assert res.exit_code == 2 and "is a folder" in res.output


def test_bench_explicit_speech_without_usable_cuts_is_an_error(tmp_path: Path):
    """An explicit --speech never falls back to synthetic audio."""
    import numpy as np
    import soundfile as sf
    from wakeguard.tools.bench_cmd import BenchConfig, _commands

    sf.write(tmp_path / "short.flac", np.zeros(8_000, dtype=np.float32), 16_000)
    with pytest.raises(ValueError, match="no FLAC file at least 4.5 s long"):
        _commands(BenchConfig(speech_dir=tmp_path))
