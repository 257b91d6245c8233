"""Choose the front-end by measurement: train the same detector on each representation, compare dev EER.

Each candidate is the default training config plus a few front-end overrides; every one
gets the same network, augmentation and epoch budget, is trained on ``train`` and selected
on ``dev`` (eval is never looked at here). The table goes to ``OUT/features_compare.json``
and ``OUT/features_compare.md``, and every candidate's run folder stays under ``OUT/<name>``.

Run it with ``wakeguard compare-frontends DATASET train.epochs=10 --out runs/frontends``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wakeguard.edge.files import write_text_atomic
from wakeguard.edge.frontend import frontend_shape

from .config import Config, load_config

CANDIDATES: dict[str, list[str]] = {
    "logspec": ["frontend.kind=logspec", "frontend.bin_pool=2"],
    "lfcc": ["frontend.kind=lfcc"],
    "spectral_power": [
        "frontend.kind=spectral_power",
        "frontend.bin_pool=2",
        "frontend.hop_length=500",
    ],
}
"""The representations compared, each on the base config's frames (1024 points): the
log-power linear spectrogram (pairs of bins pooled: 31 Hz, 0-8 kHz), LFCC (20 cepstra +
deltas from 70 linear filters), and Void-style block spectral power (the normalised
long-term spectrum of blocks of 8 frames hopping 500 samples: 0.25 s)."""


def compare_frontends(
    dataset: str | Path,
    out: str | Path,
    *,
    candidates: dict[str, list[str]] | None = None,
    overrides: Sequence[str] = (),
    config: str | Path | None = None,
    workers: int = 2,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Train one detector per candidate front-end; returns and writes the comparison table."""
    from .train import train

    log = log or (lambda s: None)
    configs = candidate_configs(dataset, candidates, overrides, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table: list[dict[str, Any]] = []
    for name, extra in (candidates or CANDIDATES).items():
        cfg = configs[name]
        run = out / name
        done = run / "train_summary.json"
        if done.is_file() and load_config(run / "config.json") == cfg:
            log(f"== {name}: already trained with this config, reusing {run}")
            res = json.loads(done.read_text())
        else:
            log(f"== {name}: {' '.join(extra)}")
            res = train(dataset, run, cfg, workers=workers, log=log).to_dict()
        table.append(
            {
                "frontend": name,
                "overrides": list(extra),
                "input_shape": list(frontend_shape(cfg.frontend).input_shape),
                **{
                    k: res[k]
                    for k in (
                        "dev_eer",
                        "train_eer",
                        "best_epoch",
                        "epochs_run",
                        "n_params",
                        "seconds",
                    )
                },
                "run": str(run),
            }
        )
        _write(out, table, list(overrides), dataset)
    return table


def candidate_configs(
    dataset: str | Path,
    candidates: dict[str, list[str]] | None = None,
    overrides: Sequence[str] = (),
    config: str | Path | None = None,
) -> dict[str, Config]:
    """Each candidate's config, after checking the dataset and every config up front.

    A dataset that training would refuse, or a bad config or override, fails here: before
    any output folder is made or any candidate is announced, not after the first one trained.
    """
    from .train import training_protocol

    training_protocol(dataset)
    # one network per front-end, whatever ensemble the config describes; the command line's
    # overrides come after the candidate's, so a shared setting (frames, hop) reaches them all
    return {
        name: load_config(config, [*extra, *overrides, "ensemble.members=[]"])
        for name, extra in (candidates or CANDIDATES).items()
    }


def _write(
    out: Path, table: list[dict[str, Any]], overrides: list[str], dataset: str | Path
) -> None:
    doc = {"dataset": str(dataset), "common_overrides": overrides, "results": table}
    write_text_atomic(out / "features_compare.json", json.dumps(doc, indent=2) + "\n")
    lines = [
        "| front-end | input (time x bins) | dev EER | train EER | best epoch | parameters | train time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        t, b = r["input_shape"]
        lines.append(
            f"| {r['frontend']} | {t} x {b} | {100 * r['dev_eer']:.2f}% | {100 * r['train_eer']:.2f}% "
            f"| {r['best_epoch']} | {r['n_params']:,} | {r['seconds']:.0f} s |"
        )
    common = " ".join(overrides) or "(none)"
    head = (
        f"Front-end comparison on the dev split of `{dataset}`; common overrides: `{common}`.\n\n"
    )
    write_text_atomic(out / "features_compare.md", head + "\n".join(lines) + "\n")
