"""Ensemble bundles: format, loader refusals, fused scoring, install, config and fusing runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_bundle
from wakeguard.edge.audio import load_audio
from wakeguard.edge.bundle import (
    FORMAT_VERSION,
    BundleError,
    Calibration,
    load_bundle,
    write_ensemble_bundle,
)
from wakeguard.edge.frontend import FrontendParams
from wakeguard.edge.scorer import Scorer

BASS = FrontendParams(n_fft=2048, frame_length=2048, octave_pool_hz=2000.0, block_frames=4)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two single-network bundles with different front-ends and member calibrations."""
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("members")
    return {
        "plain": build_tiny_bundle(root / "plain", seed=1, calibration=Calibration(0.5, 1.0)),
        "bass": build_tiny_bundle(
            root / "bass", seed=2, params=BASS, calibration=Calibration(2.0, -0.5)
        ),
    }


def _ensemble(members: dict[str, Path], folder: Path) -> Path:
    return write_ensemble_bundle(
        folder,
        [(name, load_bundle(p)) for name, p in members.items()],
        thresholds={"eer": 0.1, "bpcer_1pct": -2.0, "bpcer_5pct": -1.0},
        calibration=Calibration(1.5, 0.25),
        extra={"version": "test-ensemble"},
    )


def test_ensemble_bundle_round_trip(members: dict[str, Path], tmp_path: Path) -> None:
    b = load_bundle(_ensemble(members, tmp_path / "ens"))
    assert b.is_ensemble and [m.name for m in b.members] == ["plain", "bass"]
    assert b.manifest["format_version"] == 2
    assert b.members[1].frontend == BASS and b.frontend == FrontendParams()
    assert b.members[0].calibration == Calibration(0.5, 1.0)
    assert b.calibration == Calibration(1.5, 0.25) and b.threshold() == pytest.approx(0.1)
    sizes = [len(load_bundle(p).model_bytes) for p in members.values()]
    assert b.total_model_bytes == sum(sizes) == b.manifest["model_bytes"]
    with pytest.raises(BundleError, match="no single model file"):
        b.model_bytes  # noqa: B018
    # each member folder is a complete bundle of its own
    assert load_bundle(tmp_path / "ens" / "bass").frontend == BASS
    # a single-network bundle stays format 1, which older runtimes read
    assert load_bundle(members["plain"]).manifest["format_version"] == 1


def test_ensemble_score_is_the_calibrated_mean_of_member_scores(
    members: dict[str, Path], tmp_path: Path, speech_file: Path
) -> None:
    ens = Scorer.from_bundle(_ensemble(members, tmp_path / "ens"), num_threads=1)
    alone = [Scorer.from_bundle(p, num_threads=1) for p in members.values()]
    audio = load_audio(speech_file)
    each = [s.score(audio).score for s in alone]  # member calibration applied by its own bundle
    got = ens.score(audio)
    assert got.score == pytest.approx(1.5 * np.mean(each) + 0.25, rel=1e-6)
    assert got.verdict == ("bonafide" if got.score >= 0.1 else "spoof")
    feats = ens.member_features(audio)
    assert [f.shape[1:] for f in feats] == [s.model.input_shape[1:] for s in alone]
    assert ens.fused_logit(feats) == pytest.approx(np.mean(each), rel=1e-6)


def test_ensemble_loader_refuses_tampered_swapped_or_escaping_members(
    members: dict[str, Path], tmp_path: Path
) -> None:
    good = _ensemble(members, tmp_path / "good")

    bad = tmp_path / "corrupt"
    shutil.copytree(good, bad)
    data = bytearray((bad / "bass" / "model.tflite").read_bytes())
    data[-10] ^= 0xFF
    (bad / "bass" / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="member 'bass'.*corrupt"):
        load_bundle(bad)

    swapped = tmp_path / "swapped"
    shutil.copytree(good, swapped)
    shutil.rmtree(swapped / "bass")
    shutil.copytree(members["plain"], swapped / "bass")  # a valid bundle, but not the one built in
    with pytest.raises(BundleError, match="not the one this ensemble was built with"):
        load_bundle(swapped)

    escaping = tmp_path / "escaping"
    shutil.copytree(good, escaping)
    m = json.loads((escaping / "manifest.json").read_text())
    m["members"][0]["path"] = "../good/plain"
    (escaping / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="not a subfolder"):
        load_bundle(escaping)

    newer = tmp_path / "newer"
    shutil.copytree(good, newer)
    m = json.loads((newer / "manifest.json").read_text())
    m["format_version"] = FORMAT_VERSION + 1
    (newer / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="newer than this runtime"):
        load_bundle(newer)


