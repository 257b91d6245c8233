"""The data card of a dataset, and its shortcut audit.

The card (``datacard.md`` + ``datacard.json``) counts utterances per split, label and
condition and summarises durations, levels and silences. The shortcut audit trains trivial
classifiers (logistic regression and a depth-3 tree) on five nuisance features only —
duration, RMS level, peak level, leading and trailing silence — on the train split and
scores the eval split. Public corpora leak labels through such features (ASVspoof 2017
and 2019 through silence); a corpus passes when every audit classifier's eval EER is at
least :data:`AUDIT_MIN_EER`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from wakeguard.edge.audio import SAMPLE_RATE, load_audio
from wakeguard.edge.files import write_text_atomic
from wakeguard.edge.protocol import Protocol, read_protocol

AUDIT_MIN_EER = 0.40
"""A trivial classifier on nuisance features must not beat this EER on eval."""

AUDIT_FEATURES = ("duration_s", "rms_dbfs", "peak_dbfs", "lead_silence_s", "trail_silence_s")

SILENCE_BELOW_MAX_DB = 30.0
"""A 20 ms frame counts as silence when it is this far below the loudest frame."""

ATTRIBUTION = (
    "Speech: LibriSpeech ASR corpus (Panayotov, Chen, Povey, Khudanpur, ICASSP 2015), CC BY 4.0. "
    "Device IRs: Google Nexus One speaker and microphone, Audio Degradation Toolbox (Mauch and Ewert, "
    "ISMIR 2013; IRs by Sebastian Ewert), CC BY-SA 3.0. Noise: IEEE AASP DCASE 2013 scene "
    "classification set (Giannoulis, Benetos, Stowell, Plumbley; QMUL 2012), CC BY 2.0 UK."
)


def nuisance_features(x: np.ndarray) -> dict[str, float]:
    """Duration, RMS and peak level (dBFS), and leading/trailing silence (s) of one file."""
    x = np.asarray(x, dtype=np.float64)
    hop, win = SAMPLE_RATE // 100, SAMPLE_RATE // 50
    rms = np.sqrt(np.mean(x**2) + 1e-20)
    peak = np.max(np.abs(x)) + 1e-10
    n_frames = max((len(x) - win) // hop + 1, 1)
    idx = np.minimum(np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None], len(x) - 1)
    e = 10 * np.log10(np.mean(x[idx] ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(e > e.max() - SILENCE_BELOW_MAX_DB)
    lead = loud[0] * hop / SAMPLE_RATE
    trail = max(len(x) - (loud[-1] * hop + win), 0) / SAMPLE_RATE
    return {
        "duration_s": len(x) / SAMPLE_RATE,
        "rms_dbfs": 20 * np.log10(rms),
        "peak_dbfs": 20 * np.log10(peak),
        "lead_silence_s": float(lead),
        "trail_silence_s": float(trail),
    }


def measure(protocol: Protocol) -> list[dict[str, float]]:
    """Nuisance features of every row, in protocol order."""
    return [nuisance_features(load_audio(p)) for p in protocol.audio_paths()]


def shortcut_audit(protocol: Protocol, feats: list[dict[str, float]]) -> dict[str, Any]:
    """Train trivial classifiers on train, score eval, report each one's EER."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    from .metrics import compute_eer

    X = np.array([[f[k] for k in AUDIT_FEATURES] for f in feats])
    y = np.array([r.label == "bonafide" for r in protocol.rows], dtype=int)
    split = np.array([r.split for r in protocol.rows])
    tr, ev = split == "train", split == "eval"
    if len(set(y[tr])) < 2 or len(set(y[ev])) < 2:
        return {
            "passed": None,
            "reason": "train and eval need both labels",
            "features": list(AUDIT_FEATURES),
        }
    models = {
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "decision_tree_depth3": DecisionTreeClassifier(
            max_depth=3, min_samples_leaf=5, random_state=0
        ),
    }
    results = {}
    for name, model in models.items():
        model.fit(X[tr], y[tr])
        score = model.predict_proba(X[ev])[:, 1]
        eer, _ = compute_eer(score[y[ev] == 1], score[y[ev] == 0])
        results[name] = round(float(eer), 4)
    single = {}
    for j, k in enumerate(AUDIT_FEATURES):  # each feature alone, either direction
        eer, _ = compute_eer(X[ev][y[ev] == 1, j], X[ev][y[ev] == 0, j])
        single[k] = round(float(min(eer, 1 - eer)), 4)
    worst = min(results.values())
    return {
        "features": list(AUDIT_FEATURES),
        "train_rows": int(tr.sum()),
        "eval_rows": int(ev.sum()),
        "eer_eval": results,
        "single_feature_eer_eval": single,
        "min_eer": worst,
        "threshold": AUDIT_MIN_EER,
        "passed": bool(worst >= AUDIT_MIN_EER),
    }


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {}
    return {
        k: round(float(f(v)), 3)
        for k, f in (
            ("mean", np.mean),
            ("std", np.std),
            ("min", np.min),
            ("p50", np.median),
            ("max", np.max),
        )
    }


