"""Shared fixtures: real speech from ../shared, and a tiny (untrained) int8 bundle for runtime tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WAKEGUARD_SHARED", REPO.parent / "shared"))
SPEECH = SHARED / "speech" / "librispeech"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SPEECH.is_dir():
        pytest.skip(f"shared speech not found at {SPEECH}")
    return SHARED


@pytest.fixture(scope="session")
def speech_file(shared_dir: Path) -> Path:
    return sorted((SPEECH / "train-clean-100").glob("*.flac"))[0]


def build_tiny_bundle(folder: Path, seed: int = 0, params=None, calibration=None) -> Path:
    """A small random conv net over the default front-end (or ``params``), converted to full int8.

    Untrained: for testing the runtime's plumbing (loading, quantisation, latency), never
    for accuracy.
    """
    import tensorflow as tf
    from wakeguard.edge.bundle import Calibration, write_bundle
    from wakeguard.edge.frontend import FrontendParams, frontend_shape

    p = params or FrontendParams()
    t, f = frontend_shape(p).input_shape
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((t, f))
    x = tf.keras.layers.Reshape((t, f, 1))(inp)
    x = tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    out = tf.keras.layers.Dense(1)(x)
    model = tf.keras.Model(inp, out)
    rng = np.random.default_rng(seed)

    def rep():
        for _ in range(8):
            yield [rng.normal(0, 10, (1, t, f)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    data = conv.convert()
    return write_bundle(
        folder,
        data,
        p,
        thresholds={"eer": 0.0, "bpcer_1pct": -1.0, "bpcer_5pct": -0.5},
        calibration=calibration or Calibration(),
        extra={"version": "test-tiny", "calibration_scores": {"bonafide": [0.5, 1.0], "spoof": [-1.0, -0.5]}},
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")
