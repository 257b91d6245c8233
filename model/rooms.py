"""Rooms for the replay simulator: shoebox geometry, T60 and distances as in ASVspoof 2019 PA.

Each room holds one talker position, three victim microphones (talker distance classes
a/b/c) and three attacker microphones (attacker distance classes A/B/C). The loudspeaker of
a replay stands where the talker stood, as in ASVspoof 2019 PA, so the live and the replayed
path share the room's geometry: the same direct sound and the same reflections.

What they do not share is the source's directivity (:func:`directional`). A talker's mouth
radiates more and more of its high frequencies forward; a smart speaker radiates all round;
a studio monitor beams more than a mouth. Facing the microphone, the direct sound is the
same, but the power a source sends into the room, and so its reflections and reverberation,
falls with its directivity index (DI) per band. Beyond about half the critical distance a
live talker and a replay through an omnidirectional loudspeaker differ in the balance of
direct to reverberant high frequencies even with the same on-axis response.

Impulse responses are a hybrid that stays cheap and deterministic: the image-source method
(pyroomacoustics, order 3) gives the direct sound and early reflections with the right
geometry; a late tail of exponentially decaying noise, in three bands with their own decay,
supplies the reverberation, its energy set by diffuse-field theory (the reverberant energy
equals the direct energy at the critical distance). A full image-source model of a 2 m²
room with T60 = 1 s needs order ~200 and seconds per response; pyroomacoustics' ray tracer
is fast but not reproducible from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from wakeguard.edge.audio import SAMPLE_RATE

SPEED_OF_SOUND = 343.0

# ASVspoof 2019 PA environment and attack ranges.
ROOM_SIZES_M2 = {"a": (2.0, 5.0), "b": (5.0, 10.0), "c": (10.0, 20.0)}
T60_S = {"a": (0.05, 0.2), "b": (0.2, 0.6), "c": (0.6, 1.0)}
TALKER_DISTANCE_M = {"a": (0.1, 0.5), "b": (0.5, 1.0), "c": (1.0, 1.5)}
ATTACKER_DISTANCE_M = {"A": (0.1, 0.5), "B": (0.5, 1.0), "C": (1.0, 2.0)}

MAX_ABSORPTION = 0.95
"""Largest mean absorption coefficient a room may need for its T60 (Sabine)."""

ISM_ORDER = 3
"""Image-source order of the early part; the stochastic tail models the rest."""

TAIL_BANDS = ((0.0, 500.0, 1.1), (500.0, 4000.0, 1.0), (4000.0, SAMPLE_RATE / 2, 0.75))
"""(low Hz, high Hz, T60 factor): lows decay slower, highs faster (air, soft furnishing)."""


def distance_bin(d: float, table: dict[str, tuple[float, float]]) -> str:
    """The class letter of a distance (the last class is open-ended)."""
    keys = list(table)
    for k in keys:
        if d < table[k][1]:
            return k
    return keys[-1]


def range_label(
    key: str, table: dict[str, tuple[float, float]], unit: str, scale: float = 1.0
) -> str:
    """A readable bin label such as ``50-100cm``; the open last class of attackers is ``>100cm``."""
    lo, hi = table[key]
    if table is ATTACKER_DISTANCE_M and key == "C":
        return f">{lo * scale:g}{unit}"
    return f"{lo * scale:g}-{hi * scale:g}{unit}"


@dataclass(frozen=True)
class Placement:
    position: tuple[float, float, float]
    distance: float
    """Actual talker-to-microphone distance (m); may be below the drawn one in tiny rooms."""


@dataclass(frozen=True)
class RoomConfig:
    """One shoebox room with its talker and microphones."""

    name: str
    split: str
    dims: tuple[float, float, float]
    t60: float
    size_class: str
    t60_class: str
    talker: tuple[float, float, float]
    victim: dict[str, Placement]
    attacker: dict[str, Placement]
    seed: int

    @property
    def area(self) -> float:
        return self.dims[0] * self.dims[1]

    @property
    def volume(self) -> float:
        return self.dims[0] * self.dims[1] * self.dims[2]

    @property
    def surface(self) -> float:
        lx, ly, lz = self.dims
        return 2 * (lx * ly + lx * lz + ly * lz)

    @property
    def absorption(self) -> float:
        """Mean absorption coefficient that gives ``t60`` by Sabine's formula."""
        return 0.161 * self.volume / (self.surface * self.t60)


@dataclass
class RoomIRs:
    """Impulse responses of one room, with each direct-sound sample index for alignment."""

    config: RoomConfig
    victim: dict[str, np.ndarray] = field(default_factory=dict)
    attacker: dict[str, np.ndarray] = field(default_factory=dict)
    victim_delay: dict[str, int] = field(default_factory=dict)
    attacker_delay: dict[str, int] = field(default_factory=dict)
    measured_t60: float = float("nan")
    """T60 measured on the first victim IR (Schroeder backward integration)."""


DIRECT_SAMPLES = 41
"""Samples after the direct sound's peak that still belong to it (the image-source method's
fractional-delay sinc); everything later is reflected sound."""

