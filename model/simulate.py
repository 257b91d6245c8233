"""``wakeguard data simulate``: a replay corpus from real bona fide speech.

Chains (per utterance):

- bona fide: talker → victim room → victim microphone (+ real noise at a random SNR);
- spoof: talker → attacker's room → attacker's recorder (mic response, optional codec) →
  loudspeaker (response + Hammerstein nonlinearity, optionally inverse-equalised) → the
  victim room (the speaker stands where the talker stood) → the same victim microphone
  models (+ noise).
- direct spoof (``direct_share``, ``--direct-share``): of the replays through a real
  loudspeaker of quality ``direct_quality`` (``--direct-quality``), that share plays the
  source recording itself (optional codec), with no attacker's room or recorder in between:
  a broadcast or an advert, a studio or synthetic voice, a voice message, or the victim's
  own close-up recording. The TV advert that woke speakers was one; so are the replays of
  ASVspoof 2017 and ReMASC, which play the original recordings. The loudspeaker is then the
  only thing between the two classes. The default build (build 9) plays a fifth of the
  low-quality loudspeakers' replays (phones, most laptops) that way: a model trained without
  them missed many (docs/benchmarks.md, "Session 22"); trained with them it catches a
  measured phone speaker's direct replays ("Session 23", "Session 24"). Through the
  high-quality loudspeakers they stay near-indistinguishable and are left to studies
  (``--direct-quality all`` or ``high``); ``--direct-share 0`` builds build 8's corpus.

With ``directivity`` (``--directivity``, a study option, off in the default build) the
source that excites the victim room is a talker (a directional mouth) or a loudspeaker (its
class's directivity): the direct sound is the same, the reflections carry the source's
directivity (``rooms.directional``), as they do in a real room. Without it every source is
omnidirectional (docs/benchmarks.md, "Session 13", measures the difference).

Everything on the victim side (rooms, distances, microphones, noise, SNR, output level,
leading/trailing silence) is drawn from the same distributions for both classes, and both
classes are cut from the same command-length segments, so the replay path is the only
systematic difference. Two details keep nuisance features from leaking the label while
staying physical: the victim device's endpointer cuts each recording around its sound
(speech plus reverberation) with drawn leading/trailing silence, so a replay's longer
reverberation does not lengthen its silences; and the SNR is the total noise at the victim
(ambient plus, for a replay, the attacker-side noise replayed with the speech), so a
replay's noise floor is not systematically higher. Source recordings are high-passed at
60 Hz (LibriSpeech's rumble is not part of a talker's voice). Splits are speaker-disjoint; eval has its own rooms and
loudspeakers that train never sees.

A build is deterministic for a seed (every source file has its own generator, so the
result does not depend on the number of workers), parallel over processes, and
resumable: each source file's utterances are written atomically, then its metadata file;
a rerun skips sources whose metadata and audio are complete and redoes the rest.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.audio import (
    SAMPLE_RATE,
    SILENCE_DBFS,
    AudioError,
    check_audio,
    load_audio,
    require_usable,
    write_wav,
)
from wakeguard.edge.files import atomic_text, is_part
from wakeguard.edge.protocol import Row, write_protocol

from .devices import DeviceSet, apply_codec, build_devices
from .rooms import (
    ATTACKER_DISTANCE_M,
    DIRECTIVITY_BANDS_HZ,
    T60_S,
    TALKER_DI_DB,
    TALKER_DI_SCALE,
    TALKER_DISTANCE_M,
    RoomConfig,
    RoomIRs,
    compute_irs,
    distance_bin,
    draw_rooms,
    range_label,
    split_direct,
    weight_reflections,
)

BUILD_VERSION = 9
"""Bumped when the simulator changes what a seed produces; a resume refuses a mismatch."""

TRAIN_TAKES = 4
"""Takes per train segment in the default build (:attr:`SizePreset.takes`)."""
DEV_TAKES = 2
"""Takes per dev segment in the default build: dev EER picks the checkpoint, so it needs
more device chains than one take gives."""
EXTRA_TRAIN_ROOMS = 72
"""Rooms for train only in the default build (:attr:`SizePreset.extra_rooms`): with 12
rooms a network can learn each room's reverberation; with 84 it has to learn the class."""
EXTRA_DEV_ROOMS = 4
"""Rooms for dev only in the default build (8 in all)."""

SPLIT_SHARES = {"train": 0.6, "dev": 0.15, "eval": 0.25}
"""Share of speech (by duration) per split; speakers are never shared between splits."""

ATTACK_COLUMNS = (
    "attack",
    "speaker_device",
    "speaker_class",
    "device_quality",
    "equalised",
    "codec",
    "recorder",
    "attacker_room",
    "attacker_distance",
)
"""Condition columns of the replay path only; bona fide rows hold ``-`` in them."""

CONDITION_COLUMNS = (
    *ATTACK_COLUMNS,
    "room",
    "room_size",
    "t60",
    "talker_distance",
    "snr_db",
    "mic",
    "source",
)
"""Protocol condition columns; bona fide rows hold ``-`` in the attack-side ones."""

EXACT_COLUMNS = (
    "path",
    "t60_s",
    "talker_distance_m",
    "attacker_distance_m",
    "snr_db",
    "attacker_snr_db",
    "level_dbfs",
    "drive_db",
    "lead_s",
    "trail_s",
    "speech_s",
)
"""Per-utterance exact values, in ``simulation.csv`` beside the protocol."""
DIRECTIVITY_EXACT_COLUMNS = ("source_di_4k_db",)
"""More exact values of a ``directivity`` build: the 4 kHz directivity index of the source
the victim heard (the talker, or the loudspeaker)."""

QUALITY_LETTER = {"perfect": "A", "high": "B", "low": "C"}
"""ASVspoof 2019 PA letters for device quality Q."""

