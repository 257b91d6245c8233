"""Baselines the detector must beat, all scored through the same score CSV + metrics code.

Names (each writes ``<name>_scores.csv`` with the rows of every evaluated split, told
apart by the ``split`` column, and one entry of ``baselines.json``):

- ``chance``: a uniform random score per utterance (seeded);
- ``majority``: a constant score that accepts everything when bona fide is the majority of
  the training rows and rejects everything otherwise (EER 50 % by construction);
- ``void``: Void's 97 spectral-power features + RBF SVM (:mod:`.void`), C picked on dev;
- ``lfcc_gmm``: LFCC + deltas from the shared front-end, two diagonal GMMs (:mod:`.lfcc_gmm`).

Each baseline's operating threshold is its EER threshold on the dev split (on train when
there is no dev split); APCER/BPCER on the other splits are measured at that threshold.
Features are computed once per utterance (in ``workers`` processes) and cached in
``out/cache/`` keyed by the files' paths, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.audio import AudioError, load_audio, require_usable
from wakeguard.edge.files import atomic_path, write_text_atomic
from wakeguard.edge.protocol import Row, read_protocol, require_confirmed

from .lfcc_gmm import LFCC, N_DIMS, LfccGmm, lfcc_frames
from .metrics import DEFAULT_N_BOOT, compute_eer, compute_metrics, write_scores
from .void import N_FEATURES, STFT, VoidModel, void_features

BASELINE_NAMES = ("chance", "majority", "void", "lfcc_gmm")
DESCRIPTIONS = {
    "chance": "random score (uniform, seeded)",
    "majority": "constant score: always the training majority class",
    "void": "Void: 97 spectral-power features, RBF SVM (Ahmed et al. 2020)",
    "lfcc_gmm": "LFCC + deltas, bona fide vs spoof diagonal GMMs (ASVspoof baseline family)",
}
BASELINES_FILE = "baselines.json"
FEATURE_VERSION = 1
MIN_SECONDS = 0.3


class BaselineError(ValueError):
    """A dataset the baselines cannot be trained or scored on."""


@dataclass
class Features:
    """Per-utterance features; ``error[i]`` is set (and features empty) where audio was unusable."""

    void: np.ndarray
    lfcc: list[np.ndarray]
    error: list[str | None]


def _extract_one(path: str) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    try:
        audio = load_audio(path)
        require_usable(audio, path, MIN_SECONDS)
    except AudioError as exc:
        return None, None, exc.problem
    return void_features(audio).astype(np.float32), lfcc_frames(audio).astype(np.float16), None


def _one_blas_thread() -> None:
    """Worker initialiser: OpenBLAS's own thread pool only competes with the other workers."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _cache_key(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"v": FEATURE_VERSION, "lfcc": LFCC.to_dict(), "stft": STFT.to_dict()}, sort_keys=True
        ).encode()
    )
    for p in paths:
        try:
            st = Path(p).stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def _load_cache(path: Path, key: str) -> Features | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            lengths = z["lengths"]
            frames = z["lfcc"]
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            lfcc = [frames[offsets[i] : offsets[i + 1]] for i in range(lengths.size)]
            errors = [e or None for e in json.loads(str(z["errors"]))]
            return Features(z["void"], lfcc, errors)
    except (OSError, KeyError, ValueError):
        return None  # a damaged cache is recomputed, never trusted


def _save_cache(path: Path, key: str, f: Features) -> None:
    lengths = np.array([x.shape[0] for x in f.lfcc], dtype=np.int64)
    frames = np.concatenate(f.lfcc) if f.lfcc else np.zeros((0, N_DIMS), np.float16)
    with atomic_path(path, keep_suffix=True) as tmp:
        np.savez(
            tmp,
            key=key,
            void=f.void,
            lfcc=frames,
            lengths=lengths,
            errors=json.dumps([e or "" for e in f.error]),
        )


