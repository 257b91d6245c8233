"""``wakeguard bench``: what wakeguard costs on this machine, stage by stage.

Per command length (1, 2, 4 s): audio conversion (48 kHz stereo to 16 kHz mono),
front-end, inference, and end to end (end of utterance to verdict, through the code the
listener runs), each as p50/p95/p99 over many runs after warm-up. The int8 bundle, its
float32 variant and the Void-style baseline run round-robin in the same process, so their
ratios hold on a noisy machine. Also: real-time factor, peak resident memory of an
edge-only process, model size, the model's multiply-accumulates and what they cost at a
stated Arm core throughput, and (``--stream``) CPU time per second of audio while the
listener idles on silence and while it screens commands.

Numpy, the runtime and scikit-learn are imported inside the functions (``--help`` stays
fast; scikit-learn is optional, so the Pi skips the baseline with a note).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .console import console, err_console, print_json, run_cli

DURATIONS = (1.0, 2.0, 4.0)
CAPTURE_RATE = 48_000
"""Native rate of the simulated microphone for the conversion stage (USB mics often refuse 16 kHz)."""


@dataclass
class BenchConfig:
    """What to measure and how often."""

    model: Path | None = None
    """Bundle folder (default: the shipped bundle)."""
    float_model: Path | None = None
    """float32 ``.tflite`` of the same model; default: ``../quantize/float32.tflite`` beside a run's bundle."""
    void_model: Path | None = None
    """Saved Void-style SVM; default: the run's ``baselines/`` if it has one, else fitted here."""
    threads: int = 1
    repeats: int = 200
    warmup: int = 10
    durations: tuple[float, ...] = DURATIONS
    baseline: bool = True
    stream: bool = False
    stream_seconds: float = 20.0
    stream_speed: float = 1.0
    """Feed speed for --stream (1 = real time); CPU time is normalised per second of audio."""
    speech_dir: Path | None = None
    footprint: bool = True
    notes: list[str] = field(default_factory=list)


def shared_speech_dir() -> Path | None:
    """Real speech to bench on: ``$WAKEGUARD_SHARED/speech``, else ``../shared/speech`` beside the repo."""
    env = os.environ.get("WAKEGUARD_SHARED")
    candidates = [Path(env) / "speech"] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "speech")
    for c in candidates:
        if c.is_dir() and any(c.rglob("*.flac")):
            return c
    return None


def _commands(cfg: BenchConfig, per_duration: int = 6) -> tuple[dict[float, list[Any]], str, list[str]]:
    """Commands of each length: cuts of real speech if present, else synthetic ones."""
    import numpy as np
    from wakeguard.edge.audio import load_audio
    from wakeguard.edge.profiling import synthetic_command

    speech = cfg.speech_dir or shared_speech_dir()
    out: dict[float, list[Any]] = {d: [] for d in cfg.durations}
    used: list[str] = []
    if speech is not None:
        files = sorted(speech.rglob("*.flac"))[: per_duration * 2]
        longest = max(cfg.durations)
        for f in files:
            x = load_audio(f)
            if x.size < longest * 16_000 + 8_000:
                continue
            used.append(str(f))
            start = 4_000  # skip the leading silence
            for d in cfg.durations:
                if len(out[d]) < per_duration:
                    out[d].append(np.ascontiguousarray(x[start : start + int(d * 16_000)]))
            if all(len(v) >= per_duration for v in out.values()):
                break
    if speech is None or not all(out.values()):
        out = {d: [synthetic_command(d, seed=i) for i in range(per_duration)] for d in cfg.durations}
        return out, "synthetic speech-like signal (no real speech found)", []
    return out, f"LibriSpeech cuts from {speech} ({len(used)} files)", used


def _to_capture_format(x: Any) -> Any:
    """16 kHz mono -> the 48 kHz stereo a USB microphone delivers (for the conversion stage)."""
    import numpy as np
    from wakeguard.edge.audio import resample

    up = resample(x, 16_000, CAPTURE_RATE)
    return np.stack([up, 0.9 * up], axis=1).astype(np.float32)


def _convert(frames: Any) -> Any:
    """The conversion every input path does: channels averaged, then resampled to 16 kHz."""
    from wakeguard.edge.audio import resample, to_mono

    return resample(to_mono(frames), CAPTURE_RATE, 16_000)


def _find_float_model(cfg: BenchConfig, bundle_path: Path) -> Path | None:
    if cfg.float_model is not None:
        if not cfg.float_model.is_file():
            raise FileNotFoundError(f"{cfg.float_model}: float32 model not found")
        return cfg.float_model
    guess = bundle_path.parent / "quantize" / "float32.tflite"
    return guess if guess.is_file() else None