def build_datacard(dataset: Path) -> dict[str, Any]:
    """Counts, summaries and the shortcut audit of a dataset folder (any protocol)."""
    prot = read_protocol(dataset)
    feats = measure(prot)
    counts: dict[str, dict[str, int]] = {}
    for r in prot.rows:
        counts.setdefault(r.split or "-", {"bonafide": 0, "spoof": 0})[r.label] += 1
    order = ("train", "dev", "eval")
    counts = dict(sorted(counts.items(), key=lambda kv: (order + (kv[0],)).index(kv[0])))
    conditions: dict[str, dict[str, dict[str, int]]] = {}
    for col in prot.condition_columns:
        if col == "source":
            continue
        table: dict[str, Counter] = {}
        for r in prot.rows:
            table.setdefault(r.conditions.get(col, ""), Counter())[f"{r.split}/{r.label}"] += 1
        conditions[col] = {v: dict(sorted(c.items())) for v, c in sorted(table.items())}
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for k in AUDIT_FEATURES:
        summary[k] = {
            lab: _stats([f[k] for f, r in zip(feats, prot.rows, strict=True) if r.label == lab])
            for lab in ("bonafide", "spoof")
        }
    speakers = {s: len({r.speaker for r in prot.rows if r.split == s}) for s in prot.splits()}
    card: dict[str, Any] = {
        "dataset": str(dataset),
        "n_utterances": len(prot.rows),
        "hours": round(sum(f["duration_s"] for f in feats) / 3600, 3),
        "counts": counts,
        "speakers_per_split": speakers,
        "conditions": conditions,
        "summary": summary,
        "shortcut_audit": shortcut_audit(prot, feats),
        "attribution": ATTRIBUTION,
    }
    rooms = dataset / "rooms.json"
    if rooms.is_file():
        card["rooms"] = json.loads(rooms.read_text())
    build = dataset / "build.json"
    if build.is_file():
        card["build"] = {k: v for k, v in json.loads(build.read_text()).items() if k != "sources"}
        card.update(_simulator_section(dataset, card["build"]))
    return card


def _simulator_section(dataset: Path, build: dict[str, Any]) -> dict[str, Any]:
    """Device and room profiles of a simulator build, and the phone-speaker check."""
    from .devices import build_devices, compare_phone_speaker
    from .simulate import shared_dir

    devices_dir = shared_dir() / "devices"
    devices = build_devices(
        devices_dir if devices_dir.is_dir() else None, int(build.get("seed", 0))
    )
    speakers = {
        name: {
            "class": s.device_class,
            "quality": s.quality,
            "f_min_hz": None if not np.isfinite(s.f_min) else round(s.f_min, 1),
            "bandwidth_hz": None if not np.isfinite(s.bandwidth) else round(s.bandwidth, 1),
            "lnr_db": None if not np.isfinite(s.lnr_db) else round(s.lnr_db, 1),
            "measured": s.measured,
            "directivity_index_db": list(s.directivity_db),
            "splits": list(devices.speaker_splits[name]),
        }
        for name, s in devices.loudspeakers.items()
    }
    out: dict[str, Any] = {
        "loudspeakers": speakers,
        "microphones": {
            name: {
                "class": m.mic_class,
                "measured": m.measured,
                "splits": list(devices.mic_splits[name]),
                "roles": list(m.roles),
            }
            for name, m in devices.mics.items()
        },
    }
    if "nexus-one" in devices.loudspeakers:
        chk = compare_phone_speaker(devices)
        out["phone_speaker_check"] = {
            "freqs_hz": list(chk.freqs),
            "measured_nexus_one_db": [round(v, 1) for v in chk.measured_db],
            "parametric_median_db": [
                round(float(v), 1) for v in np.median(np.array(chk.parametric_db), axis=0)
            ],
            "max_abs_error_db": round(chk.max_abs_error_db, 2),
        }
    return out


