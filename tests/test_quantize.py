"""`wakeguard quantize`: four TFLite variants through the edge runtime, the int8 bundle, parity with Keras."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from test_train import FAST, dead_copy, make_dataset
from typer.testing import CliRunner
from wakeguard.edge.audio import load_audio
from wakeguard.edge.bundle import decision_digest, load_bundle
from wakeguard.edge.frontend import compute_features
from wakeguard.edge.protocol import read_protocol
from wakeguard.edge.scorer import Scorer, TFLiteModel
from wakeguard.tools.cli import app

runner = CliRunner()

PARITY_MAX = 0.15
PARITY_MEDIAN = 0.03
"""Allowed |int8 logit - Keras logit| per utterance, as shares of the Keras logits' range on
dev+eval: at most 15 % for the worst utterance and 3 % for the median one.

int8 weights and activations (per-channel weight scales, 256 activation levels) moved the
median logit by about 1 % of that range on these test models and the worst by up to 10 %
(the tiny test network has few channels to average the rounding out); a broken conversion
(wrong input scale, a float op left behind, a mis-ordered axis) is far outside both.
"""


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    pytest.importorskip("tensorflow")
    ds = make_dataset(tmp_path_factory.mktemp("qds"), shared_dir)
    run = tmp_path_factory.mktemp("qruns") / "r"
    # One framing: with four (the default) this tiny network, drawing a new framing of its
    # 16 clips every batch, has not learned them in 4 epochs (dev+eval logits within 0.5 of
    # each other, against 2.3 with one), too short a yardstick for the parity tolerances,
    # which are shares of that range.
    fast = [o for o in FAST if not o.startswith("train.epochs")]
    fast += ["train.epochs=4", "train.frame_offsets=1"]
    res = runner.invoke(app, ["train", str(ds), "--out", str(run), "--workers", "1", *fast])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["quantize", str(run), "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    # --json is one parseable object: the converter's own prints go to stderr.
    assert [v["variant"] for v in json.loads(res.stdout)["variants"]][-1] == "int8"
    return run


def test_variants_are_written_and_scored(quantized_run: Path) -> None:
    q = quantized_run / "quantize"
    variants = json.loads((q / "variants.json").read_text())
    assert [v["variant"] for v in variants] == ["float32", "float16", "dynamic", "int8"]
    for v in variants:
        assert (q / f"{v['variant']}.tflite").stat().st_size == v["bytes"]
        assert 0.0 <= v["eer_dev"] <= 1.0 and 0.0 <= v["eer_eval"] <= 1.0
        assert v["latency_ms"] > 0
    sizes = {v["variant"]: v["bytes"] for v in variants}
    assert sizes["int8"] < sizes["float32"]


def test_int8_model_is_integer_end_to_end(quantized_run: Path) -> None:
    m = TFLiteModel((quantized_run / "quantize" / "int8.tflite").read_bytes())
    assert m.input_dtype == np.int8
    assert m.interpreter.get_output_details()[0]["dtype"] == np.int8
    # no float32 tensors between input and output: every op ran in int8
    details = m.interpreter.get_tensor_details()
    float_acts = [
        d["name"]
        for d in details
        if d["dtype"] == np.float32 and len(d["shape"]) > 1 and d["shape"][0] == 1
    ]
    assert not float_acts, float_acts


def test_bundle_manifest_is_complete(quantized_run: Path) -> None:
    b = load_bundle(quantized_run / "bundle")
    m = b.manifest
    assert set(b.thresholds) == {"eer", "bpcer_1pct", "bpcer_5pct"}
    assert b.thresholds["bpcer_1pct"] <= b.thresholds["bpcer_5pct"]
    assert b.calibration.scale > 0
    for key in (
        "version",
        "created",
        "metrics",
        "data_fingerprint",
        "calibration_scores",
        "training",
    ):
        assert key in m, key
    assert {"dev", "eval"} <= set(m["metrics"])
    assert {"eer", "apcer", "bpcer", "apcer_at_bpcer_1pct", "per_condition"} <= set(
        m["metrics"]["dev"]
    )
    assert set(b.calibration_scores) == {"bonafide", "spoof"}
    assert len(b.calibration_scores["bonafide"]) == 4  # all dev bona fide (fewer than the cap)
    fp = json.loads((quantized_run / "data_fingerprint.json").read_text())
    assert m["data_fingerprint"]["sha256"] == fp["sha256"]
    assert (quantized_run / "bundle" / "model.keras").is_file()  # for train --init-from BUNDLE
    # DATE-DATA-MODEL-DECISION: the same network recalibrated is a new version
    day, data, model, decision = m["version"].split("-")
    assert day == m["created"][:10].replace("-", "") and data == fp["sha256"][:8]
    assert model == m["model_sha256"][:8]
    assert decision == decision_digest(b.calibration, b.thresholds, b.trim)[:8]
    # calibrated on trimmed recordings (the default), so format 3: older runtimes refuse it
    assert b.trim == "speech" and m["format_version"] == 3


def test_bundle_scores_through_the_edge_scorer(quantized_run: Path) -> None:
    cfg = json.loads((quantized_run / "config.json").read_text())
    proto = read_protocol(cfg["dataset"])
    scorer = Scorer.from_bundle(quantized_run / "bundle")
    rows = proto.where(split="dev")
    dev_scores = json.loads((quantized_run / "bundle" / "manifest.json").read_text())[
        "calibration_scores"
    ]
    got = sorted(round(scorer.score(load_audio(r.audio_path(proto.root))).score, 3) for r in rows)
    want = sorted(round(v, 3) for v in dev_scores["bonafide"] + dev_scores["spoof"])
    # the bundle's stored dev scores are exactly what the runtime computes from the audio
    assert np.allclose(got, want, atol=2e-3)


def test_parity_numpy_frontend_int8_tflite_vs_keras(quantized_run: Path) -> None:
    """Same audio: numpy front-end + int8 TFLite (the Pi path) against the Keras model."""
    import keras

    cfg = json.loads((quantized_run / "config.json").read_text())
    proto = read_protocol(cfg["dataset"])
    bundle = load_bundle(quantized_run / "bundle")
    scorer = Scorer.from_bundle(bundle)
    model = keras.models.load_model(quantized_run / "model.keras", compile=False)
    k_logits, t_logits = [], []
    for r in proto.where(split="dev") + proto.where(split="eval"):
        audio = load_audio(r.audio_path(proto.root))
        t_logits.append(scorer.raw_logit(audio)[0])
        feats = compute_features(audio, bundle.frontend)
        k_logits.append(float(np.mean(np.asarray(model(feats, training=False)))))
    k, t = np.array(k_logits), np.array(t_logits)
    spread = k.max() - k.min()
    assert spread > 0
    diff = np.abs(t - k)
    assert np.max(diff) <= PARITY_MAX * spread, (np.max(diff), spread)
    assert np.median(diff) <= PARITY_MEDIAN * spread, (np.median(diff), spread)
    assert np.corrcoef(k, t)[0, 1] > 0.99


def test_quantize_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    res = runner.invoke(app, ["quantize", str(tmp_path)])
    assert res.exit_code == 2
    assert "not a training run folder" in res.output


def test_quantize_refuses_unconfirmed_dev_or_eval_labels(
    quantized_run: Path, tmp_path: Path
) -> None:
    """dev labels set the calibration and thresholds and eval labels the reported EER, so a
    model's own verdicts (``label_confirmed=no``) there are refused, naming the file; the
    run's bundle is left as it was."""
    from wakeguard.edge.protocol import LABEL_CONFIRMED, write_protocol

    ds = Path(json.loads((quantized_run / "config.json").read_text())["dataset"])
    rows = list(read_protocol(ds).rows)
    for r in rows:
        r.path = str(r.audio_path(ds))
        r.conditions[LABEL_CONFIRMED] = "no" if r.split == "dev" else ""
    csv_path = write_protocol(tmp_path, rows)
    manifest = (quantized_run / "bundle" / "manifest.json").read_bytes()
    res = runner.invoke(app, ["quantize", str(quantized_run), "--dataset", str(tmp_path)])
    assert res.exit_code == 2
    n_dev = sum(r.split == "dev" for r in rows)
    n_dev_eval = sum(r.split in ("dev", "eval") for r in rows)
    assert f"{csv_path}: {n_dev} of the {n_dev_eval} rows" in res.output
    assert (quantized_run / "bundle" / "manifest.json").read_bytes() == manifest


