"""How much the silence around a command moves a bundle's verdicts.

Scores every eval utterance of a dataset with each bundle given, as simulated and with
silence added on both sides: 0.5 s of digital zeros (an edited file), 0.5 s of noise at
-80 dBFS (a quiet studio) and 1 s at -60 dBFS (a quiet room through a cheap microphone).
Each bundle is scored through the edge scorer with its own input policy (a bundle with
``input_policy.trim = "speech"`` cuts each recording to the span the live listener's
endpointer finds in it; older bundles score whole files) and its own EER threshold.
Prints a Markdown table: EER, replays accepted and live commands rejected per bundle.

usage: .venv/bin/python bench/silence_padding.py DATASET BUNDLE [BUNDLE ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from wakeguard.edge.audio import load_audio
from wakeguard.edge.protocol import read_protocol
from wakeguard.edge.scorer import Scorer
from wakeguard.model.metrics import compute_eer

SR = 16_000
CONDITIONS = (
    "as simulated",
    "+0.5 s digital zeros each side",
    "+0.5 s noise at -80 dBFS each side",
    "+1 s noise at -60 dBFS each side",
)


def variants(x: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The utterance in each of :data:`CONDITIONS` (the noise drawn from ``rng``)."""
    zeros = np.zeros(SR // 2, np.float32)
    n80 = (1e-4 * rng.standard_normal(SR // 2)).astype(np.float32)
    n60 = (1e-3 * rng.standard_normal(SR)).astype(np.float32)
    return [x, np.r_[zeros, x, zeros], np.r_[n80, x, n80], np.r_[n60, x, n60]]


def _name(bundle: Path) -> str:
    """A bundle's name in the table: its run folder's for RUN/bundle."""
    return bundle.parent.name if bundle.name == "bundle" else bundle.name


def main(dataset: str, bundles: list[str]) -> None:
    proto = read_protocol(dataset)
    rows = [r for r in proto.rows if r.split == "eval"]
    scorers = [Scorer.from_bundle(b, num_threads=1) for b in bundles]
    scores = np.zeros((len(scorers), len(CONDITIONS), len(rows)))
    rng = np.random.default_rng(0)
    for j, r in enumerate(rows):
        for c, v in enumerate(variants(load_audio(r.audio_path(proto.root)), rng)):
            for k, s in enumerate(scorers):
                scores[k, c, j] = s.score(v).score
    live = np.array([r.label == "bonafide" for r in rows])
    print(f"{dataset}: {len(rows)} eval utterances ({live.sum()} live, {(~live).sum()} replayed)")
    names = " / ".join(
        f"{_name(Path(b))} (trim {s.trim})" for b, s in zip(bundles, scorers, strict=True)
    )
    print(f"| audio | EER: {names} | replays accepted | live rejected |")
    print("|---|---|---|---|")
    for c, cond in enumerate(CONDITIONS):
        eer, acc, rej = [], [], []
        for k, s in enumerate(scorers):
            v = scores[k, c]
            eer.append(f"{100 * compute_eer(v[live], v[~live])[0]:.2f}%")
            acc.append(str(int((v[~live] >= s.threshold).sum())))
            rej.append(str(int((v[live] < s.threshold).sum())))
        print(f"| {cond} | {' / '.join(eer)} | {' / '.join(acc)} | {' / '.join(rej)} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
