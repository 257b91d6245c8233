"""Train the detector on a dataset and write a run folder.

A run folder holds ``config.json`` (the resolved config and the dataset path),
``data_fingerprint.json``, ``history.csv``, ``curves.png``, ``dev_scores.csv`` (one score
per dev utterance, the protocol's columns then ``score``) and ``model.keras`` (the
checkpoint with the best dev EER: one epoch's weights or, with ``train.swa_start``, the
running average of the epochs' weights; with ``train.select_average`` only the average
from that epoch on; with ``train.keep = "final_average"`` the average up to the last
epoch). ``checkpoint/`` keeps the last epoch's model, the weight average and the loop
state so ``--resume`` continues where a run stopped.

Features come from :mod:`wakeguard.edge.frontend` only, computed once per dataset and
front-end parameters and cached as ``.npz`` beside the dataset. Augmentation works on
those cached feature windows in the dB domain: SpecAugment time/frequency masks, a
coloured noise floor added in the power domain, and a smooth random equaliser. Random gain
would be pointless: the front-end removes the level.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.audio import load_audio
from wakeguard.edge.bundle import MANIFEST
from wakeguard.edge.files import atomic_path, atomic_text, save_figure, write_text_atomic
from wakeguard.edge.frontend import (
    FrontendParams,
    compute_features,
    frontend_from_dict,
    frontend_shape,
)
from wakeguard.edge.protocol import Protocol, Row, read_protocol, require_confirmed

from .config import (
    Config,
    ConfigError,
    EnsembleConfig,
    config_from_dict,
    config_to_json,
    load_config,
    read_json_object,
)
from .detector import cosine_score_layer, load_keras, save_keras
from .metrics import compute_eer

Log = Callable[[str], None]

CHECKPOINT_DIR = "checkpoint"
KERAS_MODEL = "model.keras"


# --------------------------------------------------------------------------- fingerprint


def data_fingerprint(protocol: Protocol | str | Path) -> dict[str, Any]:
    """Hash of the protocol file and of every audio file's size: changes when the data does."""
    proto = protocol if isinstance(protocol, Protocol) else read_protocol(protocol)
    csv_path = proto.root / "protocol.csv"
    h = hashlib.sha256()
    if csv_path.is_file():
        h.update(csv_path.read_bytes())
    else:
        for r in proto.rows:
            h.update(json.dumps(r.as_dict(), sort_keys=True).encode())
    total = 0
    for r in proto.rows:
        p = r.audio_path(proto.root)
        try:
            size = p.stat().st_size
        except OSError as exc:
            raise FileNotFoundError(f"{p}: audio file of the protocol is missing ({exc})") from exc
        total += size
        h.update(f"{r.path}\t{size}\n".encode())
    counts: dict[str, dict[str, int]] = {}
    for r in proto.rows:
        counts.setdefault(r.split or "-", {}).setdefault(r.label, 0)
        counts[r.split or "-"][r.label] += 1
    return {
        "sha256": h.hexdigest(),
        "protocol": str(csv_path),
        "n_rows": len(proto.rows),
        "audio_bytes": total,
        "counts": counts,
    }


# --------------------------------------------------------------------------- features


@dataclass
class Features:
    """Feature windows of some protocol rows: window ``i`` belongs to row ``utt[i]``."""

    rows: list[Row]
    windows: np.ndarray
    """``(n_windows, time, bins)`` float16 (dB values; float16 keeps 0.03 dB at 60 dB)."""
    utt: np.ndarray
    """Row index of each window."""

    @property
    def labels(self) -> np.ndarray:
        """1 for bona fide, 0 for spoof, per row."""
        return np.array([r.label == "bonafide" for r in self.rows], dtype=np.int32)

    def select(self, keep: Sequence[int]) -> Features:
        keep = np.asarray(keep, dtype=np.int64)
        remap = -np.ones(len(self.rows), dtype=np.int64)
        remap[keep] = np.arange(keep.size)
        mask = remap[self.utt] >= 0
        return Features([self.rows[i] for i in keep], self.windows[mask], remap[self.utt[mask]])

    def split(self, name: str) -> Features:
        return self.select([i for i, r in enumerate(self.rows) if r.split == name])

    def utterance_logits(self, window_logits: np.ndarray) -> np.ndarray:
        """Mean window logit per row, as :meth:`Scorer.raw_logit` aggregates them."""
        n = len(self.rows)
        sums = np.bincount(
            self.utt, weights=np.asarray(window_logits, dtype=np.float64), minlength=n
        )
        counts = np.bincount(self.utt, minlength=n)
        return sums / np.maximum(counts, 1)