# Shared distributions (both classes): SNR, output level, silence around the speech.
SNR_DB = (8.0, 40.0)
ATTACKER_SNR_DB = (15.0, 45.0)
LEVEL_DBFS = (-35.0, -20.0)
LEAD_S = (0.1, 0.4)
TRAIL_S = (0.1, 0.4)
PEAK_LIMIT = 0.95
RUMBLE_CUTOFF_HZ = 60.0
"""Source speech is high-passed here: below the lowest voice fundamentals (~70 Hz)."""
LEAD_BUFFER_S = 0.5
"""Silence before the talker starts (longer than any drawn leading silence)."""
TRAIL_BUFFER_S = 1.6
"""Silence after the talker stops: room for the reverberation of two rooms to die away."""
ENDPOINT_BELOW_MAX_DB = 35.0
"""The victim device's endpointer: sound is within this many dB of the loudest frame."""
DRIVE_DB = (-6.0, 3.0)
SPEECH_S = (0.8, 3.4)
"""Speech length of a cut segment (s), before the silence around it."""

SPEAKER_CLASS_WEIGHTS = {
    "phone": 0.3,
    "laptop": 0.2,
    "bluetooth": 0.2,
    "smart-speaker": 0.15,
    "perfect": 0.15,
}
TRAIN_SPEAKER_CLASS_WEIGHTS = {
    "phone": 0.15,
    "laptop": 0.1,
    "bluetooth": 0.25,
    "smart-speaker": 0.25,
    "perfect": 0.25,
}
"""Loudspeaker classes of train replays: more of the good loudspeakers, whose replays differ
from live speech by the least and where the errors were (dev and eval keep
:data:`SPEAKER_CLASS_WEIGHTS`). Measured in docs/benchmarks.md, "Session 4": eval EER fell
for both seeds tried and on a second, independently simulated test split."""
EQUALISED_PROB = 0.2
"""Share of (non-perfect) replays an attacker pre-equalises with the inverse response."""
SAME_ROOM_PROB = 0.5
"""Share of replays recorded in the victim's room (as ASVspoof 2019 PA) vs another room."""
CODEC_PROBS = {"none": 0.6, "wideband": 0.25, "narrowband": 0.15}
DIRECT_SHARE = 0.2
"""Share of the replays through a real (not "perfect") loudspeaker of quality
:data:`DIRECT_QUALITY` whose file is the source recording itself, with no attacker's room
or recorder (module docstring): 0.2 in the default build (about 7% of train replays), 0 in
build 8's, 0.25 of every quality in session 22's study builds. Drawn from its own stream,
so every other utterance of a build with direct replays is the one the build without
renders. The perfect loudspeaker never plays one: with no room or recorder before it, its
replay would be the live utterance itself."""
DIRECT_QUALITIES = {"all": ("high", "low"), "high": ("high",), "low": ("low",)}
"""Loudspeaker qualities (ASVspoof 2019 PA's terms) that play direct replays, by
``direct_quality``: every real one, or only the high- or low-quality ones."""
DIRECT_QUALITY = "low"
"""Which loudspeakers play the default build's direct replays: the low-quality ones (by
ASVspoof 2019 PA's measures every phone, most laptops, some Bluetooth and smart speakers),
which a model learns to catch; through the high-quality ones (most Bluetooth and smart
speakers) a direct replay stays near-indistinguishable from a live talker, and
training on them cost the default splits more than it gained (docs/benchmarks.md,
"Session 22", "Session 23")."""
DIRECT = "direct"
"""``recorder``, ``attacker_room`` and ``attacker_distance`` of a direct replay; its
``attack`` code is ``D`` plus the loudspeaker's quality letter."""
ORACLES: dict[str, frozenset[str]] = {
    "rooms": frozenset({"rooms"}),
    "devices": frozenset({"loudspeakers", "recorders", "mics"}),
    "mics": frozenset({"mics"}),
    "all": frozenset({"rooms", "loudspeakers", "recorders", "mics"}),
}
"""What an oracle build lets train and dev share with eval (``simulate(oracle=...)``):
``rooms`` (victim and attacker rooms), ``devices`` (loudspeakers, recorders and victim
microphones), ``mics`` (victim microphones only) or ``all``. Eval is rendered exactly as
without it. An oracle build measures which unseen condition makes the eval split hard
(docs/benchmarks.md, "Session 7"); a model trained on one has seen eval's conditions, so
its eval figures say nothing about unseen rooms or devices and it is not for shipping."""


@dataclass(frozen=True)
class SizePreset:
    """How much of the speech a build uses."""

    speakers: dict[str, int] | None
    """Speakers per split (None: all, by :data:`SPLIT_SHARES`)."""
    files_per_speaker: int | None
    segments_per_file: int | None
    rooms: dict[str, int]
    takes: dict[str, int] = field(default_factory=lambda: {"train": 1, "dev": 1, "eval": 1})
    """Renderings of every speech segment per split: each take is a bona fide utterance and
    its spoofed twin through newly drawn chains (room, microphone, loudspeaker, recorder...),
    so train sees more acoustic conditions without more speakers."""
    extra_rooms: dict[str, int] = field(default_factory=dict)
    """More rooms for train or dev, each split's from its own random stream after the
    others, so the eval rooms are the same with or without them."""


SIZES: dict[str, SizePreset] = {
    "tiny": SizePreset(
        {"train": 3, "dev": 2, "eval": 2},
        1,
        2,
        {"train": 2, "dev": 1, "eval": 1},
        {"train": 2, "dev": 1, "eval": 1},
    ),
    "small": SizePreset(
        {"train": 48, "dev": 12, "eval": 24}, 1, 8, {"train": 6, "dev": 3, "eval": 3}
    ),
    "default": SizePreset(
        None,
        None,
        None,
        {"train": 12, "dev": 4, "eval": 6},
        {"train": TRAIN_TAKES, "dev": DEV_TAKES, "eval": 1},
        {"train": EXTRA_TRAIN_ROOMS, "dev": EXTRA_DEV_ROOMS},
    ),
}


class SimulationError(ValueError):
    """A build that could not finish, naming the source files that failed and why."""


# ------------------------------------------------------------------------ locating data