def _simulation_notes(
    directivity: bool = False, direct_share: float = 0.0, direct_quality: str = "all"
) -> list[str]:
    """How the corpus was simulated, from the simulator's own constants."""
    from . import devices as dev
    from . import rooms as room_model
    from . import simulate as sim

    def shares(weights: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.0%}" for k, v in weights.items())

    classes = (
        f"dev and eval {shares(sim.SPEAKER_CLASS_WEIGHTS)}; train "
        f"{shares(sim.TRAIN_SPEAKER_CLASS_WEIGHTS)} (more of the good loudspeakers)"
    )
    codecs = shares(sim.CODEC_PROBS)
    return [
        "## How it was simulated",
        "",
        "- **bonafide**: talker → victim room → victim microphone → its 16 kHz capture "
        f"(decimation filter, edge {dev.ADC_CUTOFF_HZ[0]:g}–{dev.ADC_CUTOFF_HZ[1]:g} Hz) (+ real noise).",
        "- **spoof**: talker → attacker's room → attacker's recorder (microphone response; codec: "
        f"{codecs}) → loudspeaker (linear response + polynomial Hammerstein distortion; "
        f"{sim.EQUALISED_PROB:.0%} of non-perfect replays inverse-equalised) → the victim room "
        "(loudspeaker where the talker stood) → the same victim microphones and capture (+ real noise). "
        f"Loudspeaker classes: {classes}. Attacker records in the victim's room "
        f"{sim.SAME_ROOM_PROB:.0%} of the time.",
        (
            f"- **direct spoof** ({direct_share:.0%} of the replays through a real"
            + (f", {direct_quality}-quality" if direct_quality != "all" else "")
            + " loudspeaker): "
            "the file played is the source recording itself (codec as above), with no attacker's "
            "room or recorder: a broadcast, a studio or synthetic voice, a close-up recording. "
            "Rows say `direct` in `recorder`, `attacker_room` and `attacker_distance`; attack "
            "code `D` + the loudspeaker's quality letter."
            if direct_share
            else "- **No direct spoofs** (`--direct-share 0`): every replay went through an "
            "attacker's room and recorder; none plays a clean recording (a broadcast, a "
            "synthetic voice) straight through a loudspeaker, as the default build's do."
        ),
        (
            "- **Source directivity** (`--directivity`): the talker's mouth and each loudspeaker "
            "face the microphone with their own directivity index (talker about "
            f"{room_model.TALKER_DI_DB[2]:g} dB at 500 Hz and {room_model.TALKER_DI_DB[5]:g} dB "
            "at 4 kHz; smart speakers near omnidirectional, studio monitors more directional "
            "than a mouth): the direct sound is the same, the room's reflections carry 1/Q of "
            "the power per band."
            if directivity
            else "- **Sources are omnidirectional**: talker and loudspeaker send the same "
            "spectrum into the room's reflections as along their axis (`--directivity` gives "
            "them their directivity; a study option)."
        ),
        "- Shared by both classes, drawn from the same distributions: victim room, talker "
        f"distance, microphone, total SNR {sim.SNR_DB[0]:g}–{sim.SNR_DB[1]:g} dB (ambient plus, for "
        "replays, the replayed attacker-side noise), output level "
        f"{sim.LEVEL_DBFS[0]:g} to {sim.LEVEL_DBFS[1]:g} dBFS over the sound, leading and trailing "
        f"silence {sim.LEAD_S[0]:g}–{sim.LEAD_S[1]:g} s around the sound found by the device's "
        f"endpointer ({sim.ENDPOINT_BELOW_MAX_DB:g} dB below the loudest frame; reverberation "
        "counts as sound).",
        "- Each bona fide utterance has a spoofed twin cut from the same speech (column `source`); "
        f"sources are high-passed at {sim.RUMBLE_CUTOFF_HZ:g} Hz to drop recording rumble. "
        "A split with several takes renders every segment that many times, each take a new "
        "bona fide/spoof pair through newly drawn conditions (same speech, same `source`).",
        "- Splits are speaker-disjoint; dev and eval have their own rooms, loudspeakers and "
        "microphones that train never sees (eval also the measured Nexus One speaker and "
        "microphone). Victim microphones and attackers' recorders come from one pool per split: "
        "phone and laptop microphones play both roles, so no microphone marks a label.",
        "- Exact per-utterance values (T60, distances, SNRs, level, drive) are in `simulation.csv`; "
        "room geometry in `rooms.json`.",
        "",
    ]


