"""Measuring what wakeguard costs on the machine it runs on (numpy and stdlib only).

Used by ``wakeguard bench`` and usable on a Pi without the CLI: latency percentiles,
peak resident memory, process CPU time, the machine's description, and the model's
multiply-accumulate count read from the ``.tflite`` itself, with what that count costs
at a stated Cortex-A72 / A76 int8 throughput.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .litert import interpreter_class, make_interpreter


@dataclass(frozen=True)
class Percentiles:
    """Summary of one stage's wall times in milliseconds."""

    p50: float
    p95: float
    p99: float
    mean: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "p50": round(self.p50, 4),
            "p95": round(self.p95, 4),
            "p99": round(self.p99, 4),
            "mean": round(self.mean, 4),
            "n": self.n,
        }


def percentiles(samples_ms: Iterable[float]) -> Percentiles:
    """p50/p95/p99 (linear interpolation) and mean of a list of times."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timings to summarise")
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return Percentiles(float(p50), float(p95), float(p99), float(a.mean()), int(a.size))


def time_ms(fn: Callable[[], Any]) -> float:
    """Wall time of one call in milliseconds (``perf_counter``)."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def interleaved_timings(
    calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 5
) -> dict[str, tuple[list[float], list[float]]]:
    """Time several calls round-robin so machine noise hits them all alike.

    Each round runs every call once, in an order rotated per round (no call always runs
    first, right after another one warmed or flushed the caches). ``warmup`` rounds are
    discarded. Returns per call the wall times and the CPU times of this process
    (``process_time``, all its threads, so ``--threads N`` inference workers count: what the
    work costs, without the time other processes held the cores) in ms. A call that measures itself returns its own ``(wall_ms, cpu_ms)``; one that
    returns ``None`` is measured here.
    """
    names = list(calls)
    out: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in names}
    for r in range(warmup + repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            c0 = time.process_time()
            t0 = time.perf_counter()
            own = calls[name]()
            wall = (time.perf_counter() - t0) * 1000.0
            cpu = (time.process_time() - c0) * 1000.0
            if own is not None:
                wall, cpu = float(own[0]), float(own[1])
            if r >= warmup:
                out[name][0].append(wall)
                out[name][1].append(cpu)
    return out


# ---------------------------------------------------------------- memory and CPU time


def _status_kb(field_name: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM, else ``getrusage``)."""
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm / 1024.0
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / (1024.0 * 1024.0) if sys.platform == "darwin" else ru / 1024.0


def current_rss_mb() -> float | None:
    """Resident memory now in MB (VmRSS), where /proc has it."""
    rss = _status_kb("VmRSS")
    return None if rss is None else rss / 1024.0


@dataclass
class CpuMeter:
    """Process CPU time (all threads) and wall time over a span; ``with CpuMeter() as m:``."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    _cpu0: float = field(default=0.0, repr=False)
    _wall0: float = field(default=0.0, repr=False)

    def __enter__(self) -> CpuMeter:
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = time.process_time() - self._cpu0
        self.wall_s = time.perf_counter() - self._wall0


# ---------------------------------------------------------------- the machine


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return info


ARM_PARTS = {"0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd05": "Cortex-A55"}
"""``CPU part`` codes in /proc/cpuinfo of the Arm cores found in Raspberry Pis."""


def _package_version(name: str) -> str | None:
    from importlib import metadata

    for dist in (name, name.replace("_", "-")):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, clock, Python, numpy and the TFLite runtime in use."""
    info = _cpuinfo()
    cpu = info.get("model name") or ARM_PARTS.get(info.get("CPU part", ""), "") or platform.processor()
    board = info.get("Model")  # Raspberry Pi boards name themselves here
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    max_mhz = None
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip()
        max_mhz = int(khz) / 1000.0
    except (OSError, ValueError):
        mhz = info.get("cpu MHz")
        max_mhz = float(mhz) if mhz else None
    try:
        load = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        load = None
    try:
        runtime, _ = interpreter_class()
    except ImportError:
        runtime = None
    return {
        "cpu": cpu or "unknown",
        "board": board,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "cpu_mhz": max_mhz,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "runtime": runtime,
        "runtime_version": _package_version(runtime.split(".")[0]) if runtime else None,
        "loadavg": load,  # 1, 5, 15 min: other work competing for the cores during the run
    }


# ---------------------------------------------------------------- multiply-accumulates


@dataclass(frozen=True)
class OpMacs:
    """Multiply-accumulates of one compute op of a ``.tflite`` model (one invocation)."""

    op: str
    macs: int
    output_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]


@dataclass(frozen=True)
class MacCount:
    """All multiply-accumulates of one model invocation, by op."""

    ops: tuple[OpMacs, ...]
    other_ops: dict[str, int]
    """Ops not counted (pooling, reshapes, activations, ...) by name, with how many."""

    @property
    def total(self) -> int:
        return sum(o.macs for o in self.ops)

    def to_dict(self) -> dict[str, Any]:
        by_op: dict[str, int] = {}
        for o in self.ops:
            by_op[o.op] = by_op.get(o.op, 0) + o.macs
        return {"total": self.total, "by_op": by_op, "n_compute_ops": len(self.ops), "other_ops": self.other_ops}


MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D")


def count_macs(model_bytes: bytes) -> MacCount:
    """Count the multiply-accumulates of one invocation from the model's op and tensor shapes.

    Conv: ``out_h*out_w*out_c * k_h*k_w*in_c``; depthwise: ``out_h*out_w*out_c * k_h*k_w``;
    fully connected / batch matmul: ``rows * units * inputs``. Element-wise ops, pooling and
    means are listed under ``other_ops`` but not counted (they are a few per cent at most in
    a conv net). The interpreter is invoked once on zeros so every shape is concrete.
    """
    interp = make_interpreter(model_bytes, 1)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    interp.invoke()
    shapes = {t["index"]: tuple(int(v) for v in t["shape"]) for t in interp.get_tensor_details()}
    ops: list[OpMacs] = []
    other: dict[str, int] = {}
    for op in interp._get_ops_details():  # public enough: used by TFLite's own analyzers
        name = op["op_name"]
        if name == "DELEGATE":
            continue  # a delegate node repeats ops already listed
        if name not in MAC_OPS:
            other[name] = other.get(name, 0) + 1
            continue
        ins = [int(i) for i in op["inputs"]]
        out = shapes[int(op["outputs"][0])]
        if name == "TRANSPOSE_CONV":  # inputs: output_shape, weights, input
            w = shapes[ins[1]]
            inp = shapes[ins[2]]
            macs = int(np.prod(inp[1:-1])) * w[0] * w[1] * w[2] * inp[-1]
        elif name == "BATCH_MATMUL":
            a, b = shapes[ins[0]], shapes[ins[1]]
            w = b
            macs = int(np.prod(out)) * a[-1]
        else:
            w = shapes[ins[1]]
            if name == "CONV_2D":  # weights (out_c, k_h, k_w, in_c)
                macs = int(np.prod(out)) * w[1] * w[2] * w[3]
            elif name == "CONV_3D":  # weights (k_d, k_h, k_w, in_c, out_c)
                macs = int(np.prod(out)) * w[0] * w[1] * w[2] * w[3]
            elif name == "DEPTHWISE_CONV_2D":  # weights (1, k_h, k_w, out_c)
                macs = int(np.prod(out)) * w[1] * w[2]
            else:  # FULLY_CONNECTED: weights (units, inputs)
                macs = int(np.prod(out)) * w[-1]
        ops.append(OpMacs(name, int(macs), out, tuple(w)))
    return MacCount(tuple(ops), other)


def parameter_count(model_bytes: bytes) -> int:
    """Number of weights and biases (constant tensors feeding compute ops)."""
    interp = make_interpreter(model_bytes, 1)
    shapes = {t["index"]: tuple(int(v) for v in t["shape"]) for t in interp.get_tensor_details()}
    seen: set[int] = set()
    total = 0
    for op in interp._get_ops_details():
        if op["op_name"] not in MAC_OPS:
            continue
        for i in [int(i) for i in op["inputs"]][1:]:
            if i >= 0 and i not in seen:
                seen.add(i)
                total += int(np.prod(shapes[i]))
    return total


@dataclass(frozen=True)
class CoreModel:
    """A stated, not measured, int8 throughput of one Arm core (the physical context)."""

    name: str
    board: str
    clock_ghz: float
    int8_macs_per_cycle: int
    assumption: str

    @property
    def peak_gmacs(self) -> float:
        return self.clock_ghz * self.int8_macs_per_cycle

    def ms_for(self, macs: int) -> float:
        """Time for ``macs`` multiply-accumulates at this core's peak int8 rate."""
        return macs / (self.peak_gmacs * 1e9) * 1000.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "board": self.board,
            "clock_ghz": self.clock_ghz,
            "int8_macs_per_cycle": self.int8_macs_per_cycle,
            "peak_gmacs": self.peak_gmacs,
            "assumption": self.assumption,
        }