def test_train_init_from_a_bundle_fine_tunes_its_weights(
    quantized_run: Path, tmp_path: Path
) -> None:
    """The maintenance loop: a shipped bundle keeps its float weights, so it can be fine-tuned."""
    dataset = json.loads((quantized_run / "config.json").read_text())["dataset"]
    run = tmp_path / "ft"
    args = ["train", dataset, "--out", str(run), "--init-from", str(quantized_run / "bundle")]
    res = runner.invoke(app, [*args, "train.epochs=1", "train.threads=1", "--workers", "1"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["init_from"]["kind"] == "bundle"
    # the bundle's front-end and network are kept, whatever the default config says
    bundle_cfg = json.loads((quantized_run / "config.json").read_text())
    assert cfg["frontend"] == bundle_cfg["frontend"] and cfg["model"] == bundle_cfg["model"]
    # the fine-tuned run quantises into the next bundle (its config.json records init_from)
    res = runner.invoke(app, ["quantize", str(run), "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert (
        load_bundle(run / "bundle").manifest["training"]["config"]["init_from"]["kind"] == "bundle"
    )


def test_quantize_fuses_several_runs_into_an_ensemble(quantized_run: Path, tmp_path: Path) -> None:
    """Two copies of one run: the fused ensemble ranks utterances exactly as the run does.
    (The same folder twice is refused: a copy is what two identical networks look like.)"""
    out = tmp_path / "ens"
    twin = tmp_path / "copy" / quantized_run.name
    shutil.copytree(quantized_run, twin)
    res = runner.invoke(
        app, ["quantize", str(quantized_run), str(twin), "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    b = load_bundle(out / "bundle")
    assert [m.name for m in b.members] == ["r", "r-2"]
    assert b.members[0].calibration == load_bundle(quantized_run / "bundle").calibration
    single = {
        v["variant"]: v
        for v in json.loads((quantized_run / "quantize" / "variants.json").read_text())
    }
    for v in json.loads(res.stdout)["variants"]:
        assert v["eer_dev"] == pytest.approx(single[v["variant"]]["eer_dev"])
        assert v["bytes"] == 2 * single[v["variant"]]["bytes"]
    record = json.loads((out / "ensemble.json").read_text())
    assert [m["name"] for m in record["members"]] == ["r", "r-2"]
    # the fused dev scores are what the bundle's own scorer gives from the audio
    proto = read_protocol(json.loads((quantized_run / "config.json").read_text())["dataset"])
    row = proto.where(split="dev")[0]
    scorer = Scorer.from_bundle(b, num_threads=1)
    got = scorer.score(load_audio(row.audio_path(proto.root))).score
    with (out / "quantize" / "int8_dev_scores.csv").open() as f:
        import csv

        want = next(float(r["score"]) for r in csv.DictReader(f) if r["path"] == row.path)
    assert got == pytest.approx(want, abs=1e-6)


def test_quantize_several_runs_needs_out(quantized_run: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["quantize", str(quantized_run), str(quantized_run)])
    assert res.exit_code == 2 and "give --out" in res.stderr and not res.stdout
    res = runner.invoke(app, ["quantize", str(quantized_run), "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "one run writes" in res.stderr and not res.stdout


def test_a_manifest_path_under_the_working_directory_is_written_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wakeguard.model.quantize import portable_path

    monkeypatch.chdir(tmp_path)
    assert portable_path(str(tmp_path / "runs" / "p" / "dataset")) == "runs/p/dataset"
    assert portable_path("runs/p/dataset") == "runs/p/dataset"
    elsewhere = str(tmp_path.parent / "other" / "dataset")
    assert portable_path(elsewhere) == elsewhere
    assert portable_path(None) is None


def _fake_run(root: Path, labels: dict[str, list[str]]) -> tuple[Path, Path]:
    """A run folder whose checks can run without a trained model: config.json, a
    placeholder model.keras and a protocol with the given labels per split."""
    from wakeguard.edge.protocol import Row, write_protocol

    ds = root / "ds"
    rows = [
        Row(path=f"audio/{split}/{i}.wav", label=label, speaker=f"s{i}", split=split)
        for split, ls in labels.items()
        for i, label in enumerate(ls)
    ]
    write_protocol(ds, rows)
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": str(ds)}))
    (run / "model.keras").write_bytes(b"placeholder")
    return run, ds


@pytest.mark.parametrize("corrupt", ["config.json", "train_summary.json", "data_fingerprint.json"])
def test_quantize_names_a_corrupt_json_file(tmp_path: Path, corrupt: str) -> None:
    pytest.importorskip("tensorflow")
    run, _ = _fake_run(tmp_path, {"dev": ["bonafide", "spoof"], "train": ["bonafide", "spoof"]})
    (run / corrupt).write_text('{"a": 1,\n bad')
    res = runner.invoke(app, ["quantize", str(run)])
    assert res.exit_code == 2, res.output
    assert f"{corrupt}: not valid JSON (line 2, column 2" in res.output
    assert not (run / "quantize").exists()


@pytest.mark.parametrize("split", ["dev", "eval"])
def test_quantize_needs_both_labels_on_dev_and_eval_before_writing(
    tmp_path: Path, split: str
) -> None:
    pytest.importorskip("tensorflow")
    labels = {"train": ["bonafide", "spoof"], "dev": ["bonafide", "spoof"]}
    labels["eval"] = ["bonafide", "spoof"]
    labels[split] = ["bonafide"] * 4
    run, ds = _fake_run(tmp_path, labels)
    res = runner.invoke(app, ["quantize", str(run), "--dataset", str(ds)])
    assert res.exit_code == 2, res.output
    assert f"{ds}: the {split} split needs both labels" in res.output
    assert "4 bonafide and 0 spoof" in res.output
    assert not (run / "quantize").exists() and not (run / "bundle").exists()


def test_quantize_refuses_the_same_run_twice_in_an_ensemble(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    run, _ = _fake_run(tmp_path, {"dev": ["bonafide", "spoof"]})
    out = tmp_path / "ens"
    res = runner.invoke(app, ["quantize", str(run), str(tmp_path / "." / "run"), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert "the same run is listed twice" in res.output
    assert not out.exists()


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_quantize_that_fails_after_converting_keeps_the_previous_outputs(
    quantized_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion the runtime refuses fails naming the model and the problem, and leaves
    ``quantize/`` and ``bundle/`` as they were, with no half-written folder beside them."""
    import wakeguard.model.quantize as q

    before = _tree(quantized_run)
    monkeypatch.setattr(q, "convert", lambda model, variant, representative=None: b"not tflite")
    res = runner.invoke(app, ["quantize", str(quantized_run), "--workers", "1"])
    assert res.exit_code == 2, res.output
    assert _tree(quantized_run) == before
    assert not [p.name for p in quantized_run.iterdir() if ".part" in p.name]
    assert f"{quantized_run / 'model.keras'}: the float32 conversion" in res.output
    assert "not a valid TFLite model" in res.output


def test_quantize_refuses_a_network_that_collapsed_in_training(
    quantized_run: Path, tmp_path: Path
) -> None:
    """A run whose network gives every window the same logit (dead ReLUs) is refused with
    the model file and the cause, before anything is converted (the runtime's own failure
    on such a model was an XNNPACK "failed to prepare" traceback)."""
    run = dead_copy(quantized_run, tmp_path / "dead")
    before = _tree(run)
    res = runner.invoke(app, ["quantize", str(run), "--workers", "1"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"{run / 'model.keras'}: the network gives every dev window the same logit" in text
    assert "It collapsed in training: train it again" in text
    assert _tree(run) == before


def test_a_disk_that_fills_while_the_bundle_is_written_keeps_the_previous_bundle(
    quantized_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model file is written, then the disk is full: the run keeps its previous bundle
    whole (not a new model under an old manifest) and its previous ``quantize/``."""
    import wakeguard.model.quantize as q

    before = _tree(quantized_run)
    real_write_bundle = q.write_bundle

    def fill_disk(folder: Path, model_bytes: bytes, *args: object, **kwargs: object) -> Path:
        real_write_bundle(folder, model_bytes, *args, **kwargs)
        raise OSError(28, "No space left on device", str(Path(folder) / "manifest.json"))

    monkeypatch.setattr(q, "write_bundle", fill_disk)
    res = runner.invoke(app, ["quantize", str(quantized_run), "--workers", "1"])
    assert res.exit_code != 0
    assert _tree(quantized_run) == before
    assert not [p.name for p in quantized_run.iterdir() if ".part" in p.name]


def test_staged_folder_replaces_the_folder_only_when_the_block_succeeds(tmp_path: Path) -> None:
    from wakeguard.model.quantize import staged_folder

    target = tmp_path / "quantize"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(target) as stage:
        (stage / "new.txt").write_text("new")
        raise RuntimeError("evaluation failed")
    assert _tree(target) == {"old.txt": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quantize"]
    with staged_folder(target) as stage:
        (stage / "new.txt").write_text("new")
        assert _tree(target) == {"old.txt": b"old"}  # untouched until the block succeeds
    assert _tree(target) == {"new.txt": b"new"}  # a stale file does not outlive its run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quantize"]
    with staged_folder(tmp_path / "fresh") as stage:
        (stage / "a.txt").write_text("a")
    assert _tree(tmp_path / "fresh") == {"a.txt": b"a"}
    (tmp_path / "in-the-way").write_text("a file")
    with pytest.raises(ValueError, match="in-the-way: a file of that name"):
        with staged_folder(tmp_path / "in-the-way"):
            pass
    assert (tmp_path / "in-the-way").read_text() == "a file"


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_staged_folder_recovers_what_a_killed_run_left(tmp_path: Path) -> None:
    from wakeguard.model.quantize import staged_folder

    target = tmp_path / "quantize"
    # killed between moving the old folder aside and moving the new one in
    cut = tmp_path / "quantize.part-killed"
    (cut / "replaced").mkdir(parents=True)
    (cut / "replaced" / "old.txt").write_text("old")
    (cut / "quantize").mkdir()
    (cut / "pid").write_text(str(_dead_pid()))
    # a stage of a process that still runs, and one from before stages had a pid file
    running = tmp_path / "quantize.part-running"
    running.mkdir()
    (running / "pid").write_text(str(os.getppid()))
    unknown = tmp_path / "quantize.part-unknown"
    unknown.mkdir()
    said: list[str] = []
    with staged_folder(target, said.append) as stage:
        assert _tree(target) == {"old.txt": b"old"}  # given back before the new run starts
        (stage / "new.txt").write_text("new")
    assert _tree(target) == {"new.txt": b"new"}
    assert said and "restored the previous outputs from quantize.part-killed" in said[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "quantize",
        "quantize.part-running",
        "quantize.part-unknown",
    ]


def test_staged_folder_drops_a_killed_stage_when_the_folder_is_in_place(tmp_path: Path) -> None:
    from wakeguard.model.quantize import staged_folder

    target = tmp_path / "bundle"
    target.mkdir()
    (target / "model.tflite").write_bytes(b"current")
    left = tmp_path / "bundle.part-left"
    (left / "bundle").mkdir(parents=True)
    (left / "bundle" / "model.tflite").write_bytes(b"half-written")
    (left / "pid").write_text(str(_dead_pid()))
    said: list[str] = []
    with pytest.raises(RuntimeError), staged_folder(target, said.append):
        raise RuntimeError("conversion failed")
    assert _tree(target) == {"model.tflite": b"current"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert said == []


def test_quantize_names_a_model_file_keras_cannot_load(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    run, ds = _fake_run(tmp_path, {"dev": ["bonafide", "spoof"], "train": ["bonafide", "spoof"]})
    res = runner.invoke(app, ["quantize", str(run), "--dataset", str(ds)])
    assert res.exit_code == 2, res.output
    assert f"{run / 'model.keras'}: not a loadable Keras model" in res.output
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.keras"]


def test_an_ensemble_on_one_label_fails_before_writing_its_folder(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    run, ds = _fake_run(tmp_path, {"train": ["bonafide", "spoof"], "dev": ["bonafide"] * 3})
    shutil.copytree(run, tmp_path / "run2")
    out = tmp_path / "new" / "ens"
    res = runner.invoke(app, ["quantize", str(run), str(tmp_path / "run2"), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert f"{ds}: the dev split needs both labels" in res.output
    assert not (tmp_path / "new").exists()


def test_an_ensemble_that_fails_later_restores_its_existing_folder(tmp_path: Path) -> None:
    """A failure after OUT was written to (here: a member's model cannot be loaded) removes
    what the command added to OUT and puts back what it overwrote; the rest is kept."""
    pytest.importorskip("tensorflow")
    run, ds = _fake_run(tmp_path, {"train": ["bonafide", "spoof"], "dev": ["bonafide", "spoof"]})
    shutil.copytree(run, tmp_path / "run2")
    out = tmp_path / "ens"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text('{"old": true}\n')
    res = runner.invoke(app, ["quantize", str(run), str(tmp_path / "run2"), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert _tree(out) == {"notes.txt": b"mine", "config.json": b'{"old": true}\n'}
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]
    assert "model.keras: not a loadable Keras model" in res.output


def test_a_one_class_head_trains_resumes_and_quantizes_to_int8(
    shared_dir: Path, tmp_path: Path
) -> None:
    """OC-softmax's scaled cosine survives --resume and full-int8 conversion: an
    L2_NORMALIZATION in int8, scores close to the Keras model's."""
    pytest.importorskip("tensorflow")
    import keras

    ds = make_dataset(tmp_path / "ds", shared_dir)
    run = tmp_path / "oc"
    fast = [o for o in FAST if not o.startswith(("train.epochs", "model.head_units"))]
    oc = [*fast, "model.head_units=8", "model.score_head=one_class"]
    args = ["train", str(ds), "--out", str(run), "--workers", "1", *oc]
    res = runner.invoke(app, [*args, "train.epochs=3"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "train.epochs=6", "train.patience=6", "--resume"])
    assert res.exit_code == 0, res.output
    assert "resuming after epoch 3" in res.output
    epochs = (run / "history.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in epochs] == ["1", "2", "3", "4", "5", "6"]
    res = runner.invoke(app, ["quantize", str(run), "--workers", "1"])
    assert res.exit_code == 0, res.output

    m = TFLiteModel((run / "quantize" / "int8.tflite").read_bytes())
    ops = {o["op_name"] for o in m.interpreter._get_ops_details()}
    assert "L2_NORMALIZATION" in ops
    assert m.interpreter.get_output_details()[0]["dtype"] == np.int8
    bundle = load_bundle(run / "bundle")
    scorer = Scorer.from_bundle(bundle)
    model = keras.models.load_model(run / "model.keras", compile=False)
    proto = read_protocol(ds)
    k, t = [], []
    for r in proto.where(split="dev") + proto.where(split="eval"):
        audio = load_audio(r.audio_path(proto.root))
        t.append(scorer.raw_logit(audio)[0])
        k.append(float(np.mean(np.asarray(model(compute_features(audio, bundle.frontend))))))
    k_arr, t_arr = np.array(k), np.array(t)
    assert np.ptp(k_arr) > 0 and np.all(np.abs(k_arr) <= 20.0 + 1e-3)  # 20 x a cosine
    # The tiny network's cosines stay within a few hundredths of each other after six
    # epochs, so the bound is on the cosine itself: int8 L2_NORMALIZATION writes each unit
    # component in steps of 1/128, which moved a cosine by at most 0.008 here; a wrong
    # scale or a float op left behind moves it by tenths.
    cos_diff = np.abs(t_arr - k_arr) / 20.0
    assert np.max(cos_diff) <= 0.02 and np.median(cos_diff) <= 0.01, cos_diff