def shared_dir() -> Path:
    """``$WAKEGUARD_SHARED`` or the repository's sibling ``shared/``."""
    env = os.environ.get("WAKEGUARD_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared"


def default_speech_dir() -> Path:
    return shared_dir() / "speech"


def find_sources(speech_dir: Path) -> list[Path]:
    """Every FLAC/WAV under ``speech_dir`` (LibriSpeech layout: speaker id first in the name)."""
    if not speech_dir.is_dir():
        raise FileNotFoundError(
            f"speech folder not found: {speech_dir} (pass --speech DIR or set WAKEGUARD_SHARED "
            "to the folder holding speech/, devices/ and noise/)"
        )
    files = sorted(
        p for p in speech_dir.rglob("*") if p.suffix.lower() in (".flac", ".wav") and p.is_file()
    )
    if not files:
        raise FileNotFoundError(f"{speech_dir}: no .flac or .wav speech files found")
    return files


def speaker_of(path: Path) -> str:
    return path.stem.split("-")[0]


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Source:
    path: str
    speaker: str
    split: str
    duration_s: float


def assign_splits(files: list[Path], preset: SizePreset, seed: int) -> list[Source]:
    """Speaker-disjoint splits: shuffle speakers, fill splits by speech duration."""
    import soundfile as sf

    by_speaker: dict[str, list[Path]] = {}
    for f in files:
        by_speaker.setdefault(speaker_of(f), []).append(f)
    durations: dict[Path, float] = {}
    for f in files:
        try:
            info = sf.info(str(f))
        except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
            raise AudioError(f, f"unreadable audio ({exc})") from exc
        durations[f] = info.frames / info.samplerate
    speakers = sorted(by_speaker)
    rng = np.random.default_rng([seed, 0x5917])
    rng.shuffle(speakers)
    split_of: dict[str, str] = {}
    if preset.speakers is not None:
        need = sum(preset.speakers.values())
        if need > len(speakers):
            raise ValueError(
                f"size preset needs {need} speakers, the speech folder has {len(speakers)}"
            )
        i = 0
        for split, n in preset.speakers.items():
            for s in speakers[i : i + n]:
                split_of[s] = split
            i += n
    else:
        total = sum(durations.values())
        acc = {k: 0.0 for k in SPLIT_SHARES}
        for s in speakers:
            dur = sum(durations[f] for f in by_speaker[s])
            # The split furthest below its share takes the next speaker.
            split = min(SPLIT_SHARES, key=lambda k: acc[k] / total - SPLIT_SHARES[k])
            split_of[s] = split
            acc[split] += dur
    out = []
    for s, split in split_of.items():
        chosen = sorted(by_speaker[s])[: preset.files_per_speaker]
        out.extend(Source(str(f), s, split, durations[f]) for f in chosen)
    return sorted(out, key=lambda x: x.path)


# ------------------------------------------------------------------------ utterances


def cut_utterances(x: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Cut continuous speech into command-length segments at low-energy points.

    Returns (start, end) samples of each segment, trimmed to its speech (20 ms before the
    first and 50 ms after the last active frame), each 0.8–3.4 s of speech.
    """
    hop, win = SAMPLE_RATE // 100, SAMPLE_RATE // 50
    n_frames = max((len(x) - win) // hop + 1, 0)
    if n_frames < 10:
        return []
    idx = np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]
    e = 10 * np.log10(np.mean(x[idx] ** 2, axis=1) + 1e-12)
    thr = min(np.percentile(e, 15) + 8.0, e.max() - 30.0)
    active = (e > thr) & (e > SILENCE_DBFS)
    act = np.flatnonzero(active)
    if act.size == 0:
        return []
    # Pauses: runs of >= 60 ms inactive frames; their centres are the preferred cut points.
    pauses = []
    run_start = None
    for i in range(act[0], act[-1] + 1):
        if not active[i]:
            run_start = i if run_start is None else run_start
        elif run_start is not None:
            if i - run_start >= 6:
                pauses.append((run_start + i) // 2)
            run_start = None
    pauses_arr = np.asarray(pauses, dtype=int)
    lo_f, hi_f = int(SPEECH_S[0] * 100), int(SPEECH_S[1] * 100)
    segments = []
    cursor = int(act[0])
    last = int(act[-1])
    while cursor < last:
        target = cursor + int(rng.uniform(1.0, 3.0) * 100)
        cands = pauses_arr[(pauses_arr >= cursor + lo_f) & (pauses_arr <= cursor + hi_f)]
        if last - cursor <= hi_f:
            cut = last + 1
        elif cands.size:
            cut = int(cands[np.argmin(np.abs(cands - target))])
        else:  # continuous speech: cut at the quietest frame in the allowed window
            window = slice(cursor + int(1.5 * 100), cursor + hi_f)
            cut = window.start + int(np.argmin(e[window]))
        seg_act = np.flatnonzero(active[cursor:cut]) + cursor
        if seg_act.size:
            a = int(seg_act[0]) * hop - SAMPLE_RATE // 50
            b = int(seg_act[-1]) * hop + win + SAMPLE_RATE // 20
            # Never past the cut point or into the previous segment.
            prev_end = segments[-1][1] if segments else 0
            a, b = max(a, prev_end), min(b, len(x), cut * hop + win // 2)
            if b - a >= SPEECH_S[0] * SAMPLE_RATE:
                segments.append((a, min(b, a + int(SPEECH_S[1] * SAMPLE_RATE))))
        nxt = np.flatnonzero(active[cut:])
        if nxt.size == 0:
            break
        cursor = cut + int(nxt[0])
    return segments


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """Everything a worker needs, built once per process."""

    devices: DeviceSet
    rooms: dict[str, RoomIRs]
    rooms_by_split: dict[str, list[str]]
    noise: dict[str, np.ndarray]
    out: Path
    seed: int
    oracle: str = ""
    """One of :data:`ORACLES`, or "" for a normal build."""
    directivity: bool = False
    """Sources radiate with their directivity (talker's mouth, loudspeaker class)."""
    direct_share: float = 0.0
    """Share of real-loudspeaker replays that play the source recording itself."""
    direct_quality: str = "all"
    """Only loudspeakers of this quality (:data:`DIRECT_QUALITIES`) play direct replays."""
    _filters: dict[tuple[str, str, str, str], tuple[np.ndarray, np.ndarray | None, int]] = field(
        default_factory=dict
    )

    def path_filter(
        self, side: str, room: str, key: str, device: str, di_db: tuple[float, ...] | None
    ) -> tuple[np.ndarray, int]:
        """Room impulse response convolved with the microphone that records it, and the
        direct sound's sample index; in a ``directivity`` build from a source with
        directivity index ``di_db`` (:func:`~wakeguard.model.rooms.directional`), else from
        an omnidirectional one (``di_db`` is None there)."""
        ck = (side, room, key, device)
        if ck not in self._filters:
            from scipy.signal import oaconvolve

            irs = self.rooms[room]
            if side == "victim":
                h, d = irs.victim[key], irs.victim_delay[key]
            else:
                h, d = irs.attacker[key], irs.attacker_delay[key]
            mic = self.devices.mics[device]
            fir = mic.capture_fir if side == "victim" else mic.fir
            if self.directivity:  # kept apart: the weighting is per utterance
                direct, rest = split_direct(h, d)
                self._filters[ck] = (oaconvolve(direct, fir), oaconvolve(rest, fir), d)
            else:
                self._filters[ck] = (oaconvolve(h, fir), None, d)
        first, rest_fir, d = self._filters[ck]  # the whole response, or its direct sound
        if rest_fir is None:
            return first, d
        return first + weight_reflections(rest_fir, di_db), d


_CTX: Context | None = None


def _noise_regions(noise_dir: Path) -> dict[str, np.ndarray]:
    """Real noise, cut into disjoint regions per split (60/20/20 % of each file by time)."""
    files = sorted(p for p in noise_dir.glob("*") if p.suffix.lower() in (".wav", ".flac"))
    if not files:
        raise FileNotFoundError(f"{noise_dir}: no noise recordings (.wav/.flac) found")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SPLIT_SHARES}
    for f in files:
        x = load_audio(f).astype(np.float64)
        n = len(x)
        bounds = {
            "train": (0, int(0.6 * n)),
            "dev": (int(0.6 * n), int(0.8 * n)),
            "eval": (int(0.8 * n), n),
        }
        for k, (a, b) in bounds.items():
            seg = x[a:b]
            parts[k].append(seg / (np.sqrt(np.mean(seg**2)) + 1e-12))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _init_worker(
    shared: Path,
    rooms: dict[str, RoomIRs],
    rooms_by_split: dict[str, list[str]],
    out: Path,
    seed: int,
    *options: Any,
) -> None:
    """Build this process's :class:`Context`; ``options`` are its study options (oracle,
    directivity, direct share and quality), in the order of its fields."""
    global _CTX
    devices = build_devices(shared / "devices" if (shared / "devices").is_dir() else None, seed)
    noise = _noise_regions(shared / "noise")
    _CTX = Context(devices, rooms, rooms_by_split, noise, out, seed, *options)


# ----------------------------------------------------------------------------- render


def _conv(x: np.ndarray, h: np.ndarray, delay: int) -> np.ndarray:
    from scipy.signal import oaconvolve

    return oaconvolve(x, h)[delay : delay + len(x)]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def _noise_segment(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random stretch of real noise (tiled if the recording is shorter)."""
    if len(noise) < n:
        noise = np.tile(noise, n // len(noise) + 1)
    start = int(rng.integers(0, len(noise) - n + 1))
    return noise[start : start + n].copy()


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def draw_conditions(
    label: str, split: str, ctx: Context, rng: np.random.Generator
) -> dict[str, Any]:
    """Every random choice for one utterance. The victim side uses the same draws for both
    labels, in the same order, so its distributions are identical by construction.

    In an oracle build (:data:`ORACLES`) train and dev draw the shared conditions from the
    eval split's lists instead of their own; the draws themselves are the same."""
    shared = ORACLES.get(ctx.oracle, frozenset()) if split != "eval" else frozenset()

    def pool(what: str) -> str:
        return "eval" if what in shared else split

    room_pool, mic_pool = pool("rooms"), pool("mics")
    c: dict[str, Any] = {}
    c["room"] = str(rng.choice(ctx.rooms_by_split[room_pool]))
    c["ds"] = str(rng.choice(list(TALKER_DISTANCE_M)))
    c["mic"] = str(rng.choice(sorted(ctx.devices.victim_mics_for(mic_pool))))
    c["snr_db"] = float(rng.uniform(*SNR_DB))
    c["level_dbfs"] = float(rng.uniform(*LEVEL_DBFS))
    c["lead_s"] = float(rng.uniform(*LEAD_S))
    c["trail_s"] = float(rng.uniform(*TRAIL_S))
    c["noise_seed"] = int(rng.integers(2**31))
    if ctx.directivity:  # its own stream: every other draw is that of a build without it
        talker = np.random.default_rng([c["noise_seed"], 0xD1])
        c["talker_di_scale"] = float(talker.uniform(*TALKER_DI_SCALE))
    if label == "bonafide":
        return c
    speakers = ctx.devices.speakers_for(pool("loudspeakers"))
    weights = TRAIN_SPEAKER_CLASS_WEIGHTS if split == "train" else SPEAKER_CLASS_WEIGHTS
    classes = {
        k: w
        for k, w in weights.items()
        if any(ctx.devices.loudspeakers[s].device_class == k for s in speakers)
    }
    cls = _choose(rng, classes)
    c["speaker_device"] = str(
        rng.choice([s for s in speakers if ctx.devices.loudspeakers[s].device_class == cls])
    )
    c["equalised"] = bool(cls != "perfect" and rng.random() < EQUALISED_PROB)
    c["attacker_room"] = (
        c["room"]
        if rng.random() < SAME_ROOM_PROB
        else str(rng.choice(ctx.rooms_by_split[room_pool]))
    )
    c["da"] = str(rng.choice(list(ATTACKER_DISTANCE_M)))
    c["recorder"] = str(rng.choice(sorted(ctx.devices.recorders_for(pool("recorders")))))
    c["codec"] = _choose(rng, CODEC_PROBS)
    # The replayed attacker-side noise is part of the total noise at the victim, which is at
    # the drawn SNR for both labels; so it is kept at least 3 dB below that total.
    c["attacker_snr_db"] = max(float(rng.uniform(*ATTACKER_SNR_DB)), c["snr_db"] + 3.0)
    c["drive_db"] = float(rng.uniform(*DRIVE_DB))
    spk = c["speaker_device"]
    if ctx.direct_share > 0 and (
        ctx.devices.loudspeakers[spk].quality in DIRECT_QUALITIES[ctx.direct_quality]
    ):  # its own stream, as directivity's: the same draw whatever the quality filter
        c["direct"] = bool(
            np.random.default_rng([c["noise_seed"], 0xD5]).random() < ctx.direct_share
        )
    return c


def _conv2(x: np.ndarray, h: np.ndarray, delay: int) -> np.ndarray:
    """:func:`_conv` of several rows at once (one transform of ``h``)."""
    from scipy.signal import oaconvolve

    return oaconvolve(x, h[None, :], axes=-1)[:, delay : delay + x.shape[1]]


def endpoint(y: np.ndarray, below_max_db: float = ENDPOINT_BELOW_MAX_DB) -> tuple[int, int]:
    """The victim device's endpointer: first and last sample of sound within
    ``below_max_db`` of the loudest 20 ms frame (reverberation counts as sound)."""
    hop, win = SAMPLE_RATE // 100, SAMPLE_RATE // 50
    n_frames = max((len(y) - win) // hop + 1, 1)
    idx = np.minimum(np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None], len(y) - 1)
    e = 10 * np.log10(np.mean(y[idx] ** 2, axis=1) + 1e-30)
    loud = np.flatnonzero(e > e.max() - below_max_db)
    return int(loud[0] * hop), int(min(loud[-1] * hop + win, len(y)))


def render(
    speech: np.ndarray, label: str, split: str, c: dict[str, Any], ctx: Context
) -> np.ndarray:
    """Run one utterance through its chain; returns the 16 kHz float output.

    The talker speaks into silence (buffers before and after the segment). Everything from
    the victim microphone on is shared by both labels: the device's endpointer finds the
    sound (speech plus its reverberation) in the noise-free signal, the ambient noise is set
    so the total noise (ambient plus, for a replay, the attacker-side noise replayed with
    the speech) is at the drawn SNR, then the output is cut with the drawn leading and
    trailing silence and levelled by the AGC.
    """
    rng = np.random.default_rng(c["noise_seed"])
    lead_buf, trail_buf = int(LEAD_BUFFER_S * SAMPLE_RATE), int(TRAIL_BUFFER_S * SAMPLE_RATE)
    src = np.concatenate([np.zeros(lead_buf), speech.astype(np.float64), np.zeros(trail_buf)])
    talk = slice(lead_buf, lead_buf + len(speech))
    noise = ctx.noise[split]
    mic = ctx.devices.mics[c["mic"]]
    source_di = source_directivity(label, c, ctx)
    h_victim, d_victim = ctx.path_filter("victim", c["room"], c["ds"], c["mic"], source_di)

    if label == "spoof":
        if c.get("direct"):  # the source recording itself, with no attacker-side noise
            rec = clean_rec = apply_codec(src, c["codec"])
        else:
            talker_di = talker_directivity(c) if ctx.directivity else None
            h_att, d_att = ctx.path_filter(
                "attacker", c["attacker_room"], c["da"], c["recorder"], talker_di
            )
            recorded = _conv(src, h_att, d_att)
            att_noise = ctx.devices.mics[c["recorder"]].record(_noise_segment(noise, len(src), rng))
            att_noise *= _rms(recorded[talk]) / (
                _rms(att_noise) * 10 ** (c["attacker_snr_db"] / 20)
            )
            rec = apply_codec(recorded + att_noise, c["codec"])
            clean_rec = apply_codec(recorded, c["codec"])
        spk = ctx.devices.loudspeakers[c["speaker_device"]]
        pre = spk.inverse_eq() if c["equalised"] else None
        played, gain = spk.play(rec, c["drive_db"], pre, level_window=talk)
        played_clean, _ = spk.play(clean_rec, c["drive_db"], pre, gain=gain)
        y, y_clean = _conv2(np.stack([played, played_clean]), h_victim, d_victim)
    else:
        y = y_clean = _conv(src, h_victim, d_victim)
    onset, offset = endpoint(y_clean)
    sound = slice(onset, offset)
    p_speech = float(np.mean(y_clean[sound] ** 2))
    p_replayed_noise = float(np.mean((y - y_clean)[sound] ** 2))
    p_ambient = max(p_speech / 10 ** (c["snr_db"] / 10) - p_replayed_noise, 0.0)
    ambient = mic.capture(_noise_segment(noise, len(y), rng))
    y = y + ambient * np.sqrt(p_ambient / (np.mean(ambient**2) + 1e-30))
    lead, trail = int(c["lead_s"] * SAMPLE_RATE), int(c["trail_s"] * SAMPLE_RATE)
    a, b = max(onset - lead, 0), min(offset + trail, len(y))
    y = y[a:b]
    sound = slice(onset - a, offset - a)
    y = y * (10 ** (c["level_dbfs"] / 20) / _rms(y[sound]))
    peak = float(np.max(np.abs(y)))
    if peak > PEAK_LIMIT:  # the device's limiter: same rule for both classes
        y = y * (PEAK_LIMIT / peak)
    return y.astype(np.float32)


DI_4K = DIRECTIVITY_BANDS_HZ.index(4000.0)
"""Index of the 4 kHz band, where a talker's and a loudspeaker's directivity differ most."""


def talker_directivity(c: dict[str, Any]) -> tuple[float, ...]:
    """The talker's directivity index table for one utterance (its drawn scale of
    :data:`~wakeguard.model.rooms.TALKER_DI_DB`)."""
    return tuple(c["talker_di_scale"] * v for v in TALKER_DI_DB)


def source_directivity(label: str, c: dict[str, Any], ctx: Context) -> tuple[float, ...] | None:
    """Directivity index table of the source the victim hears: the talker, or the
    loudspeaker standing where it stood; None in a build without directivity."""
    if not ctx.directivity:
        return None
    if label == "spoof":
        return ctx.devices.loudspeakers[c["speaker_device"]].directivity_db
    return talker_directivity(c)


def remove_rumble(x: np.ndarray) -> np.ndarray:
    """High-pass the source recording below the voice range (8th order at
    :data:`RUMBLE_CUTOFF_HZ`).

    LibriSpeech's home recordings carry rumble and hum below 60 Hz, often louder than the
    voice's own low end. A live talker does not radiate it; left in, it would reach the
    victim microphone only on the live path (small loudspeakers drop it), and a model would
    learn the source corpus instead of the replay channel.
    """
    from scipy.signal import butter, sosfilt

    sos = butter(8, RUMBLE_CUTOFF_HZ, "high", fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, x)


def _utt_name(seed: int, source: str, k: int, label: str) -> str:
    """Opaque, deterministic file name: the label is not readable from the path."""
    return hashlib.sha1(f"{seed}|{Path(source).stem}|{k}|{label}".encode()).hexdigest()[:12]


def _source_seed(seed: int, source: str) -> list[int]:
    return [seed, zlib.crc32(Path(source).stem.encode())]


def _row(
    name: str, label: str, src: Source, k: int, c: dict[str, Any], ctx: Context, speech_s: float
) -> dict[str, Any]:
    room = ctx.rooms[c["room"]].config
    vdist = room.victim[c["ds"]].distance
    snr_bins = ((15, "8-15"), (25, "15-25"), (1e9, "25-40"))
    row: dict[str, Any] = {
        "path": f"audio/{src.split}/{name}.wav",
        "label": label,
        "speaker": src.speaker,
        "split": src.split,
        "room": room.name,
        "room_size": room.size_class,
        "t60": _t60_label(room.t60),
        "talker_distance": range_label(
            distance_bin(vdist, TALKER_DISTANCE_M), TALKER_DISTANCE_M, "cm", 100
        ),
        "snr_db": next(lab for hi, lab in snr_bins if c["snr_db"] < hi),
        "mic": c["mic"],
        "source": f"{Path(src.path).stem}_{k:02d}",
        "exact": {
            "t60_s": round(room.t60, 3),
            "talker_distance_m": round(vdist, 3),
            "attacker_distance_m": "",
            "snr_db": round(c["snr_db"], 2),
            "attacker_snr_db": "",
            "level_dbfs": round(c["level_dbfs"], 2),
            "drive_db": "",
            "lead_s": round(c["lead_s"], 3),
            "trail_s": round(c["trail_s"], 3),
            "speech_s": round(speech_s, 3),
        },
    }
    source_di = source_directivity(label, c, ctx)
    if source_di is not None:
        row["exact"]["source_di_4k_db"] = round(source_di[DI_4K], 2)
    if label == "bonafide":
        for col in ATTACK_COLUMNS:
            row[col] = "-"
        return row
    spk = ctx.devices.loudspeakers[c["speaker_device"]]
    row.update(
        speaker_device=spk.name,
        speaker_class=spk.device_class,
        device_quality=spk.quality,
        equalised="yes" if c["equalised"] else "no",
        codec=c["codec"],
    )
    row["exact"]["drive_db"] = round(c["drive_db"], 2)
    if c.get("direct"):
        row.update(
            attack="D" + QUALITY_LETTER[spk.quality],
            recorder=DIRECT,
            attacker_room=DIRECT,
            attacker_distance=DIRECT,
        )
        return row
    aroom = ctx.rooms[c["attacker_room"]].config
    adist = aroom.attacker[c["da"]].distance
    da = distance_bin(adist, ATTACKER_DISTANCE_M)
    row.update(
        attack=da + QUALITY_LETTER[spk.quality],
        recorder=c["recorder"],
        attacker_room=aroom.name,
        attacker_distance=range_label(da, ATTACKER_DISTANCE_M, "cm", 100),
    )
    row["exact"].update(
        attacker_distance_m=round(adist, 3), attacker_snr_db=round(c["attacker_snr_db"], 2)
    )
    return row


def _t60_label(t60: float) -> str:
    """ASVspoof's T60 bin of the room's actual T60 (a big room cannot always be as dead
    as its drawn class; its own T60 decides the bin)."""
    key = distance_bin(t60, T60_S)
    lo, hi = T60_S[key]
    return f"{lo * 1000:g}-{hi * 1000:g}ms"


def _meta_path(out: Path, src: Source) -> Path:
    return out / "meta" / f"{Path(src.path).stem}.json"


def process_source(
    src: Source, max_segments: int | None, takes: int = 1
) -> tuple[str, int, str | None, bool]:
    """Render every utterance of one source file, ``takes`` times per segment; returns
    (source, n files, error, disk full)."""
    ctx = _CTX
    assert ctx is not None, "worker not initialised"
    try:
        raw = load_audio(src.path)
        require_usable(raw, src.path, min_seconds=SPEECH_S[0])
        info = check_audio(raw)
        if info.clipped:
            raise AudioError(
                src.path,
                f"clipped ({info.clipped_fraction:.2%} of samples at full scale): its distortion "
                "would reach both classes; use an unclipped recording",
            )
        x = remove_rumble(raw.astype(np.float64))
        rng = np.random.default_rng(_source_seed(ctx.seed, src.path))
        segments = cut_utterances(x, rng)[:max_segments]
        if not segments:
            raise AudioError(
                src.path, "no speech segment of at least 0.8 s found (silent or too short)"
            )
        rows = []
        for k, (a, b) in enumerate(segments):
            speech = x[a:b]
            for take in range(takes):
                for label in ("bonafide", "spoof"):
                    c = draw_conditions(label, src.split, ctx, rng)
                    y = render(speech, label, src.split, c, ctx)
                    name = _utt_name(
                        ctx.seed, src.path, k, label if take == 0 else f"{label}{take}"
                    )
                    row = _row(name, label, src, k, c, ctx, len(speech) / SAMPLE_RATE)
                    write_wav(ctx.out / row["path"], y)
                    rows.append(row)
        with atomic_text(_meta_path(ctx.out, src)) as fh:
            fh.write(json.dumps({"source": src.path, "rows": rows}))
        return src.path, len(rows), None, False
    except (AudioError, OSError, ValueError) as exc:
        disk_full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
        return src.path, 0, str(exc), disk_full


def _source_done(out: Path, src: Source) -> bool:
    meta = _meta_path(out, src)
    if not meta.is_file():
        return False
    try:
        rows = json.loads(meta.read_text())["rows"]
    except (ValueError, KeyError):
        return False
    return all((out / r["path"]).is_file() for r in rows)


# ------------------------------------------------------------------------------- build


def build_rooms(preset: SizePreset, seed: int) -> list[RoomConfig]:
    """The rooms of a build: each split's own, then the extra train and dev rooms, each from
    its own random stream so that adding them leaves every other room as it was."""
    rng = np.random.default_rng([seed, 0x600D])
    rooms = [r for split in SPLIT_SHARES for r in draw_rooms(split, preset.rooms[split], rng)]
    for split, stream in (("train", 0x600E), ("dev", 0x600F)):
        n = preset.extra_rooms.get(split, 0)
        extra = draw_rooms(split, n, np.random.default_rng([seed, stream]))
        first = preset.rooms[split]
        rooms += [replace(r, name=f"{split}-room{first + i + 1:02d}") for i, r in enumerate(extra)]
    return rooms


def _build_manifest(
    size: str,
    seed: int,
    sources: list[Source],
    rooms: list[RoomConfig],
    oracle: str = "",
    directivity: bool = False,
    direct_share: float = DIRECT_SHARE,
    direct_quality: str = DIRECT_QUALITY,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "version": BUILD_VERSION,
        "size": size,
        "takes": SIZES[size].takes,
        "seed": seed,
        "sources": [asdict(s) for s in sources],
        "rooms": [r.name for r in rooms],
    }
    if oracle:
        manifest["oracle"] = oracle
    if directivity:
        manifest["directivity"] = True
    manifest["direct_share"] = direct_share
    if direct_share:
        manifest["direct_quality"] = direct_quality
    return manifest


def _check_resume(out: Path, manifest: dict[str, Any]) -> None:
    path = out / "build.json"
    if not path.is_file():
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(
                f"{out}: folder is not empty and holds no simulator build; choose a new --out"
            )
        return
    old = json.loads(path.read_text())
    keys = (
        "version",
        "size",
        "takes",
        "seed",
        "sources",
        "rooms",
        "oracle",
        "directivity",
        "direct_share",
        "direct_quality",
    )
    for key in keys:
        if old.get(key) != manifest.get(key):
            there = (
                f"{old.get(key)!r} there, {manifest.get(key)!r} asked; "
                if key not in ("sources", "rooms")
                else ""
            )
            raise FileExistsError(
                f"{out}: holds a different build ({key} differs: {there}size={old.get('size')}, "
                f"seed={old.get('seed')}); choose a new --out or pass --overwrite"
            )


def _run_sources(
    todo: list[Source],
    init_args: tuple,
    max_segments: int | None,
    takes: dict[str, int],
    workers: int,
    on_done: Callable[[Source, int, str | None, bool], bool],
) -> None:
    """Process ``todo``, calling ``on_done`` per source; it returns True to stop early."""
    if workers <= 1 or len(todo) <= 1:
        _init_worker(*init_args)
        for s in todo:
            _, n, err, full = process_source(s, max_segments, takes.get(s.split, 1))
            if on_done(s, n, err, full):
                return
        return
    import multiprocessing as mp

    by_path = {s.path: s for s in todo}
    # Spawn, not fork: the caller (the pipeline) may already hold TensorFlow threads.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
        args = [(s, max_segments, takes.get(s.split, 1)) for s in todo]
        for path, n, err, full in pool.imap_unordered(_process_star, args, chunksize=1):
            if on_done(by_path[path], n, err, full):
                return  # leaving the pool's block terminates the workers


def _process_star(args: tuple[Source, int | None, int]) -> tuple[str, int, str | None, bool]:
    return process_source(*args)


def simulate(
    out: Path,
    *,
    size: str = "default",
    seed: int = 0,
    speech_dir: Path | None = None,
    workers: int = 2,
    progress: bool = True,
    oracle: str = "",
    directivity: bool = False,
    direct_share: float | None = None,
    direct_quality: str | None = None,
) -> Path:
    """Build (or resume) a simulated replay corpus in ``out``; returns the dataset folder.

    The folder gets ``protocol.csv``, ``audio/``, ``simulation.csv`` (exact per-utterance
    values), ``build.json``, ``datacard.md`` and ``datacard.json``. ``oracle`` (one of
    :data:`ORACLES`) makes an oracle build, for studies only; ``directivity`` gives
    talkers and loudspeakers their directivity (a study option, see the module docstring);
    ``direct_share`` is the share of the replays through real loudspeakers of quality
    ``direct_quality`` (:data:`DIRECT_QUALITIES`) that play the source recording itself;
    None means the default build's (:data:`DIRECT_SHARE`, :data:`DIRECT_QUALITY`), and a
    share of 0 builds without direct replays (build 8's corpus).
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if oracle and oracle not in ORACLES:
        raise ValueError(f"unknown oracle {oracle!r}; choose one of {', '.join(ORACLES)}")
    if direct_share is None:
        direct_share = DIRECT_SHARE
    if not 0.0 <= direct_share <= 1.0:
        raise ValueError(f"direct_share must be between 0 and 1, got {direct_share!r}")
    if direct_quality is None:
        direct_quality = DIRECT_QUALITY if direct_share else "all"
    elif direct_quality not in DIRECT_QUALITIES:
        raise ValueError(
            f"unknown direct_quality {direct_quality!r}; choose one of {', '.join(DIRECT_QUALITIES)}"
        )
    elif not direct_share:
        raise ValueError("direct_quality picks the loudspeakers of direct replays: a share of 0 has none")
    preset = SIZES[size]
    out = Path(out)
    speech_dir = Path(speech_dir) if speech_dir is not None else default_speech_dir()
    shared = speech_dir.parent if speech_dir.name == "speech" else shared_dir()
    if not (shared / "noise").is_dir():
        shared = shared_dir()
    if not (shared / "noise").is_dir():
        raise FileNotFoundError(
            f"noise folder not found: {shared / 'noise'} (set WAKEGUARD_SHARED)"
        )
    sources = assign_splits(find_sources(speech_dir), preset, seed)
    room_cfgs = build_rooms(preset, seed)
    options = (oracle, directivity, direct_share, direct_quality)  # Context's, in its order
    manifest = _build_manifest(size, seed, sources, room_cfgs, *options)
    _check_resume(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_text(out / "build.json") as fh:
        fh.write(json.dumps(manifest, indent=1))
    for stale in out.rglob("*.part*"):  # what an interrupted build was writing
        if stale.is_file() and is_part(stale):
            stale.unlink()

    rooms = {r.name: compute_irs(r) for r in room_cfgs}
    _write_rooms(out, rooms)
    rooms_by_split = {
        split: [r.name for r in room_cfgs if r.split == split] for split in SPLIT_SHARES
    }
    todo = [s for s in sources if not _source_done(out, s)]
    failures: list[str] = []
    disk_full: list[str] = []
    total_s = sum(s.duration_s for s in sources)
    done_s = total_s - sum(s.duration_s for s in todo)

    def run(on_progress: Callable[[float], None]) -> None:
        def on_done(src: Source, n: int, err: str | None, full: bool) -> bool:
            if full:  # not this file's fault, and every later file would fail the same way
                disk_full.append(err or "")
                return True
            if err:
                failures.append(err)
            on_progress(src.duration_s)
            return False

        _run_sources(
            todo,
            (shared, rooms, rooms_by_split, out, seed, *options),
            preset.segments_per_file,
            preset.takes,
            workers,
            on_done,
        )

    if progress and todo:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("simulating"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s of speech"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ) as bar:
            task = bar.add_task("simulate", total=total_s, completed=done_s)
            run(lambda d: bar.advance(task, d))
    else:
        run(lambda d: None)

    if disk_full:
        done = sum(_source_done(out, s) for s in sources)
        raise SimulationError(
            f"the disk is full: {disk_full[0]}. {done} of {len(sources)} source files are "
            f"done; free space on the disk holding {out} (the default corpus takes about "
            "0.8 GB) and rerun to resume"
        )
    if failures:
        raise SimulationError(
            f"{len(failures)} source file(s) failed; the build is incomplete (rerun to resume after fixing them):\n  "
            + "\n  ".join(failures)
        )
    rows = _collect_rows(out, sources)
    _write_outputs(out, rows)
    from .datacard import write_datacard

    write_datacard(out)
    return out


def _write_rooms(out: Path, rooms: dict[str, RoomIRs]) -> None:
    """``rooms.json``: every room's geometry, target and measured T60, distances."""
    info = []
    for irs in rooms.values():
        r = irs.config
        info.append(
            {
                "name": r.name,
                "split": r.split,
                "dims_m": [round(v, 2) for v in r.dims],
                "area_m2": round(r.area, 2),
                "size_class": r.size_class,
                "t60_s": round(r.t60, 3),
                "t60_class": r.t60_class,
                "measured_t60_s": round(irs.measured_t60, 3),
                "talker_distance_m": {k: round(p.distance, 2) for k, p in r.victim.items()},
                "attacker_distance_m": {k: round(p.distance, 2) for k, p in r.attacker.items()},
            }
        )
    with atomic_text(out / "rooms.json") as fh:
        fh.write(json.dumps(info, indent=1))


def _collect_rows(out: Path, sources: Iterable[Source]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for s in sources:
        meta = _meta_path(out, s)
        if not _source_done(out, s):
            raise SimulationError(
                f"{s.path}: its utterances are missing from {out}; rerun to resume"
            )
        rows.extend(json.loads(meta.read_text())["rows"])
    return rows


def _write_outputs(out: Path, rows: list[dict[str, Any]]) -> None:
    prot = [
        Row(
            r["path"],
            r["label"],
            r["speaker"],
            r["split"],
            {c: str(r[c]) for c in CONDITION_COLUMNS},
        )
        for r in rows
    ]
    write_protocol(out / "protocol.csv", prot, list(CONDITION_COLUMNS))
    with atomic_text(out / "simulation.csv") as fh:
        extra = [k for k in DIRECTIVITY_EXACT_COLUMNS if rows and k in rows[0]["exact"]]
        w = csv.DictWriter(fh, fieldnames=[*EXACT_COLUMNS, *extra])
        w.writeheader()
        for r in rows:
            w.writerow({"path": r["path"], **r["exact"]})


def remove_build(out: Path) -> None:
    """Delete a previous simulator build (only a folder that has our ``build.json``)."""
    if not out.exists():
        return
    if not (out / "build.json").is_file():
        raise FileExistsError(
            f"{out}: not a simulator build (no build.json); refusing to delete it"
        )
    shutil.rmtree(out)


__all__ = [
    "SIZES",
    "SimulationError",
    "cut_utterances",
    "default_speech_dir",
    "remove_build",
    "shared_dir",
    "simulate",
]
