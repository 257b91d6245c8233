"""`wakeguard train`: config loading and overrides, the run folder, --resume, --init-from, bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from wakeguard.edge.audio import load_audio, write_wav
from wakeguard.edge.protocol import Row, read_protocol, write_protocol
from wakeguard.model.config import ConfigError, config_from_dict, load_config
from wakeguard.tools.cli import app

runner = CliRunner()

# A model small enough to train in seconds; the features are the real default front-end.
# One network (the default; said again so a changed default cannot turn these into ensembles).
FAST = [
    "train.epochs=3",
    "train.batch_size=8",
    "train.learning_rate=0.01",
    "model.stem_channels=8",
    "model.block_channels=[16]",
    "model.head_units=0",
    "train.threads=1",
    "ensemble.members=[]",
]


def make_dataset(root: Path, speech_dir: Path, per_split: dict[str, int] | None = None) -> Path:
    """Clips of real speech: bona fide as is, spoof band-limited above 600 Hz with soft clipping.

    The spoof channel mimics a phone loudspeaker (no bass, some distortion) so a model can
    learn it in a couple of epochs; speakers are disjoint across splits.
    """
    per_split = per_split or {"train": 8, "dev": 4, "eval": 4}
    files = sorted((speech_dir / "speech" / "librispeech" / "train-clean-100").glob("*.flac"))
    rng = np.random.default_rng(0)
    rows, i = [], 0
    for split, n in per_split.items():
        for _ in range(n):
            f = files[i]
            i += 1
            x = load_audio(f)[: int(2.5 * 16000)]
            spec = np.fft.rfft(x)
            freqs = np.fft.rfftfreq(x.size, 1 / 16000)
            spoof = np.fft.irfft(spec * (freqs > 600), n=x.size)
            spoof = np.tanh(3 * spoof / np.abs(spoof).max()) * 0.1
            for label, y in (("bonafide", x), ("spoof", spoof)):
                y = y + rng.normal(0, 1e-4, y.size)
                name = f"{label}/{f.stem}.wav"
                write_wav(root / name, (0.1 * y / np.abs(y).max()).astype(np.float32))
                rows.append(
                    Row(
                        name,
                        label,
                        speaker=f.stem.split("-")[0] + split,
                        split=split,
                        conditions={"device": "phone" if label == "spoof" else "-"},
                    )
                )
    write_protocol(root, rows)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds"), shared_dir)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    pytest.importorskip("tensorflow")
    run = tmp_path_factory.mktemp("runs") / "r1"
    res = runner.invoke(app, ["train", str(dataset), "--out", str(run), "--workers", "1", *FAST])
    assert res.exit_code == 0, res.output
    return run


def test_default_config_and_dotted_overrides() -> None:
    cfg = load_config(
        None,
        [
            "train.epochs=7",
            "frontend.kind=lfcc",
            "model.block_channels=[8,16]",
            "augment.noise_snr_db=5,20",
            "train.balance_classes=false",
        ],
    )
    assert cfg.train.epochs == 7
    assert cfg.frontend.kind == "lfcc"
    assert cfg.model.block_channels == [8, 16]
    assert cfg.augment.noise_snr_db == [5.0, 20.0]
    assert cfg.train.balance_classes is False
    # the packaged default_config.toml is what the defaults say
    assert load_config().frontend.kind == "logspec"


def test_log_axis_equaliser_is_smooth_per_octave_and_flat_at_the_bottom() -> None:
    """A microphone-like colouring: as much detail in 100-200 Hz as in 4-8 kHz."""
    pytest.importorskip("tensorflow")
    from wakeguard.edge.frontend import frontend_shape
    from wakeguard.model.train import EQ_LOG_FLOOR_HZ, make_augment

    cfg = load_config(None, ["augment.eq_prob=1", "augment.eq_db=6", "augment.eq_axis=log"])
    shape = frontend_shape(cfg.frontend).input_shape
    x = np.zeros((8, *shape), np.float32)
    ones = np.ones((8, 1), np.float32)
    curve = np.asarray(make_augment(cfg, shape)(x, ones, ones[:, 0])[0])[:, 0, :]
    assert np.all(np.isfinite(curve)) and np.ptp(curve) > 0.5
    f = np.linspace(cfg.frontend.fmin_hz, cfg.frontend.fmax_hz, shape[1])
    low = curve[:, f <= EQ_LOG_FLOOR_HZ]
    assert np.allclose(low, low[:, :1], atol=1e-5)  # one value below the floor
    assert np.ptp(curve, axis=1).max() <= 2 * 6 + 1e-3  # within the gain range (renormalised)

    # Per octave the curve moves as much at the bottom as at the top: on a linear axis the
    # 100-200 Hz octave would be nearly flat.
    def swing(lo: float, hi: float) -> float:
        band = curve[:, (f >= lo) & (f <= hi)]
        return float(np.mean(np.ptp(band, axis=1)))

    assert swing(100, 200) > 0.3 * swing(4000, 8000)


@pytest.mark.parametrize(
    "override, problem",
    [
        ("train.epochs=many", "expected an integer"),
        ("nosuch.key=1", "unknown section"),
        ("train.nosuch=1", "has no key"),
        ("epochs=3", "section.key=value"),
        ("frontend.kind=mfcc", "unknown front-end kind"),
        ("augment.eq_axis=mel", "eq_axis must be"),
        ("model.head_activation=tanh", "'relu' or 'leaky_relu'"),
    ],
)
def test_bad_overrides_are_refused(override: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(None, [override])


def test_config_file_toml_and_json(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[train]\nepochs = 3\n[frontend]\nkind = 'spectral_power'\n")
    cfg = load_config(tmp_path / "c.toml", ["train.epochs=4"])
    assert (cfg.train.epochs, cfg.frontend.kind) == (4, "spectral_power")
    (tmp_path / "c.json").write_text(json.dumps({"model": {"dropout": 0.1}}))
    assert load_config(tmp_path / "c.json").model.dropout == 0.1
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path / "bad.toml")


def test_train_writes_the_run_folder(trained_run: Path, dataset: Path) -> None:
    for name in (
        "config.json",
        "data_fingerprint.json",
        "history.csv",
        "curves.png",
        "dev_scores.csv",
        "model.keras",
    ):
        assert (trained_run / name).is_file(), name
    cfg = json.loads((trained_run / "config.json").read_text())
    assert Path(cfg["dataset"]) == dataset.resolve()
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["block_channels"] == [16]
    fp = json.loads((trained_run / "data_fingerprint.json").read_text())
    assert fp["n_rows"] == 32 and len(fp["sha256"]) == 64
    with (trained_run / "history.csv").open() as fh:
        hist = list(csv.DictReader(fh))
    assert [h["epoch"] for h in hist] == ["1", "2", "3"]
    assert all(0 <= float(h["dev_eer"]) <= 1 for h in hist)
    with (trained_run / "dev_scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["split"] for r in rows} == {"dev"}
    assert (
        list(rows[0])[:4] == ["path", "label", "speaker", "split"] and list(rows[0])[-1] == "score"
    )
    # the kept checkpoint is the one with the best dev EER: an epoch's weights or, from
    # train.swa_start, their running average
    best = min(float(h[k]) for h in hist for k in ("dev_eer", "swa_dev_eer") if h.get(k))
    summary = json.loads((trained_run / "train_summary.json").read_text())
    assert summary["dev_eer"] == pytest.approx(best)


def test_resume_continues_from_the_last_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    res = runner.invoke(app, ["train", "--out", str(run), "--resume", "train.epochs=4"])
    assert res.exit_code == 0, res.output
    assert "resuming after epoch 3" in res.output
    with (run / "history.csv").open() as fh:
        assert [h["epoch"] for h in csv.DictReader(fh)] == ["1", "2", "3", "4"]


def test_weight_average_is_the_mean_with_its_own_batch_norm_statistics() -> None:
    pytest.importorskip("tensorflow")
    import keras
    from wakeguard.model.train import SwaState

    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.BatchNormalization()(keras.layers.Dense(2)(inp)))
    swa = SwaState.start(model)
    seen = []
    for k in range(3):
        model.set_weights([np.full(w.shape, float(k), np.float32) for w in model.get_weights()])
        swa.add(model)
        seen.append([np.asarray(v) for v in model.trainable_weights])
    x = np.random.default_rng(0).normal(5.0, 1.0, (512, 3)).astype(np.float32)
    avg = swa.model(model, x, seed=0, batch=64)
    for v, *vs in zip(avg.trainable_weights, *seen, strict=True):
        np.testing.assert_allclose(np.asarray(v), np.mean(vs, axis=0), rtol=1e-6)
    # Batch norm's moving mean is re-estimated for the averaged Dense layer (weights 1,
    # bias 1 on inputs around 5: 3 * 5 + 1 = 16), not left at the last epoch's value.
    bn = avg.layers[-1]
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 16.0, rtol=0.05)
    assert model is not avg and np.asarray(model.trainable_weights[0]).max() == 2.0


def test_weight_average_batch_norm_is_the_plain_mean_of_batch_statistics() -> None:
    """The compiled re-estimation gives each batch equal weight, keeps the layer's momentum,
    and sees new weights on the next epoch (nothing stale in the compiled pass)."""
    pytest.importorskip("tensorflow")
    import keras
    from wakeguard.model.train import SWA_BN_BATCHES, SwaState

    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.BatchNormalization()(keras.layers.Dense(2)(inp)))
    swa = SwaState.start(model)
    x = np.random.default_rng(1).normal(0.0, 2.0, (300, 3)).astype(np.float32)
    for k in (1.0, 2.0):
        model.set_weights([np.full(w.shape, k, np.float32) for w in model.get_weights()])
        swa.add(model)
        avg = swa.model(model, x, seed=3, batch=64)
        w = np.mean([1.0, 2.0][: swa.count])
        idx = np.random.default_rng(3).permutation(len(x))[: SWA_BN_BATCHES * 64]
        chunks = np.array_split(idx, -(-len(idx) // 64))
        h = [x[np.sort(c)] @ np.full((3, 2), w) + w for c in chunks]
        bn = avg.layers[-1]
        np.testing.assert_allclose(bn.moving_mean, np.mean([c.mean(0) for c in h], 0), rtol=1e-5)
        np.testing.assert_allclose(bn.moving_variance, np.mean([c.var(0) for c in h], 0), rtol=1e-4)
        assert bn.momentum == model.layers[-1].momentum == 0.99


def test_weight_averaging_competes_for_the_checkpoint_and_survives_resume(
    dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    run = tmp_path / "swa"
    res = runner.invoke(
        app,
        [
            *["train", str(dataset), "--out", str(run), "--workers", "1", *FAST],
            *["train.swa_start=2", "train.select_average=false"],
        ],
    )
    assert res.exit_code == 0, res.output
    assert "SWA dev EER" in res.output

    def history() -> list[dict[str, str]]:
        with (run / "history.csv").open() as fh:
            return list(csv.DictReader(fh))

    assert [bool(h["swa_dev_eer"]) for h in history()] == [False, True, True]
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["swa_count"] == 2 and (run / "checkpoint" / "swa.npz").is_file()
    res = runner.invoke(app, ["train", "--out", str(run), "--resume", "train.epochs=4"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "checkpoint" / "state.json").read_text())["swa_count"] == 3
    hist = history()
    summary = json.loads((run / "train_summary.json").read_text())
    kept = min(min(float(h["dev_eer"]), float(h["swa_dev_eer"] or "inf")) for h in hist)
    assert summary["dev_eer"] == pytest.approx(kept)
    assert summary["averaged_from"] in (0, 2)


def test_select_average_keeps_only_weight_averages_once_averaging_begins(
    dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    run = tmp_path / "swa-only"
    args = ["train", str(dataset), "--out", str(run), "--workers", "1", *FAST]
    res = runner.invoke(app, [*args, "train.swa_start=1", "train.select_average=true"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "* swa" in said and "* epoch" not in said
    with (run / "history.csv").open() as fh:
        hist = list(csv.DictReader(fh))
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["averaged_from"] == 1
    assert summary["dev_eer"] == pytest.approx(min(float(h["swa_dev_eer"]) for h in hist))


def test_keep_final_average_keeps_the_average_up_to_the_last_epoch_and_resumes(
    dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    from wakeguard.model.detector import load_keras
    from wakeguard.model.train import dataset_features, predict_windows

    run = tmp_path / "final"
    args = ["train", str(dataset), "--out", str(run), "--workers", "1", *FAST]
    res = runner.invoke(app, [*args, "train.swa_start=1", "train.keep=final_average", "--json"])
    assert res.exit_code == 0, res.output

    def check(epochs: int) -> None:
        with (run / "history.csv").open() as fh:
            hist = list(csv.DictReader(fh))
        summary = json.loads((run / "train_summary.json").read_text())
        assert len(hist) == epochs and summary["kept"] == "final_average"
        assert summary["best_epoch"] == epochs and summary["averaged_from"] == 1
        assert summary["dev_eer"] == pytest.approx(float(hist[-1]["swa_dev_eer"]))
        # model.keras is that average: its dev scores are the run's
        cfg = json.loads((run / "config.json").read_text())
        frontend = config_from_dict(cfg).frontend
        dev = dataset_features(cfg["dataset"], frontend, workers=1).split("dev")
        logits = dev.utterance_logits(predict_windows(load_keras(run / "model.keras"), dev.windows))
        with (run / "dev_scores.csv").open() as fh:
            want = [float(r["score"]) for r in csv.DictReader(fh)]
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)

    check(3)
    res = runner.invoke(app, ["train", "--out", str(run), "--resume", "train.epochs=4"])
    assert res.exit_code == 0, res.output
    assert "dev EER" in res.output and "best dev EER" not in res.output
    check(4)


def with_rooms(dataset: Path, out: Path) -> Path:
    """The dataset's protocol again, every row in one of three rooms (audio paths absolute)."""
    proto = read_protocol(dataset)
    rows = [
        Row(
            str(r.audio_path(proto.root)),
            r.label,
            r.speaker,
            r.split,
            {**r.conditions, "room": f"room{i % 3}"},
        )
        for i, r in enumerate(proto.rows)
    ]
    write_protocol(out, rows)
    return out