CORES = (
    CoreModel(
        "Cortex-A72",
        "Raspberry Pi 4",
        1.5,
        8,
        "Armv8.0-A NEON has no int8 dot product: int8 kernels use SMLAL/SMLAL2 "
        "(8 widening 8x8->16-bit MACs per 128-bit instruction), issued on one ASIMD pipe "
        "(F0) at 1 per cycle per the A72 optimisation guide: 8 MACs/cycle at 1.5 GHz (Pi 4; "
        "1.8 GHz on later boards).",
    ),
    CoreModel(
        "Cortex-A76",
        "Raspberry Pi 5",
        2.4,
        32,
        "Armv8.2-A dot product: SDOT does 16 int8 MACs per 128-bit instruction, and the A76 "
        "issues 2 per cycle (two ASIMD pipes, per the A76 optimisation guide): 32 MACs/cycle "
        "at 2.4 GHz.",
    ),
)
"""Peak int8 rates used for the physical limits in docs/benchmarks.md (one core each)."""


# ---------------------------------------------------------------- test audio


def synthetic_command(seconds: float, seed: int = 0, sample_rate: int = 16_000) -> np.ndarray:
    """A speech-like stand-in when no real speech is at hand: voiced syllables at about 4 Hz.

    A harmonic source (f0 gliding between 100 and 220 Hz, -6 dB/octave tilt) under a
    syllable envelope, with short noise bursts for fricatives; about -20 dBFS RMS. Its cost
    through the front-end and model is the same as speech of the same length.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 100 + 120 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    syll = np.clip(np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 6)), 0, None) ** 0.7
    noise = rng.normal(0, 1, n) * (np.sin(2 * np.pi * 1.7 * t + rng.uniform(0, 6)) > 0.8)
    noise = np.diff(noise, prepend=0.0)  # crude high-pass: fricatives live above 3 kHz
    x = voiced * syll + 0.3 * noise
    x = x / (np.sqrt(np.mean(x**2)) + 1e-12) * 0.1
    return x.astype(np.float32)


def edge_footprint(bundle: str | None, files: list[str], repeats: int = 20, threads: int = 1) -> dict[str, Any]:
    """Peak memory of a process that only loads a bundle and scores commands (run it fresh).

    Meant to run in a new interpreter, so the figure is what the edge runtime needs, not
    what a benchmark that also loads scikit-learn or TensorFlow needs. Also reports which
    heavy training libraries ended up imported (none should).
    """
    from .audio import load_audio
    from .scorer import Scorer

    rss_start = peak_rss_mb()
    scorer = Scorer.from_bundle(bundle, num_threads=threads)
    audios = [load_audio(f) for f in files] or [synthetic_command(s, i) for i, s in enumerate((1.0, 2.0, 4.0))]
    for _ in range(repeats):
        for a in audios:
            scorer.score(a)
    heavy = sorted(m for m in ("tensorflow", "keras", "sklearn", "scipy", "librosa", "torch") if m in sys.modules)
    return {
        "rss_mb_peak": round(peak_rss_mb(), 2),
        "rss_mb_at_start": round(rss_start, 2),
        "heavy_modules_imported": heavy,
        "n_scored": repeats * len(audios),
    }


def listen_cost(bundle: str | None, wav: str, speed: float = 1.0, threads: int = 1) -> dict[str, Any]:
    """CPU time of the listener screening a file fed through the capture path (run it fresh).

    The file plays through :class:`~wakeguard.edge.capture.FileSource` at ``speed`` times real
    time into the same :class:`~wakeguard.edge.listener.Listener` that ``wakeguard listen``
    runs; process CPU time (every thread: feeder, converter, endpointer, scorer) is divided
    by the seconds of audio, so an accelerated feed gives the same figure per audio second.
    """
    import threading

    from .bundle import load_bundle
    from .capture import FileSource
    from .config import load_config
    from .listener import Listener
    from .scorer import Scorer

    cfg = load_config(None)  # the defaults `wakeguard listen` runs with
    b = load_bundle(bundle)
    scorer = Scorer.from_bundle(b, num_threads=threads)
    listener = Listener(
        scorer,
        model_version=b.version,
        endpoint=cfg.endpoint.params(),
        decision=cfg.decision.params(scorer.threshold),
    )
    source = FileSource(wav, speed=speed, block_ms=cfg.capture.block_ms, queue_seconds=cfg.capture.queue_seconds)
    with CpuMeter() as m:
        stats = listener.run(source, threading.Event())
    audio_s = stats.audio_seconds
    return {
        "speed": speed,
        "audio_s": round(audio_s, 3),
        "cpu_s": round(m.cpu_s, 4),
        "wall_s": round(m.wall_s, 3),
        "cpu_ms_per_audio_s": round(m.cpu_s / audio_s * 1000.0, 3) if audio_s else None,
        "core_percent_realtime": round(m.cpu_s / audio_s * 100.0, 3) if audio_s else None,
        "core_percent_measured": round(m.cpu_s / m.wall_s * 100.0, 3) if m.wall_s else None,
        "verdicts": stats.verdicts,
        "skipped": stats.skipped,
        "overruns": stats.overruns,
        "rss_mb_peak": round(peak_rss_mb(), 2),
    }
