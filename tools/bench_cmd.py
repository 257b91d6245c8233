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
from wakeguard.edge.files import save_figure, write_text_atomic

from .console import console, err_console, print_error, print_json, run_cli
from .runtime_flags import ModelOption, ThreadsOption

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


def check_speech_dir(folder: Path) -> Path:
    """An explicit ``--speech`` folder must exist and hold FLAC files: quietly benching on
    synthetic audio instead would report figures for something the user did not ask for."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--speech {folder}: folder not found")
    if not any(folder.rglob("*.flac")):
        raise ValueError(f"--speech {folder}: no FLAC files in it")
    return folder


def _commands(cfg: BenchConfig, per_duration: int = 6) -> tuple[dict[float, list[Any]], str, list[str]]:
    """Commands of each length: cuts of real speech if present, else synthetic ones."""
    import numpy as np
    from wakeguard.edge.audio import load_audio
    from wakeguard.edge.profiling import synthetic_command

    speech = check_speech_dir(cfg.speech_dir) if cfg.speech_dir else shared_speech_dir()
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
    if cfg.speech_dir is not None and not all(out.values()):
        raise ValueError(
            f"--speech {cfg.speech_dir}: no FLAC file at least {longest + 0.5:g} s long "
            f"to cut {longest:g} s commands from"
        )
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


def _convert(frames: Any, block: int = int(CAPTURE_RATE * 0.032)) -> Any:
    """What capture does to every block: channels averaged, streaming resample to 16 kHz.

    Fed in the 32 ms blocks a microphone callback delivers, through a fresh
    :class:`~wakeguard.edge.capture.Converter`; in the listener this work is spread over
    the utterance as it arrives, not added after its end.
    """
    import numpy as np
    from wakeguard.edge.capture import Converter

    conv = Converter(CAPTURE_RATE, frames.shape[1])
    out = [conv(frames[i : i + block]) for i in range(0, len(frames), block)]
    out.append(conv.flush())
    return np.concatenate(out)


def _conversion_call(captured: list[Any]) -> Any:
    state = {"i": 0}

    def call() -> None:
        state["i"] = (state["i"] + 1) % len(captured)
        _convert(captured[state["i"]])

    return call


def _find_float_model(cfg: BenchConfig, bundle: Any) -> list[Path] | None:
    """The float32 model of each member, or None where one is missing.

    A single network's is ``RUN/quantize/float32.tflite`` beside ``RUN/bundle`` (or
    ``--float-model``); an ensemble's members' are in the member runs its
    ``ensemble.json`` lists.
    """
    if cfg.float_model is not None:
        if bundle.is_ensemble:
            raise ValueError("--float-model is for a single-network bundle; an ensemble finds its members' own")
        if not cfg.float_model.is_file():
            raise FileNotFoundError(f"{cfg.float_model}: float32 model not found")
        return [cfg.float_model]
    run = bundle.path.parent
    if not bundle.is_ensemble:
        guess = run / "quantize" / "float32.tflite"
        return [guess] if guess.is_file() else None
    try:
        record = json.loads((run / "ensemble.json").read_text())
        runs = {str(m["name"]): Path(m["run"]) for m in record["members"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    found = []
    for m in bundle.members:
        r = runs.get(m.name)
        guess = None if r is None else (r if r.is_absolute() else run / r) / "quantize" / "float32.tflite"
        if guess is None or not guess.is_file():
            return None
        found.append(guess)
    return found


class _ListenerCase:
    """One command inside a stream, with the endpointer's state just before its end is decided.

    The stream is quiet room noise, the command, then quiet again, in the 32 ms blocks the
    capture path delivers. Each timed call starts a fresh :class:`Listener` from the saved
    endpointer state and feeds the rest of the stream, so the figure is the listener's own
    ``latency_ms``: arrival of the block in which the endpointer decided the command had
    ended, to the verdict.
    """

    BLOCK = 512

    def __init__(self, command: Any, seed: int):
        import copy

        import numpy as np
        from wakeguard.edge.config import load_config
        from wakeguard.edge.endpoint import Endpointer

        self.cfg = load_config(None)  # the defaults `wakeguard listen` runs with
        params = self.cfg.endpoint.params()
        rng = np.random.default_rng(seed)

        def quiet(sec: float) -> Any:
            return rng.normal(0, 10 ** (-70 / 20), int(sec * 16_000)).astype(np.float32)

        stream = np.concatenate([quiet(0.6), command, quiet(1.0)])
        blocks = [stream[i : i + self.BLOCK] for i in range(0, len(stream), self.BLOCK)]
        ep = Endpointer(params)
        last = None
        self.n_segments = 0
        for i, blk in enumerate(blocks):
            found = ep.push(blk)
            if found:
                last = i
                self.n_segments += len(found)
        self.ok = last is not None
        ep = Endpointer(params)
        for blk in blocks[: last or 0]:
            ep.push(blk)
        self.saved = ep
        self.rest = blocks[last or 0 :]
        self._copy = copy.deepcopy

    def run(self, detector: Any) -> tuple[float, float, float] | None:
        """(latency_ms, cpu_ms, scored seconds) of the last verdict, or None if none came.

        ``cpu_ms`` is the process's CPU time over the blocks up to and including the one that
        produced the verdict (the deciding block is the first one fed).
        """
        import time

        from wakeguard.edge.listener import Listener, VerdictEvent

        listener = Listener(
            detector, endpoint=self.cfg.endpoint.params(), decision=self.cfg.decision.params(detector.threshold)
        )
        listener.endpointer = self._copy(self.saved)
        verdicts: list[Any] = []
        cpu = 0.0
        for blk in self.rest:
            c0 = time.process_time()
            got = [e for e in listener.process(blk) if isinstance(e, VerdictEvent)]
            if not verdicts:
                cpu += (time.process_time() - c0) * 1000.0
            verdicts += got
        return (verdicts[-1].latency_ms, cpu, verdicts[-1].duration_s) if verdicts else None


class _Round:
    """One variant's stages for one command length, called round-robin by the timer.

    ``detector`` has ``features(audio)``, ``classify(features)``, ``score(audio)`` and
    ``threshold``: a TFLite model through the edge :class:`Scorer` (:class:`ModelDetector`)
    or the Void-style baseline (:class:`VoidDetector`).
    """

    def __init__(self, detector: Any, commands: list[Any], cases: list[_ListenerCase]):
        self.detector = detector
        self.commands = commands
        # Prefer commands the endpointer keeps whole (a pause can split a cut of read speech).
        self.cases = [c for c in cases if c.n_segments == 1] or [c for c in cases if c.ok]
        if not self.cases:
            raise RuntimeError("the endpointer found no command in the bench streams")
        self.feats = [detector.features(c) for c in commands]
        self.scored_s: list[float] = []
        self.i = 0

    def _next(self) -> int:
        self.i = (self.i + 1) % len(self.commands)
        return self.i

    def frontend(self) -> None:
        self.detector.features(self.commands[self._next()])

    def inference(self) -> None:
        self.detector.classify(self.feats[self._next()])

    def score(self) -> None:
        self.detector.score(self.commands[self._next()])

    def e2e(self) -> tuple[float, float]:
        got = self.cases[self._next() % len(self.cases)].run(self.detector)
        if got is None:
            raise RuntimeError("the listener gave no verdict on a bench command it endpointed before")
        self.scored_s.append(got[2])
        return got[0], got[1]


class ModelDetector:
    """A TFLite model through the edge :class:`Scorer`: the stages of what ships."""

    def __init__(self, scorer: Any):
        self.scorer = scorer
        self.threshold = scorer.threshold

    def features(self, audio: Any) -> Any:
        return self.scorer.member_features(audio)

    def classify(self, feats: Any) -> float:
        return self.scorer.fused_logit(feats)

    def score(self, audio: Any, *, endpointed: bool = False) -> Any:
        return self.scorer.score(audio, endpointed=endpointed)


class VoidDetector:
    """The Void-style baseline as bench runs it: ``void_features`` then the standardised RBF SVM."""

    def __init__(self, model: Any, origin: str):
        from wakeguard.model.void import void_features

        self.model = model
        self.origin = origin
        self._features = void_features

    def features(self, audio: Any) -> Any:
        return self._features(audio)

    def classify(self, feats: Any) -> float:
        return float(self.model.decision(feats[None, :])[0])

    threshold = 0.0
    """The SVM's own boundary (decision value 0)."""

    def score(self, audio: Any, *, endpointed: bool = False) -> Any:
        """Same contract as :meth:`Scorer.score`, so the listener can run the baseline too
        (the listener's segments are all it scores: nothing to trim)."""
        import time

        from wakeguard.edge.audio import MIN_SCORE_SECONDS, require_usable
        from wakeguard.edge.scorer import BONAFIDE, SPOOF, ScoreResult

        require_usable(audio, None, MIN_SCORE_SECONDS)
        t0 = time.perf_counter()
        v = self.model.score_audio(audio)
        ms = (time.perf_counter() - t0) * 1000.0
        return ScoreResult(v, BONAFIDE if v >= self.threshold else SPOOF, self.threshold, ms, 1)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.origin,
            "support_vectors": int(self.model.svm.support_vectors_.shape[0]),
            "c": self.model.c,
        }


