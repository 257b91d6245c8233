"""The main job end to end: simulate, explore, baselines, train, quantize, evaluate, report.

Everything lands in one run folder ``OUT``: the dataset in ``OUT/dataset``, then the
layout every helper agreed on (``config.json``, ``model.keras``, ``quantize/``, ``bundle/``,
``eval/``, ``baselines/``, ``explore/``, ``report/``). ``OUT/pipeline.json`` records each
step's wall time and outcome. Each step is a plain function of another module, so the
pipeline adds no logic of its own beyond the order and the bookkeeping.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wakeguard.edge.bundle import MANIFEST, default_bundle_path, load_bundle
from wakeguard.edge.files import atomic_path, atomic_text

from .config import Config, load_config

STEPS = ("simulate", "explore", "baselines", "train", "quantize", "evaluate", "report")
Log = Callable[[str], None]


class PipelineError(RuntimeError):
    """A pipeline step failed; names the step."""


@dataclass
class PipelineResult:
    out: Path
    dataset: Path
    bundle: Path | None = None
    report: Path | None = None
    installed: Path | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "dataset": str(self.dataset),
            "bundle": None if self.bundle is None else str(self.bundle),
            "report": None if self.report is None else str(self.report),
            "installed": None if self.installed is None else str(self.installed),
            "steps": self.steps,
            "summary": self.summary,
        }


def install_bundle(bundle: str | Path, target: str | Path | None = None) -> Path:
    """Copy a validated bundle (manifest, model and the Keras weights if present) to ``target``.

    Default target: the package's ``edge/assets/default`` (what ``screen`` uses with no
    ``--model``). The copy is validated again after writing.
    """
    b = load_bundle(bundle)
    target = Path(target) if target is not None else default_bundle_path()
    target.mkdir(parents=True, exist_ok=True)
    if b.is_ensemble:
        names = [str(m["path"]) for m in b.manifest["members"]]
    else:
        names = [b.manifest["model_file"]]
        keras_name = b.manifest.get("training", {}).get("keras_model")
        if keras_name and (b.path / keras_name).is_file():
            names.insert(0, keras_name)
    for name in [*names, MANIFEST]:  # manifest last: a half-copied bundle never loads stale
        if (b.path / name).is_dir():
            part = target / (name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            shutil.copytree(b.path / name, part)
            shutil.rmtree(target / name, ignore_errors=True)
            part.replace(target / name)
        else:
            with atomic_path(target / name) as tmp:
                shutil.copyfile(b.path / name, tmp)
    # what the target held before (another bundle's model or members) must not linger
    for old in target.iterdir():
        if old.name in names or old.name == MANIFEST:
            continue
        if old.is_dir() and (old / MANIFEST).is_file():
            shutil.rmtree(old)
        elif old.is_file() and old.suffix in (".tflite", ".keras", ".part"):
            old.unlink()
    load_bundle(target)
    return target


def pipeline(
    out: str | Path,
    *,
    size: str = "default",
    seed: int = 0,
    config: Config | None = None,
    skip: tuple[str, ...] = (),
    dataset: str | Path | None = None,
    install_default: bool = False,
    overwrite: bool = False,
    workers: int = 2,
    progress: bool = True,
    log: Log | None = None,
) -> PipelineResult:
    """Run every step in order; returns where the bundle and report are.

    ``dataset`` uses an existing dataset folder instead of simulating one; ``skip`` leaves
    out named steps (a step whose inputs are missing then fails with its reason).
    ``overwrite`` deletes a simulator build already in ``out/dataset`` (one a different
    simulator version or other options made) before simulating; without it the simulate
    step resumes a matching build and refuses any other.
    """
    log = log or (lambda s: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(skip) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown step(s) to skip {unknown}; steps are {list(STEPS)}")
    cfg = config or load_config()
    if cfg.train.seed != seed:
        from dataclasses import replace

        cfg = replace(cfg, train=replace(cfg.train, seed=seed))
    if dataset is not None:  # an existing dataset: nothing to simulate
        skip = (*skip, "simulate")
    dataset = Path(dataset) if dataset is not None else out / "dataset"
    result = PipelineResult(out=out, dataset=dataset)
    record = out / "pipeline.json"

    def step(name: str, fn: Callable[[], Any]) -> Any:
        if name in skip:
            result.steps.append({"step": name, "status": "skipped"})
            log(f"[{name}] skipped")
            return None
        log(f"[{name}] ...")
        t0 = time.time()
        try:
            value = fn()
        except Exception as exc:
            result.steps.append(
                {
                    "step": name,
                    "status": "failed",
                    "seconds": round(time.time() - t0, 1),
                    "error": str(exc),
                }
            )
            message = f"pipeline step {name!r} failed: {exc}"
            try:
                _write_record(record, result)
            except OSError as record_exc:  # the step's own error (a full disk) comes first
                message += f" (and its record was not saved: {record_exc})"
            raise PipelineError(message) from exc
        secs = round(time.time() - t0, 1)
        result.steps.append({"step": name, "status": "ok", "seconds": secs})
        _write_record(record, result)
        log(f"[{name}] done in {secs:.0f} s")
        return value

    def simulate_step() -> Path:
        from .simulate import remove_build, simulate

        if overwrite:
            remove_build(dataset)
        return Path(simulate(dataset, size=size, seed=seed, workers=workers, progress=progress))

    ds = step("simulate", simulate_step)
    if ds is not None:
        dataset = result.dataset = ds
    if not (dataset / "protocol.csv").is_file():
        raise PipelineError(
            f"no dataset at {dataset} (protocol.csv missing); run the simulate step"
        )

    def explore_step() -> Any:
        from .explore import explore

        return explore(dataset, out / "explore")

    def baselines_step() -> Any:
        from .baselines import run_baselines

        return run_baselines(dataset, out / "baselines", workers=workers, seed=seed)

    def train_step() -> Any:
        from .ensemble import train_ensemble
        from .train import train

        fit = train_ensemble if cfg.ensemble.members else train
        return fit(dataset, out, cfg, workers=workers, progress=progress, log=log)

    def quantize_step() -> Any:
        from .ensemble import quantize_any

        return quantize_any(out, workers=workers, log=log)

    def evaluate_step() -> Any:
        from .evaluate import evaluate

        return evaluate(
            dataset / "protocol.csv", bundle=out / "bundle", out=out / "eval", split="eval"
        )

    def report_step() -> Any:
        from .report import build_report

        return build_report(out)

    step("explore", explore_step)
    step("baselines", baselines_step)
    trained = step("train", train_step)
    quantized = step("quantize", quantize_step)
    if quantized is not None:
        result.bundle = quantized.bundle
    metrics = step("evaluate", evaluate_step)
    report = step("report", report_step)
    if report is not None:
        result.report = Path(report)
    result.summary = _summary(out, trained, quantized, metrics)
    if install_default and result.bundle is not None:
        result.installed = install_bundle(result.bundle)
        log(f"installed the bundle into {result.installed}")
    _write_record(record, result)
    return result


def _summary(out: Path, trained: Any, quantized: Any, metrics: Any) -> dict[str, Any]:
    s: dict[str, Any] = {}
    if trained is not None:
        s["train"] = trained.to_dict()
        if hasattr(trained, "members"):
            s["ensemble"] = [name for name, _ in trained.members]
    if quantized is not None:
        s["variants"] = quantized.variants
    if isinstance(metrics, dict):
        s["eval_eer_int8_bundle"] = metrics.get("eer")
    bl = out / "baselines" / "baselines.json"
    if bl.is_file():
        try:
            s["baselines"] = [
                {"name": b.get("name"), "eer_dev": b.get("eer_dev"), "eer_eval": b.get("eer_eval")}
                for b in json.loads(bl.read_text())
            ]
        except (ValueError, AttributeError):
            pass
    return s


def _write_record(path: Path, result: PipelineResult) -> None:
    with atomic_text(path) as fh:
        fh.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