class _Round:
    """One variant's stages for one command length, called round-robin by the timer."""

    def __init__(self, scorer: Any, commands: list[Any], captured: list[Any]):
        self.scorer = scorer
        self.commands = commands
        self.captured = captured
        self.feats = [scorer.features(c) for c in commands]
        self.i = 0

    def _next(self) -> int:
        self.i = (self.i + 1) % len(self.commands)
        return self.i

    def conversion(self) -> None:
        _convert(self.captured[self._next()])

    def frontend(self) -> None:
        self.scorer.features(self.commands[self._next()])

    def inference(self) -> None:
        for w in self.feats[self._next()]:
            self.scorer.model.logit(w)

    def e2e(self) -> None:
        self.scorer.score(self.commands[self._next()])


class _VoidRound:
    """The Void-style baseline's stages: features, SVM decision, both (its end to end)."""

    def __init__(self, detector: Any, commands: list[Any]):
        self.detector = detector
        self.commands = commands
        self.feats = [detector.features(c) for c in commands]
        self.i = 0

    def _next(self) -> int:
        self.i = (self.i + 1) % len(self.commands)
        return self.i

    def features(self) -> None:
        self.detector.features(self.commands[self._next()])

    def classify(self) -> None:
        self.detector.classify(self.feats[self._next()])

    def e2e(self) -> None:
        self.detector.score(self.commands[self._next()])


def _void_detector(cfg: BenchConfig, commands: dict[float, list[Any]], bundle_path: Path) -> tuple[Any, str]:
    """A fitted Void-style detector, or None and a note saying why the baseline is skipped."""
    try:
        import sklearn  # noqa: F401
        from wakeguard.model import void  # noqa: F401
    except ImportError as exc:
        return None, f"Void-style baseline skipped: {exc.name or exc} not importable (as on a Pi without the train extra)"
    return None, "Void-style baseline: adapter pending"