def _crude_replay(x: Any) -> Any:
    """A phone-speaker-like replay for fitting a stand-in SVM: bass cut below ~500 Hz, soft clipping."""
    import numpy as np

    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1 / 16_000)
    spec *= 1.0 / (1.0 + (500.0 / np.maximum(f, 1.0)) ** 4)
    y = np.fft.irfft(spec, x.size)
    return (np.tanh(3 * y) / 3).astype(np.float32)


def _void_detector(cfg: BenchConfig, commands: dict[float, list[Any]], bundle_path: Path) -> tuple[Any, str]:
    """A fitted Void-style detector, or None and a note saying why the baseline is skipped."""
    try:
        import sklearn  # noqa: F401
        from wakeguard.model.void import VoidModel, void_features
    except ImportError as exc:
        name = getattr(exc, "name", None) or str(exc)
        return None, f"Void-style baseline skipped: {name} not importable (as on a Pi without the train extra)"
    import numpy as np

    path = cfg.void_model
    if path is None:
        guess = bundle_path.parent / "baselines" / "void_model.joblib"
        path = guess if guess.is_file() else None
    if path is not None:
        return VoidDetector(VoidModel.load(path), str(path)), ""
    # No trained model at hand: fit one on the bench's own commands against crude replays of
    # them. Its accuracy is meaningless; its cost is features (most of it) + a small SVM.
    audio = [c for cs in commands.values() for c in cs]
    x = np.stack([void_features(a) for a in audio] + [void_features(_crude_replay(a)) for a in audio])
    y = np.array([1] * len(audio) + [0] * len(audio))
    model = VoidModel.fit(x, y)
    n_sv = int(model.svm.support_vectors_.shape[0])
    note = (
        f"Void SVM fitted here on {len(y)} commands ({n_sv} support vectors; a trained one has more, "
        "which adds little: the features dominate). Pass --void-model RUN/baselines/void_model.joblib"
    )
    return VoidDetector(model, f"fitted in bench on {len(y)} examples"), note


