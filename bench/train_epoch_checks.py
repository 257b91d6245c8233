"""Cost of the checks `wakeguard train` runs after every epoch, eager against compiled.

After each epoch the trainer scores dev and a train subset through the network and, once
weight averaging has begun, re-estimates the averaged network's batch-norm statistics on
40 train batches and scores dev again. This times, in one process and interleaved:

- scoring windows by calling the Keras model eagerly, batch by batch, against
  `predict_windows` (Keras's compiled predict step);
- the batch-norm re-estimation as an eager loop (momentum i/(i+1) on batch i, the way
  the trainer did it before), against `SwaState.model` (a compiled pass per batch and the
  same running mean folded in float32);

and checks that both pairs give bit-identical numbers. The network is the default
detector (model/default_config.toml) with its initial weights; the windows are random
(the cost does not depend on their values), as many as the default corpus has (dev 1,630
windows, the 600-utterance train subset 1,057). Prints one JSON object: medians over the
repeats, in seconds, and their ratios.

usage: .venv/bin/python bench/train_epoch_checks.py [REPEATS]   (default 5)
"""

from __future__ import annotations

import json
import platform
import sys
import time
from typing import Any

import numpy as np
from wakeguard.model.config import load_config
from wakeguard.model.train import (
    SWA_BN_BATCHES,
    SwaState,
    _configure_tf,
    predict_windows,
)

DEV_WINDOWS, SUBSET_WINDOWS, TRAIN_WINDOWS = 1630, 1057, 13247


def eager_scores(model: Any, windows: np.ndarray, batch: int = 512) -> np.ndarray:
    return np.concatenate(
        [
            np.asarray(model(windows[i : i + batch].astype(np.float32), training=False)).reshape(-1)
            for i in range(0, len(windows), batch)
        ]
    )


def eager_batch_norm(avg: Any, windows: np.ndarray, seed: int, batch: int) -> list[np.ndarray]:
    """The re-estimation as an eager loop: the layer's own update with momentum i/(i+1)."""
    import keras

    idx = np.random.default_rng(seed).permutation(len(windows))[: SWA_BN_BATCHES * batch]
    norms = [la for la in avg.layers if isinstance(la, keras.layers.BatchNormalization)]
    momenta = [la.momentum for la in norms]
    try:
        for i, chunk in enumerate(np.array_split(idx, max(1, -(-len(idx) // batch)))):
            for la in norms:
                la.momentum = i / (i + 1)
            avg(windows[np.sort(chunk)].astype(np.float32), training=True)
    finally:
        for la, m in zip(norms, momenta, strict=True):
            la.momentum = m
    return [np.asarray(w).copy() for w in avg.get_weights()]


def main(repeats: int) -> dict[str, Any]:
    cfg = load_config()
    _configure_tf(cfg.train.threads)
    import keras
    from wakeguard.edge.frontend import frontend_shape
    from wakeguard.model.detector import build_detector

    keras.utils.set_random_seed(0)
    shape = frontend_shape(cfg.frontend).input_shape
    model = build_detector(shape, cfg.model)
    rng = np.random.default_rng(0)
    train = rng.normal(0, 3, (TRAIN_WINDOWS, *shape)).astype(np.float16)
    dev, subset = train[:DEV_WINDOWS], train[DEV_WINDOWS : DEV_WINDOWS + SUBSET_WINDOWS]
    swa = SwaState.start(model)
    swa.add(model)
    reference = keras.models.clone_model(model)
    bs = cfg.train.batch_size

    times: dict[str, list[float]] = {
        k: [] for k in ("eager_scores", "compiled_scores", "eager_bn", "compiled_bn")
    }
    identical = True
    for r in range(repeats):
        t0 = time.perf_counter()
        a = np.concatenate([eager_scores(model, dev), eager_scores(model, subset)])
        t1 = time.perf_counter()
        b = np.concatenate([predict_windows(model, dev), predict_windows(model, subset)])
        t2 = time.perf_counter()
        reference.set_weights(model.get_weights())
        want = eager_batch_norm(reference, train, seed=r, batch=bs)
        t3 = time.perf_counter()
        got = [np.asarray(w) for w in swa.model(model, train, seed=r, batch=bs).get_weights()]
        t4 = time.perf_counter()
        identical &= np.array_equal(a, b) and all(
            np.array_equal(x, y) for x, y in zip(want, got, strict=True)
        )
        for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[k].append(dt)

    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "machine": platform.processor() or platform.machine(),
        "threads": cfg.train.threads,
        "repeats": repeats,
        "scores_dev_and_subset_s": {
            "eager": round(med["eager_scores"], 3),
            "compiled": round(med["compiled_scores"], 3),
            "ratio": round(med["eager_scores"] / med["compiled_scores"], 2),
        },
        "batch_norm_reestimation_s": {
            "eager": round(med["eager_bn"], 3),
            "compiled": round(med["compiled_bn"], 3),
            "ratio": round(med["eager_bn"] / med["compiled_bn"], 2),
        },
        "bit_identical": bool(identical),
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)))