def test_gradient_reversal_is_identity_forwards_and_negates_the_gradient() -> None:
    pytest.importorskip("tensorflow")
    import tensorflow as tf
    from wakeguard.model.train import domain_ramp, gradient_reversal

    layer = gradient_reversal()
    layer.scale.assign(0.3)
    x = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(
        tape.gradient(loss, x).numpy(), -0.3 * np.array([[1, 2, 3], [4, 5, 6]]), rtol=1e-6
    )
    cfg = load_config(overrides=["train.epochs=10"])
    ramp = [domain_ramp(e, cfg) for e in range(10)]
    assert ramp[0] == 0.0 and bool(np.all(np.diff(ramp) > 0)) and ramp[-1] < 1.0


def test_the_domain_head_round_trips_and_refuses_other_domains(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from wakeguard.model.detector import build_detector
    from wakeguard.model.train import adversarial_model, load_domain_head, save_domain_head

    cfg = load_config(overrides=FAST)

    def wrapper(seed: int):  # noqa: ANN202 - a Keras model
        import keras

        keras.utils.set_random_seed(seed)
        return adversarial_model(build_detector((20, 12), cfg.model), 3, cfg, steps=4)[0]

    a, b = wrapper(1), wrapper(2)
    path = tmp_path / "domain_head.npz"
    assert "no saved domain head" in load_domain_head(b, path, ["x", "y", "z"])
    save_domain_head(a, path, ["x", "y", "z"])
    assert "the domains changed" in load_domain_head(b, path, ["x", "y", "w"])
    assert not np.allclose(
        a.get_layer("domain").get_weights()[0], b.get_layer("domain").get_weights()[0]
    )
    assert (
        load_domain_head(b, path, ["x", "y", "z"]) == "the domain classifier continues (3 domains)"
    )
    for name in ("domain_bn", "domain_hidden", "domain"):
        for wa, wb in zip(
            a.get_layer(name).get_weights(), b.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(wa, wb)


def test_domain_adversarial_training_ships_the_detector_alone(
    dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    import keras

    data = with_rooms(dataset, tmp_path / "rooms")
    run = tmp_path / "dann"
    args = ["train", str(data), "--out", str(run), "--workers", "1", *FAST]
    res = runner.invoke(app, [*args, "train.domain_adversarial=0.5"])
    assert res.exit_code == 0, res.output
    assert "3 'room' domains" in res.output and "domain loss" in res.output
    with (run / "history.csv").open() as fh:
        hist = list(csv.DictReader(fh))
    assert len(hist) == 3 and all(np.isfinite(float(h["domain_loss"])) for h in hist)
    model = keras.models.load_model(run / "model.keras", compile=False)
    assert len(model.outputs) == 1 and model.output.shape[-1] == 1
    assert not any(layer.name.startswith(("domain", "gradient")) for layer in model.layers)
    # the same network as a plain run: same weights' shapes
    plain = runner.invoke(
        app,
        [
            "train",
            str(data),
            "--out",
            str(tmp_path / "plain"),
            "--workers",
            "1",
            *FAST,
            "train.epochs=1",
        ],
    )
    assert plain.exit_code == 0, plain.output
    ref = keras.models.load_model(tmp_path / "plain" / "model.keras", compile=False)
    assert [w.shape for w in model.weights] == [w.shape for w in ref.weights]
    res = runner.invoke(app, ["train", "--out", str(run), "--resume", "train.epochs=4"])
    assert res.exit_code == 0, res.output
    assert "the domain classifier continues (3 domains)" in res.output


def test_domain_adversarial_needs_a_column_every_train_row_fills(
    dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    run = tmp_path / "bad"
    args = ["train", str(dataset), "--out", str(run), "--workers", "1", *FAST]
    res = runner.invoke(app, [*args, "train.domain_adversarial=0.5", "train.domain_column=device"])
    assert res.exit_code == 2, res.output
    assert "train.domain_column='device'" in res.output and "8 of 16 train rows" in res.output


def test_a_corpus_without_rooms_trains_without_the_adversarial_loss(
    dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    run = tmp_path / "no-rooms"
    args = ["train", str(dataset), "--out", str(run), "--workers", "1", *FAST, "train.epochs=1"]
    res = runner.invoke(app, [*args, "train.domain_adversarial=0.1"])
    assert res.exit_code == 0, res.output
    assert "domain-adversarial loss off: the train split has 0 'room' domains" in res.output
    with (run / "history.csv").open() as fh:
        assert "domain_loss" not in next(csv.reader(fh))


def test_group_dro_weights_follow_the_domains_losses() -> None:
    from wakeguard.model.train import GROUP_WEIGHT_CLIP, group_losses, group_weights

    labels = np.array([1, 0, 1, 0, 1, 0])
    groups = np.array([0, 0, 1, 1, 2, 2])
    # group 0 right and sure, group 1 unsure, group 2 wrong
    logits = np.array([4.0, -4.0, 0.0, 0.0, -3.0, 3.0])
    loss = group_losses(logits, labels, groups, 4)
    assert loss[0] < loss[1] < loss[2] and np.isnan(loss[3])
    np.testing.assert_allclose(loss[1], np.log(2))
    # the two labels count equally inside a group, whatever their window counts
    lopsided = group_losses(
        np.array([0.0, 0.0, 0.0, 4.0]), np.array([1, 1, 1, 0]), np.zeros(4, int), 1
    )
    np.testing.assert_allclose(lopsided[0], 0.5 * np.log(2) + 0.5 * np.logaddexp(0, 4.0))
    w = group_weights(np.array([0.0, 1.0, 2.0]), groups[groups < 3])
    assert w.mean() == pytest.approx(1.0, rel=0.05) and w[4] > w[2] > w[0]
    extreme = group_weights(np.array([0.0, 50.0]), np.array([0, 1, 1, 1]))
    assert extreme.max() <= GROUP_WEIGHT_CLIP and extreme.min() >= 1 / GROUP_WEIGHT_CLIP


def test_group_dro_training_reweights_rooms_and_survives_resume(
    dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    data = with_rooms(dataset, tmp_path / "rooms")
    run = tmp_path / "dro"
    args = ["train", str(data), "--out", str(run), "--workers", "1", *FAST, "train.epochs=2"]
    res = runner.invoke(app, [*args, "train.group_dro=1.0"])
    assert res.exit_code == 0, res.output
    assert "group DRO on 3 'room' domains" in res.output and "heaviest domain" in res.output
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert len(state["group_dro_log_q"]) == 3 and max(state["group_dro_log_q"]) > 0
    res = runner.invoke(app, ["train", "--out", str(run), "--resume", "train.epochs=3"])
    assert res.exit_code == 0, res.output
    later = json.loads((run / "checkpoint" / "state.json").read_text())["group_dro_log_q"]
    assert all(b > a for a, b in zip(state["group_dro_log_q"], later, strict=True))


def test_resume_without_a_checkpoint_is_an_error(dataset: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", str(dataset), "--out", str(tmp_path / "new"), "--resume"])
    assert res.exit_code == 2
    assert f"{tmp_path / 'new'} is not a run folder (no config.json)" in res.output
    assert not (tmp_path / "new").exists()


def dead_copy(run: Path, dest: Path) -> Path:
    """A copy of a run folder whose network is dead: every kernel and bias 0, so each layer
    gives one constant and its ReLUs (at 0) pass no gradient, as in a collapsed training."""
    import shutil

    import keras

    shutil.copytree(run, dest)
    model = keras.models.load_model(dest / "model.keras")
    for w in model.weights:
        fill = np.ones if "variance" in w.path else np.zeros
        w.assign(fill(w.shape, dtype="float32"))
    model.save(dest / "model.keras")
    return dest


def test_a_network_that_collapses_stops_with_a_clear_error(
    tmp_path: Path, dataset: Path, trained_run: Path
) -> None:
    """A network whose ReLUs died gives every window one logit and cannot recover: training
    stops in that epoch, naming the run and what to change, instead of running out its
    patience and handing quantize a dead model."""
    from wakeguard.model.train import is_constant

    dead = dead_copy(trained_run, tmp_path / "dead")
    out = tmp_path / "again"
    args = ["train", str(dataset), "--out", str(out), "--workers", "1", *FAST]
    res = runner.invoke(app, [*args, "--init-from", str(dead)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"{out}: in epoch 1 the network gives every dev window the same logit" in text
    assert "It collapsed: start a new run with another train.seed" in text
    assert "epoch 2" not in text
    assert is_constant(np.array([3.0, 3.0])) and not is_constant(np.array([3.0, 3.001]))
    assert not is_constant(np.array([3.0]))  # one window says nothing


def test_init_from_fine_tunes_an_existing_model(
    trained_run: Path, dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "ft"
    res = runner.invoke(
        app,
        [
            "train",
            str(dataset),
            "--out",
            str(run),
            "--init-from",
            str(trained_run),
            "train.epochs=1",
            "train.threads=1",
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "before fine-tuning" in res.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["init_from"]["kind"] == "run"
    # the starting point is scored as epoch 0, so fine-tuning can never select a worse model
    with (run / "history.csv").open() as fh:
        assert [h["epoch"] for h in csv.DictReader(fh)] == ["0", "1"]


def test_distillation_trains_on_the_teachers_soft_targets(
    trained_run: Path, dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "student"
    args = ["train", str(dataset), "--out", str(run), "--workers", "1", *FAST, "train.epochs=1"]
    teachers = f"train.distill_from={trained_run},{trained_run}"
    res = runner.invoke(app, [*args, teachers, "train.distill_weight=0.7"])
    assert res.exit_code == 0, res.output
    assert "distilling from 2 teacher(s), weight 0.7" in res.output.replace("\n", " ")
    assert (
        json.loads((run / "config.json").read_text())["train"]["distill_from"]
        == [str(trained_run)] * 2
    )
    # A teacher must read the same feature windows, and must exist.
    other = runner.invoke(app, [*args, teachers, "frontend.block_frames=4"])
    assert other.exit_code == 2 and "has another front-end than this run" in other.output
    gone = runner.invoke(app, [*args, f"train.distill_from={tmp_path / 'nowhere'}"])
    assert gone.exit_code != 0 and "train.distill_from teacher not found" in gone.output


def test_shifted_audio_keeps_its_length_and_moves_the_frame_grid() -> None:
    from wakeguard.model.train import shifted

    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(shifted(x, 0), x)
    np.testing.assert_array_equal(shifted(x, 3), [3, 4, 5, 6, 7, 8, 9, 9, 8, 7])
    np.testing.assert_array_equal(shifted(x[:4], 6), [2, 3, 0, 1])  # too short: rotated


def test_frame_offsets_train_on_windows_framed_between_the_grid(
    dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    from wakeguard.edge.frontend import compute_features
    from wakeguard.model.train import shifted, train_framings

    run = tmp_path / "framed"
    args = ["train", str(dataset), "--out", str(run), "--workers", "1", *FAST, "train.epochs=1"]
    res = runner.invoke(app, [*args, "train.frame_offsets=4"])
    assert res.exit_code == 0, res.output
    assert "train windows also framed 250, 500, 750 samples later" in res.output.replace("\n", " ")

    # The stack holds each train recording framed at every offset, dev never moved.
    from wakeguard.model.train import dataset_features

    config = load_config(overrides=["train.frame_offsets=2"])
    proto = read_protocol(dataset)
    tr = dataset_features(proto, config.frontend, workers=1).split("train")
    stack = train_framings(proto, tr, config, workers=1, progress=False, log=print)
    assert stack is not None and stack.shape == (2, *tr.windows.shape)
    np.testing.assert_array_equal(stack[0], tr.windows)
    first = tr.rows[0].audio_path(proto.root)
    moved = compute_features(shifted(load_audio(first), 500), config.frontend)
    np.testing.assert_array_equal(stack[1][tr.utt == 0], moved.astype(np.float16))
    assert not np.array_equal(stack[1], stack[0])
    single = load_config(overrides=["train.frame_offsets=1"])
    assert train_framings(proto, tr, single, workers=1, progress=False, log=print) is None


def test_missing_dataset_and_bad_override_give_clear_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "protocol file not found" in res.output
    res = runner.invoke(app, ["train", str(tmp_path), "train.epochs=x"])
    assert res.exit_code == 2 and "expected an integer" in res.output


def test_a_split_with_one_label_is_refused(tmp_path: Path, dataset: Path) -> None:
    from wakeguard.edge.protocol import read_protocol

    p = read_protocol(dataset)
    rows = [r for r in p.rows if not (r.split == "dev" and r.label == "spoof")]
    for r in rows:
        r.path = str(r.audio_path(dataset))
    write_protocol(tmp_path, rows)
    res = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "r"), *FAST])
    assert res.exit_code == 2 and "dev split needs both" in res.output


def test_unconfirmed_labels_are_refused(tmp_path: Path, dataset: Path) -> None:
    """Model-labelled rows (``label_confirmed`` not ``yes``) stop training before any work.

    Corpus rows merged in with an empty cell count as confirmed; eval rows are not trained on.
    """
    from wakeguard.edge.protocol import LABEL_CONFIRMED, read_protocol, require_confirmed

    p = read_protocol(dataset)
    rows = list(p.rows)
    for r in rows:
        r.path = str(r.audio_path(dataset))
        r.conditions[LABEL_CONFIRMED] = ""  # merged corpus rows never had the flag
    train = [r for r in rows if r.split == "train"]
    dev = [r for r in rows if r.split == "dev"]
    evl = [r for r in rows if r.split == "eval"]
    train[0].conditions[LABEL_CONFIRMED] = "no"
    train[1].conditions[LABEL_CONFIRMED] = "YES"
    dev[0].conditions[LABEL_CONFIRMED] = "unsure"
    dev[1].conditions[LABEL_CONFIRMED] = "no"
    evl[0].conditions[LABEL_CONFIRMED] = "no"
    csv_path = write_protocol(tmp_path, rows)
    run = tmp_path / "r"
    res = runner.invoke(app, ["train", str(tmp_path), "--out", str(run), *FAST])
    assert res.exit_code == 2
    n_train_dev = len(train) + len(dev)
    assert f"{csv_path}: 3 of the {n_train_dev} rows for training" in res.output
    assert train[0].path in res.output and "label_confirmed=yes" in res.output
    assert not run.exists()
    # Once a person has confirmed them, only the (untrained-on) eval row is still unconfirmed.
    for r in (train[0], dev[0], dev[1]):
        r.conditions[LABEL_CONFIRMED] = "yes"
    write_protocol(tmp_path, rows)
    proto = read_protocol(tmp_path)
    require_confirmed(proto, [r for r in proto.rows if r.split != "eval"], "training")
    with pytest.raises(ValueError, match="1 of the"):
        require_confirmed(proto, proto.rows, "evaluation")


def test_unreadable_audio_names_the_file(tmp_path: Path, dataset: Path) -> None:
    from wakeguard.edge.protocol import read_protocol

    p = read_protocol(dataset)
    rows = list(p.rows)
    for r in rows:
        r.path = str(r.audio_path(dataset))
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not audio")
    rows[0] = Row(str(bad), "bonafide", speaker="x", split="train")
    write_protocol(tmp_path, rows)
    res = runner.invoke(
        app, ["train", str(tmp_path), "--out", str(tmp_path / "r"), "--workers", "1", *FAST]
    )
    assert res.exit_code == 2
    assert "broken.wav" in res.output


def test_head_channels_narrow_the_per_band_head() -> None:
    """A 1x1 convolution before the flatten: the dense head sees bands x head_channels."""
    pytest.importorskip("tensorflow")
    from wakeguard.model.config import ModelConfig
    from wakeguard.model.detector import build_detector, count_params

    base = dict(stem_channels=8, block_channels=[16, 32], head_units=8, dropout=0.0)
    wide = build_detector((7, 513), ModelConfig(**base))
    narrow = build_detector((7, 513), ModelConfig(**base, head_channels=4))
    bands = 513
    for _ in range(3):  # stem and two blocks halve the frequency axis
        bands = -(-bands // 2)
    assert wide.get_layer("head").kernel.shape == (bands * 32, 8)
    assert narrow.get_layer("head").kernel.shape == (bands * 4, 8)
    assert narrow.get_layer("head_pw").kernel.shape == (1, 1, 32, 4)
    assert count_params(wide) - count_params(narrow) == bands * 28 * 8 - (32 * 4 + 2 * 4)
    x = np.random.default_rng(0).normal(size=(2, 7, 513)).astype(np.float32)
    assert np.asarray(narrow(x)).shape == (2, 1)


def test_a_leaky_head_still_ranks_what_a_relu_head_gives_one_logit(tmp_path: Path) -> None:
    """Every head unit pushed below zero: the ReLU head then gives the logit layer's bias
    whatever the input (as session 24's shipped network did for 286 of eval's 396 live commands);
    the leaky head still tells the inputs apart, and converts to full int8 (LEAKY_RELU)."""
    pytest.importorskip("tensorflow")
    import keras
    from wakeguard.edge.scorer import TFLiteModel
    from wakeguard.model.config import ModelConfig
    from wakeguard.model.detector import LEAKY_SLOPE, build_detector
    from wakeguard.model.quantize import convert

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(2).normal(size=(8, 12, 40)).astype(np.float32)
    got = {}
    for act in ("relu", "leaky_relu"):
        cfg = ModelConfig(stem_channels=8, block_channels=[16], head_units=6, dropout=0.0)
        cfg.head_activation = act
        model = build_detector((12, 40), cfg)
        head = model.get_layer("head")
        w, b = head.get_weights()
        head.set_weights([w, b - 100.0])  # every unit far below zero, for every input
        got[act] = np.asarray(model(x, training=False))[:, 0]
        bias = float(model.get_layer("logit").get_weights()[1][0])
        if act == "leaky_relu":
            leaky = model
    assert np.allclose(got["relu"], bias, atol=1e-6)
    assert np.ptp(got["leaky_relu"]) > 1e-3  # every input its own logit (ReLU: none apart)
    assert len(np.unique(got["leaky_relu"])) == len(x)
    # below zero the leaky head is linear with slope LEAKY_SLOPE: its logit is w . (0.1 z) + b
    z = np.asarray(keras.Model(leaky.inputs, leaky.get_layer("head").output)(x, training=False))
    w_out = leaky.get_layer("logit").get_weights()[0][:, 0]
    assert np.allclose(got["leaky_relu"], LEAKY_SLOPE * z @ w_out + bias, rtol=1e-4, atol=1e-4)

    m = TFLiteModel(convert(leaky, "int8", x))
    assert "LEAKY_RELU" in {o["op_name"] for o in m.interpreter._get_ops_details()}
    assert m.interpreter.get_input_details()[0]["dtype"] == np.int8
    assert m.interpreter.get_output_details()[0]["dtype"] == np.int8
    with pytest.raises(ValueError, match="model.head_activation must be one of"):
        build_detector((12, 40), ModelConfig(head_activation="tanh"))


def test_one_class_head_is_the_scaled_cosine_to_one_learned_direction(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from wakeguard.model.config import ModelConfig
    from wakeguard.model.detector import build_detector, load_keras, save_keras

    cfg = ModelConfig(
        stem_channels=8,
        block_channels=[16],
        head_units=6,
        dropout=0.0,
        score_head="one_class",
        cosine_scale=15.0,
    )
    model = build_detector((12, 40), cfg)
    x = np.random.default_rng(1).normal(size=(5, 12, 40)).astype(np.float32)
    got = np.asarray(model(x, training=False))[:, 0]
    # the embedding is the linear head's output; the score is 15 x its cosine with w
    import keras

    embed = keras.Model(model.inputs, model.get_layer("head").output)
    e = np.asarray(embed(x, training=False))
    assert (e < 0).any(), "the one-class embedding must not pass through a ReLU"
    w = np.asarray(model.get_layer("logit").direction)[:, 0]
    cos = e @ w / np.linalg.norm(e, axis=1) / np.linalg.norm(w)
    assert np.allclose(got, 15.0 * cos, atol=1e-4)
    assert np.all(np.abs(got) <= 15.0 + 1e-4)
    # saved and read back without any import of the layer's class by the caller
    path = save_keras(model, tmp_path / "oc.keras")
    assert np.allclose(np.asarray(load_keras(path)(x, training=False))[:, 0], got, atol=1e-6)
    with pytest.raises(ValueError, match="model.score_head must be one of"):
        build_detector((12, 40), ModelConfig(score_head="cosine"))


def test_one_class_loss_has_the_oc_softmax_margins() -> None:
    pytest.importorskip("tensorflow")
    from wakeguard.model.train import replay_loss

    cfg = load_config(None, ["model.score_head=one_class", "train.one_class_margins=[0.8,0.1]"])
    loss = replay_loss(cfg)
    alpha = cfg.model.cosine_scale

    def per(y: float, cos: float) -> float:
        return float(loss(np.array([[y]], np.float32), np.array([[alpha * cos]], np.float32)))

    softplus = lambda v: float(np.log1p(np.exp(v)))  # noqa: E731
    # a live window costs softplus(alpha (m_live - cos)), a replay softplus(alpha (cos - m_replay))
    assert per(1.0, 0.8) == pytest.approx(np.log(2.0), rel=1e-5)
    assert per(1.0, 0.5) == pytest.approx(softplus(alpha * 0.3), rel=1e-5)
    assert per(0.0, 0.1) == pytest.approx(np.log(2.0), rel=1e-5)
    assert per(0.0, 0.5) == pytest.approx(softplus(alpha * 0.4), rel=1e-5)
    # a replay below its margin and live speech above its own cost almost nothing
    assert per(0.0, -0.5) < 1e-5 and per(1.0, 1.0) < 0.2
    # a soft target (distillation) weighs the two
    assert per(0.25, 0.5) == pytest.approx(0.25 * per(1.0, 0.5) + 0.75 * per(0.0, 0.5), rel=1e-5)


def test_a_wider_stem_stride_lets_short_frames_in_at_the_trunks_cost() -> None:
    """63 frames through a stem of stride 4 reach the blocks as 16 steps, as 31 frames
    through the default stride 2 do; a kernel shorter than its stride is refused."""
    pytest.importorskip("tensorflow")
    from wakeguard.model.config import ModelConfig
    from wakeguard.model.detector import build_detector

    base = dict(stem_channels=8, block_channels=[16, 32], head_units=8, dropout=0.0)
    coarse = build_detector((31, 64), ModelConfig(**base))
    fine = build_detector((63, 64), ModelConfig(**base, stem_time_stride=4, stem_time_kernel=5))
    assert coarse.get_layer("stem").output.shape[1:] == (16, 32, 8)
    assert fine.get_layer("stem").output.shape[1:] == (16, 32, 8)
    assert fine.get_layer("stem").kernel.shape == (5, 3, 1, 8)
    for name in ("b0_pw", "b1_pw", "head"):  # everything after the stem is the same network
        assert fine.get_layer(name).output.shape == coarse.get_layer(name).output.shape
    x = np.random.default_rng(0).normal(size=(2, 63, 64)).astype(np.float32)
    assert np.asarray(fine(x)).shape == (2, 1)
    with pytest.raises(ValueError, match="stem_time_kernel .3. must be at least"):
        build_detector((63, 64), ModelConfig(**base, stem_time_stride=4))


@pytest.mark.parametrize("kind", ["logspec", "spectral_power", "block_power", "lfcc"])
def test_augmentation_keeps_shape_and_level_normalisation(kind: str) -> None:
    """Noise floor, equaliser and SpecAugment masks (off by default, see default_config.toml)."""
    pytest.importorskip("tensorflow")
    from wakeguard.edge.frontend import compute_features, frontend_shape
    from wakeguard.model.train import make_augment

    cfg = load_config(
        None,
        [
            f"frontend.kind={kind}",
            "frontend.n_fft=512",
            "frontend.frame_length=512",
            "frontend.hop_length=256",
            "augment.noise_prob=1",
            "augment.eq_prob=1",
            "augment.time_masks=1",
            "augment.freq_masks=1",
            "augment.noise_snr_db=0,0",
        ],
    )
    shape = frontend_shape(cfg.frontend).input_shape
    rng = np.random.default_rng(0)
    x = np.stack(
        [
            compute_features(rng.normal(0, 0.1, 32000).astype(np.float32), cfg.frontend)[0]
            for _ in range(4)
        ]
    )
    y, w = np.ones((4, 1), np.float32), np.ones(4, np.float32)
    xa, ya, wa = make_augment(cfg, shape)(x, y, w)
    xa = np.asarray(xa)
    assert xa.shape == x.shape and np.all(np.isfinite(xa))
    assert not np.allclose(xa, x)
    np.testing.assert_array_equal(np.asarray(ya), y)
    if kind != "lfcc":  # level normalisation survives the noise floor and the equaliser
        assert np.allclose(xa.mean(axis=(1, 2)), 0.0, atol=2.0)


def test_edge_silence_replaces_first_or_last_frames_with_quiet() -> None:
    """augment.edge_silence_prob: some of a window's first or last frames fall 30-90 dB
    below its loudest frame (a study option, off by default); the rest is untouched."""
    pytest.importorskip("tensorflow")
    from wakeguard.edge.frontend import compute_features, frontend_shape
    from wakeguard.model.train import make_augment

    cfg = load_config(None, ["augment.edge_silence_prob=1", "augment.edge_silence_frames=5"])
    assert load_config(None, []).augment.edge_silence_prob == 0.0
    shape = frontend_shape(cfg.frontend).input_shape
    rng = np.random.default_rng(0)
    x = np.stack(
        [compute_features(rng.normal(0, 0.1, 40_000).astype(np.float32), cfg.frontend)[0]] * 16
    )
    ones = np.ones((16, 1), np.float32)
    xa = np.asarray(make_augment(cfg, shape)(x, ones, ones[:, 0])[0])
    frame = xa.mean(axis=2)  # (windows, frames)
    quiet = frame <= frame.max(axis=1, keepdims=True) - 25.0
    for q, orig, new in zip(quiet, x, xa, strict=True):
        k = int(q.sum())
        assert 1 <= k <= 5 and (q[:k].all() or q[-k:].all())
        kept = ~q
        np.testing.assert_allclose(  # untouched frames keep their shape (up to the re-centring)
            new[kept] - new[kept].mean(), orig[kept] - orig[kept].mean(), atol=1e-3
        )


def test_mixup_mixes_windows_and_labels_in_the_same_proportion() -> None:
    """augment.mixup_alpha: each window becomes lam x + (1 - lam) x[partner] with its label
    mixed alike and lam >= 0.5, so every window stays on its own label's side; off by
    default, a negative alpha and the one_class head are refused."""
    pytest.importorskip("tensorflow")
    from wakeguard.model.config import ConfigError
    from wakeguard.model.train import make_augment, train

    assert load_config(None, []).augment.mixup_alpha == 0.0
    with pytest.raises(ConfigError, match="mixup_alpha"):
        load_config(None, ["augment.mixup_alpha=-1"])
    cfg = load_config(None, ["augment.mixup_alpha=1"])
    n, shape = 64, (5, 7)
    # window i is i times one zero-mean pattern (the level normalisation leaves it alone),
    # so a mixed window is (lam i + (1 - lam) j) times the pattern
    pattern = np.linspace(-1, 1, 35, dtype=np.float32).reshape(shape)
    x = np.arange(n, dtype=np.float32)[:, None, None] * pattern
    y = (np.arange(n) % 2).astype(np.float32)[:, None]
    w = np.linspace(1, 2, n).astype(np.float32)
    xa, ya, wa = (np.asarray(v) for v in make_augment(cfg, shape)(x, y, w))
    np.testing.assert_array_equal(wa, w)
    ya = ya[:, 0]
    assert np.all(np.where(y[:, 0] == 1, ya >= 0.5, ya <= 0.5))
    value = xa[:, 0, 0] / pattern[0, 0]  # lam i + (1 - lam) j
    np.testing.assert_allclose(xa, value[:, None, None] * pattern, atol=1e-4)
    moved = np.abs(value - np.arange(n)) > 1e-3
    assert moved.sum() > n // 2
    # mixed with the other label: the label gives lam, and lam the partner, one of the batch
    i = np.flatnonzero((ya > 0.02) & (ya < 0.98))  # lam well away from 1
    assert len(i) > 0
    lam = 1.0 - np.abs(ya[i] - y[i, 0])
    j = (value[i] - lam * i) / (1.0 - lam)
    np.testing.assert_allclose(j, np.round(j), atol=0.05)
    assert np.all((np.round(j) % 2) != (i % 2))
    with pytest.raises(ConfigError, match="one_class"):
        train(
            "unused",
            "unused",
            load_config(None, ["augment.mixup_alpha=0.4", "model.score_head=one_class"]),
        )


def test_compare_frontends_trains_each_candidate_and_reuses_finished_ones(
    tmp_path: Path, dataset: Path
) -> None:
    """``wakeguard compare-frontends``: one run per front-end, a table on dev, and a second
    call with the same config reuses the runs instead of training again."""
    out = tmp_path / "fe"
    args = ["compare-frontends", str(dataset), *FAST, "train.epochs=1", "--out", str(out)]
    res = runner.invoke(app, [*args, "--only", "lfcc", "--only", "spectral_power", "--json"])
    assert res.exit_code == 0, res.output
    table = json.loads(res.stdout)["results"]
    assert [r["frontend"] for r in table] == ["lfcc", "spectral_power"]
    for r in table:
        assert 0.0 <= r["dev_eer"] <= 1.0 and r["epochs_run"] == 1
        assert (Path(r["run"]) / "model.keras").is_file()
    assert table[0]["input_shape"][1] == 60  # 20 cepstra + deltas + delta-deltas
    doc = json.loads((out / "features_compare.json").read_text())
    assert doc["results"] == table and "train.epochs=1" in doc["common_overrides"]
    assert "| lfcc |" in (out / "features_compare.md").read_text()
    again = runner.invoke(app, [*args, "--only", "lfcc"])
    assert again.exit_code == 0, again.output
    assert "already trained with this config" in again.output and "| lfcc |" in again.output
    bad = runner.invoke(app, [*args, "--only", "mfcc"])
    assert bad.exit_code == 2 and "mfcc" in bad.output
    bad = runner.invoke(app, ["compare-frontends", str(dataset), "train.nope=1", "--out", str(out)])
    assert bad.exit_code == 2 and "nope" in bad.output


@pytest.mark.parametrize(
    "override, problem",
    [
        ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("train.epochs=-1", "train.epochs must be >= 1, got -1"),
        ("train.learning_rate=0", "train.learning_rate must be > 0"),
        ("train.patience=0", "train.patience must be >= 1"),
        ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
        ("train.label_smoothing=1", "train.label_smoothing must be in [0, 1)"),
        ("train.domain_adversarial=-1", "train.domain_adversarial must be >= 0"),
        ("train.train_eer_max_utterances=0", "train.train_eer_max_utterances must be >= 1"),
        ("model.dropout=1.0", "model.dropout must be in [0, 1)"),
        ("model.block_channels=[]", "model.block_channels must be a non-empty list"),
        ("model.block_channels=[16,0]", "model.block_channels must be a non-empty list"),
        ("augment.noise_prob=1.5", "augment.noise_prob must be in [0, 1]"),
        ("augment.noise_snr_db=[40,10]", "augment.noise_snr_db must be two numbers"),
        ("quantize.representative_windows=0", "quantize.representative_windows must be >= 1"),
        ("quantize.latency_utterances=-1", "quantize.latency_utterances must be >= 0"),
    ],
)
def test_out_of_range_values_are_refused_before_any_work(
    override: str, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(None, [override])
    res = runner.invoke(app, ["train", str(tmp_path), "-o", str(tmp_path / "t9"), override])
    assert res.exit_code == 2 and problem in res.output
    assert not (tmp_path / "t9").exists()


def test_a_bad_value_in_a_config_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nepochs = "abc"\n')
    res = runner.invoke(app, ["train", str(tmp_path), "-c", str(bad), "-o", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert f"{bad}: train.epochs: expected an integer, got 'abc'" in res.output
    zero = tmp_path / "zero.json"
    zero.write_text('{"train": {"batch_size": 0}}')
    with pytest.raises(ConfigError, match="zero.json: train.batch_size must be >= 1, got 0"):
        load_config(zero)
    assert not (tmp_path / "r").exists()


def test_workers_below_one_are_refused(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", str(tmp_path), "--workers", "-3", "-o", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--workers" in res.output
    res = runner.invoke(
        app, ["compare-frontends", str(tmp_path), "--workers", "0", "-o", str(tmp_path / "c")]
    )
    assert res.exit_code == 2 and "--workers" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "broken, problem",
    [
        (
            "manifest.json",
            "manifest.json: not valid JSON (line 1, column 2: Expecting property name",
        ),
        ("config.json", "config.json: not valid JSON (line 1, column 2: Expecting property name"),
        ("model.keras", "model.keras: not a loadable Keras model"),
    ],
)
def test_a_corrupt_init_from_source_names_the_file(
    broken: str, problem: str, dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.keras").write_bytes(b"PK\x03\x04truncated")
    if broken == "manifest.json":
        (src / "manifest.json").write_text("{bad json")
    else:
        (src / "config.json").write_text("{bad json" if broken == "config.json" else "{}")
    out = tmp_path / "ft"
    res = runner.invoke(
        app, ["train", str(dataset), "-o", str(out), "--init-from", str(src), *FAST]
    )
    assert res.exit_code == 2, res.output
    assert f"{src / broken}" in res.output and problem in res.output
    assert "File not found" not in res.output
    assert not out.exists()


def _one_label(dataset: Path, root: Path) -> Path:
    p = read_protocol(dataset)
    rows = [r for r in p.rows if not (r.split == "dev" and r.label == "spoof")]
    for r in rows:
        r.path = str(r.audio_path(dataset))
    write_protocol(root, rows)
    return root


def test_compare_frontends_checks_dataset_and_config_before_making_the_folder(
    tmp_path: Path, dataset: Path
) -> None:
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("[train]\nepochs = 0\n")
    one_label = _one_label(dataset, tmp_path / "onelabel")
    cases = [
        ([str(tmp_path / "nonexist")], "protocol file not found"),
        ([str(dataset), "-c", str(bad_cfg)], "train.epochs must be >= 1"),
        ([str(dataset), "train.nope=1"], "nope"),
        ([str(one_label)], "dev split needs both"),
    ]
    for i, (args, problem) in enumerate(cases):
        out = tmp_path / f"cf{i}"
        res = runner.invoke(app, ["compare-frontends", *args, "-o", str(out)])
        assert res.exit_code == 2 and problem in res.output, res.output
        assert "== logspec" not in res.output
        assert not out.exists()


def test_compare_frontends_overrides_reach_every_candidate(dataset: Path) -> None:
    from wakeguard.model.features_compare import candidate_configs

    default = candidate_configs(dataset)
    assert default["spectral_power"].frontend.hop_length == 500  # 0.25 s blocks of 8 frames
    assert default["logspec"].frontend.hop_length == load_config().frontend.hop_length
    shared = candidate_configs(dataset, overrides=["frontend.hop_length=250"])
    assert {c.frontend.hop_length for c in shared.values()} == {250}
    assert [c.frontend.kind for c in shared.values()] == ["logspec", "lfcc", "spectral_power"]
