"""Baselines: Void features (known answers), LFCC-GMM, and run_baselines end to end on a toy dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_evaluate import fake_replay, make_replay_dataset
from wakeguard.edge.audio import load_audio
from wakeguard.model.metrics import metrics_from_scores, read_scores
from wakeguard.model.void import FEATURE_NAMES, N_LFP, SEGMENT_BINS, lpc, lpcc, void_features

SR = 16_000


def test_lpcc_of_a_one_pole_model():
    # 1 / (1 - b z^-1) has cepstrum c_n = b^n / n.
    b = 0.7
    c = lpcc(np.array([1.0, -b]), 12)
    np.testing.assert_allclose(c, [b**n / n for n in range(1, 13)], rtol=1e-12)


def test_lpc_recovers_an_ar_process():
    from scipy.signal import lfilter

    rng = np.random.default_rng(0)
    a = np.array([1.0, -0.9, 0.4])
    x = lfilter([1.0], a, rng.normal(0, 1, 64_000))
    est = lpc(x, 2)
    np.testing.assert_allclose(est, a, atol=0.02)


def test_void_features_of_a_tone():
    t = np.arange(2 * SR) / SR
    f = void_features((0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert f.shape == (97,) == (len(FEATURE_NAMES),) and np.all(np.isfinite(f))
    seg_hz = SR / 2048 * SEGMENT_BINS
    lfp = f[:N_LFP]
    assert int(np.argmax(lfp)) == int(1000 // seg_hz)  # all power in the 1 kHz segment
    assert lfp.sum() == pytest.approx(100.0, abs=0.5)  # percent of total power, all below 5 kHz
    hpf = dict(zip(FEATURE_NAMES, f, strict=True))
    assert (
        hpf["hpf_n_peaks"] == 1
        and hpf["hpf_peak_mean"] == int(1000 // seg_hz)
        and hpf["hpf_peak_std"] == 0
    )


def test_void_features_see_a_missing_bass(speech_file):
    x = load_audio(speech_file)[: 2 * SR]
    live, replay = void_features(x), void_features(fake_replay(x, 500.0))
    names = list(FEATURE_NAMES)
    below_400 = slice(0, int(400 // (SR / 2048 * SEGMENT_BINS)))
    assert replay[below_400].sum() < 0.2 * live[below_400].sum()
    assert replay[names.index("ldf_rho")] != live[names.index("ldf_rho")]


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory, shared_dir):
    from wakeguard.model.baselines import run_baselines

    ds = make_replay_dataset(
        tmp_path_factory.mktemp("ds") / "toy",
        shared_dir,
        n_speakers=12,
        clips_per_speaker=3,
        broken=1,
    )
    out = tmp_path_factory.mktemp("baselines")
    res = run_baselines(ds, out, workers=2, n_boot=100, n_components=16)
    return ds, out, res


def test_run_baselines_refuses_unconfirmed_labels(baseline_run, tmp_path):
    """Every split the baselines use is labelled data: unconfirmed rows stop them early."""
    from wakeguard.edge.protocol import (
        LABEL_CONFIRMED,
        UnconfirmedLabelsError,
        read_protocol,
        write_protocol,
    )
    from wakeguard.model.baselines import run_baselines

    ds, _, _ = baseline_run
    rows = list(read_protocol(ds).rows)
    for r in rows:
        r.path = str(r.audio_path(ds))
        r.conditions[LABEL_CONFIRMED] = ""
    next(r for r in rows if r.split == "train").conditions[LABEL_CONFIRMED] = "no"
    csv_path = write_protocol(tmp_path, rows)
    with pytest.raises(UnconfirmedLabelsError, match=f"{csv_path}: 1 of the"):
        run_baselines(tmp_path, tmp_path / "out", workers=1, n_boot=10, n_components=4)
    assert not (tmp_path / "out").exists()


def test_run_baselines_writes_scores_and_table(baseline_run):
    ds, out, res = baseline_run
    assert [r["name"] for r in res] == ["chance", "majority", "void", "lfcc_gmm"]
    on_disk = json.loads((out / "baselines.json").read_text())
    assert [r["name"] for r in on_disk] == [r["name"] for r in res]
    for r in res:
        table = read_scores(out / f"{r['name']}_scores.csv")
        assert table.splits() == ["dev", "eval"] and table.condition_columns == ["attack", "room"]
        assert len(table.rows) == 2 * 3 * 3 * 2  # 3 speakers per split x 3 clips x 2 classes
        for split in ("dev", "eval"):
            m = r[f"metrics_{split}"]
            assert r[f"eer_{split}"] == m["eer"]
            # Metrics are reproducible from the score file at the baseline's threshold.
            again = metrics_from_scores(
                out / r["scores"], threshold=r["threshold"], split=split, n_boot=100
            )
            assert (again["eer"], again["apcer"], again["bpcer"]) == (
                m["eer"],
                m["apcer"],
                m["bpcer"],
            )
        # The corrupt eval file is counted, with its reason, not dropped silently.
        assert (
            r["metrics_eval"]["n_unscored"] == 1
            and "broken_0.wav" in r["metrics_eval"]["unscored"][0]["path"]
        )
    by = {r["name"]: r for r in res}
    assert by["majority"]["eer_eval"] == 0.5
    assert (
        by["void"]["eer_dev"] < 0.5 and by["lfcc_gmm"]["eer_dev"] < 0.5
    )  # a 400-700 Hz high-pass is easy to see


def test_saved_models_score_like_the_run(baseline_run):
    from wakeguard.model.lfcc_gmm import LfccGmm
    from wakeguard.model.void import load_void_model

    ds, out, _ = baseline_run
    void = load_void_model(out / "void_model.joblib")
    gmm = LfccGmm.load(out / "lfcc_gmm_model.joblib")
    # LFCC frames are kept as float16 in the run: a little slack for the GMM.
    for name, model, tol in (("void", void, 1e-5), ("lfcc_gmm", gmm, 0.05)):
        for row in read_scores(out / f"{name}_scores.csv").rows[:3]:
            audio = load_audio(ds / row["path"])
            assert model.score_audio(audio) == pytest.approx(row["score"], abs=tol)
    bad = out / "not_a_model.joblib"
    bad.write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable Void model"):
        load_void_model(bad)


def test_feature_cache_is_reused(baseline_run, monkeypatch):
    from wakeguard.model import baselines

    ds, out, res = baseline_run
    assert (out / "cache" / "features.npz").is_file()

    def no_extraction(path):
        raise AssertionError(f"features recomputed for {path}")

    monkeypatch.setattr(baselines, "_extract_one", no_extraction)
    again = baselines.run_baselines(ds, out, workers=1, n_boot=100, n_components=16)
    assert [r["eer_eval"] for r in again] == [r["eer_eval"] for r in res]
