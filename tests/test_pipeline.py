"""`wakeguard pipeline`: every step end to end on a tiny simulated corpus; installing a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train import FAST
from typer.testing import CliRunner
from wakeguard.edge.bundle import BundleError, load_bundle
from wakeguard.tools.cli import app

runner = CliRunner()
ENSEMBLE = Path(__file__).resolve().parents[1] / "model" / "ensemble_2x64.toml"


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> tuple[Path, str]:
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("pipe") / "run"
    # the two-member ensemble of model/ensemble_2x64.toml, each member made tiny: the
    # single-network path is what every other training test runs
    fast = [o for o in FAST if not o.startswith(("train.epochs", "ensemble."))] + ["train.epochs=4"]
    args = [
        "pipeline",
        "--out",
        str(out),
        "--size",
        "tiny",
        "--workers",
        "1",
        "--config",
        str(ENSEMBLE),
    ]
    res = runner.invoke(app, [*args, *fast])
    return out, res.output if res.exit_code == 0 else f"exit {res.exit_code}: {res.output}"


@pytest.mark.slow
def test_pipeline_runs_every_step(pipeline_run: tuple[Path, str]) -> None:
    out, output = pipeline_run
    assert not output.startswith("exit"), output
    record = json.loads((out / "pipeline.json").read_text())
    assert [s["step"] for s in record["steps"]] == [
        "simulate",
        "explore",
        "baselines",
        "train",
        "quantize",
        "evaluate",
        "report",
    ]
    assert all(s["status"] == "ok" for s in record["steps"]), record["steps"]
    assert (out / "dataset" / "protocol.csv").is_file()
    members = ("blocks4", "bass")
    for name in (
        "config.json",
        "ensemble.json",
        *(
            f"members/{m}/{f}"
            for m in members
            for f in ("model.keras", "history.csv", "curves.png")
        ),
        *(f"members/{m}/quantize/utterance_logits.csv" for m in members),
        "quantize/variants.json",
        "quantize/int8_dev_scores.csv",
        "eval/scores.csv",
        "eval/metrics.json",
        "baselines/baselines.json",
        "report/index.html",
    ):
        assert (out / name).is_file(), name
    bundle = load_bundle(out / "bundle")
    assert [m.name for m in bundle.members] == list(members)
    assert bundle.members[1].frontend.n_fft == 2048 and bundle.members[0].frontend.block_frames == 4
    assert record["summary"]["ensemble"] == list(members)
    variants = json.loads((out / "quantize" / "variants.json").read_text())
    assert [v["variant"] for v in variants] == ["float32", "float16", "dynamic", "int8"]
    assert variants[-1]["bytes"] == bundle.total_model_bytes
    assert set(variants[-1]["members"]) == set(members)
    html = (out / "report" / "index.html").read_text()
    assert "member bass" in html and "Training curves of member blocks4" in html
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["n_bonafide"] > 0 and metrics["n_spoof"] > 0
    assert record["summary"]["eval_eer_int8_bundle"] == pytest.approx(metrics["eer"])
    # the command says where the report is
    assert "report:" in output and "index.html" in output.replace("\n", "")


@pytest.mark.slow
def test_install_bundle_copies_and_validates(
    pipeline_run: tuple[Path, str], tmp_path: Path
) -> None:
    from wakeguard.model.pipeline import install_bundle

    out, output = pipeline_run
    assert not output.startswith("exit"), output
    target = install_bundle(out / "bundle", tmp_path / "default")
    b = load_bundle(target)
    assert b.manifest["members"] == load_bundle(out / "bundle").manifest["members"]
    # each member keeps its Keras weights, so `train --init-from BUNDLE` can fine-tune it
    assert all((target / m.name / "model.keras").is_file() for m in b.members)


def test_install_refuses_a_broken_bundle(tmp_path: Path) -> None:
    from wakeguard.model.pipeline import install_bundle

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        install_bundle(tmp_path / "b", tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_unknown_step_to_skip_is_an_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["pipeline", "--out", str(tmp_path / "r"), "--skip", "nosuch"])
    assert res.exit_code == 2
    assert "unknown step" in res.output


def test_a_failed_step_is_reported_even_when_its_record_cannot_be_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import wakeguard.model.simulate as sim

    def disk_full(out: Path, **_: object) -> Path:
        raise OSError(errno.ENOSPC, f"cannot write {out / 'audio' / 'a.wav'}: disk full")

    monkeypatch.setattr(sim, "simulate", disk_full)
    out = tmp_path / "r"
    (out / "pipeline.json").mkdir(parents=True)  # the record cannot be written either
    res = runner.invoke(app, ["pipeline", "--out", str(out)])
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    # the step's own error first, naming its file; then the record's, naming its file
    assert "step 'simulate' failed: [Errno 28] cannot write" in text and "a.wav: disk full" in text
    assert f"record was not saved: [Errno 21] cannot write {out / 'pipeline.json'}" in text
    assert not list(out.glob("*.part*"))


def test_pipeline_on_an_existing_dataset_without_training_data_fails_clearly(
    tmp_path: Path,
) -> None:
    res = runner.invoke(
        app,
        [
            "pipeline",
            "--out",
            str(tmp_path / "r"),
            "--dataset",
            str(tmp_path / "missing"),
            "--skip",
            "explore",
            "--skip",
            "baselines",
        ],
    )
    assert res.exit_code == 1
    assert "no dataset" in res.output


def test_a_run_folder_holding_another_simulator_build_is_refused_then_rebuilt_with_overwrite(
    tmp_path: Path, shared_dir: Path
) -> None:
    """An older simulator's corpus in OUT/dataset (a run folder from before an upgrade) is
    named and refused, and ``--overwrite`` replaces it with this version's build."""
    from wakeguard.model.simulate import BUILD_VERSION

    out = tmp_path / "r"
    old = out / "dataset"
    old.mkdir(parents=True)
    (old / "build.json").write_text(json.dumps({"version": BUILD_VERSION - 1, "size": "tiny"}))
    (old / "protocol.csv").write_text("path,label\n")
    args = ["pipeline", "--out", str(out), "--size", "tiny", "--workers", "1"]
    args += [f"--skip={s}" for s in ("explore", "baselines", "train", "quantize", "evaluate", "report")]
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert f"version differs: {BUILD_VERSION - 1} there, {BUILD_VERSION} asked" in text
    assert "--overwrite" in text
    assert json.loads((old / "build.json").read_text())["version"] == BUILD_VERSION - 1
    res = runner.invoke(app, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads((old / "build.json").read_text())["version"] == BUILD_VERSION
    assert len((old / "protocol.csv").read_text().splitlines()) > 10
    record = json.loads((out / "pipeline.json").read_text())
    assert (record["steps"][0]["step"], record["steps"][0]["status"]) == ("simulate", "ok")


@pytest.mark.slow
def test_train_init_from_an_ensemble_bundle_fine_tunes_each_member(
    pipeline_run: tuple[Path, str], tmp_path: Path
) -> None:
    out, output = pipeline_run
    assert not output.startswith("exit"), output
    run = tmp_path / "ft"
    args = ["train", str(out / "dataset"), "--out", str(run), "--init-from", str(out / "bundle")]
    res = runner.invoke(app, [*args, "train.epochs=1", "train.threads=1", "--workers", "1"])
    assert res.exit_code == 0, res.output
    source = load_bundle(out / "bundle")
    for m in source.members:
        cfg = json.loads((run / "members" / m.name / "config.json").read_text())
        assert cfg["init_from"]["path"].endswith(f"bundle/{m.name}")
        assert cfg["frontend"] == m.frontend.to_dict() and cfg["train"]["epochs"] == 1
    # and the result quantises into an ensemble like the one it started from
    res = runner.invoke(app, ["quantize", str(run), "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert [m.name for m in load_bundle(run / "bundle").members] == [m.name for m in source.members]
