"""A measured phone loudspeaker replaying clean recordings: does a bundle catch it?

The eval speakers' own LibriSpeech recordings (real close-up microphones, real rooms) are
played, as they are, through the measured Nexus One front loudspeaker (the Audio
Degradation Toolbox's impulse response in ../shared/devices; its bass is 35-50 dB down
below 400 Hz), with no attacker's room or recorder before it: the way a broadcast, a
synthetic voice or the replays of ASVspoof 2017 and ReMASC reach a device. The live
counterpart is the same recording without the loudspeaker. Both then take the same path to
the bundle, one condition per row:

- ``bare``: nothing else (a file, not a capture: no room, microphone or noise);
- ``mic + noise``: an eval MEMS microphone and its 16 kHz capture, restaurant noise 30 dB down;
- ``room + mic + noise``: the same, after one of the eval split's six rooms at 10-50 cm.

Every output is levelled to -20 dBFS RMS. Prints, per condition and bundle, the replays
accepted and the live recordings rejected at the bundle's EER threshold (of 90 each, the
eval speakers' recordings of ``data simulate --seed 0``'s split) and the EER between them.

usage: .venv/bin/python bench/direct_replay_probe.py BUNDLE [BUNDLE ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.signal import oaconvolve
from wakeguard.edge.audio import load_audio
from wakeguard.edge.scorer import Scorer
from wakeguard.model.devices import build_devices
from wakeguard.model.metrics import compute_eer
from wakeguard.model.rooms import compute_irs
from wakeguard.model.simulate import (
    SIZES,
    assign_splits,
    build_rooms,
    default_speech_dir,
    find_sources,
    shared_dir,
)

CONDITIONS = ("bare", "mic + noise", "room + mic + noise")
SNR_DB = 30.0


def _level(y: np.ndarray) -> np.ndarray:
    return (0.1 / np.sqrt(np.mean(y**2))) * y


def renderings(seed: int = 0) -> dict[str, dict[str, list[np.ndarray]]]:
    """``{condition: {"live": [...], "replay": [...]}}`` over the eval sources of ``seed``."""
    shared = shared_dir()
    sources = [
        s
        for s in assign_splits(find_sources(default_speech_dir()), SIZES["default"], seed)
        if s.split == "eval"
    ]
    devices = build_devices(shared / "devices", seed)
    speaker = devices.loudspeakers["nexus-one"]
    mic = next(
        devices.mics[m] for m in sorted(devices.victim_mics_for("eval")) if m.startswith("mems")
    )
    rooms = [compute_irs(r) for r in build_rooms(SIZES["default"], seed) if r.split == "eval"]
    noise = load_audio(shared / "noise" / "restaurant08.wav")
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[np.ndarray]]] = {
        c: {"live": [], "replay": []} for c in CONDITIONS
    }
    for i, src in enumerate(sources):
        x = load_audio(Path(src.path)).astype(np.float64)
        played = speaker.play(x)[0][: len(x)]
        for kind, y0 in (("live", x), ("replay", played)):
            n = noise[(o := int(rng.integers(len(noise) - len(x)))) : o + len(x)]
            for cond in CONDITIONS:
                y = y0
                if cond == "room + mic + noise":
                    y = oaconvolve(y, rooms[i % len(rooms)].victim["a"])[: len(x)]
                if cond != "bare":
                    y = _level(mic.capture(y))
                    y = y + _level(n) * 10 ** (-SNR_DB / 20)
                out[cond][kind].append(_level(y).astype(np.float32))
    return out


def main(bundles: list[str]) -> None:
    audio = renderings()
    n = len(audio[CONDITIONS[0]]["live"])
    print(f"{n} eval-speaker recordings, live and through the measured Nexus One loudspeaker")
    print("| condition | bundle | replays accepted | live rejected | EER |")
    print("|---|---|---|---|---|")
    scorers = {b: Scorer.from_bundle(b, num_threads=1) for b in bundles}
    for cond in CONDITIONS:
        for b, s in scorers.items():
            live = np.array([s.score(y).score for y in audio[cond]["live"]])
            rep = np.array([s.score(y).score for y in audio[cond]["replay"]])
            eer = 100 * compute_eer(live, rep)[0]
            print(
                f"| {cond} | {b} | {int((rep >= s.threshold).sum())} of {n} | "
                f"{int((live < s.threshold).sum())} of {n} | {eer:.1f}% |"
            )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