def params_key(p: FrontendParams) -> str:
    return hashlib.sha256(json.dumps(p.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def cache_dir_for(protocol: Protocol) -> Path:
    """``$WAKEGUARD_CACHE`` if set, else ``.wakeguard-cache/`` in the dataset folder."""
    env = os.environ.get("WAKEGUARD_CACHE")
    return Path(env) if env else protocol.root / ".wakeguard-cache"


def shifted(audio: np.ndarray, offset: int) -> np.ndarray:
    """``audio`` moved ``offset`` samples earlier, its length kept by mirroring the last
    ``offset`` samples at the end (the room noise after a command), so it cuts into the same
    number of windows as ``audio`` and its frames fall between those of ``audio``. Audio no
    longer than ``offset`` is rotated instead (the front-end repeats audio that short)."""
    if offset <= 0 or audio.size == 0:
        return audio
    if offset >= audio.size:
        return np.roll(audio, -offset)
    return np.concatenate([audio[offset:], audio[audio.size - offset :][::-1]])


def _features_of(args: tuple[list[str], dict[str, Any], int]) -> list[np.ndarray]:
    paths, pdict, offset = args
    p = frontend_from_dict(pdict)
    return [
        compute_features(shifted(load_audio(path), offset), p).astype(np.float16) for path in paths
    ]


def dataset_features(
    protocol: Protocol | str | Path,
    params: FrontendParams,
    *,
    workers: int = 2,
    progress: bool = False,
    cache: bool = True,
    offset: int = 0,
) -> Features:
    """Feature windows of every row of a protocol, cached per (data, front-end params,
    ``offset``: each recording :func:`shifted` by that many samples first)."""
    proto = protocol if isinstance(protocol, Protocol) else read_protocol(protocol)
    fp = data_fingerprint(proto)["sha256"][:16]
    moved = f"-offset{offset}" if offset else ""
    cache_path = cache_dir_for(proto) / f"features-{params_key(params)}-{fp}{moved}.npz"
    if cache and cache_path.is_file():
        with np.load(cache_path) as z:
            windows, utt = z["windows"], z["utt"]
        if windows.shape[1:] == frontend_shape(params).input_shape and utt.max() < len(proto.rows):
            return Features(list(proto.rows), windows, utt)
    paths = [str(p) for p in proto.audio_paths()]
    chunk = 32
    jobs = [(paths[i : i + chunk], params.to_dict(), offset) for i in range(0, len(paths), chunk)]
    feats: list[np.ndarray] = []
    bar = _progress_bar(progress, "features", len(paths))
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
            for part in ex.map(_features_of, jobs):
                feats.extend(part)
                bar(len(part))
    else:
        for job in jobs:
            part = _features_of(job)
            feats.extend(part)
            bar(len(part))
    bar(None)
    utt = np.concatenate([np.full(len(f), i, dtype=np.int32) for i, f in enumerate(feats)])
    windows = np.concatenate(feats)
    if cache:
        try:
            with atomic_path(cache_path, keep_suffix=True) as tmp:
                np.savez(tmp, windows=windows, utt=utt)
        except OSError:
            pass  # a read-only dataset still trains, it only recomputes next time
    return Features(list(proto.rows), windows, utt)


def _progress_bar(enabled: bool, label: str, total: int) -> Callable[[int | None], None]:
    if not enabled:
        return lambda n: None
    from rich.console import Console
    from rich.progress import Progress

    prog = Progress(console=Console(stderr=True), transient=True)
    prog.start()
    task = prog.add_task(label, total=total)

    def step(n: int | None) -> None:
        if n is None:
            prog.stop()
        else:
            prog.advance(task, n)

    return step


# --------------------------------------------------------------------------- metrics


class TrainingCollapsed(ValueError):
    """The network gives every input the same score: its ReLUs died and it cannot learn."""


def is_constant(logits: np.ndarray) -> bool:
    """True when every logit is the same: a network collapsed to a constant output."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    return z.size > 1 and float(np.ptp(z)) <= 1e-6 * (1.0 + abs(float(z[0])))


def require_varied(window_logits: np.ndarray, network: str, advice: str) -> None:
    """Raise :class:`TrainingCollapsed` when ``network`` gave every dev window one logit."""
    if is_constant(window_logits):
        raise TrainingCollapsed(
            f"{network} gives every dev window the same logit"
            f" ({float(np.ravel(window_logits)[0]):.4f}), so it would call every command the"
            f" same, and its dead ReLUs pass no gradient for training to mend it. {advice}"
        )


def bce(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of logits, the two labels weighted equally (the one label
    alone when only one is there)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    loss = np.where(y == 1, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))
    parts = [loss[y == label].mean() for label in (1, 0) if np.any(y == label)]
    return float(0.5 * parts[0] + 0.5 * parts[1] if len(parts) == 2 else parts[0])


def eer_of(feats: Features, utt_scores: np.ndarray) -> float:
    y = feats.labels
    return compute_eer(utt_scores[y == 1], utt_scores[y == 0])[0]


# --------------------------------------------------------------------------- augmentation


EQ_LOG_FLOOR_HZ = 100.0
"""Below this the log-axis equaliser curve is flat (one value down to DC)."""


def make_augment(cfg: Config, input_shape: tuple[int, int]) -> Callable[[Any, Any], Any]:
    """A batched tf function: SpecAugment masks, noise floor and equaliser in the dB domain."""
    import tensorflow as tf

    a = cfg.augment
    p = cfg.frontend
    n_time, n_bins = input_shape
    spectral = p.kind in ("logspec", "spectral_power", "block_power")
    periodogram = p.kind == "logspec"
    renorm = p.normalize == "utterance_mean" and spectral
    t_max = max(0, min(a.time_mask_max, n_time // 4))
    f_max = max(0, min(a.freq_mask_max, n_bins // 4))
    u = tf.linspace(0.0, 1.0, n_bins)
    f_bins = np.linspace(p.fmin_hz, p.fmax_hz, n_bins)
    f_ref = min(EQ_LOG_FLOOR_HZ, p.fmax_hz / 2)
    u_log = np.log(np.maximum(f_bins, f_ref) / f_ref) / np.log(p.fmax_hz / f_ref)
    u_eq = tf.constant(u_log, tf.float32) if a.eq_axis == "log" else u

    def masks(x: Any, count: int, width_max: int, axis: int) -> Any:
        b = tf.shape(x)[0]
        n = n_time if axis == 1 else n_bins
        pos = tf.range(n)[None, :]
        keep = tf.ones((b, n), dtype=tf.bool)
        for _ in range(count):
            w = tf.random.uniform((b, 1), 0, width_max + 1, dtype=tf.int32)
            s = tf.random.uniform((b, 1), 0, 1.0) * tf.cast(n - w, tf.float32)
            s = tf.cast(s, tf.int32)
            keep &= ~((pos >= s) & (pos < s + w))
        keep = tf.cast(keep, x.dtype)
        return x * (keep[:, :, None] if axis == 1 else keep[:, None, :])

    def edge_silence(x: Any, b: Any) -> Any:
        """The first or last 1..edge_silence_frames frames of some windows become silence
        30-90 dB below the window's loudest frame (see ``AugmentConfig.edge_silence_prob``)."""
        t = tf.range(n_time)[None, :]
        k = tf.random.uniform((b, 1), 1, min(a.edge_silence_frames, n_time) + 1, dtype=tf.int32)
        at_start = tf.random.uniform((b, 1)) < 0.5
        edge = tf.where(at_start, t < k, t >= n_time - k)
        edge &= tf.random.uniform((b, 1)) < a.edge_silence_prob
        peak = tf.reduce_max(tf.reduce_mean(x, axis=2), axis=1)[:, None, None]
        slope = tf.random.uniform((b, 1, 1), -12.0, 6.0) * u[None, None, :]
        fill = peak - tf.random.uniform((b, 1, 1), 30.0, 90.0) + slope
        if periodogram:  # quiet noise fluctuates like a chi-squared periodogram; a floor does not
            flicker = 10.0 * tf.math.log(-tf.math.log(tf.random.uniform(tf.shape(x), 1e-6, 1.0)))
            flat = tf.random.uniform((b, 1, 1)) < 1.0 / 3.0
            fill = fill + tf.where(flat, 0.0, flicker / tf.math.log(10.0))
        return tf.where(edge[:, :, None], fill, x)

    def mixup(x: Any, y: Any, b: Any) -> tuple[Any, Any]:
        """Each window mixed with a shuffled partner, the window's own share at least 0.5."""
        g1 = tf.random.gamma((b,), a.mixup_alpha)
        g2 = tf.random.gamma((b,), a.mixup_alpha)
        lam = g1 / (g1 + g2 + 1e-12)
        lam = tf.maximum(lam, 1.0 - lam)
        partner = tf.random.shuffle(tf.range(b))
        x = lam[:, None, None] * x + (1.0 - lam[:, None, None]) * tf.gather(x, partner)
        y = lam[:, None] * y + (1.0 - lam[:, None]) * tf.gather(y, partner)  # float32 labels
        return x, y

    def augment(x: Any, y: Any, w: Any) -> Any:
        x = tf.cast(x, tf.float32)
        b = tf.shape(x)[0]
        if spectral and a.noise_prob > 0:
            power = tf.pow(10.0, x / 10.0)
            level = tf.reduce_mean(power, axis=[1, 2], keepdims=True)
            snr = tf.random.uniform((b, 1, 1), a.noise_snr_db[0], a.noise_snr_db[-1])
            slope = tf.random.uniform((b, 1, 1), -12.0, 6.0)  # dB across the band
            shape = tf.pow(10.0, slope * u[None, None, :] / 10.0)
            shape = shape / tf.reduce_mean(shape, axis=2, keepdims=True)
            noise = level * tf.pow(10.0, -snr / 10.0) * shape
            if periodogram:  # a noise periodogram fluctuates like chi-squared with 2 dof
                noise = noise * -tf.math.log(tf.random.uniform(tf.shape(x), 1e-6, 1.0))
            noisy = 10.0 * tf.math.log(power + noise + p.log_floor) / tf.math.log(10.0)
            use = tf.random.uniform((b, 1, 1)) < a.noise_prob
            x = tf.where(use, noisy, x)
        if spectral and a.eq_prob > 0 and a.eq_db > 0:
            k = tf.range(1, 5, dtype=tf.float32)[None, :, None]
            amp = tf.random.normal((b, 4, 1))
            phase = tf.random.uniform((b, 4, 1), 0, 2 * np.pi)
            curve = tf.reduce_sum(amp * tf.cos(np.pi * k * u_eq[None, None, :] + phase), axis=1)
            curve = curve / (tf.reduce_max(tf.abs(curve), axis=1, keepdims=True) + 1e-6)
            curve = curve * tf.random.uniform((b, 1), 0, a.eq_db)
            use = tf.random.uniform((b, 1, 1)) < a.eq_prob
            x = tf.where(use, x + curve[:, None, :], x)
        if spectral and a.edge_silence_prob > 0:
            x = edge_silence(x, b)
        if renorm:
            x = x - tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        if a.time_masks and t_max:
            x = masks(x, a.time_masks, t_max, 1)
        if a.freq_masks and f_max:
            x = masks(x, a.freq_masks, f_max, 2)
        if a.mixup_alpha > 0:
            x, y = mixup(x, y, b)
        return x, y, w

    return augment


# --------------------------------------------------------------------------- training


def make_optimizer(config: Config, steps: int) -> Any:
    """AdamW with a cosine decay to 5 % of the learning rate over all the epochs' steps."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(
        config.train.learning_rate, decay_steps=max(1, config.train.epochs * steps), alpha=0.05
    )
    # Clipping the global gradient norm keeps one bad early batch from killing the ReLU
    # head (a run once collapsed to a constant output in its first epoch).
    return keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=config.train.weight_decay, global_clipnorm=1.0
    )


@functools.cache
def one_class_loss_class() -> Any:
    """The ``OneClassLoss`` Keras loss, registered on first use so that a checkpoint compiled
    with it (``--resume``) is read back with its loss."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="wakeguard")
    class OneClassLoss(keras.losses.Loss):
        """OC-softmax (Zhang, Jiang and Duan, IEEE SPL 2021) on ``z = scale * cos``: a live
        window (target 1) costs ``softplus(scale * m_live - z)``, a replay ``softplus(z -
        scale * m_replay)``; a soft target (distillation) weighs the two."""

        def __init__(
            self, scale: float = 20.0, margins: Sequence[float] = (0.9, 0.2), **kwargs: Any
        ) -> None:
            super().__init__(name=kwargs.pop("name", "one_class_loss"), **kwargs)
            self.scale, self.margins = float(scale), [float(m) for m in margins]

        def call(self, y_true: Any, z: Any) -> Any:
            y = tf.cast(y_true, z.dtype)
            m_live, m_replay = (self.scale * m for m in self.margins)
            per = y * tf.nn.softplus(m_live - z) + (1.0 - y) * tf.nn.softplus(z - m_replay)
            return tf.reduce_mean(per, axis=-1)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "scale": self.scale, "margins": self.margins}

    return OneClassLoss


def replay_loss(config: Config) -> Any:
    """Binary cross-entropy on the raw logit (bona fide = 1), or the OC-softmax loss on the
    scaled cosine of a ``one_class`` score head."""
    import keras

    if config.model.score_head == "one_class":
        return one_class_loss_class()(config.model.cosine_scale, config.train.one_class_margins)
    return keras.losses.BinaryCrossentropy(
        from_logits=True, label_smoothing=config.train.label_smoothing
    )


def domain_labels(feats: Features, column: str) -> tuple[list[str], np.ndarray | None]:
    """The domains of ``column`` (sorted) and each window's domain index; no domains (and
    None) when no train row names one, or all name the same: a corpus without rooms (an
    imported one, or one room recorded) trains without the adversarial loss."""
    values = [r.conditions.get(column, "") for r in feats.rows]
    missing = sum(v in ("", "-") for v in values)
    if missing == len(values):
        return [], None
    if missing:
        raise ConfigError(
            f"train.domain_column={column!r}: {missing} of {len(values)} train rows have no "
            f"value in that column; name a condition column that every train row fills"
        )
    domains = sorted(set(values))
    if len(domains) < 2:
        return domains, None
    index = {d: i for i, d in enumerate(domains)}
    per_row = np.array([index[v] for v in values], dtype=np.int32)
    return domains, per_row[feats.utt]


GROUP_DRO_WINDOWS = 4000
"""Train windows scored after each epoch for the per-domain losses of ``train.group_dro``
(a fixed random subset: a few seconds, not a pass over the split)."""
GROUP_WEIGHT_CLIP = 5.0
"""A domain's window weight stays within this factor of the mean."""


def group_losses(
    logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_groups: int
) -> np.ndarray:
    """:func:`bce` of the window logits of each group; NaN for a group without windows."""
    out = np.full(n_groups, np.nan)
    for g in np.unique(groups):
        mine = groups == g
        out[g] = bce(logits[mine], labels[mine])
    return out


def group_weights(log_q: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each window's weight from its group's log weight: mean 1 over the windows, within
    :data:`GROUP_WEIGHT_CLIP` of it."""
    w = np.exp(log_q - log_q.max())[groups]
    return np.clip(w / w.mean(), 1 / GROUP_WEIGHT_CLIP, GROUP_WEIGHT_CLIP).astype(np.float32)


def domain_ramp(epoch: int, config: Config) -> float:
    """Ganin et al.'s schedule 2 / (1 + exp(-10 p)) - 1 at the start of ``epoch`` (0-based),
    p the fraction of the epochs done: the reversed gradient grows from 0 towards its weight
    while the replay classifier finds its features."""
    p = epoch / max(1, config.train.epochs)
    return float(2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0)


def gradient_reversal(name: str = "gradient_reversal") -> Any:
    """A Keras layer that is the identity forwards and multiplies the gradient by
    ``-scale`` backwards; ``scale`` is a non-trainable weight (0 at first) set per epoch."""
    import tensorflow as tf
    from keras import layers

    class GradientReversal(layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.scale = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="scale"
            )

        def call(self, x: Any) -> Any:
            scale = tf.convert_to_tensor(self.scale)

            @tf.custom_gradient
            def reverse(v: Any) -> Any:
                return tf.identity(v), lambda dy: -scale * dy

            return reverse(x)

    return GradientReversal(name=name)


def adversarial_model(model: Any, n_domains: int, config: Config, steps: int) -> tuple[Any, Any]:
    """A training model around ``model`` with a second output: the domain classifier, fed
    the pooled trunk output through a gradient-reversal layer. ``model`` itself, the one
    that is saved and shipped, is unchanged (it shares its layers with the wrapper)."""
    import keras
    from keras import layers

    reversal = gradient_reversal()
    d = reversal(model.get_layer("flatten").output)
    # the pooled ReLU features are far from unit scale: without a normalisation the domain
    # classifier stayed at chance for epochs, and a classifier at chance teaches nothing
    d = layers.BatchNormalization(name="domain_bn")(d)
    d = layers.Dense(64, activation="relu", name="domain_hidden")(d)
    d = layers.Dense(n_domains, name="domain")(d)
    wrapper = keras.Model(model.inputs, {"logit": model.outputs[0], "domain": d})
    wrapper.compile(
        optimizer=make_optimizer(config, steps),
        loss={
            "logit": replay_loss(config),
            "domain": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
    )
    return wrapper, reversal


DOMAIN_HEAD_FILE = "domain_head.npz"
DOMAIN_HEAD_LAYERS = ("domain_bn", "domain_hidden", "domain")


def save_domain_head(wrapper: Any, path: Path, domains: list[str]) -> None:
    """The domain classifier's weights (it lives only in the training wrapper) and the
    domains its outputs name, written beside the checkpoint for ``--resume``."""
    arrays = {
        f"{name}/{i}": w
        for name in DOMAIN_HEAD_LAYERS
        for i, w in enumerate(wrapper.get_layer(name).get_weights())
    }
    with atomic_path(path, keep_suffix=True) as tmp:
        np.savez(tmp, domains=np.array(domains), **arrays)


def load_domain_head(wrapper: Any, path: Path, domains: list[str]) -> str:
    """Restore the domain classifier saved by :func:`save_domain_head`; a missing file or a
    different set of domains leaves it fresh. Returns what happened, for the log."""
    if not path.is_file():
        return "the domain classifier starts afresh (no saved domain head)"
    with np.load(path) as saved:
        if list(saved["domains"]) != domains:
            return "the domain classifier starts afresh (the domains changed)"
        for name in DOMAIN_HEAD_LAYERS:
            layer = wrapper.get_layer(name)
            layer.set_weights([saved[f"{name}/{i}"] for i in range(len(layer.get_weights()))])
    return f"the domain classifier continues ({len(domains)} domains)"


SWA_FILE = "swa.npz"
SWA_BN_BATCHES = 40
"""Train batches run through the averaged network to re-estimate its batch-norm statistics
(their plain mean, as ``torch.optim.swa_utils.update_bn`` does)."""


class SwaState:
    """The running mean of the trainable weights at epoch ends (stochastic weight averaging).

    Averaging the weights of several epochs lands in a flatter, wider optimum than any one
    of them, which tends to generalise better (Izmailov et al., 2018), and dev EER of an
    average moves less from epoch to epoch than one epoch's (docs/benchmarks.md, Session 3).
    The batch-norm statistics of the average are not the average of the statistics, so
    they are re-estimated on train.
    """

    def __init__(self, mean: list[np.ndarray], count: int) -> None:
        self.mean, self.count = mean, count
        self._clone: Any = None
        self._bn_pass: Any = None

    @classmethod
    def start(cls, model: Any) -> SwaState:
        return cls([np.zeros(v.shape, np.float64) for v in model.trainable_weights], 0)

    def add(self, model: Any) -> None:
        self.count += 1
        for m, v in zip(self.mean, model.trainable_weights, strict=True):
            m += (np.asarray(v, np.float64) - m) / self.count

    def model(self, model: Any, windows: np.ndarray, seed: int, batch: int) -> Any:
        """A network with the averaged weights and re-estimated batch-norm statistics.

        Each batch runs through a compiled training-mode pass with momentum 0, which leaves
        the batch's own statistics in the moving variables; they are folded into the
        running mean here with momentum ``i / (i + 1)`` on batch ``i``, in float32 and in
        the order of the batch-norm layer's own update (``moving * m + batch * (1 - m)``),
        so the result is the one the layer would compute eagerly, in half the time or less.
        """
        import keras

        if self._clone is None:
            self._clone = keras.models.clone_model(model)
        avg = self._clone
        avg.set_weights(model.get_weights())
        for var, m in zip(avg.trainable_weights, self.mean, strict=True):
            var.assign(m.astype(np.float32))
        idx = np.random.default_rng(seed).permutation(len(windows))[: SWA_BN_BATCHES * batch]
        norms = [la for la in avg.layers if isinstance(la, keras.layers.BatchNormalization)]
        momenta = [la.momentum for la in norms]
        running: list[tuple[np.ndarray, np.ndarray]] = []
        try:
            for la in norms:
                la.momentum = 0.0  # traced into the compiled pass: moving := batch statistics
            if self._bn_pass is None:
                import tensorflow as tf

                self._bn_pass = tf.function(lambda x: avg(x, training=True), reduce_retracing=True)
            for i, chunk in enumerate(np.array_split(idx, max(1, -(-len(idx) // batch)))):
                self._bn_pass(windows[np.sort(chunk)].astype(np.float32))
                stats = [
                    (np.asarray(la.moving_mean), np.asarray(la.moving_variance)) for la in norms
                ]
                m, w = np.float32(i / (i + 1)), np.float32(1.0 - i / (i + 1))
                running = (
                    stats
                    if i == 0
                    else [
                        (rm * m + bm * w, rv * m + bv * w)
                        for (rm, rv), (bm, bv) in zip(running, stats, strict=True)
                    ]
                )
            for la, (rm, rv) in zip(norms, running, strict=True):
                la.moving_mean.assign(rm)
                la.moving_variance.assign(rv)
        finally:
            for la, m in zip(norms, momenta, strict=True):
                la.momentum = m
        return avg

    def save(self, path: Path) -> None:
        with atomic_path(path, keep_suffix=True) as tmp:
            np.savez(tmp, *self.mean)

    @classmethod
    def load(cls, path: Path, count: int) -> SwaState:
        with np.load(path) as z:
            return cls([z[f"arr_{i}"].astype(np.float64) for i in range(len(z.files))], count)


@dataclass
class TrainResult:
    """What a training run produced."""

    run: Path
    best_epoch: int
    dev_eer: float
    train_eer: float
    epochs_run: int
    stopped_early: bool
    seconds: float
    n_params: int
    averaged_from: int = 0
    """First epoch of the weight average kept (0: the kept model is one epoch's weights)."""
    kept: str = "best_dev"
    """``train.keep``: ``best_epoch`` is the best dev candidate's epoch, or with
    ``final_average`` the last epoch of the average kept."""

    @property
    def dev_eer_label(self) -> str:
        """How to name ``dev_eer`` to a person: the best one, or the kept average's."""
        return "dev EER" if self.kept == "final_average" else "best dev EER"

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["run"] = str(self.run)
        return d


def _configure_tf(threads: int) -> None:
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        except RuntimeError:
            pass  # already initialised in this process


def predict_windows(model: Any, windows: np.ndarray, batch: int = 512) -> np.ndarray:
    """Raw logits of feature windows through the Keras model (inference mode).

    Batches go through Keras's compiled predict step (``predict_on_batch``): the same
    numbers as calling the model eagerly, in a third to half the time (docs/benchmarks.md).
    """
    out = []
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch].astype(np.float32)
        out.append(np.asarray(model.predict_on_batch(x)).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0)


def load_init_source(
    path: str | Path, role: str = "--init-from source"
) -> tuple[Any, dict[str, Any], str]:
    """Keras model and config of a run folder or a bundle folder (which keeps ``model.keras``);
    ``role`` names what the folder is for in errors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {role} not found")
    model_file = path / KERAS_MODEL
    if not model_file.is_file():
        raise FileNotFoundError(
            f"{path}: no {KERAS_MODEL} in this {role} (need a run folder or a bundle written by `wakeguard quantize`)"
        )
    if (path / MANIFEST).is_file():
        manifest = read_json_object(path / MANIFEST)
        cfg = manifest.get("training", {}).get("config")
        if not cfg and "frontend" not in manifest:
            raise ValueError(f"{path / MANIFEST}: no frontend recorded (not a wakeguard bundle?)")
        cfg = cfg or {"frontend": manifest["frontend"]}
        kind = "bundle"
    else:
        cfg = read_json_object(path / "config.json")
        kind = "run"
    return load_keras(model_file), cfg, kind


def teacher_logits(config: Config, windows: np.ndarray, log: Log) -> np.ndarray | None:
    """Mean logit of the ``train.distill_from`` teachers per window (None without teachers);
    a teacher with another front-end is refused: its logits would be of other inputs."""
    teachers = config.train.distill_from
    if not teachers:
        return None
    total = np.zeros(len(windows))
    for path in teachers:
        model, cfg, kind = load_init_source(path, "train.distill_from teacher")
        if frontend_from_dict(cfg["frontend"]) != config.frontend:
            raise ConfigError(
                f"train.distill_from: {path} has another front-end than this run; a teacher "
                "must read the same feature windows"
            )
        total += predict_windows(model, windows)
        log(f"teacher {path} ({kind})")
    return total / len(teachers)


def training_protocol(dataset: str | Path) -> Protocol:
    """The protocol to train on, refused unless train and dev are confirmed and hold both labels."""
    proto = read_protocol(dataset)
    require_confirmed(
        proto,
        [r for r in proto.rows if r.split in ("train", "dev")],
        "training (train and dev splits)",
    )
    for split in ("train", "dev"):
        labels = {r.label for r in proto.where(split=split)}
        if labels != {"bonafide", "spoof"}:
            raise ValueError(
                f"{dataset}: the {split} split needs both bonafide and spoof rows, has {sorted(labels) or 'none'}"
            )
    return proto


def train_framings(
    proto: Protocol,
    tr: Features,
    config: Config,
    *,
    workers: int,
    progress: bool,
    log: Log,
) -> np.ndarray | None:
    """The train windows at ``train.frame_offsets`` phases of the frame grid, stacked
    ``(offsets, n_windows, time, bins)`` with ``tr.windows`` first; None when there is one."""
    k = config.train.frame_offsets
    if k <= 1:
        return None
    hop = config.frontend.hop_length
    offsets = [i * hop // k for i in range(1, k)]
    log(f"train windows also framed {', '.join(map(str, offsets))} samples later")
    train_only = replace(proto, rows=tr.rows, file=None)
    # filled in place: one framing in memory beside the stack, not all of them twice
    stack = np.empty((k, *tr.windows.shape), dtype=tr.windows.dtype)
    stack[0] = tr.windows
    for i, offset in enumerate(offsets, start=1):
        moved = dataset_features(
            train_only, config.frontend, workers=workers, progress=progress, offset=offset
        )
        if not np.array_equal(moved.utt, tr.utt):
            raise RuntimeError(f"framing {offset} samples later cut the train split differently")
        stack[i] = moved.windows
        del moved
    return stack


def train(
    dataset: str | Path | None,
    out: str | Path,
    config: Config | None = None,
    *,
    resume: bool = False,
    init_from: str | Path | None = None,
    workers: int = 2,
    progress: bool = False,
    log: Log | None = None,
) -> TrainResult:
    """Train on the ``train`` split, select the checkpoint on ``dev`` EER, write the run folder.

    Train and dev rows whose ``label_confirmed`` is not ``yes`` (clips exported by
    ``wakeguard monitor`` and not yet checked by a person) are refused with
    :class:`wakeguard.edge.protocol.UnconfirmedLabelsError`; see
    :func:`wakeguard.edge.protocol.require_confirmed` for why refusing beats skipping.
    """
    t_start = time.time()
    log = log or (lambda s: None)
    out = Path(out)
    state_file = out / CHECKPOINT_DIR / "state.json"
    saved: dict[str, Any] = {}
    if resume:
        if not state_file.is_file():
            raise FileNotFoundError(f"{out}: nothing to resume (no {CHECKPOINT_DIR}/state.json)")
        saved = json.loads((out / "config.json").read_text())
        dataset = dataset or saved["dataset"]
        config = config or config_from_dict(saved)
        if config.frontend != config_from_dict(saved).frontend:
            raise ConfigError(f"{out}: --resume cannot change the front-end of a run")
    config = config or load_config()
    # one network: an ensemble section is the business of `train_ensemble`, not of a run
    config = replace(config, ensemble=EnsembleConfig())
    if dataset is None:
        raise ValueError("no dataset given")
    if config.augment.mixup_alpha > 0 and config.model.score_head == "one_class":
        raise ConfigError(
            "augment.mixup_alpha needs soft labels, which the one_class score head's loss"
            " does not take: use model.score_head=dense or augment.mixup_alpha=0"
        )
    proto = training_protocol(dataset)

    init_model = None
    init_info: dict[str, Any] | None = None
    if init_from is not None and not resume:
        init_model, src_cfg, kind = load_init_source(init_from)
        src_front = frontend_from_dict(src_cfg["frontend"])
        if src_front != config.frontend:
            log(
                f"init-from: using the front-end of {init_from} (a fine-tuned model keeps its input)"
            )
        config = replace(config, frontend=src_front)
        if "model" in src_cfg:
            config = config_from_dict({"model": src_cfg["model"]}, config)
        init_info = {"path": str(Path(init_from).resolve()), "kind": kind}

    out.mkdir(parents=True, exist_ok=True)
    fingerprint = data_fingerprint(proto)
    cfg_json = config_to_json(config, Path(dataset).resolve())
    if init_info:
        cfg_json["init_from"] = init_info
    if resume and "init_from" in saved:
        cfg_json["init_from"] = saved["init_from"]
    write_text_atomic(out / "config.json", json.dumps(cfg_json, indent=2) + "\n")
    if not resume:
        write_text_atomic(out / "data_fingerprint.json", json.dumps(fingerprint, indent=2) + "\n")
    elif json.loads((out / "data_fingerprint.json").read_text())["sha256"] != fingerprint["sha256"]:
        raise ValueError(
            f"{out}: the dataset changed since this run started; start a new run instead of --resume"
        )

    log("computing features")
    feats = dataset_features(proto, config.frontend, workers=workers, progress=progress)
    tr, dev = feats.split("train"), feats.split("dev")
    framings = train_framings(proto, tr, config, workers=workers, progress=progress, log=log)
    rng = np.random.default_rng(config.train.seed)
    n_sub = min(len(tr.rows), config.train.train_eer_max_utterances)
    tr_sub = tr.select(np.sort(rng.choice(len(tr.rows), n_sub, replace=False)))

    _configure_tf(config.train.threads)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.train.seed)
    input_shape = frontend_shape(config.frontend).input_shape
    y_win = tr.labels[tr.utt].astype(np.float32)
    y_hard = y_win.copy()  # the class balance follows the labels, not the soft targets
    z_teach = teacher_logits(config, tr.windows, log)
    if z_teach is not None:
        a = config.train.distill_weight
        y_win = ((1 - a) * y_win + a / (1 + np.exp(-z_teach))).astype(np.float32)
        log(
            f"distilling from {len(config.train.distill_from)} teacher(s), weight {a}: "
            f"teachers' train window EER "
            f"{compute_eer(z_teach[y_hard == 1], z_teach[y_hard == 0])[0]:.2%}"
        )
    if config.train.balance_classes:
        pos = max(1.0, float(y_hard.sum()))
        neg = max(1.0, float(len(y_hard) - y_hard.sum()))
        w_win = np.where(y_hard == 1, len(y_hard) / (2 * pos), len(y_hard) / (2 * neg)).astype(
            np.float32
        )
    else:
        w_win = np.ones_like(y_win)
    bs = config.train.batch_size
    steps = int(np.ceil(len(y_win) / bs))
    augment = make_augment(config, input_shape)
    windows = tr.windows

    column = config.train.domain_column
    uses = [
        name
        for name, weight in (
            ("domain-adversarial loss", config.train.domain_adversarial),
            ("group DRO", config.train.group_dro),
        )
        if weight > 0
    ]
    domains, d_win = domain_labels(tr, column) if uses else ([], None)
    if uses and d_win is None:
        log(
            f"{' and '.join(uses)} off: the train split has {len(domains)} {column!r} domains"
            " (it needs two or more)"
        )
    adversarial = config.train.domain_adversarial > 0 and d_win is not None
    dro = config.train.group_dro > 0 and d_win is not None
    if adversarial:
        log(
            f"domain-adversarial loss on {len(domains)} {column!r} domains"
            f", weight {config.train.domain_adversarial}"
        )
    base_w = w_win.copy()
    log_q = np.zeros(len(domains))
    if dro:
        dro_sub = np.sort(
            np.random.default_rng([config.train.seed, 0x6D0]).choice(
                len(y_win), min(GROUP_DRO_WINDOWS, len(y_win)), replace=False
            )
        )
        log(f"group DRO on {len(domains)} {column!r} domains, step {config.train.group_dro}")

    framing_rng = np.random.default_rng([config.train.seed, 0xF4A])

    def gather(idx: np.ndarray) -> tuple[np.ndarray, ...]:
        d = d_win[idx] if d_win is not None else np.zeros(len(idx), dtype=np.int32)
        if framings is None:
            x = windows[idx]
        else:
            x = framings[framing_rng.integers(0, len(framings), len(idx)), idx]
        return x.astype(np.float32), y_win[idx][:, None], w_win[idx], d

    def targets(x: Any, y: Any, w: Any, d: Any) -> tuple[Any, ...]:
        x, y, w = augment(x, y, w)
        return (x, {"logit": y, "domain": d}, w) if adversarial else (x, y, w)

    ds = (
        tf.data.Dataset.from_tensor_slices(np.arange(len(y_win)))
        .shuffle(len(y_win), seed=config.train.seed, reshuffle_each_iteration=True)
        .batch(bs)
        .map(
            lambda i: tf.numpy_function(
                gather, [i], (tf.float32, tf.float32, tf.float32, tf.int32)
            ),
            num_parallel_calls=1,
        )
        .map(
            lambda x, y, w, d: (
                tf.ensure_shape(x, (None, *input_shape)),
                tf.ensure_shape(y, (None, 1)),
                tf.ensure_shape(w, (None,)),
                tf.ensure_shape(d, (None,)),
            )
        )
        .map(targets, num_parallel_calls=1)
        .prefetch(2)
    )

    history: list[dict[str, Any]] = []
    start_epoch, best_eer, best_loss, best_epoch, bad = 0, float("inf"), float("inf"), -1, 0
    swa: SwaState | None = None
    best_kind = ""
    # the weights in model.keras: (dev EER, dev loss, epoch, kind); the best ones, or with
    # train.keep="final_average" the latest average once averaging has begun
    kept: tuple[float, float, int, str] = (float("inf"), float("inf"), -1, "")
    if resume:
        state = json.loads(state_file.read_text())
        cosine_score_layer(), one_class_loss_class()  # registered before the checkpoint is read
        model = keras.models.load_model(out / CHECKPOINT_DIR / KERAS_MODEL)
        start_epoch, best_eer, best_epoch, bad = (
            state["epoch"] + 1,
            state["best_eer"],
            state["best_epoch"],
            state["bad_epochs"],
        )
        best_loss = state.get("best_loss", float("inf"))
        history = state["history"]
        best_kind = state.get("best_kind", "")
        kept = tuple(state.get("kept", (best_eer, best_loss, best_epoch, best_kind)))
        if state.get("swa_count", 0) > 0:
            swa = SwaState.load(out / CHECKPOINT_DIR / SWA_FILE, state["swa_count"])
        if dro and "group_dro_log_q" in state:
            log_q = np.asarray(state["group_dro_log_q"], dtype=np.float64)
            w_win[:] = base_w * group_weights(log_q, d_win)
        log(f"resuming after epoch {state['epoch'] + 1}")
    else:
        from .detector import build_detector

        model = build_detector(input_shape, config.model)
        if init_model is not None:
            model.set_weights(init_model.get_weights())
        model.compile(optimizer=make_optimizer(config, steps), loss=replay_loss(config))
    fit_model, reversal = model, None
    if adversarial:
        fit_model, reversal = adversarial_model(model, len(domains), config, steps)
        if resume:
            # the domain classifier comes back from its checkpoint; the optimiser's moments
            # start afresh, the learning-rate schedule where the run stopped
            fit_model.optimizer.build(fit_model.trainable_variables)
            fit_model.optimizer.iterations.assign(start_epoch * steps)
            log(
                f"resume: {load_domain_head(fit_model, out / CHECKPOINT_DIR / DOMAIN_HEAD_FILE, domains)}"
            )
    from .detector import count_params

    n_params = count_params(model)
    stopped_early = False
    if init_model is not None and start_epoch == 0:
        base_logits = dev.utterance_logits(predict_windows(model, dev.windows))
        base, base_loss = eer_of(dev, base_logits), bce(base_logits, dev.labels)
        base_train = eer_of(tr_sub, tr_sub.utterance_logits(predict_windows(model, tr_sub.windows)))
        log(f"init-from model before fine-tuning: dev EER {base:.2%}, train EER {base_train:.2%}")
        history.append(
            {
                "epoch": 0,
                "loss": float("nan"),
                "train_eer": base_train,
                "dev_eer": base,
                "dev_loss": base_loss,
                "seconds": 0.0,
            }
        )
        best_eer, best_loss, best_epoch = base, base_loss, 0
        kept = (base, base_loss, 0, "")
        save_keras(model, out / KERAS_MODEL)
    epoch = start_epoch - 1
    for epoch in range(start_epoch, config.train.epochs):
        if bad >= config.train.patience:
            stopped_early = True
            break
        t0 = time.time()
        if reversal is not None:
            reversal.scale.assign(config.train.domain_adversarial * domain_ramp(epoch, config))
        h = fit_model.fit(  # ds shuffles itself; shuffle=False only silences Keras's warning
            ds,
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=0,
            steps_per_epoch=steps,
            shuffle=False,
        )
        loss = float(h.history["logit_loss" if adversarial else "loss"][-1])
        dev_windows = predict_windows(model, dev.windows)
        require_varied(
            dev_windows,
            f"{out}: in epoch {epoch + 1} the network",
            "It collapsed: start a new run with another train.seed or a lower"
            f" train.learning_rate (this one: seed {config.train.seed},"
            f" {config.train.learning_rate})",
        )
        dev_logits = dev.utterance_logits(dev_windows)
        dev_eer = eer_of(dev, dev_logits)
        dev_loss = bce(dev_logits, dev.labels)
        train_eer = eer_of(tr_sub, tr_sub.utterance_logits(predict_windows(model, tr_sub.windows)))
        row = {
            "epoch": epoch + 1,
            "loss": loss,
            "train_eer": train_eer,
            "dev_eer": dev_eer,
            "dev_loss": dev_loss,
            "seconds": 0.0,
        }
        if adversarial:
            row["domain_loss"] = float(h.history["domain_loss"][-1])
        # Candidates for the checkpoint: this epoch's weights and, once averaging has begun,
        # the running average of the epochs so far (alone, with train.select_average).
        averaging = bool(config.train.swa_start) and epoch + 1 >= config.train.swa_start
        candidates = []
        if not (averaging and config.train.select_average):
            candidates.append((dev_eer, dev_loss, model, ""))
        if averaging:
            swa = swa or SwaState.start(model)
            swa.add(model)
            swa_model = swa.model(model, windows, config.train.seed + epoch, bs)
            swa_logits = dev.utterance_logits(predict_windows(swa_model, dev.windows))
            row["swa_dev_eer"] = eer_of(dev, swa_logits)
            row["swa_dev_loss"] = bce(swa_logits, dev.labels)
            candidates.append((row["swa_dev_eer"], row["swa_dev_loss"], swa_model, "swa"))
        dro_note = ""
        if dro:  # the next epoch weights the domains by how badly this one did in them
            z = predict_windows(model, windows[dro_sub])
            losses = group_losses(z, y_hard[dro_sub].astype(int), d_win[dro_sub], len(domains))
            seen = np.isfinite(losses)
            log_q[seen] += config.train.group_dro * losses[seen]
            w_win[:] = base_w * group_weights(log_q, d_win)
            q = group_weights(log_q, np.arange(len(domains)))
            dro_note = f"  heaviest domain {domains[int(np.argmax(q))]} x{q.max():.2f}"
        row["seconds"] = round(time.time() - t0, 2)
        history.append(row)
        # dev EER first; on a tie (often at 0 % on easy data) the lower dev loss wins
        cand_eer, cand_loss, cand_model, kind = min(candidates, key=lambda c: (c[0], c[1]))
        improved = cand_eer < best_eer - 1e-9 or (
            abs(cand_eer - best_eer) <= 1e-9 and cand_loss < best_loss
        )
        if improved:
            best_eer, best_loss, best_epoch, bad = cand_eer, cand_loss, epoch + 1, 0
            best_kind = kind
        else:
            bad += 1
        if averaging and config.train.keep == "final_average":
            # the latest average is kept whatever dev says of it; dev EER only stops the run
            kept = (row["swa_dev_eer"], row["swa_dev_loss"], epoch + 1, "swa")
            save_keras(swa_model, out / KERAS_MODEL)
        elif improved:
            kept = (cand_eer, cand_loss, epoch + 1, kind)
            save_keras(cand_model, out / KERAS_MODEL)
        swa_note = f"  SWA dev EER {row['swa_dev_eer']:6.2%}" if "swa_dev_eer" in row else ""
        if adversarial:
            swa_note = f"  domain loss {row['domain_loss']:.3f}{swa_note}"
        log(
            f"epoch {epoch + 1:3d}  loss {loss:.4f}  train EER {train_eer:6.2%}  dev EER {dev_eer:6.2%}"
            f"{swa_note}{dro_note}{'  * ' + (kind or 'epoch') if improved else ''}"
            f"  ({row['seconds']:.0f} s)"
        )
        (out / CHECKPOINT_DIR).mkdir(exist_ok=True)
        save_keras(model, out / CHECKPOINT_DIR / KERAS_MODEL)
        # the state file is the checkpoint's commit: moved into place after everything else
        tmp = state_file.with_suffix(".part")
        write_text_atomic(
            tmp,
            json.dumps(
                {
                    "epoch": epoch,
                    "best_eer": best_eer,
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad,
                    "best_kind": best_kind,
                    "kept": list(kept),
                    "history": history,
                    "swa_count": swa.count if swa else 0,
                    "group_dro_log_q": log_q.tolist(),
                }
            ),
        )
        if swa:
            swa.save(out / CHECKPOINT_DIR / SWA_FILE)
        if adversarial:
            save_domain_head(fit_model, out / CHECKPOINT_DIR / DOMAIN_HEAD_FILE, domains)
        tmp.replace(state_file)
        _write_history(out, history)
    if bad >= config.train.patience and epoch + 1 < config.train.epochs:
        stopped_early = True

    best = load_keras(out / KERAS_MODEL)
    dev_scores = dev.utterance_logits(predict_windows(best, dev.windows))
    write_scores(out / "dev_scores.csv", dev.rows, dev_scores)
    train_best = eer_of(tr_sub, tr_sub.utterance_logits(predict_windows(best, tr_sub.windows)))
    _write_history(out, history)
    a = config.augment
    augmented = (
        a.noise_prob > 0
        or a.eq_prob > 0
        or a.time_masks > 0
        or a.freq_masks > 0
        or a.edge_silence_prob > 0
        or a.mixup_alpha > 0
    )
    kept_eer, _, kept_epoch, kept_kind = kept
    averaged_from = config.train.swa_start if kept_kind == "swa" else 0
    plot_curves(
        out / "curves.png", history, kept_epoch, augmented=augmented, averaged_from=averaged_from
    )
    result = TrainResult(
        run=out,
        best_epoch=kept_epoch,
        dev_eer=float(kept_eer),
        train_eer=float(train_best),
        epochs_run=len([h for h in history if h["epoch"] > 0]),
        stopped_early=stopped_early,
        seconds=round(time.time() - t_start, 1),
        n_params=n_params,
        averaged_from=averaged_from,
        kept=config.train.keep,
    )
    write_text_atomic(out / "train_summary.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    with atomic_text(out / "history.csv") as fh:
        names = ["epoch", "loss", "train_eer", "dev_eer", "dev_loss"]
        if any("swa_dev_eer" in h for h in history):
            names += ["swa_dev_eer", "swa_dev_loss"]
        if any("domain_loss" in h for h in history):
            names += ["domain_loss"]
        w = csv.DictWriter(fh, fieldnames=[*names, "seconds"], restval="")
        w.writeheader()
        for h in history:
            w.writerow(h)


def write_scores(path: Path, rows: Sequence[Row], scores: np.ndarray) -> Path:
    """Score CSV: the protocol's columns then ``score`` (one line per utterance)."""
    from .metrics import write_scores as write_score_csv

    conds: dict[str, None] = {}
    for r in rows:
        conds.update(dict.fromkeys(r.conditions))
    recs = [{**r.as_dict(), "score": float(s)} for r, s in zip(rows, scores, strict=True)]
    return write_score_csv(path, recs, list(conds))


def plot_curves(
    path: Path,
    history: list[dict[str, Any]],
    best_epoch: int,
    *,
    augmented: bool,
    averaged_from: int = 0,
) -> Path:
    """Loss and train/dev EER per epoch (and of the weight average), the kept checkpoint marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(ep, [h["loss"] for h in history], marker="o", ms=3)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (augmented batches)" if augmented else "training loss")
    ax1.grid(alpha=0.3)
    ax2.plot(ep, [100 * h["train_eer"] for h in history], marker="o", ms=3, label="train EER")
    ax2.plot(ep, [100 * h["dev_eer"] for h in history], marker="o", ms=3, label="dev EER")
    swa = [(h["epoch"], 100 * h["swa_dev_eer"]) for h in history if "swa_dev_eer" in h]
    if swa:
        ax2.plot(
            [e for e, _ in swa],
            [v for _, v in swa],
            marker="s",
            ms=3,
            label="dev EER, weight average",
        )
    if best_epoch >= 0:
        kept = (
            f"kept: average of epochs {averaged_from}-{best_epoch}"
            if averaged_from
            else f"kept: epoch {best_epoch}"
        )
        ax2.axvline(best_epoch, color="grey", ls="--", lw=1, label=kept)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("EER (%)")
    ax2.set_yscale("symlog", linthresh=1)
    ticks = [0, 0.5, 1, 2, 5, 10, 20, 50]
    ax2.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax2.set_ylim(-0.1, 60)
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "ConfigError",
    "Features",
    "TrainResult",
    "TrainingCollapsed",
    "compute_eer",
    "data_fingerprint",
    "dataset_features",
    "load_config",
    "train",
    "write_scores",
]
