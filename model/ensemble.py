"""Ensembles: several networks with different front-ends, fused into one bundle.

Training an ensemble trains one ordinary run per member in ``OUT/members/NAME`` (each the
base config plus the member's overrides, see :class:`wakeguard.model.config.EnsembleConfig`)
and records them in ``OUT/ensemble.json``. Quantising it quantises every member as a run
of its own, then fuses: the ensemble's raw logit is the mean of the members' calibrated
scores (each member's calibration was fitted on dev when it was quantised alone), and that
mean is calibrated again on dev, so the bundle's score is a log-likelihood ratio like a
single network's. Every variant (float32 ... int8) is fused the same way, so the float vs
int8 table holds for the ensemble as shipped.

Why fuse at all: networks that look at the audio through different front-ends make
different mistakes; on the default corpus the mean of two such networks beat either one on
both test splits by more than seed-to-seed noise (docs/benchmarks.md, "Session 5").

``OUT`` then has the layout a single run has where the later steps look (``config.json``,
``quantize/variants.json``, ``quantize/int8_*_scores.csv``, ``bundle/``), so evaluate,
report and bundle work on it unchanged.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.bundle import (
    decision_digest,
    load_bundle,
    sha256_bytes,
    write_ensemble_bundle,
)
from wakeguard.edge.files import write_bytes_atomic, write_text_atomic
from wakeguard.edge.scorer import Scorer

from .config import Config, EnsembleConfig, config_to_json, ensemble_members, read_json_file
from .quantize import (
    LOGITS_FILE,
    VARIANTS,
    Log,
    QuantizeResult,
    _eer,
    _latency_ms,
    calibrate,
    calibration_data,
    manifest_extra,
    quantize,
    read_logits,
    staged_folder,
    variant_line,
)
from .train import KERAS_MODEL, Features, TrainResult, train, training_protocol

ENSEMBLE_FILE = "ensemble.json"
MEMBERS_DIR = "members"
FUSION = "mean of the members' calibrated scores, calibrated again on dev"


def is_ensemble_run(run: str | Path) -> bool:
    return (Path(run) / ENSEMBLE_FILE).is_file()


def is_ensemble_source(path: str | Path) -> bool:
    """Whether ``--init-from PATH`` names an ensemble (run or bundle) rather than one network."""
    path = Path(path)
    if is_ensemble_run(path):
        return True
    try:
        return "members" in json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False


@dataclass
class EnsembleTrainResult:
    """What training every member produced (the fused dev EER is known after quantising)."""

    run: Path
    members: list[tuple[str, TrainResult]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run),
            "members": [{"name": n, **r.to_dict()} for n, r in self.members],
            "seconds": round(self.seconds, 1),
        }


def train_ensemble(
    dataset: str | Path | None,
    out: str | Path,
    config: Config,
    *,
    resume: bool = False,
    init_from: str | Path | None = None,
    workers: int = 2,
    progress: bool = False,
    log: Log | None = None,
) -> EnsembleTrainResult:
    """Train each member of ``config.ensemble`` into ``OUT/members/NAME``; write ``OUT/ensemble.json``.

    ``init_from`` is an ensemble bundle (or ensemble run) with the same member names: each
    member fine-tunes from its namesake. ``resume`` continues members that have a
    checkpoint and trains the others from scratch.
    """
    log = log or (lambda s: None)
    t0 = time.time()
    out = Path(out)
    members = ensemble_members(config)
    if not members:
        raise ValueError("the config has no ensemble members (ensemble.members is empty)")
    if resume and dataset is None:
        dataset = json.loads((out / "config.json").read_text())["dataset"]
    if dataset is None:
        raise ValueError("no dataset given")
    dataset = Path(dataset)
    training_protocol(dataset)  # a dataset train() would refuse fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / "config.json", json.dumps(config_to_json(config, dataset.resolve()), indent=2) + "\n"
    )
    result = EnsembleTrainResult(out)
    for i, (name, cfg) in enumerate(members, 1):
        run = out / MEMBERS_DIR / name
        source = None
        if init_from is not None:
            source = _member_source(Path(init_from), name)
        has_checkpoint = (run / "checkpoint" / "state.json").is_file()
        log(
            f"member {i}/{len(members)}: {name}"
            + (" (resumed)" if resume and has_checkpoint else "")
        )
        res = train(
            dataset,
            run,
            cfg,
            resume=resume and has_checkpoint,
            init_from=source,
            workers=workers,
            progress=progress,
            log=log,
        )
        result.members.append((name, res))
        log(f"member {name}: {res.dev_eer_label} {res.dev_eer:.2%} at epoch {res.best_epoch}")
    record = {
        "dataset": str(dataset.resolve()),
        "fusion": FUSION,
        "members": [
            {"name": n, "run": f"{MEMBERS_DIR}/{n}", "overrides": m.get("overrides", [])}
            for (n, _), m in zip(members, config.ensemble.members, strict=True)
        ],
    }
    write_text_atomic(out / ENSEMBLE_FILE, json.dumps(record, indent=2) + "\n")
    result.seconds = time.time() - t0
    return result


def fine_tune_config(cfg: Config, init_from: str | Path, overrides: list[str]) -> Config:
    """The config for ``train --init-from SOURCE``: the source's members, or one network.

    A single-network source trains one network whatever the config's ``[ensemble]`` says;
    an ensemble source (bundle or run) trains one member per source member, each starting
    from its namesake's weights and front-end, with the command line's overrides.
    """
    path = Path(init_from)
    if not is_ensemble_source(path):
        return replace(cfg, ensemble=EnsembleConfig())
    try:
        if is_ensemble_run(path):
            listed = json.loads((path / ENSEMBLE_FILE).read_text())["members"]
        else:
            listed = json.loads((path / "manifest.json").read_text())["members"]
        names = [str(m["name"]) for m in listed]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read its ensemble members ({exc})") from exc
    general = [o for o in overrides if not o.strip().startswith("ensemble.")]
    return replace(cfg, ensemble=EnsembleConfig([{"name": n, "overrides": general} for n in names]))


def _member_source(init_from: Path, name: str) -> Path:
    """Where member ``name`` fine-tunes from: ``BUNDLE/NAME`` or ``RUN/members/NAME``."""
    for cand in (init_from / name, init_from / MEMBERS_DIR / name, init_from / "bundle" / name):
        if (cand / KERAS_MODEL).is_file():
            return cand
    raise FileNotFoundError(
        f"{init_from}: no member {name!r} to start from (an ensemble bundle or run with the same member names)"
    )


def member_runs(out: Path) -> list[tuple[str, Path]]:
    """``(name, run folder)`` of each member listed in ``OUT/ensemble.json``."""
    try:
        record = json.loads((out / ENSEMBLE_FILE).read_text())
        listed = [(str(m["name"]), Path(m["run"])) for m in record["members"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{out / ENSEMBLE_FILE}: not a readable ensemble record ({exc})") from exc
    if not listed:
        raise ValueError(f"{out / ENSEMBLE_FILE}: no members")
    return [(n, r if r.is_absolute() else out / r) for n, r in listed]


def quantize_any(
    run: str | Path, *, dataset: str | Path | None = None, workers: int = 2, log: Log | None = None
) -> QuantizeResult:
    """``wakeguard quantize RUN``: an ensemble run fuses its members, any other run is one network."""
    if is_ensemble_run(run):
        return quantize_ensemble(run, dataset=dataset, workers=workers, log=log)
    return quantize(run, dataset=dataset, workers=workers, log=log)


def ensemble_from_runs(
    runs: list[str | Path],
    out: str | Path,
    *,
    dataset: str | Path | None = None,
    workers: int = 2,
    log: Log | None = None,
) -> QuantizeResult:
    """Fuse runs trained separately (each quantised first if it has no bundle yet) into ``OUT``."""
    paths = [Path(r) for r in runs]
    if len(paths) < 2:
        raise ValueError("an ensemble needs at least two runs")
    seen: dict[Path, Path] = {}
    for p in paths:
        if p.resolve() in seen:
            raise ValueError(
                f"{p}: the same run is listed twice ({seen[p.resolve()]} and {p} are both "
                f"{p.resolve()}); an ensemble needs distinct runs"
            )
        seen[p.resolve()] = p
    names: list[str] = []
    for p in paths:
        if is_ensemble_run(p):
            raise ValueError(
                f"{p}: an ensemble run cannot be a member; list its member runs instead"
            )
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p}: not a training run folder (no config.json)")
        base, k = p.resolve().name, 2
        name = base
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    first = read_json_file(paths[0] / "config.json")
    ds = Path(dataset or first.get("dataset", "")).resolve()
    if not (ds / "protocol.csv").is_file() and not ds.is_file():
        raise FileNotFoundError(f"no dataset at {ds} (pass --dataset)")
    # the first member's config stands for the ensemble's (its seed picks the dev scores
    # kept for monitoring); ensemble.json lists the member runs where they are
    cfg_json = {**first, "dataset": str(ds)}
    calibration_data(cfg_json, dataset)  # the checks fuse() makes, before OUT is written
    out = Path(out)
    members = [{"name": n, "run": str(p.resolve())} for n, p in zip(names, paths, strict=True)]
    record = {"dataset": str(ds), "fusion": FUSION, "members": members}
    with undone_on_failure(out, ("config.json", ENSEMBLE_FILE, "quantize", "bundle")):
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(cfg_json, indent=2) + "\n")
        write_text_atomic(out / ENSEMBLE_FILE, json.dumps(record, indent=2) + "\n")
        return quantize_ensemble(out, dataset=dataset, workers=workers, log=log, requantize=False)


@contextlib.contextmanager
def undone_on_failure(out: Path, names: tuple[str, ...]) -> Iterator[None]:
    """On an exception in the block, take back what it did to ``out``'s entries ``names``.

    When ``out`` did not exist, the folders created for it are removed. Otherwise an entry
    that did not exist is removed and a file that did gets its old bytes back; a folder that
    existed is left to the block (``quantize/`` is replaced only once everything succeeded).
    Nothing else in ``out`` is touched: it may be a folder of the user's.
    """
    top = next((p for p in [out, *out.parents][::-1] if not p.exists()), None)
    saved = {n: (out / n).read_bytes() for n in names if (out / n).is_file()}
    new = [n for n in names if not (out / n).exists() and not (out / n).is_symlink()]
    try:
        yield
    except BaseException:
        # best effort, entry by entry: a cleanup that fails must not hide the error itself
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        elif out.is_dir():
            for n in new:
                path = out / n
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        path.unlink(missing_ok=True)
            for n, data in saved.items():
                with contextlib.suppress(OSError):
                    write_bytes_atomic(out / n, data)
        raise


def quantize_ensemble(
    out: str | Path,
    *,
    dataset: str | Path | None = None,
    workers: int = 2,
    log: Log | None = None,
    requantize: bool = True,
) -> QuantizeResult:
    """Quantise each member (unless ``requantize`` is off and it has a bundle), then fuse them."""
    log = log or (lambda s: None)
    out = Path(out)
    runs = member_runs(out)
    for name, run in runs:
        done = (run / "bundle" / "manifest.json").is_file() and (
            run / "quantize" / LOGITS_FILE
        ).is_file()
        if requantize or not done:
            log(f"member {name}: quantising {run}")
            quantize(run, dataset=dataset, workers=workers, log=log)
    return fuse(out, runs, dataset=dataset, log=log)


def fuse(
    out: Path,
    runs: list[tuple[str, Path]],
    *,
    dataset: str | Path | None = None,
    log: Log | None = None,
) -> QuantizeResult:
    """Fuse quantised members into ``OUT/bundle``, ``OUT/quantize/variants.json`` and score CSVs."""
    log = log or (lambda s: None)
    cfg_json = read_json_file(out / "config.json")
    cfg, dataset, proto = calibration_data(cfg_json, dataset)
    bundles = [(name, load_bundle(run / "bundle")) for name, run in runs]
    prints = {b.manifest.get("data_fingerprint", {}).get("sha256") for _, b in bundles}
    if len(prints) != 1:
        raise ValueError(
            f"{out}: the members were quantised on different datasets; quantise them on one"
        )
    logits = [read_logits(run / "quantize" / LOGITS_FILE) for _, run in runs]
    dev = Features(proto.where(split="dev"), np.zeros((0, 1, 1)), np.zeros(0, dtype=np.int32))
    ev = Features(proto.where(split="eval"), np.zeros((0, 1, 1)), np.zeros(0, dtype=np.int32))
    if not dev.rows:
        raise ValueError(f"{dataset}: no dev split to calibrate on")

    def fused(variant: str, split: Features, name: str) -> np.ndarray:
        """Mean over members of the member's calibrated raw logit, per utterance."""
        cols = []
        for (mname, b), lg in zip(bundles, logits, strict=True):
            table = lg.get(variant, {}).get(name, {})
            missing = [r.path for r in split.rows if r.path not in table]
            if missing:
                raise ValueError(
                    f"member {mname}: no {variant} logit for {len(missing)} {name} utterance(s) "
                    f"such as {missing[0]} (quantise it on this dataset)"
                )
            cols.append([b.calibration.apply(table[r.path]) for r in split.rows])
        return np.mean(np.array(cols), axis=0)

    with staged_folder(out / "quantize", log) as qdir:
        lat_paths = [r.audio_path(proto.root) for r in dev.rows[: cfg.quantize.latency_utterances]]
        member_variants = [read_json_file(run / "quantize" / "variants.json") for _, run in runs]
        variants: list[dict[str, Any]] = []
        fused_logits: dict[str, dict[str, np.ndarray]] = {}
        for variant in VARIANTS:
            fused_logits[variant] = {"dev": fused(variant, dev, "dev")}
            if ev.rows:
                fused_logits[variant]["eval"] = fused(variant, ev, "eval")
            files = [(run / "quantize" / f"{variant}.tflite").read_bytes() for _, run in runs]
            scorer = Scorer.ensemble(
                [
                    (name, data, b.frontend, b.calibration)
                    for (name, b), data in zip(bundles, files, strict=True)
                ],
                num_threads=1,
            )
            entry: dict[str, Any] = {
                "variant": variant,
                "bytes": sum(len(d) for d in files),
                "eer_dev": _eer(dev, fused_logits[variant]["dev"]),
                "eer_eval": _eer(ev, fused_logits[variant]["eval"]) if ev.rows else None,
                "latency_ms": round(_latency_ms(scorer, lat_paths), 3),
                "max_abs_logit_diff_vs_keras_dev": max(
                    next(v for v in mv if v["variant"] == variant)[
                        "max_abs_logit_diff_vs_keras_dev"
                    ]
                    for mv in member_variants
                ),
                "members": {
                    name: {k: v[k] for k in ("bytes", "eer_dev", "eer_eval")}
                    for (name, _), mv in zip(runs, member_variants, strict=True)
                    for v in mv
                    if v["variant"] == variant
                },
            }
            variants.append(entry)
            log(variant_line(entry, "ensemble "))
        write_text_atomic(qdir / "variants.json", json.dumps(variants, indent=2) + "\n")

        rng = np.random.default_rng(cfg.train.seed)
        calibration, thresholds, metrics, cal_scores = calibrate(
            dev, ev, fused_logits["int8"]["dev"], fused_logits["int8"].get("eval"), qdir, rng, cfg
        )
        fingerprint = bundles[0][1].manifest.get("data_fingerprint", {})
        joined = sha256_bytes(b"".join(m.model_bytes for _, b in bundles for m in b.members))
        bundle_dir = out / "bundle"
        with staged_folder(bundle_dir, log) as staged_bundle:  # replaced whole or not at all
            write_ensemble_bundle(
                staged_bundle,
                [(name, b) for name, b in bundles],
                thresholds=thresholds,
                calibration=calibration,
                copy_extra=(KERAS_MODEL,),
                extra=manifest_extra(
                    fingerprint,
                    joined,
                    decision_digest(calibration, thresholds, bundles[0][1].trim),
                    metrics=metrics,
                    variants=variants,
                    calibration_scores=cal_scores,
                    training={
                        "members": [
                            {
                                "name": name,
                                **{
                                    k: b.manifest.get("training", {}).get(k)
                                    for k in ("summary", "config")
                                },
                            }
                            for name, b in bundles
                        ],
                        "dataset": cfg_json.get("dataset"),
                    },
                ),
            )
    log(f"ensemble of {len(bundles)}: " + ", ".join(n for n, _ in bundles))
    return QuantizeResult(out, bundle_dir, variants, calibration, thresholds, metrics)