def extract_features(
    paths: Sequence[str], *, workers: int = 2, cache: Path | None = None
) -> Features:
    """Void features and LFCC frames of every file (unusable files get their error)."""
    key = _cache_key(paths)
    if cache is not None and (hit := _load_cache(cache, key)) is not None:
        return hit
    if workers > 1 and len(paths) > 16:
        import multiprocessing as mp
        import sys
        from concurrent.futures import ProcessPoolExecutor

        chunk = max(1, len(paths) // (workers * 8))
        # fork is cheap, but forking a process that runs TensorFlow's threads can deadlock:
        # then spawn (which needs the caller's main module to be import-safe).
        method = "spawn" if "tensorflow" in sys.modules else "fork"
        with ProcessPoolExecutor(
            workers, mp_context=mp.get_context(method), initializer=_one_blas_thread
        ) as pool:
            results = list(pool.map(_extract_one, paths, chunksize=chunk))
    else:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            results = [_extract_one(p) for p in paths]
    void = np.zeros((len(paths), N_FEATURES), np.float32)
    lfcc: list[np.ndarray] = []
    errors: list[str | None] = []
    for i, (v, fr, err) in enumerate(results):
        if v is not None:
            void[i] = v
        lfcc.append(fr if fr is not None else np.zeros((0, N_DIMS), np.float16))
        errors.append(err)
    feats = Features(void, lfcc, errors)
    if cache is not None:
        _save_cache(cache, key, feats)
    return feats


def _metrics(
    rows: list[dict[str, Any]],
    conds: list[str],
    threshold: float,
    unscored: list[dict[str, str]],
    n_boot: int,
) -> dict[str, Any]:
    m = compute_metrics(rows, conds, threshold=threshold, operating_point="eer", n_boot=n_boot)
    m["n_unscored"] = len(unscored)
    m["unscored"] = unscored
    return m


def run_baselines(
    dataset: Path,
    out: Path,
    *,
    train_split: str = "train",
    eval_splits: Sequence[str] = ("dev", "eval"),
    workers: int = 2,
    n_components: int = 64,
    max_gmm_frames: int = 30_000,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    cache: bool = True,
) -> list[dict[str, Any]]:
    """Train every baseline on ``train_split``, score ``eval_splits``, write scores and ``baselines.json``.

    Returns the list written to ``out/baselines.json``: per baseline ``name``,
    ``description``, ``eer_<split>`` and ``metrics_<split>`` for every evaluated split,
    ``threshold`` (its dev EER threshold), ``scores`` (the CSV's name) and fit details.
    """
    out = Path(out)
    proto = read_protocol(dataset)
    train_rows = proto.where(split=train_split)
    if not {r.label for r in train_rows} >= {"bonafide", "spoof"}:
        raise BaselineError(
            f"{proto.root}: split {train_split!r} needs bona fide and spoof rows to train the baselines"
        )
    splits = [s for s in eval_splits if proto.where(split=s)]
    if not splits:
        raise BaselineError(f"{proto.root}: none of the splits {list(eval_splits)} has rows")
    all_rows: list[Row] = train_rows + [r for s in splits for r in proto.where(split=s)]
    require_confirmed(
        proto, all_rows, f"the baselines ({', '.join([train_split, *splits])} splits)"
    )
    paths = [str(r.audio_path(proto.root)) for r in all_rows]
    unique = list(dict.fromkeys(paths))
    t0 = time.perf_counter()
    feats = extract_features(
        unique, workers=workers, cache=out / "cache" / "features.npz" if cache else None
    )
    feature_seconds = time.perf_counter() - t0
    index = {p: i for i, p in enumerate(unique)}

    def usable(rows: Sequence[Row]) -> tuple[list[Row], list[int], list[dict[str, str]]]:
        ok, idx, bad = [], [], []
        for r in rows:
            i = index[str(r.audio_path(proto.root))]
            if feats.error[i] is None:
                ok.append(r)
                idx.append(i)
            else:
                bad.append({"path": r.path, "label": r.label, "reason": feats.error[i]})
        return ok, idx, bad

    tr_rows, tr_idx, tr_bad = usable(train_rows)
    y_tr = np.array([r.label == "bonafide" for r in tr_rows])
    if y_tr.all() or not y_tr.any():
        first = f"; first: {tr_bad[0]['path']}: {tr_bad[0]['reason']}" if tr_bad else ""
        raise BaselineError(
            f"{proto.root}: after dropping {len(tr_bad)} unusable {train_split} files, "
            f"only one class is left to train on{first}"
        )
    split_data = {s: usable(proto.where(split=s)) for s in splits}
    dev = split_data.get("dev")
    dev_xy = (
        (feats.void[dev[1]], np.array([r.label == "bonafide" for r in dev[0]], dtype=int))
        if dev and len({r.label for r in dev[0]}) == 2
        else None
    )

    rng = np.random.default_rng(seed)
    scorers: dict[str, Any] = {}
    fit_info: dict[str, dict[str, Any]] = {}
    majority_bona = bool(y_tr.mean() >= 0.5)
    chance_scores = {
        p: float(v) for p, v in zip(unique, rng.uniform(0, 1, len(unique)), strict=True)
    }
    scorers["chance"] = lambda rows, idx: np.array([chance_scores[unique[i]] for i in idx])
    scorers["majority"] = lambda rows, idx: np.full(len(idx), 1.0 if majority_bona else -1.0)
    fit_info["majority"] = {"majority_class": "bonafide" if majority_bona else "spoof"}

    t = time.perf_counter()
    void = VoidModel.fit(feats.void[tr_idx], y_tr, dev=dev_xy)
    fit_info["void"] = {
        "fit_seconds": time.perf_counter() - t,
        "svm_c": void.c,
        "model": "void_model.joblib",
    }
    void.save(out / "void_model.joblib")
    scorers["void"] = lambda rows, idx: void.decision(feats.void[idx]) if idx else np.zeros(0)

    t = time.perf_counter()
    gmm = LfccGmm.fit(
        [feats.lfcc[i] for i, b in zip(tr_idx, y_tr, strict=True) if b],
        [feats.lfcc[i] for i, b in zip(tr_idx, y_tr, strict=True) if not b],
        n_components=n_components,
        max_frames=max_gmm_frames,
        seed=seed,
    )
    fit_info["lfcc_gmm"] = {
        "fit_seconds": time.perf_counter() - t,
        "n_components": n_components,
        "max_frames_per_class": max_gmm_frames,
        "model": "lfcc_gmm_model.joblib",
    }
    gmm.save(out / "lfcc_gmm_model.joblib")
    scorers["lfcc_gmm"] = lambda rows, idx: gmm.score_many([feats.lfcc[i] for i in idx])

    results: list[dict[str, Any]] = []
    conds = list(proto.condition_columns)
    for name in BASELINE_NAMES:
        scored: dict[str, list[dict[str, Any]]] = {}
        for s in splits:
            rows, idx, _ = split_data[s]
            sc = scorers[name](rows, idx)
            scored[s] = [{**r.as_dict(), "score": float(v)} for r, v in zip(rows, sc, strict=True)]
        if name == "majority":
            threshold, source = 0.0, "fixed: score +1 accepts, -1 rejects"
        else:
            dev_scored = scored.get("dev") or []
            use_dev = len({r["label"] for r in dev_scored}) == 2
            ref = (
                dev_scored
                if use_dev
                else [
                    {"label": r.label, "score": float(v)}
                    for r, v in zip(tr_rows, scorers[name](tr_rows, tr_idx), strict=True)
                ]
            )
            threshold = compute_eer(
                [r["score"] for r in ref if r["label"] == "bonafide"],
                [r["score"] for r in ref if r["label"] == "spoof"],
            )[1]
            source = "dev EER" if use_dev else "train EER"
        entry: dict[str, Any] = {
            "name": name,
            "description": DESCRIPTIONS[name],
            "threshold": threshold,
            "threshold_from": source,
            "scores": f"{name}_scores.csv",
        }
        for s in splits:
            if len({r["label"] for r in scored[s]}) < 2:
                entry[f"eer_{s}"] = None
                entry[f"metrics_{s}"] = None
                continue
            m = _metrics(scored[s], conds, threshold, split_data[s][2], n_boot)
            m["split"] = s
            entry[f"eer_{s}"] = m["eer"]
            entry[f"metrics_{s}"] = m
        entry["n_train_bonafide"] = int(y_tr.sum())
        entry["n_train_spoof"] = int((~y_tr).sum())
        entry["n_train_unusable"] = len(tr_bad)
        entry["feature_seconds"] = feature_seconds
        entry.update(fit_info.get(name, {}))
        write_scores(out / entry["scores"], [r for s in splits for r in scored[s]], conds)
        results.append(entry)
    write_text_atomic(out / BASELINES_FILE, json.dumps(results, indent=2) + "\n")
    return results


def load_baselines(folder: Path) -> list[dict[str, Any]]:
    """``baselines.json`` of a run's ``baselines/`` folder."""
    path = Path(folder) / BASELINES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no baselines here (run the baselines first)")
    return json.loads(path.read_text())