def _stream_cost(cfg: BenchConfig, bundle_path: Path) -> dict[str, Any]:
    raise ValueError("--stream: the listener is not available in this build")


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Measure everything; returns the JSON-ready result."""
    from wakeguard.edge.bundle import load_bundle
    from wakeguard.edge.profiling import (
        CORES,
        count_macs,
        interleaved_timings,
        machine_info,
        parameter_count,
        peak_rss_mb,
        percentiles,
    )
    from wakeguard.edge.scorer import Scorer

    if cfg.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    if cfg.threads < 1:
        raise ValueError("--threads must be at least 1")
    bundle = load_bundle(cfg.model)
    commands, source, files = _commands(cfg)
    captured = {d: [_to_capture_format(c) for c in cs] for d, cs in commands.items()}
    notes = list(cfg.notes)

    scorers: dict[str, Any] = {"int8": Scorer.from_bundle(bundle, num_threads=cfg.threads)}
    float_path = _find_float_model(cfg, bundle.path)
    if float_path is not None:
        scorers["float32"] = Scorer(
            float_path.read_bytes(),
            bundle.frontend,
            calibration=bundle.calibration,
            threshold=bundle.threshold(),
            num_threads=cfg.threads,
            min_seconds=bundle.min_seconds,
        )
    else:
        notes.append("float32 variant not found (pass --float-model PATH.tflite)")

    void_detector = None
    if cfg.baseline:
        void_detector, note = _void_detector(cfg, commands, bundle.path)
        if void_detector is None:
            notes.append(note)
    else:
        notes.append("Void-style baseline not run (--no-baseline)")

    stages: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in scorers}
    if void_detector is not None:
        stages["void"] = {}
    for d in cfg.durations:
        key = f"{d:g}s"
        calls: dict[str, Any] = {}
        rounds = {name: _Round(s, commands[d], captured[d]) for name, s in scorers.items()}
        calls["int8/conversion"] = rounds["int8"].conversion
        for name, r in rounds.items():
            calls[f"{name}/frontend"] = r.frontend
            calls[f"{name}/inference"] = r.inference
            calls[f"{name}/e2e"] = r.e2e
        if void_detector is not None:
            vr = _VoidRound(void_detector, commands[d])
            calls["void/frontend"] = vr.features
            calls["void/inference"] = vr.classify
            calls["void/e2e"] = vr.e2e
        timings = interleaved_timings(calls, cfg.repeats, cfg.warmup)
        for label, samples in timings.items():
            name, stage = label.split("/")
            stages[name].setdefault(key, {})[stage] = percentiles(samples).to_dict()
        for name in stages:
            if name != "int8" and "conversion" not in stages[name].get(key, {"x": 1}):
                stages[name][key]["conversion"] = stages["int8"][key]["conversion"]

    rtf = {
        name: {k: round(v["e2e"]["p50"] / 1000.0 / float(k[:-1]), 5) for k, v in per.items()}
        for name, per in stages.items()
    }
    ratios: dict[str, dict[str, float]] = {}
    for other in [n for n in stages if n != "int8"]:
        for q in ("p50", "p95"):
            ratios[f"{other}_e2e_{q}/int8_e2e_{q}"] = {
                k: round(stages[other][k]["e2e"][q] / stages["int8"][k]["e2e"][q], 3) for k in stages["int8"]
            }

    macs = count_macs(bundle.model_bytes)
    n_windows = {f"{d:g}s": len(scorers["int8"].features(commands[d][0])) for d in cfg.durations}
    physical = []
    for core in CORES:
        physical.append(
            {
                **core.to_dict(),
                "ms_per_window": round(core.ms_for(macs.total), 4),
                "ms_per_command": {k: round(core.ms_for(macs.total * n), 4) for k, n in n_windows.items()},
            }
        )
    result: dict[str, Any] = {
        "model": str(bundle.path),
        "model_version": bundle.version,
        "model_bytes": len(bundle.model_bytes),
        "float_model": str(float_path) if float_path else None,
        "float_model_bytes": float_path.stat().st_size if float_path else None,
        "threads": cfg.threads,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "audio": source,
        "stages": stages,
        "rtf": rtf,
        "ratios": ratios,
        "macs": {**macs.to_dict(), "per_window": macs.total, "windows_per_command": n_windows},
        "parameters": parameter_count(bundle.model_bytes),
        "physical": physical,
        "rss_mb_bench": round(peak_rss_mb(), 2),
        "machine": machine_info(),
        "notes": notes,
    }
    if void_detector is not None:
        result["void"] = void_detector.describe()
    if cfg.footprint:
        fp = _edge_footprint(bundle.path, files[:3], cfg.threads)
        result["footprint"] = fp
        result["rss_mb"] = fp["rss_mb_peak"]
    else:
        result["rss_mb"] = result["rss_mb_bench"]
    if cfg.stream:
        result["stream"] = _stream_cost(cfg, bundle.path)
    return result


def _edge_footprint(bundle_path: Path, files: list[str], threads: int) -> dict[str, Any]:
    """Run :func:`edge_footprint` in a fresh interpreter: memory of the edge runtime alone."""
    code = (
        "import json, sys\n"
        "from wakeguard.edge.profiling import edge_footprint\n"
        "args = json.loads(sys.argv[1])\n"
        "sys.stdout.write(json.dumps(edge_footprint(**args)))\n"
    )
    args = {"bundle": str(bundle_path), "files": files, "threads": threads}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"edge footprint process failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- output


STAGE_ORDER = ("conversion", "frontend", "inference", "e2e")


def render(result: dict[str, Any]) -> None:
    """Rich tables for people."""
    m = result["machine"]
    console.print(
        f"[bold]wakeguard bench[/]  {m['cpu']} ({m['cores_usable']} usable of {m['cores']} cores), "
        f"Python {m['python']}, {m['runtime']} {m['runtime_version']}, threads={result['threads']}",
        highlight=False,
    )
    console.print(f"audio: {result['audio']}; {result['repeats']} runs after {result['warmup']} warm-up", highlight=False)
    t = Table(title="Latency per stage, ms")
    for col in ("variant", "command", "stage"):
        t.add_column(col)
    for col in ("p50", "p95", "p99", "RTF"):
        t.add_column(col, justify="right")
    for name, per in result["stages"].items():
        for k, st in per.items():
            for s in STAGE_ORDER:
                v = st.get(s)
                if v is None:
                    continue
                rtf = f"{result['rtf'][name][k]:.4f}" if s == "e2e" else ""
                label = "end to end" if s == "e2e" else s
                t.add_row(name, k, label, f"{v['p50']:.2f}", f"{v['p95']:.2f}", f"{v['p99']:.2f}", rtf)
            t.add_section()
    console.print(t)
    if result["ratios"]:
        r = Table(title="Ratios (same run, same machine)")
        r.add_column("ratio")
        keys = list(next(iter(result["ratios"].values())))
        for k in keys:
            r.add_column(k, justify="right")
        for name, per in result["ratios"].items():
            r.add_row(name, *[f"{per[k]:.2f}x" for k in keys])
        console.print(r)
    macs = result["macs"]
    console.print(
        f"model: {result['model_bytes'] / 1024:.1f} KiB int8"
        + (f", {result['float_model_bytes'] / 1024:.1f} KiB float32" if result.get("float_model_bytes") else "")
        + f"; {result['parameters']:,} parameters; {macs['per_window'] / 1e6:.2f} M MACs per window "
        f"(windows per command: {', '.join(f'{k} {n}' for k, n in macs['windows_per_command'].items())})",
        highlight=False,
    )
    for p in result["physical"]:
        console.print(
            f"  at {p['name']} peak ({p['int8_macs_per_cycle']} int8 MACs/cycle x {p['clock_ghz']} GHz = "
            f"{p['peak_gmacs']:.0f} GMAC/s): {p['ms_per_window']:.3f} ms per window",
            highlight=False,
        )
    fp = result.get("footprint")
    mem = f"peak resident memory: {result['rss_mb']:.1f} MB"
    if fp:
        heavy = ", ".join(fp["heavy_modules_imported"]) or "none"
        mem += f" (a fresh edge-only process; training libraries imported: {heavy}); this bench process: {result['rss_mb_bench']:.1f} MB"
    console.print(mem, highlight=False)
    st = result.get("stream")
    if st:
        for mode, v in st["modes"].items():
            console.print(
                f"streaming, {mode}: {v['cpu_ms_per_audio_s']:.1f} ms CPU per second of audio "
                f"({v['core_percent_realtime']:.2f}% of one core in real time), {v['verdicts']} verdicts, "
                f"fed at {v['speed']:g}x",
                highlight=False,
            )
    for n in result["notes"]:
        console.print(f"[yellow]note:[/] {n}", highlight=False)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Grouped bars of p50 per stage, variant and command length, with p95 whiskers."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ValueError("--plot needs matplotlib (pip install matplotlib)") from exc
    stages = result["stages"]
    keys = list(stages["int8"])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), sharey=True)
    axes = axes if len(keys) > 1 else [axes]
    names = list(stages)
    width = 0.8 / len(names)
    for ax, k in zip(axes, keys, strict=True):
        for i, name in enumerate(names):
            xs, p50, err = [], [], []
            for j, s in enumerate(STAGE_ORDER):
                v = stages[name].get(k, {}).get(s)
                if v is None:
                    continue
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                p50.append(v["p50"])
                err.append(v["p95"] - v["p50"])
            ax.bar(xs, p50, width, yerr=[[0] * len(err), err], capsize=2, label=name)
        ax.set_xticks(range(len(STAGE_ORDER)), ["convert", "front-end", "inference", "end to end"], rotation=20)
        ax.set_title(f"{k} command")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ms (bar p50, whisker p95)")
    axes[0].legend()
    m = result["machine"]
    fig.suptitle(f"wakeguard bench on {m['cpu']}, threads={result['threads']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bench_cli(
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Model bundle folder (default: the shipped bundle).")] = None,
    float_model: Annotated[Path | None, typer.Option("--float-model", help="float32 .tflite of the same model (default: RUN/quantize/float32.tflite beside a run's bundle).")] = None,
    void_model: Annotated[Path | None, typer.Option("--void-model", help="Saved Void-style SVM (default: the run's baselines/, else fitted here).")] = None,
    threads: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed runs per stage and command length, after warm-up.")] = 200,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up rounds.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of the stage latencies.")] = None,
    no_baseline: Annotated[bool, typer.Option("--no-baseline", help="Skip the Void-style baseline.")] = False,
    stream: Annotated[bool, typer.Option("--stream", help="Also measure CPU time while listening (idle and screening).")] = False,
    stream_seconds: Annotated[float, typer.Option(help="Seconds of audio per streaming measurement.")] = 20.0,
    stream_speed: Annotated[float, typer.Option(help="Feed speed for --stream (1 = real time; faster is normalised per audio second).")] = 1.0,
    speech: Annotated[Path | None, typer.Option(help="Folder of speech (FLAC) to cut commands from (default: ../shared/speech if present, else synthetic).")] = None,
) -> None:
    """Measure latency per stage, real-time factor, memory and streaming cost on this machine."""
    cfg = BenchConfig(
        model=model,
        float_model=float_model,
        void_model=void_model,
        threads=threads,
        repeats=repeats,
        warmup=warmup,
        baseline=not no_baseline,
        stream=stream,
        stream_seconds=stream_seconds,
        stream_speed=stream_speed,
        speech_dir=speech,
    )
    if not as_json:
        err_console.print("[dim]measuring (interleaved runs of every variant)...[/]")
    result = run_cli(run_bench, cfg)
    if plot_path is not None:
        result["plot"] = str(run_cli(plot, result, plot_path))
    if as_json:
        print_json(result)
    else:
        render(result)
        if plot_path is not None:
            console.print(f"plot: {plot_path}", highlight=False)