def _stream_files(cfg: BenchConfig, folder: Path) -> tuple[Path, Path, int]:
    """An idle stream (quiet room noise) and a stream of 2 s commands 2 s apart, as 16 kHz WAVs."""
    import numpy as np
    from wakeguard.edge.audio import write_wav

    rng = np.random.default_rng(7)
    n = int(cfg.stream_seconds * 16_000)
    idle = rng.normal(0, 10 ** (-65 / 20), n).astype(np.float32)
    cmds, _, _ = _commands(BenchConfig(durations=(2.0,), speech_dir=cfg.speech_dir))
    busy = idle.copy()
    placed = 0
    for i, start in enumerate(range(16_000, n - 3 * 16_000, 4 * 16_000)):
        c = cmds[2.0][i % len(cmds[2.0])]
        busy[start : start + c.size] += c
        placed += 1
    write_wav(folder / "idle.wav", idle)
    write_wav(folder / "commands.wav", busy)
    return folder / "idle.wav", folder / "commands.wav", placed


def _stream_cost(cfg: BenchConfig, bundle_path: Path) -> dict[str, Any]:
    """CPU per second of audio while the listener idles and while it screens commands.

    Each runs in a fresh interpreter (:func:`wakeguard.edge.profiling.listen_cost`), so the
    figures are the listener's alone.
    """
    import tempfile

    if cfg.stream_seconds < 8:
        raise ValueError("--stream-seconds must be at least 8 (two commands)")
    if cfg.stream_speed < 0:
        raise ValueError("--stream-speed must be >= 0 (0 = as fast as possible)")
    code = (
        "import json, sys\n"
        "from wakeguard.edge.profiling import listen_cost\n"
        "sys.stdout.write(json.dumps(listen_cost(**json.loads(sys.argv[1]))))\n"
    )
    with tempfile.TemporaryDirectory(prefix="wakeguard-bench-") as tmp:
        idle, busy, placed = _stream_files(cfg, Path(tmp))
        modes = {}
        for mode, wav in (("idle", idle), ("commands", busy)):
            args = {"bundle": str(bundle_path), "wav": str(wav), "speed": cfg.stream_speed, "threads": cfg.threads}
            proc = subprocess.run(
                [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=3600
            )
            if proc.returncode != 0:
                raise RuntimeError(f"listener cost process failed: {proc.stderr.strip()[-500:]}")
            modes[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "seconds": cfg.stream_seconds,
        "speed": cfg.stream_speed,
        "commands_placed": placed,
        "input": "16 kHz mono WAV through FileSource (no rate conversion; see the conversion stage)",
        "modes": modes,
    }


def _sum_macs(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """MAC counts of several networks run on each window, added op by op."""
    out: dict[str, Any] = {"total": 0, "by_op": {}, "n_compute_ops": 0, "other_ops": {}}
    for p in parts:
        out["total"] += p["total"]
        out["n_compute_ops"] += p["n_compute_ops"]
        for key in ("by_op", "other_ops"):
            for op, n in p[key].items():
                out[key][op] = out[key].get(op, 0) + n
    return out


def variant_scorers(bundle: Any, float_paths: list[Path] | None, threads: int) -> dict[str, Any]:
    """The bundle's int8 scorer and, given its float32 models, a float32 scorer with the
    bundle's calibration, threshold and input policy, so both score a file alike."""
    from wakeguard.edge.scorer import Scorer

    scorers: dict[str, Any] = {"int8": Scorer.from_bundle(bundle, num_threads=threads)}
    if float_paths is not None:
        scorers["float32"] = Scorer.ensemble(
            [
                (m.name, p.read_bytes(), m.frontend, m.calibration)
                for m, p in zip(bundle.members, float_paths, strict=True)
            ],
            calibration=bundle.calibration,
            threshold=bundle.threshold(),
            num_threads=threads,
            min_seconds=bundle.min_seconds,
            trim=bundle.trim,
        )
    return scorers


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

    if cfg.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    if cfg.threads < 1:
        raise ValueError("--threads must be at least 1")
    if cfg.warmup < 0:
        raise ValueError("--warmup must be at least 0")
    bundle = load_bundle(cfg.model)
    machine_before = machine_info()
    commands, source, files = _commands(cfg)
    captured = {d: [_to_capture_format(c) for c in cs] for d, cs in commands.items()}
    notes = list(cfg.notes)

    float_paths = _find_float_model(cfg, bundle)
    if float_paths is None:
        notes.append("float32 variant not found (pass --float-model PATH.tflite)")
    scorers = variant_scorers(bundle, float_paths, cfg.threads)

    void_detector = None
    if cfg.baseline:
        void_detector, note = _void_detector(cfg, commands, bundle.path)
        if note:
            notes.append(note)
    else:
        notes.append("Void-style baseline not run (--no-baseline)")

    detectors: dict[str, Any] = {name: ModelDetector(sc) for name, sc in scorers.items()}
    if void_detector is not None:
        detectors["void"] = void_detector
    stages: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in detectors}
    for d in cfg.durations:
        key = f"{d:g}s"
        cases = [_ListenerCase(c, seed=i) for i, c in enumerate(commands[d])]
        rounds = {name: _Round(det, commands[d], cases) for name, det in detectors.items()}
        calls: dict[str, Any] = {"int8/conversion": _conversion_call(captured[d])}
        for name, r in rounds.items():
            for stage in ("frontend", "inference", "score", "e2e"):
                calls[f"{name}/{stage}"] = getattr(r, stage)
        timings = interleaved_timings(calls, cfg.repeats, cfg.warmup)
        for label, (wall, cpu) in timings.items():
            name, stage = label.split("/")
            cpu_p = percentiles(cpu)
            stages[name].setdefault(key, {})[stage] = {
                **percentiles(wall).to_dict(),
                "cpu_p50": round(cpu_p.p50, 4),
                "cpu_p95": round(cpu_p.p95, 4),
                "cpu_p99": round(cpu_p.p99, 4),
            }
        for name, r in rounds.items():
            stages[name][key]["e2e"]["scored_s"] = round(sum(r.scored_s) / len(r.scored_s), 3)

    rtf = {
        name: {k: round(v["score"]["p50"] / 1000.0 / float(k[:-1]), 5) for k, v in per.items()}
        for name, per in stages.items()
    }
    rtf_cpu = {
        name: {k: round(v["score"]["cpu_p50"] / 1000.0 / float(k[:-1]), 5) for k, v in per.items()}
        for name, per in stages.items()
    }
    ratios: dict[str, dict[str, float]] = {}
    for other in [n for n in stages if n != "int8"]:
        for stage in ("e2e", "score"):
            for q in ("p50", "p95", "cpu_p50", "cpu_p95"):
                ratios[f"{other}_{stage}_{q}/int8_{stage}_{q}"] = {
                    k: round(stages[other][k][stage][q] / stages["int8"][k][stage][q], 3) for k in stages["int8"]
                }

    member_macs = {m.name: count_macs(m.model_bytes) for m in bundle.members}
    macs_total = sum(m.total for m in member_macs.values())
    n_windows = {f"{d:g}s": len(scorers["int8"].features(commands[d][0])) for d in cfg.durations}
    physical = []
    for core in CORES:
        physical.append(
            {
                **core.to_dict(),
                "ms_per_window": round(core.ms_for(macs_total), 4),
                "ms_per_command": {k: round(core.ms_for(macs_total * n), 4) for k, n in n_windows.items()},
            }
        )
    result: dict[str, Any] = {
        "model": str(bundle.path),
        "model_version": bundle.version,
        "model_bytes": bundle.total_model_bytes,
        "members": [m.name for m in bundle.members],
        "float_model": ", ".join(str(p) for p in float_paths) if float_paths else None,
        "float_model_bytes": sum(p.stat().st_size for p in float_paths) if float_paths else None,
        "threads": cfg.threads,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "audio": source,
        "stages": stages,
        "rtf": rtf,
        "rtf_cpu": rtf_cpu,
        "ratios": ratios,
        "macs": {
            **_sum_macs([m.to_dict() for m in member_macs.values()]),
            "per_window": macs_total,
            "windows_per_command": n_windows,
            **({"members": {n: m.total for n, m in member_macs.items()}} if bundle.is_ensemble else {}),
        },
        "parameters": sum(parameter_count(m.model_bytes) for m in bundle.members),
        "physical": physical,
        "rss_mb_bench": round(peak_rss_mb(), 2),
        "machine": {**machine_before, "loadavg_before": machine_before["loadavg"], "loadavg": machine_info()["loadavg"]},
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


STAGE_ORDER = ("conversion", "frontend", "inference", "score", "e2e")
STAGE_LABELS = {
    "conversion": "conversion",
    "frontend": "front-end",
    "inference": "inference",
    "score": "score",
    "e2e": "end to end",
}
STAGE_SHORT = {"conversion": "convert", "frontend": "front-end", "inference": "infer", "score": "score", "e2e": "e2e"}
"""conversion: 48 kHz stereo to 16 kHz mono, in capture blocks; score: front-end + inference +
calibration of the command; end to end: the listener, end of utterance to verdict."""


def render(result: dict[str, Any]) -> None:
    """Rich tables for people."""
    m = result["machine"]
    console.print(
        f"[bold]wakeguard bench[/]  {m['cpu']} ({m['cores_usable']} usable of {m['cores']} cores), "
        f"Python {m['python']}, {m['runtime']} {m['runtime_version']}, threads={result['threads']}",
        highlight=False,
    )
    console.print(f"audio: {result['audio']}; {result['repeats']} runs after {result['warmup']} warm-up", highlight=False)
    if m.get("loadavg"):
        console.print(
            f"load average before / after: {m['loadavg_before'][0]:.2f} / {m['loadavg'][0]:.2f} "
            f"on {m['cores']} cores (other work competing for them)",
            highlight=False,
        )
    t = Table(
        title="Latency per stage, ms: wall time (what a user waits, under this load) "
        "and CPU time (what the work costs a core)"
    )
    for col in ("variant", "cmd", "stage"):
        t.add_column(col, no_wrap=True)
    for col in ("p50", "p95", "p99", "CPU p50", "CPU p95"):
        t.add_column(col, justify="right", no_wrap=True)
    for name, per in result["stages"].items():
        for k, st in per.items():
            for s in STAGE_ORDER:
                v = st.get(s)
                if v is None:
                    continue
                t.add_row(
                    name, k, STAGE_SHORT[s], f"{v['p50']:.2f}", f"{v['p95']:.2f}", f"{v['p99']:.2f}",
                    f"{v['cpu_p50']:.2f}", f"{v['cpu_p95']:.2f}",
                )
            t.add_section()
    console.print(t)
    console.print(
        "real-time factor (score, CPU p50 / audio length): "
        + "; ".join(
            f"{name} " + ", ".join(f"{k} {v:.4f}" for k, v in per.items()) for name, per in result["rtf_cpu"].items()
        ),
        highlight=False,
    )
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
        + (
            f" ({len(result['members'])} networks: {', '.join(result['members'])})"
            if len(result.get("members") or []) > 1
            else ""
        )
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
            xs, cpu, err, wall = [], [], [], []
            for j, s in enumerate(STAGE_ORDER):
                v = stages[name].get(k, {}).get(s)
                if v is None:
                    continue
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                cpu.append(v["cpu_p50"])
                err.append(v["cpu_p95"] - v["cpu_p50"])
                wall.append(v["p50"])
            bars = ax.bar(xs, cpu, width, yerr=[[0] * len(err), err], capsize=2, label=name)
            ax.plot(xs, wall, "o", ms=3, color=bars.patches[0].get_facecolor(), markeredgecolor="black",
                    label=f"{name} wall p50" if k == keys[0] else None)
        ax.set_xticks(range(len(STAGE_ORDER)), [STAGE_LABELS[s] for s in STAGE_ORDER], rotation=20)
        ax.set_title(f"{k} command")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ms: bar CPU p50, whisker CPU p95, dot wall p50")
    axes[0].legend(fontsize=7)
    m = result["machine"]
    load = f", load average {m['loadavg'][0]:.1f} on {m['cores']} cores" if m.get("loadavg") else ""
    fig.suptitle(f"wakeguard bench on {m['cpu']}, threads={result['threads']}{load}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def bench_cli(
    model: ModelOption = None,
    float_model: Annotated[Path | None, typer.Option("--float-model", help="float32 .tflite of the same model (default: RUN/quantize/float32.tflite beside a run's bundle).")] = None,
    void_model: Annotated[Path | None, typer.Option("--void-model", help="Saved Void-style SVM (default: the run's baselines/, else fitted here).")] = None,
    threads: ThreadsOption = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per stage and command length, after warm-up.")] = 200,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up rounds.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of the stage latencies.")] = None,
    no_baseline: Annotated[bool, typer.Option("--no-baseline", help="Skip the Void-style baseline.")] = False,
    stream: Annotated[bool, typer.Option("--stream", help="Also measure CPU time while listening (idle and screening).")] = False,
    stream_seconds: Annotated[float, typer.Option(min=8, help="Seconds of audio per streaming measurement (at least 8).")] = 20.0,
    stream_speed: Annotated[float, typer.Option(min=0, help="Feed speed for --stream (1 = real time; faster is normalised per audio second).")] = 1.0,
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
    # checked before minutes of measuring, not after
    if speech is not None:
        run_cli(check_speech_dir, speech)
    if plot_path is not None:
        from wakeguard.edge.protocol import ensure_folder

        if plot_path.is_dir():
            print_error(f"--plot {plot_path} is a folder; give the PNG file to write")
            raise typer.Exit(2)
        run_cli(ensure_folder, plot_path.parent, "plot folder")
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


# ---------------------------------------------------------------- several runs (bench/run_bench.sh)


def summarize_runs(paths: list[Path]) -> dict[str, Any]:
    """Medians over several ``bench --json`` runs; each ratio is taken within one run, then the median.

    Within a run the variants are interleaved, so a ratio from one run compares them under the
    same machine load; medians over runs then damp the load that differs between runs.
    """
    import statistics

    runs = [json.loads(Path(p).read_text()) for p in paths]
    if not runs:
        raise ValueError("no bench results to summarise")
    first = runs[0]
    stages: dict[str, Any] = {}
    for name, per in first["stages"].items():
        for k, st in per.items():
            for stage in st:
                for q in ("p50", "p95", "p99", "cpu_p50", "cpu_p95"):
                    vals = [r["stages"][name][k][stage][q] for r in runs if stage in r["stages"].get(name, {}).get(k, {})]
                    cell = stages.setdefault(name, {}).setdefault(k, {}).setdefault(stage, {})
                    cell[q] = round(statistics.median(vals), 3)
                    cell[f"{q}_range"] = [round(min(vals), 3), round(max(vals), 3)]
    ratios: dict[str, Any] = {}
    for key, per in first["ratios"].items():
        for k in per:
            vals = [r["ratios"][key][k] for r in runs if key in r["ratios"]]
            ratios.setdefault(key, {})[k] = {
                "median": round(statistics.median(vals), 3),
                "per_run": vals,
            }
    streams = [r["stream"] for r in runs if r.get("stream")]
    return {
        "runs": len(runs),
        "repeats_per_run": first["repeats"],
        "threads": first["threads"],
        "model": first["model"],
        "model_bytes": first["model_bytes"],
        "float_model_bytes": first.get("float_model_bytes"),
        "machine": first["machine"],
        "loadavg_per_run": [(r["machine"].get("loadavg_before"), r["machine"].get("loadavg")) for r in runs],
        "audio": first["audio"],
        "stages": stages,
        "ratios": ratios,
        "rss_mb": statistics.median(r["rss_mb"] for r in runs),
        "macs": first["macs"],
        "physical": first["physical"],
        "void": first.get("void"),
        "stream": streams[0] if streams else None,
        "notes": first["notes"],
    }


def summary_markdown(s: dict[str, Any]) -> str:
    """The summary as the Markdown tables docs/benchmarks.md shows."""
    lines = [
        f"{s['runs']} runs x {s['repeats_per_run']} timed repeats, threads={s['threads']}; "
        f"medians over runs (min-max over runs in brackets). Audio: {s['audio']}.",
        "",
        "Load average (1 min) before/after each run: "
        + ", ".join(f"{b[0]:.1f}/{a[0]:.1f}" for b, a in s["loadavg_per_run"] if a and b)
        + f" on {s['machine']['cores']} cores.",
        "",
        "| variant | command | stage | p50 ms | p95 ms | p99 ms | CPU p50 ms | CPU p95 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, per in s["stages"].items():
        for k, st in per.items():
            for stage in STAGE_ORDER:
                v = st.get(stage)
                if v is None:
                    continue
                lines.append(
                    f"| {name} | {k} | {STAGE_LABELS[stage]} | {v['p50']:.2f} | "
                    f"{v['p95']:.2f} ({v['p95_range'][0]:.2f}-{v['p95_range'][1]:.2f}) | {v['p99']:.2f} | "
                    f"{v['cpu_p50']:.2f} | {v['cpu_p95']:.2f} ({v['cpu_p95_range'][0]:.2f}-{v['cpu_p95_range'][1]:.2f}) |"
                )
    if s["ratios"]:
        keys = list(next(iter(s["ratios"].values())))
        lines += ["", "| ratio (within one run; median of runs) | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name, per in s["ratios"].items():
            cells = [f"{per[k]['median']:.2f}x ({', '.join(f'{x:.2f}' for x in per[k]['per_run'])})" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    st = s.get("stream")
    if st:
        lines += [
            "",
            f"Streaming ({st['seconds']:g} s of audio per mode, fed at {st['speed']:g}x real time):",
            "",
            "| mode | CPU ms per audio s | % of one core (real time) | verdicts | peak RSS MB |",
            "|---|---:|---:|---:|---:|",
        ]
        for mode, v in st["modes"].items():
            lines.append(
                f"| {mode} | {v['cpu_ms_per_audio_s']:.1f} | {v['core_percent_realtime']:.2f} | {v['verdicts']} | {v['rss_mb_peak']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def summarize_main(argv: list[str] | None = None) -> None:
    """``python -c 'from wakeguard.tools.bench_cmd import summarize_main; summarize_main()' OUT run*.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        raise SystemExit("usage: summarize_main OUT_DIR RUN.json...")
    out = Path(args[0])
    s = summarize_runs([Path(p) for p in args[1:]])
    write_text_atomic(out / "summary.json", json.dumps(s, indent=2) + "\n")
    write_text_atomic(out / "summary.md", summary_markdown(s))
    sys.stdout.write(summary_markdown(s))
