"""Loudspeaker and microphone models for the replay simulator.

A replayed command passes through two devices the live one never meets: the attacker's
recorder (microphone response, maybe a codec) and the loudspeaker. Both sides of the
corpus then meet the same victim microphone. This module builds those devices:

- Linear responses are specified as magnitudes on a frequency grid (a low cut-off with
  its slope and resonance, an upper edge, presence peaks, smooth ripple) and realised as
  minimum-phase FIR filters, as real transducers are (near) minimum phase.
- Loudspeakers add a generalised (polynomial) Hammerstein nonlinearity with memory:
  ``y = h1 * x + h2 * e**2 + h3 * e**3`` where ``e`` is an excursion proxy (the drive
  low-passed at the driver resonance: a cone moves most below resonance) and ``h2``,
  ``h3`` are the radiation filters. Distortion therefore grows with level and with bass
  content, which is what force-factor and stiffness nonlinearity do in microspeakers.
- Device quality follows ASVspoof 2019 PA's terms (occupied bandwidth, minimum frequency,
  linear-to-nonlinear power ratio, LNR). ASVspoof quotes LNR > 100 dB for "high"; that much
  would sit below 16-bit quantisation, so LNR here is the power ratio of the linear to the
  distortion output for speech-shaped drive at the reference level, with realistic
  loudspeaker values (about 1–10 % THD for phones, less for bigger drivers); the "high"
  boundary is :data:`LNR_HIGH_DB`.
- Attackers may pre-equalise a replay with the (boost-limited) inverse of the speaker's
  magnitude response (Wang et al., CCS 2020). The bass boost then drives the cone harder,
  so the equalised replay is flatter but more distorted, as on real hardware.
- The measured Google Nexus One front speaker and microphone IRs (Audio Degradation
  Toolbox, CC BY-SA 3.0) become two more profiles; :func:`compare_phone_speaker` checks the
  parametric phone class against the measured speaker.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.audio import SAMPLE_RATE, AudioError

FIR_TAPS = 1024
"""Length of every device FIR at 16 kHz (64 ms: resolves a 60 Hz low cut-off)."""

DESIGN_RATE = 48_000
"""Responses are specified up to 24 kHz so occupied bandwidth > 8 kHz can be stated."""

REFERENCE_RMS = 10 ** (-20 / 20)
"""Drive level (RMS, full scale = 1) at which a loudspeaker's nominal LNR holds."""

LNR_HIGH_DB = 40.0
"""LNR at or above which a loudspeaker counts as high quality (see module docstring)."""

BANDWIDTH_HIGH_HZ = 10_000.0
"""ASVspoof 2019 PA: occupied bandwidth above 10 kHz for a high-quality device."""

FMIN_HIGH_HZ = 600.0
"""ASVspoof 2019 PA: minimum frequency below 600 Hz for a high-quality device."""

MAX_EQ_BOOST_DB = 18.0
"""The most an attacker's inverse equaliser boosts any frequency (amplifier headroom)."""

MIN_AUDIBLE_LNR_DB = 15.0
"""An attacker turns the volume down until the replay's LNR is at least this (audibly
clean enough to pass as a voice): matters for bass-boosting inverse equalisers."""

SPEAKER_CLASSES = ("phone", "laptop", "bluetooth", "smart-speaker", "perfect")
NEXUS_SPEAKER_IR = "nexus-one-front-speaker-ir.wav"
NEXUS_MIC_IR = "nexus-one-front-mic-ir.wav"

# Reference points of the measured Nexus One speaker (dB re its 0.5-2 kHz mean), from
# ../shared/devices/README.md: used to check the parametric phone speaker.
NEXUS_SPEAKER_POINTS = {200.0: -49.0, 400.0: -39.0, 600.0: -16.0, 800.0: -5.0, 5000.0: 12.0}


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Response:
    """A parametric magnitude response (what a datasheet or a sweep would show)."""

    f_low: float
    """Low cut-off (Hz): the high-pass corner, near the driver's resonance."""
    low_order: int
    """High-pass order; slope below ``f_low`` is ``6 * low_order`` dB/octave."""
    low_q: float
    """Q of the resonance at the corner (0.707 = Butterworth, > 1 peaks)."""
    f_high: float
    """Upper band edge (Hz), may lie above 8 kHz (specified on a 48 kHz grid)."""
    high_order: int
    """Low-pass order above ``f_high``."""
    peaks: tuple[tuple[float, float, float], ...] = ()
    """(centre Hz, gain dB, width in octaves) bumps: presence peaks, cabinet modes."""
    ripple: tuple[tuple[float, float, float], ...] = ()
    """Small random bumps of the same form: unit-to-unit variation."""
    floor_db: float = -120.0
    """Leakage floor (dB re passband): what a real driver still radiates far below cut-off."""

    def magnitude_db(self, freqs: np.ndarray) -> np.ndarray:
        f = np.maximum(np.asarray(freqs, dtype=np.float64), 1.0)
        db = _highpass_db(f, self.f_low, self.low_order, self.low_q)
        if self.high_order > 0:
            db += _lowpass_db(f, self.f_high, self.high_order)
        for fc, gain, width in (*self.peaks, *self.ripple):
            db += gain * np.exp(-0.5 * (np.log2(f / fc) / (width / 2.355)) ** 2)
        return 10 * np.log10(10 ** (db / 10) + 10 ** (self.floor_db / 10))


