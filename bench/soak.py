"""Soak test of the live screener: an hour (or more) of audio through the whole listen path.

Streams a synthetic session (real LibriSpeech commands with pauses of 1-6 s between them,
over a faint noise floor, with optional restaurant noise) through the capture path
(`IterSource` -> bounded queue -> converter -> endpointer -> scorer -> decision -> sinks),
as fast as it goes, in bounded memory (the audio is generated block by block, never held
whole). Resident memory is sampled every simulated minute; the verdict is whether it
grows after warm-up. An idle phase (noise only) measures the cost of listening to nothing,
as a share of one core.

    nice -n 10 .venv/bin/python bench/soak.py --model BUNDLE --minutes 60 --json out.json

Needs only the edge runtime (no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SR = 16_000


def rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak on other systems)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_commands(speech_dir: Path, n: int, max_s: float) -> list[np.ndarray]:
    import soundfile as sf
    from wakeguard.edge.audio import load_audio

    files = sorted(speech_dir.glob("*/*.flac"))
    files = [f for f in files if sf.info(str(f)).duration <= max_s][:n]
    if not files:
        raise SystemExit(f"no speech files of at most {max_s} s under {speech_dir}")
    return [load_audio(f) for f in files]


def session(
    commands: list[np.ndarray],
    seconds: float,
    *,
    seed: int,
    noise: np.ndarray | None,
    snr_db: float,
    block: int,
    idle: bool = False,
    played: dict | None = None,
) -> Iterator[np.ndarray]:
    """``seconds`` of audio in ``block``-sample blocks: commands and pauses, or only noise."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SR)
    noise_pos = 0
    pending = np.zeros(0, dtype=np.float32)
    made = 0
    while made < total:
        while len(pending) < block:
            gap = rng.normal(0, 10 ** (-62 / 20), int(rng.uniform(1.0, 6.0) * SR)).astype(
                np.float32
            )
            if idle:
                piece = gap
            else:
                cmd = commands[int(rng.integers(len(commands)))]
                # A level from -10 to +3 dB, never past full scale (a real input cannot clip past 1).
                gain = min(
                    10 ** (rng.uniform(-10, 3) / 20), 0.99 / (float(np.abs(cmd).max()) + 1e-9)
                )
                cmd = cmd * np.float32(gain)
                piece = np.concatenate([cmd, gap])
                if played is not None and made + len(pending) + len(cmd) <= total:
                    played["commands"] = played.get("commands", 0) + 1  # complete ones
            if noise is not None:
                idx = (noise_pos + np.arange(len(piece))) % len(noise)
                noise_pos = int(idx[-1]) + 1
                piece = piece + noise[idx] * np.float32(
                    10 ** (-snr_db / 20) * 0.05 / (np.std(noise) + 1e-9)
                )
            pending = np.concatenate([pending, piece.astype(np.float32)])
        n = min(block, total - made)
        yield pending[:n]
        pending = pending[n:]
        made += n


def run_phase(
    scorer, version: str, blocks: Iterator[np.ndarray], label: str, verbose: bool, played: dict
) -> dict:
    from wakeguard.edge.capture import IterSource
    from wakeguard.edge.listener import Listener, VerdictEvent

    counts = {"bonafide": 0, "spoof": 0, "skipped": 0}

    def sink(ev) -> None:
        if isinstance(ev, VerdictEvent):
            counts[ev.verdict] += 1
        else:
            counts["skipped"] += 1

    listener = Listener(scorer, model_version=version, sinks=[sink])
    samples: list[dict] = []
    source = IterSource(blocks, SR, 1, speed=0.0)
    stop = threading.Event()
    next_mark = 60 * SR
    t0, c0 = time.perf_counter(), cpu_s()
    for block in source.blocks(stop):
        listener.process(block)
        if listener.stats.samples >= next_mark:
            samples.append(
                {
                    "minute": round(listener.stats.samples / SR / 60, 2),
                    "rss_mb": round(rss_mb(), 2),
                    "verdicts": listener.stats.verdicts,
                    "wall_s": round(time.perf_counter() - t0, 2),
                }
            )
            if verbose:
                print(f"[{label}] {samples[-1]}", file=sys.stderr, flush=True)
            next_mark += 60 * SR
    listener.finish()
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    audio_s = listener.stats.samples / SR
    st = listener.stats.to_dict()
    return {
        "phase": label,
        "audio_minutes": round(audio_s / 60, 2),
        "wall_s": round(wall, 2),
        "speed_x_real_time": round(audio_s / wall, 1),
        "cpu_share_of_one_core_at_real_time": round(cpu / audio_s, 5),
        "commands_played": played.get("commands", 0),
        "segments": st["segments"],
        "verdicts": counts["bonafide"] + counts["spoof"],
        "skipped": counts["skipped"],
        "latency_p50_ms": st["latency_p50_ms"],
        "latency_p95_ms": st["latency_p95_ms"],
        "overruns": st["overruns"],
        "rss_per_minute": samples,
    }


