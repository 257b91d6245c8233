"""``wakeguard data explore`` on a small dataset with known defects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner
from wakeguard.edge.audio import write_wav
from wakeguard.edge.protocol import Row, write_protocol
from wakeguard.model.explore import auc, edge_silence, explore
from wakeguard.tools.cli import app

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def _utterance(rng: np.random.Generator, low: bool, seconds: float = 1.5) -> np.ndarray:
    """A voiced-like signal: harmonics of 120-200 Hz; the 'replayed' one loses everything < 500 Hz."""
    sr = 16_000
    t = np.arange(int(sr * seconds)) / sr
    f0 = rng.uniform(120, 200)
    x = np.zeros_like(t)
    for k in range(1, 30):
        f = k * f0
        if f >= 7_500 or (not low and f < 500):
            continue
        x += np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) / k
    x += rng.normal(0, 0.002, t.size)
    env = np.clip(np.sin(np.pi * t / seconds) * 3, 0, 1)  # fade in/out
    return (0.3 * x / np.max(np.abs(x)) * env).astype(np.float32)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    rows = []
    for i in range(6):
        spk = f"s{i % 3}"
        split = "train" if i < 4 else "eval"
        write_wav(root / f"b{i}.wav", _utterance(rng, low=True))
        write_wav(root / f"p{i}.wav", _utterance(rng, low=False))
        rows += [Row(f"b{i}.wav", "bonafide", spk, split, {"device": "live"}), Row(f"p{i}.wav", "spoof", spk, split, {"device": "phone"})]
    # Defects: clipped, silent, 44.1 kHz stereo, unreadable.
    write_wav(root / "clipped.wav", np.clip(_utterance(rng, True) * 10, -1, 1))
    write_wav(root / "silent.wav", np.zeros(16_000, np.float32))
    stereo = np.stack([_utterance(rng, True, 1.0)] * 2, axis=1)
    from wakeguard.edge.audio import resample

    sf.write(root / "stereo44k.wav", np.stack([resample(stereo[:, 0], 16_000, 44_100)] * 2, axis=1), 44_100)
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    rows += [
        Row("clipped.wav", "bonafide", "s0", "train", {"device": "live"}),
        Row("silent.wav", "spoof", "s1", "train", {"device": "phone"}),
        Row("stereo44k.wav", "bonafide", "s2", "eval", {"device": "live"}),
        Row("broken.wav", "spoof", "s2", "eval", {"device": "phone"}),
    ]
    write_protocol(root, rows)
    return root


def test_explore_cli_writes_summary_plots_and_warnings(dataset, tmp_path):
    out = tmp_path / "explore"
    r = runner.invoke(app, ["data", "explore", str(dataset), "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["n_rows"] == 16 and s["n_measured"] == 15
    assert s["balance"]["per_split"]["train"] == {"bonafide": 5, "spoof": 5}
    assert s["balance"]["per_condition"]["device"]["phone"] == {"bonafide": 0, "spoof": 8}
    assert [u["path"].endswith("broken.wav") for u in s["unreadable"]] == [True]
    text = "\n".join(s["warnings"])
    assert "1 file(s) unreadable" in text and "broken.wav" in text
    assert "1 file(s) clipped" in text and "clipped.wav" in text
    assert "1 file(s) silent" in text and "silent.wav" in text
    assert "44100 Hz: 1" in text and "2 channels: 1" in text
    assert "appear in both eval and train" in text  # speakers s2 (eval) and s0/s1 (train)
    assert s["sample_rates"] == {"16000": 14, "44100": 1}
    # The low band is where the classes differ: spoof has far less power below 500 Hz.
    assert s["spectrum"]["low_band_difference_db"] < -15
    assert s["spectrum"]["low_band_auc"] > 0.9
    assert set(s["plots"]) == {"balance.png", "distributions.png", "spectrum.png", "spectrograms.png"}
    for p in s["plots"]:
        assert (out / p).read_bytes()[:8] == PNG
    assert [e["label"] for e in s["examples"]] == ["bonafide", "spoof"]
    assert s["examples"][0]["speaker"] == s["examples"][1]["speaker"]
    md = (out / "summary.md").read_text()
    assert "## Warnings" in md and "![spectrum.png](spectrum.png)" in md
    assert "warning:" in r.output


def test_explore_json_and_sampling(dataset, tmp_path):
    r = runner.invoke(app, ["data", "explore", str(dataset / "protocol.csv"), "--json", "--max-files", "6"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["n_rows"] == 16 and s["n_sampled"] <= 8 and "sample" in s["note"]
    assert (dataset / "explore" / "summary.json").is_file()  # default --out is DATASET/explore


def test_explore_flags_a_duration_shortcut(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        write_wav(tmp_path / f"b{i}.wav", _utterance(rng, True, 1.0))
        write_wav(tmp_path / f"s{i}.wav", np.concatenate([_utterance(rng, True, 1.0), np.zeros(8000, np.float32)]))
        rows += [Row(f"b{i}.wav", "bonafide"), Row(f"s{i}.wav", "spoof")]
    write_protocol(tmp_path, rows)
    s = explore(tmp_path, tmp_path / "x", max_files=None)
    assert s["shortcut_auc"]["duration_s"] == 1.0 and s["shortcut_auc"]["trail_silence_s"] == 1.0
    assert any("duration alone separates" in w for w in s["warnings"])
    assert any("trailing silence alone separates" in w for w in s["warnings"])
    assert s["shortcut_auc"]["rms_dbfs"] < 1.0


def test_missing_protocol_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["data", "explore", str(tmp_path)])
    assert r.exit_code == 2 and "protocol file not found" in r.output


def test_helpers():
    assert auc(np.array([0, 1]), np.array([2, 3])) == 1.0
    assert auc(np.array([1, 1]), np.array([1, 1])) == 0.5
    x = np.concatenate([np.zeros(3200), np.ones(1600) * 0.1, np.zeros(1600)]).astype(np.float32)
    lead, trail = edge_silence(x)
    assert lead == pytest.approx(0.2) and trail == pytest.approx(0.1)


def test_a_missing_dataset_leaves_no_empty_output_folder(tmp_path):
    out = tmp_path / "e0"
    r = runner.invoke(app, ["data", "explore", str(tmp_path / "nonexist"), "-o", str(out)])
    assert r.exit_code == 2 and "protocol file not found" in r.output
    assert not out.exists()


def test_negative_max_files_is_refused(dataset, tmp_path):
    out = tmp_path / "e1"
    r = runner.invoke(app, ["data", "explore", str(dataset), "--max-files", "-5", "-o", str(out)])
    assert r.exit_code == 2 and "--max-files" in r.output
    assert not out.exists()


def test_a_protocol_without_its_audio_is_refused_before_any_output_folder(dataset, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    # the protocol alone, its audio left behind
    (moved / "protocol.csv").write_bytes((dataset / "protocol.csv").read_bytes())
    for args in ([str(moved)], [str(moved / "protocol.csv"), "--json"]):
        r = runner.invoke(app, ["data", "explore", *args])
        assert r.exit_code == 2, r.output
        assert "none of the 16 audio files to measure exists" in r.output and str(moved) in r.output
        assert not (moved / "explore").exists()


def test_a_missing_file_among_present_ones_is_listed_not_refused(tmp_path):
    rng = np.random.default_rng(2)
    write_wav(tmp_path / "b.wav", _utterance(rng, True, 1.0))
    write_wav(tmp_path / "s.wav", _utterance(rng, False, 1.0))
    rows = [Row("b.wav", "bonafide"), Row("s.wav", "spoof"), Row("gone.wav", "spoof")]
    write_protocol(tmp_path, rows)
    r = runner.invoke(app, ["data", "explore", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["n_measured"] == 2 and [u["problem"] for u in s["unreadable"]] == ["file not found"]


def test_an_invalid_protocol_leaves_no_output_folder(dataset, tmp_path):
    text = (dataset / "protocol.csv").read_text()
    (dataset / "protocol.csv").write_text(text.replace("spoof", "replay", 1))
    out = tmp_path / "e2"
    r = runner.invoke(app, ["data", "explore", str(dataset), "-o", str(out)])
    assert r.exit_code == 2 and "label 'replay' is not one of" in r.output
    assert not out.exists()


def test_missing_plot_libraries_are_named_before_any_output_folder(dataset, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on an install without the train extra
    out = tmp_path / "e3"
    r = runner.invoke(app, ["data", "explore", str(dataset), "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert "matplotlib missing" in r.output and "pip install 'wakeguard[train]'" in r.output
    assert not out.exists()


def test_explore_flags_files_too_short_to_score(tmp_path):
    """A 0.1 s file passes every other check but evaluate would refuse it: say so up front."""
    rng = np.random.default_rng(5)
    root = tmp_path / "ds"
    rows = []
    for i in range(4):
        write_wav(root / f"b{i}.wav", _utterance(rng, low=True))
        write_wav(root / f"p{i}.wav", _utterance(rng, low=False))
        rows += [Row(f"b{i}.wav", "bonafide", f"s{i}", "eval"), Row(f"p{i}.wav", "spoof", f"s{i}", "eval")]
    write_wav(root / "blip.wav", _utterance(rng, low=True, seconds=0.1))
    rows.append(Row("blip.wav", "bonafide", "s0", "eval"))
    write_protocol(root, rows)
    out = tmp_path / "explore"
    r = runner.invoke(app, ["data", "explore", str(root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = "\n".join(json.loads((out / "summary.json").read_text())["warnings"])
    assert "1 file(s) shorter than 0.3 s, which the scorer refuses" in text and "blip.wav" in text