def _highpass_db(f: np.ndarray, fc: float, order: int, q: float) -> np.ndarray:
    """Cascade of one resonant 2nd-order section (Q) and Butterworth sections."""
    if order <= 0:
        return np.zeros_like(f)
    r = f / fc
    db = np.zeros_like(f)
    n2 = order // 2
    for k in range(n2):
        qk = q if k == 0 else 1 / (2 * np.cos(np.pi * (2 * k + 1) / (4 * n2)))
        h = r**2 / np.sqrt((1 - r**2) ** 2 + (r / qk) ** 2)
        db += 20 * np.log10(np.maximum(h, 1e-12))
    if order % 2:
        db += 20 * np.log10(r / np.sqrt(1 + r**2))
    return db


def _lowpass_db(f: np.ndarray, fc: float, order: int) -> np.ndarray:
    return -10 * np.log10(1 + (f / fc) ** (2 * order))


def minimum_phase_fir(mag_db: np.ndarray, n_taps: int = FIR_TAPS) -> np.ndarray:
    """Minimum-phase FIR from a magnitude on the rfft grid of ``2 * (len - 1)`` points.

    Homomorphic method: fold the real cepstrum of the log magnitude onto positive
    quefrencies. Transducers are close to minimum phase, so this keeps the energy at the
    start of the response the way a real device does.
    """
    n_fft = 2 * (len(mag_db) - 1)
    log_mag = np.log(np.maximum(10 ** (mag_db / 20), 1e-6))
    cep = np.fft.irfft(log_mag, n_fft)
    fold = np.zeros(n_fft)
    fold[0] = cep[0]
    fold[1 : n_fft // 2] = 2 * cep[1 : n_fft // 2]
    fold[n_fft // 2] = cep[n_fft // 2]
    h = np.fft.irfft(np.exp(np.fft.rfft(fold)), n_fft)[:n_taps]
    fade = max(n_taps // 8, 1)
    h[-fade:] *= np.hanning(2 * fade)[fade:]
    return h.astype(np.float64)


def fir_from_response(resp: Response, n_taps: int = FIR_TAPS) -> np.ndarray:
    """The 16 kHz minimum-phase FIR of a parametric response."""
    n_fft = 8 * n_taps
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    return minimum_phase_fir(resp.magnitude_db(freqs), n_taps)


def fir_magnitude_db(h: np.ndarray, freqs: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Magnitude (dB) of an FIR at the given frequencies (Hz)."""
    n_fft = max(1 << int(np.ceil(np.log2(len(h) * 4))), 8192)
    spec = np.abs(np.fft.rfft(h, n_fft))
    grid = np.fft.rfftfreq(n_fft, 1 / rate)
    return 20 * np.log10(np.maximum(np.interp(freqs, grid, spec), 1e-12))


def band_edges(mag_db_fn, drop_db: float = 10.0) -> tuple[float, float]:
    """Minimum frequency and upper edge: where the response falls ``drop_db`` below its
    0.5–2 kHz mean (on a 48 kHz design grid, so edges above 8 kHz can be stated)."""
    f = np.linspace(10, DESIGN_RATE / 2, 8000)
    db = mag_db_fn(f)
    ref = db[(f >= 500) & (f <= 2000)].mean()
    above = db >= ref - drop_db
    idx = np.flatnonzero(above)
    if idx.size == 0:
        return float("nan"), float("nan")
    return float(f[idx[0]]), float(f[idx[-1]])


# ------------------------------------------------------------------------ loudspeakers


@dataclass
class Loudspeaker:
    """A playback device: linear FIR plus a polynomial Hammerstein nonlinearity."""

    name: str
    device_class: str
    fir: np.ndarray
    lnr_db: float
    """Nominal linear-to-nonlinear power ratio at the reference drive (inf = linear)."""
    f_min: float
    """Minimum frequency (Hz): lower -10 dB point re the 0.5–2 kHz mean."""
    bandwidth: float
    """Occupied bandwidth (Hz) between the -10 dB points."""
    f_resonance: float = 500.0
    """Driver resonance (Hz) where the excursion proxy rolls off."""
    a3_over_a2: float = 1.0
    """Balance of odd (cubic) to even (quadratic) distortion."""
    measured: bool = False
    """True for a response measured on hardware."""
    directivity_db: tuple[float, ...] = (0.0,) * 7
    """Directivity index (dB) at ``rooms.DIRECTIVITY_BANDS_HZ``, facing the microphone:
    how much less than an omnidirectional source it sends into the room's reflections.
    :func:`build_devices` draws it per device (:data:`SPEAKER_DI_DB`)."""
    _nl_gain: float | None = field(default=None, init=False, repr=False)

    @property
    def nl_gain(self) -> float:
        """Scale of the distortion branches, calibrated to ``lnr_db`` at the reference drive.

        Calibrated on first use: a build holds hundreds of train loudspeakers and a worker
        process plays only some of them."""
        if self._nl_gain is None:
            self._nl_gain = self._calibrate() if np.isfinite(self.lnr_db) else 0.0
        return self._nl_gain

    @property
    def quality(self) -> str:
        """ASVspoof 2019 PA device quality: perfect, high or low."""
        if self.device_class == "perfect":
            return "perfect"
        high = (
            self.bandwidth > BANDWIDTH_HIGH_HZ
            and self.f_min < FMIN_HIGH_HZ
            and self.lnr_db >= LNR_HIGH_DB
        )
        return "high" if high else "low"

    def _excursion(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import butter, sosfilt

        sos = butter(
            2, min(self.f_resonance, 0.45 * SAMPLE_RATE), "low", fs=SAMPLE_RATE, output="sos"
        )
        # Normalised to the reference drive so the polynomial terms are dimensionless.
        return sosfilt(sos, x) / REFERENCE_RMS

    def _branches(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.signal import oaconvolve

        n = len(x)
        lin = oaconvolve(x, self.fir)[:n]
        # Memory on both sides: the excursion filter before, the radiation FIR after.
        distortion = self._distortion(self._excursion(x))
        nl = oaconvolve(distortion * REFERENCE_RMS, self.fir)[:n]
        return lin, nl

    def _distortion(self, e: np.ndarray) -> np.ndarray:
        """The static polynomial of the Hammerstein model (DC of the square removed)."""
        return (e**2 - np.mean(e**2)) + self.a3_over_a2 * e**3

    def _calibrate(self) -> float:
        rng = np.random.default_rng(1234)
        x = REFERENCE_RMS * speech_shaped_noise(rng, 4 * SAMPLE_RATE)
        lin, nl = self._branches(x)
        p_lin, p_nl = np.mean(lin**2), np.mean(nl**2)
        return float(np.sqrt(p_lin / (p_nl * 10 ** (self.lnr_db / 10))))

    def play(
        self,
        x: np.ndarray,
        drive_db: float = 0.0,
        pre_eq: np.ndarray | None = None,
        *,
        level_window: slice | None = None,
        gain: float | None = None,
    ) -> tuple[np.ndarray, float]:
        """Play ``x`` (any level) at ``drive_db`` re the reference drive; returns the output
        and the amplifier gain used.

        ``pre_eq`` is an optional FIR the attacker applies before the amplifier; its boost
        reaches the cone, so it changes the distortion as well as the response. The drive
        level is measured over ``level_window`` (the speech), and the attacker backs the
        volume off while the replay is audibly distorted. Pass ``gain`` to replay another
        signal through exactly the same amplifier setting (no level measurement).
        """
        from scipy.signal import oaconvolve

        x = np.asarray(x, dtype=np.float64)
        if pre_eq is not None:
            x = oaconvolve(x, pre_eq)[: len(x)]
        linear = not np.isfinite(self.lnr_db) or self.nl_gain == 0.0
        if linear:
            if gain is None:
                part = x if level_window is None else x[level_window]
                gain = REFERENCE_RMS * 10 ** (drive_db / 20) / (np.sqrt(np.mean(part**2)) + 1e-12)
            return oaconvolve(x * gain, self.fir)[: len(x)], float(gain)
        if gain is not None:  # one convolution: both branches share the radiation FIR
            x = x * gain
            drive = x + self.nl_gain * REFERENCE_RMS * self._distortion(self._excursion(x))
            return oaconvolve(drive, self.fir)[: len(x)], float(gain)
        part = x if level_window is None else x[level_window]
        gain = REFERENCE_RMS * 10 ** (drive_db / 20) / (np.sqrt(np.mean(part**2)) + 1e-12)
        for _ in range(8):
            lin, nl = self._branches(x * gain)
            lnr = 10 * np.log10(np.mean(lin**2) / (np.mean((self.nl_gain * nl) ** 2) + 1e-30))
            if lnr >= MIN_AUDIBLE_LNR_DB:
                break
            gain *= 10 ** (-3 / 20)  # the attacker backs the volume off 3 dB
        else:
            lin, nl = self._branches(x * gain)
        return lin + self.nl_gain * nl, float(gain)

    def inverse_eq(self) -> np.ndarray:
        """The attacker's pre-equaliser: inverse magnitude, boost-limited, min-phase.

        Only the band the attacker can measure and the amplifier can drive is corrected
        (100 Hz to 7.5 kHz); outside it the equaliser is flat.
        """
        n_fft = 8 * FIR_TAPS
        freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
        db = fir_magnitude_db(self.fir, freqs)
        ref = db[(freqs >= 500) & (freqs <= 2000)].mean()
        inv = np.clip(ref - db, -MAX_EQ_BOOST_DB, MAX_EQ_BOOST_DB)
        band = (freqs >= 100) & (freqs <= 7500)
        inv = np.where(band, inv, 0.0)
        inv = _smooth_octave(freqs, inv, 1 / 6)
        return minimum_phase_fir(inv, FIR_TAPS)


def _smooth_octave(freqs: np.ndarray, db: np.ndarray, fraction: float) -> np.ndarray:
    """Fractional-octave smoothing, as a measured correction curve would be."""
    logf = np.log2(np.maximum(freqs, 1.0))
    out = np.empty_like(db)
    half = fraction / 2
    csum = np.concatenate([[0.0], np.cumsum(db)])
    lo = np.searchsorted(logf, logf - half, side="left")
    hi = np.searchsorted(logf, logf + half, side="right")
    out[:] = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return out


def speech_shaped_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian noise with a long-term speech spectrum (flat to 500 Hz, -6 dB/oct above)."""
    w = rng.standard_normal(n)
    spec = np.fft.rfft(w)
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    shape = 1 / np.sqrt(1 + (f / 500.0) ** 2) * (f > 60)
    x = np.fft.irfft(spec * shape, n)
    return x / np.sqrt(np.mean(x**2))


# Class ranges: low cut-off (Hz), its order, upper edge (Hz), LNR (dB), presence peak.
# Phone microspeakers: 500-900 Hz cut-off, steep (the Nexus One falls ~40 dB/oct between
# 400 and 600 Hz), a strong 4-8 kHz rise; laptops 250-550 Hz; Bluetooth portables and smart
# speakers reach 50-200 Hz with a bass-reflex bump.
_CLASS_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "phone": {
        "f_low": (680, 850),
        "order": (6, 6),
        "q": (0.5, 0.8),
        "f_high": (11000, 14000),
        "lnr": (18, 32),
        "peak_f": (5000, 8000),
        "peak_db": (13, 17),
        "peak_w": (2.5, 3.5),
        "floor": (-52, -44),
    },
    "laptop": {
        "f_low": (250, 550),
        "order": (4, 6),
        "q": (0.8, 1.4),
        "f_high": (8000, 12000),
        "lnr": (25, 45),
        "peak_f": (2500, 5000),
        "peak_db": (3, 8),
        "peak_w": (1.2, 2.5),
        "floor": (-60, -50),
    },
    "bluetooth": {
        "f_low": (70, 200),
        "order": (4, 4),
        "q": (1.0, 1.8),
        "f_high": (11000, 16000),
        "lnr": (32, 52),
        "peak_f": (2000, 5000),
        "peak_db": (0, 5),
        "peak_w": (1.2, 2.5),
        "floor": (-60, -50),
    },
    "smart-speaker": {
        "f_low": (50, 120),
        "order": (4, 4),
        "q": (0.8, 1.4),
        "f_high": (10000, 16000),
        "lnr": (38, 58),
        "peak_f": (1500, 4000),
        "peak_db": (-3, 4),
        "peak_w": (1.2, 2.5),
        "floor": (-60, -50),
    },
}


def random_response(device_class: str, rng: np.random.Generator) -> tuple[Response, float]:
    """A random response and LNR for a loudspeaker of one class."""
    r = _CLASS_RANGES[device_class]
    u = lambda key: float(rng.uniform(*r[key]))  # noqa: E731
    order = int(rng.integers(int(r["order"][0]), int(r["order"][1]) + 1))
    order += order % 2  # even orders: cascades of 2nd-order sections
    peaks = ((u("peak_f"), u("peak_db"), u("peak_w")),)
    ripple = tuple(
        (
            float(np.exp(rng.uniform(np.log(150), np.log(7000)))),
            float(rng.normal(0, 1.5)),
            float(rng.uniform(0.2, 0.6)),
        )
        for _ in range(4)
    )
    resp = Response(u("f_low"), order, u("q"), u("f_high"), 4, peaks, ripple, u("floor"))
    return resp, u("lnr")


def make_loudspeaker(name: str, device_class: str, rng: np.random.Generator) -> Loudspeaker:
    if device_class == "perfect":
        fir = np.zeros(FIR_TAPS)
        fir[0] = 1.0
        return Loudspeaker(name, "perfect", fir, float("inf"), 0.0, float("inf"), 0.0)
    resp, lnr = random_response(device_class, rng)
    f_min, f_max = band_edges(resp.magnitude_db)
    return Loudspeaker(
        name,
        device_class,
        fir_from_response(resp),
        lnr,
        f_min,
        f_max - f_min,
        f_resonance=resp.f_low,
        a3_over_a2=float(rng.uniform(0.3, 2.0)),
    )


MEASURED_SMOOTHING_OCTAVES = 1 / 6
"""Fractional-octave smoothing of a measured device response before it becomes a FIR."""


def load_measured_ir(path: Path, n_taps: int = FIR_TAPS) -> np.ndarray:
    """A measured device response as a 16 kHz minimum-phase FIR, unit 0.5–2 kHz gain.

    A measured IR holds the room it was measured in as well as the device: the Nexus One
    microphone IR decays only 11 dB in its first 50 ms. Used as it is, every utterance
    "recorded" by that microphone would pass through a second room, which is what a replay
    looks like, so live speech would be simulated with a replay's reverberation. The device
    is its magnitude response: take it from the whole IR, smooth it over
    :data:`MEASURED_SMOOTHING_OCTAVES` of an octave (which removes the room's fine comb
    structure and keeps the transducer's resonances and roll-offs), and rebuild a
    minimum-phase FIR, as a transducer is close to minimum phase.
    """
    import soundfile as sf

    try:
        native, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        raise AudioError(path, f"unreadable impulse response ({exc})") from exc
    h = native[:, 0]
    # The magnitude at the IR's own rate, read at the 16 kHz grid's frequencies: resampling
    # the IR first would add the resampler's anti-alias cut near 8 kHz to the device.
    n_fft = 8 * n_taps
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    n_native = max(1 << int(np.ceil(np.log2(len(h)))), int(n_fft * rate / SAMPLE_RATE))
    native_freqs = np.fft.rfftfreq(n_native, 1 / rate)
    native_db = 20 * np.log10(np.maximum(np.abs(np.fft.rfft(h, n_native)), 1e-9))
    mag_db = np.interp(freqs, native_freqs, native_db)
    smooth = _smooth_octave(freqs, mag_db, MEASURED_SMOOTHING_OCTAVES)
    band = (freqs >= 500) & (freqs <= 2000)
    return minimum_phase_fir(smooth - smooth[band].mean(), n_taps)


def measured_loudspeaker(devices_dir: Path, rng: np.random.Generator) -> Loudspeaker:
    """The Nexus One front speaker as a profile: measured linear part, phone-class LNR."""
    import soundfile as sf

    path = devices_dir / NEXUS_SPEAKER_IR
    fir = load_measured_ir(path)
    # Band edges from the IR at its own rate (44.1 kHz), so the bandwidth above 8 kHz counts.
    native, rate = sf.read(str(path), dtype="float64", always_2d=True)
    f_min, f_max = band_edges(
        lambda f: fir_magnitude_db(native[:, 0], np.minimum(f, rate / 2 - 1), rate)
    )
    lnr = float(rng.uniform(*_CLASS_RANGES["phone"]["lnr"]))
    return Loudspeaker(
        "nexus-one", "phone", fir, lnr, f_min, f_max - f_min, f_resonance=650.0, measured=True
    )


# ------------------------------------------------------------------------- microphones


ADC_CUTOFF_HZ = (6600.0, 7300.0)
"""Range of the -3 dB edge of a 16 kHz listening device's decimation (anti-alias) filter."""
ADC_ORDER = 32
"""Butterworth-magnitude order of that filter: tens of dB down by 8 kHz, as real ones are."""


@dataclass(frozen=True)
class Microphone:
    """A recording device: its linear response, and the anti-alias filter of its 16 kHz
    capture when it is the listening device."""

    name: str
    mic_class: str
    fir: np.ndarray
    measured: bool = False
    adc_cutoff_hz: float = 7000.0

    def record(self, x: np.ndarray) -> np.ndarray:
        """As an attacker's recorder: it records at 44.1/48 kHz, so its own anti-alias
        filter sits above 8 kHz and only the transducer's response applies."""
        from scipy.signal import oaconvolve

        return oaconvolve(x, self.fir)[: len(x)]

    @cached_property
    def capture_fir(self) -> np.ndarray:
        """As the listening device: the transducer, then the decimation filter to 16 kHz
        that every such device has (the same for live and replayed sound)."""
        n_fft = 8 * FIR_TAPS
        freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
        adc = minimum_phase_fir(_lowpass_db(freqs, self.adc_cutoff_hz, ADC_ORDER), FIR_TAPS)
        return np.convolve(self.fir, adc)

    def capture(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import oaconvolve

        return oaconvolve(x, self.capture_fir)[: len(x)]

    @property
    def roles(self) -> tuple[str, ...]:
        """``victim`` (a listening device's microphone) and/or ``recorder`` (an attacker's)."""
        return tuple(
            role
            for role, classes in (("victim", VICTIM_MIC_CLASSES), ("recorder", RECORDER_CLASSES))
            if self.mic_class in classes
        )


_MIC_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    # MEMS microphones on smart speakers: flat with a 50-150 Hz corner and a HF rise (the
    # sound port's resonance, larger behind a long port).
    "mems": {
        "f_low": (50, 150),
        "f_high": (10000, 14000),
        "peak_f": (5000, 7500),
        "peak_db": (1, 10),
    },
    # Phone electret/MEMS behind a port, with voice-band processing. The port and its
    # cavity make a Helmholtz resonance; the measured Nexus One microphone peaks +13 dB at
    # 6 kHz, so the range reaches that far.
    "phone": {
        "f_low": (100, 250),
        "f_high": (7000, 9000),
        "peak_f": (2500, 7000),
        "peak_db": (1, 14),
    },
    # Laptop array mics: thin bass, a rolled-off top.
    "laptop": {
        "f_low": (150, 350),
        "f_high": (6000, 8000),
        "peak_f": (2000, 4000),
        "peak_db": (0, 4),
    },
    # Measurement/studio microphone: flat.
    "studio": {
        "f_low": (20, 30),
        "f_high": (20000, 22000),
        "peak_f": (3000, 6000),
        "peak_db": (0, 0.5),
    },
}


def make_microphone(name: str, mic_class: str, rng: np.random.Generator) -> Microphone:
    r = _MIC_RANGES[mic_class]
    u = lambda key: float(rng.uniform(*r[key]))  # noqa: E731
    ripple = tuple(
        (
            float(np.exp(rng.uniform(np.log(200), np.log(7000)))),
            float(rng.normal(0, 0.7)),
            float(rng.uniform(0.3, 0.8)),
        )
        for _ in range(3)
    )
    resp = Response(
        u("f_low"), 2, 0.707, u("f_high"), 2, ((u("peak_f"), u("peak_db"), 1.5),), ripple
    )
    adc = float(rng.uniform(*ADC_CUTOFF_HZ))
    return Microphone(name, mic_class, fir_from_response(resp), adc_cutoff_hz=adc)


def measured_microphone(devices_dir: Path) -> Microphone:
    return Microphone(
        "nexus-one-mic", "phone", load_measured_ir(devices_dir / NEXUS_MIC_IR), measured=True
    )


# -------------------------------------------------------------------------------- codecs

CODECS = ("none", "wideband", "narrowband")


def apply_codec(x: np.ndarray, codec: str) -> np.ndarray:
    """Codec-like band-limiting of the attacker's recording.

    ``wideband``: 50–7000 Hz (AMR-WB/G.722 band). ``narrowband``: 300–3400 Hz telephone band
    with 8-bit mu-law companding (G.711).
    """
    from scipy.signal import butter, sosfilt

    if codec == "none":
        return x
    if codec == "wideband":
        sos = butter(6, [50, 7000], "bandpass", fs=SAMPLE_RATE, output="sos")
        return sosfilt(sos, x)
    if codec == "narrowband":
        sos = butter(6, [300, 3400], "bandpass", fs=SAMPLE_RATE, output="sos")
        y = sosfilt(sos, x)
        peak = np.max(np.abs(y)) + 1e-12
        mu = 255.0
        c = np.sign(y / peak) * np.log1p(mu * np.abs(y / peak)) / np.log1p(mu)
        c = np.round(c * 127) / 127
        return peak * np.sign(c) * ((1 + mu) ** np.abs(c) - 1) / mu
    raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")


# --------------------------------------------------------------------------- directivity

SPEAKER_DI_DB = {
    "phone": (0.5, 0.5, 1.0, 1.5, 2.5, 4.0, 5.5),
    "laptop": (1.0, 1.0, 1.5, 2.5, 3.5, 4.5, 6.0),
    "bluetooth": (0.5, 1.0, 1.5, 2.5, 4.0, 6.0, 8.0),
    "smart-speaker": (0.5, 0.5, 0.5, 1.0, 1.0, 1.5, 2.5),
    "perfect": (1.0, 1.5, 3.0, 4.5, 6.0, 8.0, 9.0),
}
"""Typical directivity index (dB, at ``rooms.DIRECTIVITY_BANDS_HZ``) of a loudspeaker class
facing the listener. A driver radiates all round while it is small against the wavelength
(ka < 1) and beams above: a phone's 1–2 cm driver and a small Bluetooth box stay near
omnidirectional into the kHz range; smart speakers are built to radiate all round; a
studio monitor (the "perfect" class: flat on axis) beams with its waveguide more than a
mouth does. Each device draws a scale of its class's curve (:data:`SPEAKER_DI_SCALE`)."""

SPEAKER_DI_SCALE = (0.7, 1.3)


def speaker_directivity(device_class: str, rng: np.random.Generator) -> tuple[float, ...]:
    """A loudspeaker's directivity index table: its class's curve, scaled."""
    scale = float(rng.uniform(*SPEAKER_DI_SCALE))
    return tuple(round(scale * v, 3) for v in SPEAKER_DI_DB[device_class])


# ---------------------------------------------------------------------- the device set


@dataclass
class DeviceSet:
    """Every device profile of a build, with the splits each loudspeaker may appear in."""

    loudspeakers: dict[str, Loudspeaker]
    speaker_splits: dict[str, tuple[str, ...]]
    mics: dict[str, Microphone]
    """Every microphone, victim device or attacker's recorder alike."""
    mic_splits: dict[str, tuple[str, ...]]

    def speakers_for(self, split: str) -> list[str]:
        return [n for n, s in self.speaker_splits.items() if split in s]

    def victim_mics_for(self, split: str) -> list[str]:
        """Microphones a listening device of this split may have."""
        return self._mics_for(split, "victim")

    def recorders_for(self, split: str) -> list[str]:
        """Microphones an attacker of this split may record the victim's voice with."""
        return self._mics_for(split, "recorder")

    def _mics_for(self, split: str, role: str) -> list[str]:
        return [n for n, m in self.mics.items() if split in self.mic_splits[n] and role in m.roles]


SPEAKERS_PER_CLASS = {"phone": 8, "laptop": 6, "bluetooth": 6, "smart-speaker": 6}
"""Parametric loudspeakers per class: all but two train, one dev, one eval-only."""
TRAIN_MICS_PER_CLASS = {"mems": 8, "phone": 8, "laptop": 6, "studio": 3}
"""Parametric microphones per class in train; dev and eval get one new one per class each,
and eval also the measured Nexus One microphone."""
VICTIM_MIC_CLASSES = ("mems", "phone", "laptop")
"""Classes a listening device's microphone comes from (smart speaker, phone, laptop)."""
RECORDER_CLASSES = ("phone", "laptop", "studio")
"""Classes an attacker records with. Phone and laptop microphones play both roles, so a
microphone's own colouring says nothing about the label; a replay has two in cascade."""
EXTRA_TRAIN_SPEAKERS_PER_CLASS = {
    "phone": 100,
    "laptop": 100,
    "bluetooth": 100,
    "smart-speaker": 100,
}
"""More parametric loudspeakers for train only, drawn from their own random stream after
every other device, so the dev and eval devices are the same with or without them. A model
that has seen many loudspeakers of a class learns the class, not its few members."""
EXTRA_TRAIN_MICS_PER_CLASS = {"mems": 40, "phone": 40, "laptop": 30, "studio": 15}
"""More parametric microphones for train only, from the same separate stream after the extra
loudspeakers, so the dev and eval microphones stay the same too."""
EXTRA_DEV_SPEAKERS_PER_CLASS = {"phone": 2, "laptop": 2, "bluetooth": 2, "smart-speaker": 2}
"""More held-out loudspeakers for dev (three per class in all), from a third stream: dev EER
picks the checkpoint, and over one unseen device per class it moved by points per epoch."""
EXTRA_DEV_MICS_PER_CLASS = {"mems": 2, "phone": 2, "laptop": 2, "studio": 2}
"""More held-out microphones for dev, likewise."""
EXTRA_SPEAKERS_PER_CLASS = {
    "train": EXTRA_TRAIN_SPEAKERS_PER_CLASS,
    "dev": EXTRA_DEV_SPEAKERS_PER_CLASS,
}
EXTRA_MICS_PER_CLASS = {"train": EXTRA_TRAIN_MICS_PER_CLASS, "dev": EXTRA_DEV_MICS_PER_CLASS}


def _held_out_split(i: int, n_train: int) -> tuple[str, ...]:
    """Instances 0..n_train-1 of a class train, the next one is dev's, the one after eval's."""
    return ("train",) if i < n_train else (("dev",) if i == n_train else ("eval",))


def _add_devices(
    devices: dict[str, Any],
    splits: dict[str, tuple[str, ...]],
    per_class: dict[str, int],
    split: str,
    rng: np.random.Generator,
    infix: str,
) -> None:
    """Add ``per_class[cls]`` new parametric devices of each class to one split, numbered on
    from the class's last (``phone-9``, ``phone-mic-11``)."""
    make = make_microphone if infix else make_loudspeaker
    for cls, n in per_class.items():
        first = sum(
            (d.mic_class if isinstance(d, Microphone) else d.device_class) == cls
            for d in devices.values()
        )
        for j in range(n):
            name = f"{cls}{infix}-{first + j + 1}"
            devices[name] = make(name, cls, rng)
            splits[name] = (split,)


def build_devices(devices_dir: Path | None, seed: int = 0) -> DeviceSet:
    """Deterministic device profiles.

    Per class, instances 0.. go to train, one to dev and one to eval only, so eval holds
    loudspeakers and microphones never seen in training. The measured Nexus One speaker and
    microphone are eval-only too: they test whether a model trained on parametric devices
    transfers to measured ones. The "perfect" loudspeaker is in every split (it has no
    parameters to hold out).
    """
    rng = np.random.default_rng([seed, 0xDE1])
    speakers: dict[str, Loudspeaker] = {}
    splits: dict[str, tuple[str, ...]] = {}
    for cls, n in SPEAKERS_PER_CLASS.items():
        for i in range(n):
            name = f"{cls}-{i + 1}"
            speakers[name] = make_loudspeaker(name, cls, rng)
            splits[name] = _held_out_split(i, n - 2)
    speakers["perfect"] = make_loudspeaker("perfect", "perfect", rng)
    splits["perfect"] = ("train", "dev", "eval")
    mics: dict[str, Microphone] = {}
    mic_splits: dict[str, tuple[str, ...]] = {}
    for cls, n in TRAIN_MICS_PER_CLASS.items():
        for i in range(n + 2):
            name = f"{cls}-mic-{i + 1}"
            mics[name] = make_microphone(name, cls, rng)
            mic_splits[name] = _held_out_split(i, n)
    for split, stream in (("train", 0xDE2), ("dev", 0xDE3)):
        extra = np.random.default_rng([seed, stream])
        _add_devices(speakers, splits, EXTRA_SPEAKERS_PER_CLASS[split], split, extra, "")
        _add_devices(mics, mic_splits, EXTRA_MICS_PER_CLASS[split], split, extra, "-mic")
    if devices_dir is not None and (devices_dir / NEXUS_SPEAKER_IR).is_file():
        speakers["nexus-one"] = measured_loudspeaker(devices_dir, rng)
        splits["nexus-one"] = ("eval",)
    if devices_dir is not None and (devices_dir / NEXUS_MIC_IR).is_file():
        mic = measured_microphone(devices_dir)
        mics[mic.name] = mic
        mic_splits[mic.name] = ("eval",)
    # From one stream per device, so the draws above are those of builds without directivity.
    for name, spk in speakers.items():
        stream = np.random.default_rng([seed, 0xD1, zlib.crc32(name.encode())])
        spk.directivity_db = speaker_directivity(spk.device_class, stream)
    return DeviceSet(speakers, splits, mics, mic_splits)


# ------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class PhoneCheck:
    """How far the parametric phone speakers sit from the measured Nexus One."""

    freqs: tuple[float, ...]
    measured_db: tuple[float, ...]
    parametric_db: tuple[tuple[float, ...], ...]
    max_abs_error_db: float
    """Largest |parametric median - measured| over the check points where the measured
    response is within :data:`CHECK_FLOOR_DB` of its 0.5–2 kHz level (further down, both
    sit below any noise floor a replay reaches the victim with, and the difference is the
    measurement's floor, not the device)."""


CHECK_FLOOR_DB = -40.0


def compare_phone_speaker(
    devices: DeviceSet, freqs: tuple[float, ...] = (200, 400, 600, 800, 1000, 2000, 4000, 6000)
) -> PhoneCheck:
    """Magnitudes (dB re 0.5–2 kHz mean) of the measured and every parametric phone speaker."""
    if "nexus-one" not in devices.loudspeakers:
        raise FileNotFoundError("the measured Nexus One speaker IR is not in the device set")
    f = np.asarray(freqs, dtype=float)
    ref_band = np.linspace(500, 2000, 64)

    def rel(h: np.ndarray) -> np.ndarray:
        return fir_magnitude_db(h, f) - fir_magnitude_db(h, ref_band).mean()

    measured = rel(devices.loudspeakers["nexus-one"].fir)
    params = [
        rel(s.fir)
        for s in devices.loudspeakers.values()
        if s.device_class == "phone" and not s.measured
    ]
    median = np.median(np.stack(params), axis=0)
    audible = measured > CHECK_FLOOR_DB
    return PhoneCheck(
        tuple(float(v) for v in f),
        tuple(float(v) for v in measured),
        tuple(tuple(float(v) for v in p) for p in params),
        float(np.max(np.abs(median - measured)[audible])),
    )