def latency_phase(scorer, commands: list[np.ndarray], n: int, seconds: float = 2.0) -> dict:
    """``n`` commands cut to ``seconds`` each: end-of-utterance -> verdict, and how much of it
    is the scorer (front-end + inference) versus the rest of the listen path."""
    from wakeguard.edge.capture import IterSource
    from wakeguard.edge.listener import Listener, VerdictEvent

    rng = np.random.default_rng(2)

    def blocks() -> Iterator[
        np.ndarray
    ]:  # generated, never held whole (peak RSS stays the listener's)
        for i in range(n):
            yield rng.normal(0, 1e-3, SR).astype(np.float32)
            yield commands[i % len(commands)][: int(seconds * SR)]
        yield np.zeros(SR, dtype=np.float32)

    inner: list[float] = []
    score = scorer.score

    def timed(audio, path=None):
        t = time.perf_counter()
        r = score(audio, path)
        inner.append((time.perf_counter() - t) * 1000.0)
        return r

    scorer.score = timed
    events: list = []
    try:
        Listener(scorer, sinks=[events.append]).run(IterSource(blocks(), SR, 1), threading.Event())
    finally:
        del scorer.score
    lat = np.array([e.latency_ms for e in events if isinstance(e, VerdictEvent)])
    inn = np.array(inner[: len(lat)])
    dur = np.array([e.duration_s for e in events if isinstance(e, VerdictEvent)])
    return {
        "phase": f"latency_{seconds:g}s_commands",
        "verdicts": int(len(lat)),
        "duration_s_p50": round(float(np.median(dur)), 3),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 2),
        "scorer_p50_ms": round(float(np.percentile(inn, 50)), 2),
        "scorer_p95_ms": round(float(np.percentile(inn, 95)), 2),
        "listen_overhead_p95_ms": round(float(np.percentile(lat - inn, 95)), 3),
        "load_average": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", type=Path, default=None, help="model bundle (default: the shipped one)"
    )
    ap.add_argument("--minutes", type=float, default=60.0, help="simulated minutes of commands")
    ap.add_argument(
        "--idle-minutes", type=float, default=10.0, help="simulated minutes of noise only"
    )
    ap.add_argument(
        "--speech",
        type=Path,
        default=Path(__file__).resolve().parents[1].parent / "shared" / "speech" / "librispeech",
    )
    ap.add_argument(
        "--noise",
        type=Path,
        default=None,
        help="background noise WAV mixed in (e.g. ../shared/noise/restaurant08.wav)",
    )
    ap.add_argument("--snr-db", type=float, default=20.0)
    ap.add_argument("--block-ms", type=float, default=32.0)
    ap.add_argument(
        "--warmup-minutes", type=float, default=5.0, help="memory growth is measured after this"
    )
    ap.add_argument(
        "--latency-commands", type=int, default=100, help="2 s commands timed one by one (0 = skip)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    from wakeguard.edge.audio import load_audio
    from wakeguard.edge.bundle import load_bundle
    from wakeguard.edge.scorer import Scorer

    rss_start = rss_mb()
    bundle = load_bundle(args.model)
    scorer = Scorer.from_bundle(bundle)
    commands = load_commands(args.speech, 40, 6.0)
    noise = None if args.noise is None else load_audio(args.noise)
    block = int(SR * args.block_ms / 1000)
    rss_loaded = rss_mb()

    phases = []
    if args.idle_minutes > 0:
        idle_played: dict = {}
        blocks = session(
            commands,
            args.idle_minutes * 60,
            seed=1,
            noise=noise,
            snr_db=args.snr_db,
            block=block,
            idle=True,
        )
        phases.append(run_phase(scorer, bundle.version, blocks, "idle", args.verbose, idle_played))
    played: dict = {}
    blocks = session(
        commands,
        args.minutes * 60,
        seed=0,
        noise=noise,
        snr_db=args.snr_db,
        block=block,
        played=played,
    )
    main_phase = run_phase(scorer, bundle.version, blocks, "commands", args.verbose, played)
    phases.append(main_phase)
    if args.latency_commands > 0:
        phases.append(latency_phase(scorer, commands, args.latency_commands))

    rss = [s for s in main_phase["rss_per_minute"] if s["minute"] >= args.warmup_minutes]
    growth = rss[-1]["rss_mb"] - rss[0]["rss_mb"] if len(rss) >= 2 else None
    if len(rss) >= 3:
        m = np.array([s["minute"] for s in rss])
        r = np.array([s["rss_mb"] for s in rss])
        slope = float(np.polyfit(m, r, 1)[0]) * 60.0
    else:
        slope = None
    result = {
        "model_version": bundle.version,
        "model": str(bundle.path),
        "python": sys.version.split()[0],
        "pid": os.getpid(),
        "rss_mb_at_start": round(rss_start, 2),
        "rss_mb_model_loaded": round(rss_loaded, 2),
        "rss_mb_peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 2),
        "rss_growth_after_warmup_mb": None if growth is None else round(growth, 2),
        "rss_trend_mb_per_hour": None if slope is None else round(slope, 3),
        "phases": phases,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    summary = {k: v for k, v in result.items() if k != "phases"}
    summary["phases"] = [{k: v for k, v in p.items() if k != "rss_per_minute"} for p in phases]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
