"""``wakeguard report`` on a small but complete run folder built from real artefacts, and on an empty one."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import make_replay_dataset
from typer.testing import CliRunner
from wakeguard.model.metrics import ScoreTable
from wakeguard.tools.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, shared_dir, tiny_bundle) -> Path:
    """RUN with config.json, eval/, baselines/, quantize/variants.json and bundle/, all produced by real code."""
    from wakeguard.edge.bundle import load_bundle
    from wakeguard.model.baselines import run_baselines
    from wakeguard.model.evaluate import evaluate, score_protocol
    from wakeguard.model.metrics import compute_eer

    root = tmp_path_factory.mktemp("report")
    ds = make_replay_dataset(root / "dataset", shared_dir, n_speakers=8, clips_per_speaker=2)
    (ds / "datacard.md").write_text(
        "# Data card: toy\n\n32 utterances of **fake** replays.\n\n## Counts\n\n| split | bonafide | spoof |\n|---|---|---|\n| train | 8 | 8 |\n\n- made by `make_replay_dataset`\n"
    )
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": str(ds)}))
    shutil.copytree(tiny_bundle, run / "bundle")
    evaluate(ds, bundle=run / "bundle", out=run / "eval", progress=False, n_boot=100)
    run_baselines(ds, run / "baselines", n_boot=100, n_components=8)
    # Only the int8 model exists for the tiny bundle: its variants entry is measured through
    # the same scorer path; float32 is deliberately absent so the report must say so.
    variants = []
    for split in ("dev", "eval"):
        sr = score_protocol(ds, bundle=run / "bundle", split=split)
        b = [r["score"] for r in sr.rows if r["label"] == "bonafide"]
        s = [r["score"] for r in sr.rows if r["label"] == "spoof"]
        variants.append(compute_eer(b, s)[0])
    size = len(load_bundle(run / "bundle").model_bytes)
    (run / "quantize").mkdir()
    (run / "quantize" / "variants.json").write_text(
        json.dumps(
            [
                {
                    "variant": "int8",
                    "bytes": size,
                    "eer_dev": variants[0],
                    "eer_eval": variants[1],
                    "latency_ms": sr.latency_summary()["median"],
                }
            ]
        )
    )
    return run


def test_report_of_a_complete_run(run_folder):
    res = runner.invoke(app, ["report", str(run_folder)])
    assert res.exit_code == 0, res.output
    index = run_folder / "report" / "index.html"
    doc = index.read_text()
    for heading in (
        "The task",
        "The data",
        "DET",
        "Detector beside the baselines",
        "Float vs int8",
        "Model size and latency",
        "What the numbers mean",
        "Limits",
    ):
        assert heading in doc, heading
    # What the bundle scores: this test bundle has no trim policy, so whole recordings.
    assert "<td>what is scored</td><td>the whole recording</td>" in doc
    # Data card rendered from Markdown, baselines in the table, measured metrics shown.
    assert "<b>fake</b>" in doc and "<table class='card'>" in doc
    # On screen the card scrolls in its box; on paper (print, save as PDF) it is whole.
    assert "@media print{.datacard{max-height:none;overflow:visible}" in doc
    # Collapsed sections (the per-condition table) print open, by CSS where the browser
    # has ::details-content and by a beforeprint handler elsewhere.
    assert "<details>" in doc and "details::details-content{content-visibility:visible" in doc
    assert 'addEventListener("beforeprint"' in doc
    for name in ("void", "lfcc_gmm", "chance", "majority"):
        assert f">{name}<" in doc
    metrics = json.loads((run_folder / "eval" / "metrics.json").read_text())
    assert f"{100 * metrics['eer']:.2f}%" in doc
    # Figures: written next to the report and embedded, valid PNGs.
    for png in ("det.png", "histogram.png", "conditions.png"):
        data = (run_folder / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(data).decode()[:200] in doc
    # What is absent is named, not silently skipped.
    assert "curves.png" in doc and "float32" in doc
    # The test split names its rooms: the crossed interval and the rooms' limits, from data.
    rooms = metrics["per_condition"]["room"]
    assert metrics["ci_rooms"]["n_units_room"] == len(rooms) == 2
    assert "resampling the 2 rooms too" in doc and "heard in 2 rooms" in doc
    lo = min(v["eer"] for v in rooms.values())
    assert f"ranged from {100 * lo:.2f}%" in doc


def test_report_of_an_empty_run_degrades(tmp_path):
    """A run with only config.json (not yet quantised or evaluated) gets a partial report."""
    run = tmp_path / "empty"
    run.mkdir()
    (run / "config.json").write_text("{}")
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = out.read_text()
    assert (
        "Not available" in doc and "eval/metrics.json" in doc and "baselines/baselines.json" in doc
    )
    assert "Limits" in doc and "What the numbers mean" in doc
    res = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "run folder not found" in res.output


def _table(bonafide: np.ndarray, spoof: np.ndarray) -> ScoreTable:
    rows = [{"label": "bonafide", "score": float(x)} for x in bonafide]
    rows += [{"label": "spoof", "score": float(x)} for x in spoof]
    return ScoreTable(rows, [])


def test_det_leaves_out_curves_outside_its_range_and_says_so():
    """Chance and majority lie at the 50 % corner, outside the plot of a good detector:
    they are neither drawn nor listed in the legend, but named with their EER."""
    from wakeguard.model.report import DETECTOR, det_figure

    rng = np.random.default_rng(0)
    n = 2000
    systems = {
        DETECTOR: _table(rng.normal(2.5, 1, n), rng.normal(-2.5, 1, n)),
        "chance": _table(rng.uniform(size=n), rng.uniform(size=n)),
        "majority": _table(np.ones(n), np.ones(n)),
    }
    plot = det_figure(systems)
    assert plot.png[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.drawn == [DETECTOR, "EER line"]
    assert set(plot.off_plot) == {"chance", "majority"}
    assert all(abs(e - 0.5) < 0.05 for e in plot.off_plot.values())
    caption = plot.caption("DET curve")
    assert "Not drawn: chance (EER " in caption and "majority (EER 50.0%)" in caption
    # A weak system widens the range past 50 %: chance now crosses the plot and is drawn;
    # majority (two corner points) never is.
    systems["weak"] = _table(rng.normal(0.3, 1, n), rng.normal(-0.3, 1, n))
    plot = det_figure(systems)
    assert plot.drawn == [DETECTOR, "chance", "weak", "EER line"]
    assert list(plot.off_plot) == ["majority"]
    assert plot.caption("DET curve").count("Not drawn") == 1


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    notarun = tmp_path / "notarun"
    notarun.mkdir()
    (notarun / "x.txt").write_text("x")
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(notarun), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert "not a run folder (no config.json)" in res.output
    assert not out.exists()


@pytest.mark.parametrize(
    "corrupt", ["config.json", "train_summary.json", "quantize/variants.json", "eval/metrics.json"]
)
def test_report_names_a_corrupt_json_input(tmp_path, corrupt):
    run = tmp_path / "run"
    (run / "quantize").mkdir(parents=True)
    (run / "eval").mkdir()
    (run / "config.json").write_text("{}")
    (run / corrupt).write_text('{"a": 1,\n bad')
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(run), "-o", str(out)])
    if corrupt == "train_summary.json":  # not an input of the report: ignored
        assert res.exit_code == 0, res.output
        return
    assert res.exit_code == 2, res.output
    assert corrupt.split("/")[-1] in res.output and "not valid JSON (line 2, column 2" in res.output
    assert not out.exists() and not list(out.parent.glob("r.*part*"))


def test_report_refuses_a_folder_as_output_and_leaves_no_part(tmp_path, monkeypatch):
    from wakeguard.model import report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    existing = tmp_path / "existingdir"
    existing.mkdir()
    res = runner.invoke(app, ["report", str(run), "-o", str(existing)])
    assert res.exit_code == 2, res.output
    assert "existingdir is a folder; give the HTML file to write" in res.output
    assert not list(tmp_path.glob("*.part*"))
    # Any failure while writing removes the .part file.
    out = tmp_path / "r.html"

    def boom(self, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.Path, "replace", boom)
    with pytest.raises(OSError, match="cannot write .*r.html: No space left on device"):
        report.build_report(run, out)
    assert not list(tmp_path.glob("*.part*")) and not out.exists()


def test_a_report_elsewhere_overwrites_nothing_of_the_users(run_folder, tmp_path):
    """--out in a folder of the user's: a file that is not HTML is refused, not replaced, and
    the figures go to STEM_figures/, not over the user's own det.png."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "take.wav").write_bytes(b"RIFF-not-really")
    (mine / "det.png").write_bytes(b"my own plot")
    res = runner.invoke(app, ["report", str(run_folder), "-o", str(mine / "take.wav")])
    assert res.exit_code == 2 and "take.wav exists and is not an HTML file" in res.output
    res = runner.invoke(app, ["report", str(run_folder), "-o", str(mine / "summary")])
    assert res.exit_code == 2 and "summary does not end in .html" in res.output
    res = runner.invoke(app, ["report", str(run_folder), "-o", str(mine / "summary.html")])
    assert res.exit_code == 0, res.output
    assert (mine / "take.wav").read_bytes() == b"RIFF-not-really"
    assert (mine / "det.png").read_bytes() == b"my own plot"
    assert (mine / "summary_figures" / "det.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in mine.iterdir()) == [
        "det.png",
        "summary.html",
        "summary_figures",
        "take.wav",
    ]


def test_the_input_row_describes_frames_or_blocks_as_the_front_end_has_them() -> None:
    from wakeguard.model.report import _input_row

    base = {"sample_rate": 16000, "n_fft": 1024, "hop_length": 500, "block_frames": 8}
    base |= {"window_seconds": 2.0, "window_hop_seconds": 1.0}
    frames = _input_row({"frontend": {**base, "kind": "logspec"}, "input_shape": [63, 513]})
    assert "frames every 31.2 ms" in frames and "blocks" not in frames
    assert "15.6 Hz bins" in frames and "[63, 513]" in frames
    blocks = _input_row({"frontend": {**base, "kind": "spectral_power"}, "input_shape": [7, 513]})
    assert "blocks of 0.25 s" in blocks and "frames every" not in blocks
