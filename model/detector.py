"""The compact replay detector: a small depthwise-separable CNN over one feature window.

Only ops that TFLite runs fully in int8 are used: Conv2D, DepthwiseConv2D, BatchNormalization
(folded into the convolutions by the converter), ReLU, average pooling, Flatten, Dense.
The head keeps the frequency axis by default (``freq_pool="keep"``): a loudspeaker is told
apart by *where* in the spectrum its response departs from speech (the bass cut-off, the
treble peak), so the position of a band matters, while time is averaged away.

The score is either a dense layer's logit (``score_head="dense"``) or, with
``score_head="one_class"``, the cosine between the embedding and one learned bona fide
direction, times ``cosine_scale``: the head of OC-softmax (Zhang, Jiang and Duan, IEEE SPL
2021), trained with ``wakeguard.model.train.one_class_loss_class()`` so that live speech
gathers in a narrow cone while replays only have to stay outside it. In TFLite it is an
L2_NORMALIZATION and a FULLY_CONNECTED with the scaled unit direction as its kernel.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from wakeguard.edge.files import atomic_path

from .config import HEAD_ACTIVATIONS, SCORE_HEADS, ModelConfig

LEAKY_SLOPE = 0.1
"""Slope below zero of the head's units with ``model.head_activation="leaky_relu"``."""


@functools.cache
def cosine_score_layer() -> Any:
    """The ``CosineScore`` Keras layer class, registered for loading on first use (Keras is
    imported lazily, so the class cannot be defined at module level)."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="wakeguard")
    class CosineScore(keras.layers.Layer):
        """``scale * cos(x, w)``: one learned direction ``w``, one output."""

        def __init__(self, scale: float = 20.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.scale = float(scale)

        def build(self, input_shape: Any) -> None:
            self.direction = self.add_weight(
                shape=(int(input_shape[-1]), 1), initializer="glorot_uniform", name="direction"
            )

        def call(self, x: Any) -> Any:
            unit = tf.math.l2_normalize(tf.convert_to_tensor(self.direction), axis=0)
            return tf.matmul(tf.math.l2_normalize(x, axis=-1), self.scale * unit)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return (*input_shape[:-1], 1)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "scale": self.scale}

    return CosineScore


def _stride(n: int) -> int:
    return 2 if n >= 8 else 1


def build_detector(
    input_shape: tuple[int, int], cfg: ModelConfig, name: str = "wakeguard_detector"
) -> Any:
    """A Keras model mapping ``(batch, time, bins)`` features to one raw logit (bona fide > 0)."""
    import keras
    from keras import layers

    n_time, n_bins = input_shape
    if cfg.score_head not in SCORE_HEADS:
        raise ValueError(f"model.score_head must be one of {SCORE_HEADS}, got {cfg.score_head!r}")
    if cfg.head_activation not in HEAD_ACTIVATIONS:
        raise ValueError(
            f"model.head_activation must be one of {HEAD_ACTIVATIONS}, got {cfg.head_activation!r}"
        )
    if cfg.freq_pool not in ("keep", "mean"):
        raise ValueError(f"model.freq_pool must be 'keep' or 'mean', got {cfg.freq_pool!r}")
    inp = keras.Input((n_time, n_bins), name="features")
    x = layers.Reshape((n_time, n_bins, 1))(inp)
    st, sf = cfg.stem_time_stride or _stride(n_time), _stride(n_bins)
    if cfg.stem_time_kernel < st:
        raise ValueError(
            f"model.stem_time_kernel ({cfg.stem_time_kernel}) must be at least the stem's "
            f"stride in time ({st}), or frames between the kernel's steps are never seen"
        )
    x = layers.Conv2D(
        cfg.stem_channels,
        (cfg.stem_time_kernel, 3),
        strides=(st, sf),
        padding="same",
        use_bias=False,
        name="stem",
    )(x)
    x = layers.BatchNormalization(momentum=cfg.bn_momentum, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    t, f = -(-n_time // st), -(-n_bins // sf)
    for i, ch in enumerate(cfg.block_channels):
        st, sf = _stride(t), _stride(f)
        x = layers.DepthwiseConv2D(
            3, strides=(st, sf) if st == sf else 1, padding="same", use_bias=False, name=f"b{i}_dw"
        )(x)
        x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"b{i}_dw_bn")(x)
        x = layers.ReLU(name=f"b{i}_dw_relu")(x)
        # TF's CPU depthwise kernel needs equal strides; unequal ones move to the 1x1 conv
        pw_strides = 1 if st == sf else (st, sf)
        x = layers.Conv2D(ch, 1, strides=pw_strides, use_bias=False, name=f"b{i}_pw")(x)
        x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"b{i}_pw_bn")(x)
        x = layers.ReLU(name=f"b{i}_pw_relu")(x)
        t, f = -(-t // st), -(-f // sf)
    if cfg.head_channels > 0:
        x = layers.Conv2D(cfg.head_channels, 1, use_bias=False, name="head_pw")(x)
        x = layers.BatchNormalization(momentum=cfg.bn_momentum, name="head_pw_bn")(x)
        x = layers.ReLU(name="head_pw_relu")(x)
    if cfg.time_pool not in ("mean", "mean_max"):
        raise ValueError(f"model.time_pool must be 'mean' or 'mean_max', got {cfg.time_pool!r}")
    pool_f = 1 if cfg.freq_pool == "keep" else f
    pooled = [layers.AveragePooling2D(pool_size=(t, pool_f), name="time_mean")(x)]
    if cfg.time_pool == "mean_max":
        pooled.append(layers.MaxPooling2D(pool_size=(t, pool_f), name="time_max")(x))
    x = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="time_stats")(pooled)
    x = layers.Flatten(name="flatten")(x)
    one_class = cfg.score_head == "one_class"
    if cfg.head_units > 0:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
        # OC-softmax's embedding is linear: a ReLU would confine it to one orthant
        leaky = cfg.head_activation == "leaky_relu" and not one_class
        act = None if one_class or leaky else "relu"
        x = layers.Dense(cfg.head_units, activation=act, name="head")(x)
        if leaky:
            x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name="head_leaky_relu")(x)
    x = layers.Dropout(cfg.dropout, name="logit_dropout")(x)
    if one_class:
        out = cosine_score_layer()(scale=cfg.cosine_scale, name="logit")(x)
    else:
        out = layers.Dense(1, name="logit")(x)
    return keras.Model(inp, out, name=name)


def count_params(model: Any) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def load_keras(path: Path) -> Any:
    """A model written by :func:`save_keras`, or a ValueError naming the file: Keras says
    "File not found" of a file that is there but is a truncated or foreign archive."""
    import zipfile

    import keras

    cosine_score_layer()  # registered before a model that holds one is read
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:
        why = (
            str(exc) if zipfile.is_zipfile(path) else "not a .keras archive: truncated or corrupt?"
        )
        raise ValueError(f"{path}: not a loadable Keras model ({why})") from exc


def save_keras(model: Any, path: Path) -> Path:
    """Save ``model`` as a ``.keras`` file atomically: a full disk or a kill leaves the
    previous file, and the error names ``path``."""
    with atomic_path(path, keep_suffix=True) as tmp:
        model.save(tmp)
    return path