DIRECTIVITY_BANDS_HZ = (125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
"""Octave bands of every directivity index table (dB)."""

TALKER_DI_DB = (2.0, 2.0, 2.5, 3.5, 4.5, 5.5, 6.5)
"""Directivity index of a talker's head and mouth, speech averaged: about 2–3 dB up to
630 Hz, rising above as the mouth and head beam the high frequencies forward (Chu and
Warnock 2002, NRC; Monson et al. 2012, JASA 132(1)). A talker draws a scale of it
(:data:`TALKER_DI_SCALE`): individual talkers differ by a dB or two."""

TALKER_DI_SCALE = (0.75, 1.25)


def directivity_gain(n_fft: int, di_db: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Amplitude gain 10^(-DI/20) on the ``rfft`` grid of ``n_fft`` points, the DI table
    interpolated on a log-frequency axis (held flat beyond its end bands)."""
    f = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    logf = np.log2(np.maximum(f, 1.0))
    di = np.interp(logf, np.log2(DIRECTIVITY_BANDS_HZ), np.asarray(di_db, dtype=np.float64))
    return 10 ** (-di / 20)


def split_direct(h: np.ndarray, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """``h`` as its direct sound (up to :data:`DIRECT_SAMPLES` after ``delay``) and its
    reflected sound (everything later), two arrays of ``h``'s length that sum to it."""
    cut = min(delay + DIRECT_SAMPLES, len(h))
    direct = np.asarray(h, dtype=np.float64).copy()
    direct[cut:] = 0.0
    return direct, np.asarray(h, dtype=np.float64) - direct


def weight_reflections(rest: np.ndarray, di_db: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Reflected sound of an omnidirectional source as it is for a source with directivity
    index ``di_db`` (dB at :data:`DIRECTIVITY_BANDS_HZ`): scaled by 1/sqrt(Q) per band,
    Q = 10^(DI/10), since a source's reverberant energy follows the power it radiates in
    all directions. A zero-phase filter; being linear and time-invariant it may be applied
    before or after a microphone's filter."""
    n_fft = 1 << int(np.ceil(np.log2(2 * len(rest) + 1)))
    out = np.fft.irfft(np.fft.rfft(rest, n_fft) * directivity_gain(n_fft, di_db), n_fft)
    # The weighting spreads a few samples either side of the first reflection; what would
    # fall before time zero wraps past ``len(rest)`` in the padded buffer and is dropped.
    return out[: len(rest)]


def directional(h: np.ndarray, delay: int, di_db: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """``h`` (an omnidirectional source's response, unit direct-path gain) as heard from a
    source with directivity index ``di_db`` that faces the microphone: the direct sound
    keeps its on-axis level, the reflections are weighted by :func:`weight_reflections`.

    This is the diffuse-field view applied to every reflection, early ones too: a
    reflection that leaves the source near its axis is attenuated a little more than a
    real one would be.
    """
    direct, rest = split_direct(h, delay)
    return direct + weight_reflections(rest, di_db)


def _min_t60(dims: tuple[float, float, float]) -> float:
    lx, ly, lz = dims
    v = lx * ly * lz
    s = 2 * (lx * ly + lx * lz + ly * lz)
    return 0.161 * v / (s * MAX_ABSORPTION)


def _place(
    rng: np.random.Generator,
    dims,
    origin,
    distance: float,
    z_range: tuple[float, float],
    margin: float = 0.15,
) -> Placement:
    """A point at ``distance`` from ``origin`` inside the room; shrinks the distance if the
    room is too small for it (recorded as the actual distance)."""
    o = np.asarray(origin)
    d = distance
    for _ in range(12):
        for _ in range(60):
            z = rng.uniform(*z_range)
            dz = z - o[2]
            if abs(dz) >= d:
                z = o[2] + np.sign(dz) * d * rng.uniform(0.0, 0.7)
                dz = z - o[2]
            r = np.sqrt(max(d**2 - dz**2, 0.0))
            az = rng.uniform(0, 2 * np.pi)
            p = np.array([o[0] + r * np.cos(az), o[1] + r * np.sin(az), z])
            if np.all(p >= margin) and np.all(p <= np.asarray(dims) - margin):
                return Placement(tuple(float(v) for v in p), float(np.linalg.norm(p - o)))
        d *= 0.85
    raise ValueError(f"cannot place a microphone {distance:.2f} m from the talker in a {dims} room")


def draw_room(
    name: str, split: str, size_class: str, t60_class: str, rng: np.random.Generator
) -> RoomConfig:
    """A random room of the given ASVspoof size and T60 classes."""
    for _ in range(100):
        area = rng.uniform(*ROOM_SIZES_M2[size_class])
        aspect = rng.uniform(1.0, 1.6)
        lx = float(np.sqrt(area * aspect))
        ly = float(area / lx)
        lz = float(rng.uniform(2.4, 3.0))
        dims = (lx, ly, lz)
        lo, hi = T60_S[t60_class]
        lo = max(lo, _min_t60(dims))
        if lo < hi:
            break
    else:  # a big room cannot be this dead: take the deadest it can be
        lo = hi = _min_t60(dims)
    t60 = float(rng.uniform(lo, hi))
    t60_class = distance_bin(t60, T60_S)  # the class of the T60 the room really has
    m = 0.35
    talker = (
        float(rng.uniform(m, lx - m)),
        float(rng.uniform(m, ly - m)),
        float(rng.uniform(1.2, 1.75)),
    )
    victim = {
        k: _place(rng, dims, talker, rng.uniform(*r), (0.6, 1.2))
        for k, r in TALKER_DISTANCE_M.items()
    }
    attacker = {
        k: _place(rng, dims, talker, rng.uniform(*r), (0.9, 1.6))
        for k, r in ATTACKER_DISTANCE_M.items()
    }
    return RoomConfig(
        name,
        split,
        dims,
        t60,
        size_class,
        t60_class,
        talker,
        victim,
        attacker,
        int(rng.integers(2**31)),
    )


def draw_rooms(split: str, n: int, rng: np.random.Generator) -> list[RoomConfig]:
    """``n`` rooms cycling through the 3 x 3 size/T60 classes in a random order."""
    combos = [(s, r) for s in ROOM_SIZES_M2 for r in T60_S]
    order = rng.permutation(len(combos))
    out = []
    for i in range(n):
        s, r = combos[order[i % len(combos)]]
        out.append(draw_room(f"{split}-room{i + 1:02d}", split, s, r, rng))
    return out


def _tail(n: int, t60: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-energy decaying noise, banded so each band has its own T60."""
    t = np.arange(n) / SAMPLE_RATE
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    out = np.zeros(n)
    for lo, hi, factor in TAIL_BANDS:
        band = np.fft.irfft(np.where((f >= lo) & (f < hi), spec, 0), n)
        out += band * np.exp(-6.91 * t / (t60 * factor))
    return out / np.sqrt(np.sum(out**2))


def compute_irs(cfg: RoomConfig) -> RoomIRs:
    """The six impulse responses of a room (deterministic for the room's seed)."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(cfg.seed)
    alpha = float(np.clip(cfg.absorption, 0.01, MAX_ABSORPTION))
    room = pra.ShoeBox(
        list(cfg.dims),
        fs=SAMPLE_RATE,
        materials=pra.Material(alpha),
        max_order=ISM_ORDER,
        air_absorption=False,
    )
    room.add_source(list(cfg.talker))
    keys = [("victim", k) for k in cfg.victim] + [("attacker", k) for k in cfg.attacker]
    positions = np.array(
        [(cfg.victim if side == "victim" else cfg.attacker)[k].position for side, k in keys]
    ).T
    room.add_microphone_array(positions)
    room.compute_rir()
    a_eq = cfg.surface * alpha  # equivalent absorption area (m^2)
    # pyroomacoustics scales the direct sound as 1/r, so the diffuse energy that equals the
    # direct energy at the critical distance r_c = sqrt(A / (16 pi)) is 16 pi / A.
    e_rev = 16 * np.pi / a_eq
    n_tail = int(1.2 * cfg.t60 * SAMPLE_RATE) + 1
    out = RoomIRs(cfg)
    for i, (side, k) in enumerate(keys):
        early = np.asarray(room.rir[i][0], dtype=np.float64)
        direct = int(np.argmax(np.abs(early)))
        dist = (cfg.victim if side == "victim" else cfg.attacker)[k].distance
        # Energy of the early reflections (after the direct sound's sinc) counts toward e_rev.
        e_early = float(np.sum(early[direct + DIRECT_SAMPLES :] ** 2))
        e_tail = max(e_rev - e_early, 0.2 * e_rev)
        tail = _tail(n_tail, cfg.t60, rng) * np.sqrt(e_tail)
        # The diffuse field builds up over about two mean free paths after the direct sound.
        mfp = 4 * cfg.volume / cfg.surface / SPEED_OF_SOUND
        ramp = np.clip(np.arange(n_tail) / max(2 * mfp * SAMPLE_RATE, 1), 0, 1)
        h = np.zeros(direct + n_tail)
        h[: len(early)] += early[: len(h)]
        h[direct:] += tail * ramp
        h *= dist  # unit direct-path gain: levels are set later by the chain
        if side == "victim":
            out.victim[k], out.victim_delay[k] = h, direct
        else:
            out.attacker[k], out.attacker_delay[k] = h, direct
    k0 = next(iter(out.victim))
    out.measured_t60 = measure_t60(out.victim[k0][out.victim_delay[k0] + DIRECT_SAMPLES :])
    return out


def measure_t60(h: np.ndarray) -> float:
    """T60 by Schroeder backward integration, extrapolated from the -5 to -25 dB decay
    (pass the response after its direct sound)."""
    e = np.cumsum(h[::-1] ** 2)[::-1]
    edb = 10 * np.log10(e / e[0] + 1e-30)
    try:
        i5 = int(np.flatnonzero(edb <= -5)[0])
        i25 = int(np.flatnonzero(edb <= -25)[0])
    except IndexError:
        return float("nan")
    return float(3 * (i25 - i5) / SAMPLE_RATE)