def _oracle_shares(oracle: str) -> str:
    """What an oracle build shares with eval, in words (from the simulator's own table)."""
    from .simulate import ORACLES

    order = ("rooms", "loudspeakers", "recorders", "mics")
    words = {"mics": "victim microphones"}
    names = [words.get(k, k) for k in order if k in ORACLES.get(oracle, ())] or [oracle]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def render_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Data card: {Path(card['dataset']).name}", ""]
    lines += [
        f"{card['n_utterances']} utterances, {card['hours']} h of audio, 16 kHz 16-bit mono.",
        "",
    ]
    if "build" in card:
        b = card["build"]
        lines += [
            f"Simulated by `wakeguard data simulate` (size `{b.get('size')}`, seed {b.get('seed')}, build version {b.get('version')}"
            + (
                ", takes per segment " + ", ".join(f"{k} {v}" for k, v in b["takes"].items())
                if b.get("takes")
                else ""
            )
            + ").",
            "",
        ]
        if b.get("oracle"):
            lines += [
                f"**Oracle build (`--oracle {b['oracle']}`): train and dev share eval's "
                f"{_oracle_shares(b['oracle'])}.** It measures how much those "
                "unseen conditions make eval hard; a model trained on it has met them, so its "
                "eval EER is not an estimate for new rooms or devices. Not for shipping.",
                "",
            ]
        lines += _simulation_notes(
            bool(b.get("directivity")),
            float(b.get("direct_share", 0.0)),
            str(b.get("direct_quality") or "all"),
        )
    lines += ["## Counts", "", "| split | speakers | bonafide | spoof |", "|---|---|---|---|"]
    for split, c in card["counts"].items():
        lines.append(
            f"| {split} | {card['speakers_per_split'].get(split, '')} | {c['bonafide']} | {c['spoof']} |"
        )
    lines += [
        "",
        "## Durations, levels and silences",
        "",
        "| feature | label | mean | std | min | median | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, per in card["summary"].items():
        for lab, s in per.items():
            if s:
                lines.append(
                    f"| {k} | {lab} | {s['mean']} | {s['std']} | {s['min']} | {s['p50']} | {s['max']} |"
                )
    a = card["shortcut_audit"]
    lines += ["", "## Shortcut audit", ""]
    if a.get("passed") is None:
        lines.append(f"Not run: {a.get('reason')}.")
    else:
        verdict = "PASSED" if a["passed"] else "FAILED"
        lines += [
            f"Trivial classifiers on {', '.join(a['features'])} only, trained on train ({a['train_rows']} rows), "
            f"scored on eval ({a['eval_rows']} rows). Must stay at EER >= {a['threshold']:.0%}: **{verdict}** "
            f"(lowest EER {a['min_eer']:.1%}).",
            "",
            "| classifier | eval EER |",
            "|---|---|",
        ]
        lines += [f"| {n} | {v:.1%} |" for n, v in a["eer_eval"].items()]
        lines += ["", "| single feature (either direction) | eval EER |", "|---|---|"]
        lines += [f"| {n} | {v:.1%} |" for n, v in a["single_feature_eer_eval"].items()]
    if "loudspeakers" in card:
        lines += [
            "",
            "## Loudspeakers",
            "",
            "ASVspoof 2019 PA quality terms (minimum frequency and occupied bandwidth at -10 dB re the 0.5–2 kHz mean; LNR at the reference drive).",
            "",
        ]
        lines += _device_section(
            "loudspeakers",
            card["loudspeakers"],
            {"f_min Hz": "f_min_hz", "bandwidth Hz": "bandwidth_hz", "LNR dB": "lnr_db"},
            {
                "device": "",
                "class": "class",
                "quality": "quality",
                "f_min Hz": "f_min_hz",
                "bandwidth Hz": "bandwidth_hz",
                "LNR dB": "lnr_db",
                "splits": "splits",
            },
        )
        lines += [
            "",
            "## Microphones",
            "",
            "Victim devices' microphones and attackers' recorders come from one pool per split "
            "(phone and laptop microphones play both roles).",
            "",
        ]
        lines += _device_section(
            "microphones",
            card.get("microphones", {}),
            {},
            {"microphone": "", "class": "class", "roles": "roles", "splits": "splits"},
        )
    if "phone_speaker_check" in card:
        p = card["phone_speaker_check"]
        lines += [
            "",
            "## Parametric phone speaker vs measured Nexus One",
            "",
            "| Hz | " + " | ".join(f"{f:g}" for f in p["freqs_hz"]) + " |",
            "|---|" + "---|" * len(p["freqs_hz"]),
        ]
        lines.append(
            "| measured dB | " + " | ".join(f"{v}" for v in p["measured_nexus_one_db"]) + " |"
        )
        lines.append(
            "| parametric median dB | "
            + " | ".join(f"{v}" for v in p["parametric_median_db"])
            + " |"
        )
        from .devices import CHECK_FLOOR_DB

        lines += [
            "",
            f"Largest difference where the measured response is above {CHECK_FLOOR_DB:g} dB: "
            f"{p['max_abs_error_db']} dB.",
        ]
    if "rooms" in card:
        lines += [
            "",
            "## Rooms",
            "",
            "Shoebox rooms (image sources to order 3 plus a stochastic late tail); T60 measured by "
            "Schroeder integration on the talker-to-victim response.",
            "",
        ]
        train_rooms = [r for r in card["rooms"] if r["split"] == "train"]
        if train_rooms:
            lines += [
                f"Train: {len(train_rooms)} rooms, area {_span([r['area_m2'] for r in train_rooms])} m², "
                f"T60 {_span([r['measured_t60_s'] for r in train_rooms])} s (measured; every room in "
                "`rooms.json`). Dev and eval rooms:",
                "",
            ]
        lines += [
            "| room | split | size m | area m² | T60 target s | T60 measured s | talker dist. m (a/b/c) | attacker dist. m (A/B/C) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in card["rooms"]:
            if r["split"] == "train":
                continue
            dims = " x ".join(f"{v:g}" for v in r["dims_m"])
            td = "/".join(f"{v:g}" for v in r["talker_distance_m"].values())
            ad = "/".join(f"{v:g}" for v in r["attacker_distance_m"].values())
            lines.append(
                f"| {r['name']} | {r['split']} | {dims} | {r['area_m2']} | {r['t60_s']} | {r['measured_t60_s']} | {td} | {ad} |"
            )
    lines += ["", "## Conditions", ""]
    for col, table in card["conditions"].items():
        cells = ", ".join(f"{v or '(empty)'}: {sum(c.values())}" for v, c in table.items())
        lines.append(f"- **{col}**: {cells}")
    lines += ["", "## Attribution", "", card["attribution"], ""]
    return "\n".join(lines)


def _device_section(
    kind: str,
    devices: dict[str, dict[str, Any]],
    ranges: dict[str, str],
    columns: dict[str, str],
) -> list[str]:
    """Train-only devices summarised per class, then one row per held-out device.

    ``columns`` maps a header to the device's key ("" for the name); lists are joined."""

    def cell(name: str, d: dict[str, Any], key: str) -> str:
        if not key:
            return name + (" (measured)" if d["measured"] else "")
        v = d[key]
        return ", ".join(v) if isinstance(v, list) else f"{v}"

    lines = _train_only_summary(kind, devices, ranges)
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for n, d in devices.items():
        if not _train_only(d):
            lines.append("| " + " | ".join(cell(n, d, k) for k in columns.values()) + " |")
    return lines


def _train_only(device: dict[str, Any]) -> bool:
    return list(device["splits"]) == ["train"]


def _span(values: list[Any]) -> str:
    vals = [float(v) for v in values if v is not None]
    return f"{min(vals):g}–{max(vals):g}" if vals else "–"


def _train_only_summary(
    kind: str, devices: dict[str, dict[str, Any]], ranges: dict[str, str]
) -> list[str]:
    """Train-only devices as one row per class (there are hundreds); every one is in the JSON."""
    by_class: dict[str, list[dict[str, Any]]] = {}
    for d in devices.values():
        if _train_only(d):
            by_class.setdefault(d["class"], []).append(d)
    if not by_class:
        return []
    key = "roles" if kind == "microphones" else "quality"
    cols = ["class", "count", key, *ranges]
    lines = [
        f"Train-only {kind}, by class (each one is in `datacard.json`):",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for cls, ds in by_class.items():
        kinds = Counter(", ".join(d[key]) if isinstance(d[key], list) else d[key] for d in ds)
        label = "; ".join(k if len(kinds) == 1 else f"{k} {n}" for k, n in sorted(kinds.items()))
        cells = [cls, str(len(ds)), label]
        cells += [_span([d[k] for d in ds]) for k in ranges.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", f"Dev, eval and shared {kind}:", ""]


def write_datacard(dataset: Path) -> dict[str, Any]:
    """Write ``datacard.json`` and ``datacard.md`` into the dataset folder."""
    dataset = Path(dataset)
    card = build_datacard(dataset)
    write_text_atomic(dataset / "datacard.json", json.dumps(card, indent=1, default=str))
    write_text_atomic(dataset / "datacard.md", render_markdown(card))
    return card