def test_members_must_share_the_window_policy(members: dict[str, Path], tmp_path: Path) -> None:
    other = build_tiny_bundle(tmp_path / "long", params=FrontendParams(window_seconds=3.0))
    with pytest.raises(BundleError, match="window_seconds"):
        write_ensemble_bundle(
            tmp_path / "ens",
            [("plain", load_bundle(members["plain"])), ("long", load_bundle(other))],
            thresholds={"eer": 0.0},
            calibration=Calibration(),
        )
    assert not (tmp_path / "ens").exists()  # refused before anything was written
    # and the input policy their calibrations were fitted under
    trimming = tmp_path / "trimming"
    shutil.copytree(members["bass"], trimming)
    m = json.loads((trimming / "manifest.json").read_text())
    m["input_policy"]["trim"] = "speech"
    (trimming / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="input_policy.trim 'speech' differs from 'none'"):
        write_ensemble_bundle(
            tmp_path / "ens",
            [("plain", load_bundle(members["plain"])), ("bass", load_bundle(trimming))],
            thresholds={"eer": 0.0},
            calibration=Calibration(),
        )
    assert not (tmp_path / "ens").exists()
    # members that all trim make a format-3 ensemble, which a format-2 runtime refuses
    plain_trimming = tmp_path / "plain_trimming"
    shutil.copytree(members["plain"], plain_trimming)
    m = json.loads((plain_trimming / "manifest.json").read_text())
    m["input_policy"]["trim"] = "speech"
    (plain_trimming / "manifest.json").write_text(json.dumps(m))
    ens = write_ensemble_bundle(
        tmp_path / "ens",
        [("plain", load_bundle(plain_trimming)), ("bass", load_bundle(trimming))],
        thresholds={"eer": 0.0},
        calibration=Calibration(),
    )
    assert load_bundle(ens).manifest["format_version"] == 3 and load_bundle(ens).trim == "speech"


def test_install_swaps_single_and_ensemble_bundles_cleanly(
    members: dict[str, Path], tmp_path: Path
) -> None:
    from wakeguard.model.pipeline import install_bundle

    target = tmp_path / "default"
    install_bundle(members["plain"], target)
    assert (target / "model.tflite").is_file()
    install_bundle(_ensemble(members, tmp_path / "ens"), target)
    assert load_bundle(target).is_ensemble
    assert sorted(p.name for p in target.iterdir()) == ["bass", "manifest.json", "plain"]
    install_bundle(members["bass"], target)
    assert not load_bundle(target).is_ensemble
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "model.tflite"]


ENSEMBLE = Path(__file__).resolve().parents[1] / "model" / "ensemble_2x64.toml"


def test_ensemble_config_members_and_command_line_overrides() -> None:
    from wakeguard.model.config import ConfigError, ensemble_members, load_config

    assert ensemble_members(load_config()) == []  # the default is one network
    cfg = load_config(ENSEMBLE, ["train.epochs=2", "model.head_units=8"])
    got = dict(ensemble_members(cfg))
    assert set(got) == {"blocks4", "bass"}
    assert got["bass"].frontend.n_fft == 2048 and got["blocks4"].frontend.n_fft == 1024
    assert all(c.train.epochs == 2 and c.model.head_units == 8 for c in got.values())
    assert all(not c.ensemble.members for c in got.values())
    # the command line has the last word, even over a member's own override
    assert all(c.model.block_channels == [48, 64, 96, 64] for c in got.values())
    assert all(
        c.frontend.block_frames == 8
        for _, c in ensemble_members(load_config(ENSEMBLE, ["frontend.block_frames=8"]))
    )
    assert ensemble_members(load_config(ENSEMBLE, ["ensemble.members=[]"])) == []
    bad = load_config(None, ['ensemble.members=[{name = "x", overrides = ["frontend.n_fft=77"]}]'])
    with pytest.raises(ConfigError, match="ensemble member 'x'"):
        ensemble_members(bad)
    for member, problem in (
        ('{name = "a/b"}', "names a folder"),
        ('{name = "a", overrides = ["ensemble.members=[]"]}', "cannot override the ensemble"),
        ('{name = "a"}, {name = "a"}', "must differ"),
    ):
        with pytest.raises(ConfigError, match=problem):
            load_config(None, [f"ensemble.members=[{member}]"])


def test_a_model_tarball_carries_every_member(members: dict[str, Path], tmp_path: Path) -> None:
    import tarfile

    from wakeguard.tools.shipping import build_model_tarball, verify_folder

    built = build_model_tarball(_ensemble(members, tmp_path / "ens"), tmp_path / "model.tar.gz")
    with tarfile.open(built.path) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    top = next((tmp_path / "x").iterdir())
    assert verify_folder(top) == []
    b = load_bundle(top / "model")
    assert b.is_ensemble and [m.name for m in b.members] == ["plain", "bass"]
    assert built.manifest["model_version"] == "test-ensemble"


def test_bench_runs_an_ensemble_and_adds_up_its_members(
    members: dict[str, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner
    from wakeguard.tools.cli import app

    ens = _ensemble(members, tmp_path / "ens")
    args = ["bench", "--json", "--model", str(ens), "--repeats", "2", "--warmup", "0"]
    res = CliRunner().invoke(app, [*args, "--no-baseline"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["members"] == ["plain", "bass"]
    assert r["model_bytes"] == load_bundle(ens).total_model_bytes
    assert r["macs"]["per_window"] == sum(r["macs"]["members"].values()) > 0
    assert r["stages"]["int8"]["2s"]["e2e"]["scored_s"] > 0.3
