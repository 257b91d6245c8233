"""Front-end cost of a two-network ensemble whose members frame the audio alike.

Times, in one process and interleaved, the features of both members computed one member at
a time (`compute_features` twice: two spectrograms) and together (`compute_features_many`:
one spectrogram, two sets of blocks), for commands of 1, 2.3 and 4.3 s of noise-like audio
(the front-end's cost does not depend on what the audio says). Prints one JSON object:
medians over the repeats, in ms, and their ratio.

usage: .venv/bin/python bench/shared_spectrogram.py [REPEATS]   (default 300)
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import replace

import numpy as np
from wakeguard.edge.frontend import FrontendParams, compute_features, compute_features_many

SHIPPED = FrontendParams(
    kind="spectral_power",
    frame_length=1024,
    hop_length=500,
    n_fft=1024,
    block_frames=8,
    window_slack_seconds=0.5,
)
"""The shipped front-end (model/default_config.toml); the second member uses blocks of 4."""


def main(repeats: int) -> dict[str, object]:
    members = [SHIPPED, replace(SHIPPED, block_frames=4)]
    rng = np.random.default_rng(0)
    out: dict[str, object] = {"machine": platform.processor() or platform.machine(), "repeats": repeats}
    for seconds in (1.0, 2.3, 4.3):
        x = rng.normal(0, 0.1, int(seconds * 16_000)).astype(np.float32)
        apart, shared = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for p in members:
                compute_features(x, p)
            t1 = time.perf_counter()
            compute_features_many(x, members)
            t2 = time.perf_counter()
            apart.append((t1 - t0) * 1e3)
            shared.append((t2 - t1) * 1e3)
        a, s = float(np.median(apart)), float(np.median(shared))
        out[f"{seconds:g}s"] = {"apart_ms": round(a, 3), "shared_ms": round(s, 3), "ratio": round(a / s, 2)}
    return out


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)))
