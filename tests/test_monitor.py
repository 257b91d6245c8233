"""``wakeguard monitor``: summary, PSI drift, plots, clip export (through the CLI)."""

from __future__ import annotations

import json
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from wakeguard.edge.bundle import write_bundle
from wakeguard.edge.decisionlog import DecisionLog
from wakeguard.edge.frontend import FrontendParams
from wakeguard.edge.monitor import PSI_WARNING, psi
from wakeguard.edge.protocol import read_protocol
from wakeguard.tools.cli import app

T0 = 1_790_000_000.0  # a fixed start time, so bins and rates are reproducible


@pytest.fixture(scope="module")
def reference_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose manifest carries dev scores; monitor never runs its model."""
    rng = np.random.default_rng(1)
    return write_bundle(
        tmp_path_factory.mktemp("monitor") / "bundle",
        b"monitor never runs the model",
        FrontendParams(),
        thresholds={"eer": 0.0, "bpcer_1pct": -1.5, "bpcer_5pct": -1.0},
        extra={
            "version": "ref-1",
            "calibration_scores": {
                "bonafide": rng.normal(2.0, 1.0, 400).tolist(),
                "spoof": rng.normal(-2.5, 1.0, 400).tolist(),
            },
        },
    )


def make_log(
    path: Path, *, shift: float, n: int = 300, clips: Path | None = None, seed: int = 0
) -> dict:
    """``n`` decisions over 10 hours: live talkers scoring N(2 + shift, 1), 10% replays at N(-2.5, 1)."""
    rng = np.random.default_rng(seed)
    log = DecisionLog(path, clips_dir=clips, borderline_margin=1.0)
    truth = {"latency": [], "verdicts": {"bonafide": 0, "spoof": 0}}
    for i in range(n):
        t = T0 + i * 36_000 / n
        replay = rng.random() < 0.1
        score = rng.normal(-2.5, 1.0) if replay else rng.normal(2.0 + shift, 1.0)
        verdict = "bonafide" if score >= 0 else "spoof"
        latency = float(rng.gamma(9.0, 0.8))
        audio = (0.05 * rng.standard_normal(8000)).astype(np.float32) if i % 3 == 0 else None
        log.record(
            t_start=0.0,
            t_end=1.0,
            score=score,
            verdict=verdict,
            threshold=0.0,
            latency_ms=latency,
            level_dbfs=-30.0,
            duration_s=1.5,
            model_version="ref-1",
            audio=audio,
            unix_time=t,
            time=datetime.fromtimestamp(t, UTC).isoformat(),
        )
        truth["latency"].append(round(latency, 3))
        truth["verdicts"][verdict] += 1
    log.close()
    return truth


def test_psi_known_value_and_behaviour() -> None:
    # Two bins cut at the reference median (4.5): expected [0.5, 0.5], actual [0.75, 0.25].
    assert psi(np.arange(10.0), np.array([0.0, 0.0, 0.0, 9.0]), bins=2) == pytest.approx(
        0.25 * np.log(1.5) + 0.25 * np.log(2.0), abs=1e-9
    )
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    assert psi(ref, rng.normal(0, 1, 5000)) < 0.02
    assert psi(ref, rng.normal(1, 1, 5000)) > PSI_WARNING
    with pytest.raises(ValueError):
        psi(ref, np.array([]))


def test_monitor_summary_json_stable_log(tmp_path: Path, reference_bundle: Path) -> None:
    log = tmp_path / "d.jsonl"
    truth = make_log(log, shift=0.0)
    result = CliRunner().invoke(
        app, ["monitor", str(log), "--model", str(reference_bundle), "--json"]
    )
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)["summary"]
    assert s["n_records"] == 300 and s["verdicts"] == truth["verdicts"]
    assert s["rejection_rate"] == pytest.approx(truth["verdicts"]["spoof"] / 300, abs=1e-4)
    for q in (50, 95, 99):
        assert s["latency_ms"][f"p{q}"] == pytest.approx(
            np.percentile(truth["latency"], q), abs=1e-3
        )
    assert s["drift"]["psi"] < 0.1 and s["drift"]["level"] == "stable"
    assert s["warnings"] == []
    # 10 hours -> 30 min bins (the round width giving at most 24 bins), counts add up.
    assert s["bin_seconds"] == 1800 and len(s["rates"]) in (20, 21)  # bins start on the half hour
    assert sum(r["n"] for r in s["rates"]) == 300
    assert s["first"].startswith(datetime.fromtimestamp(T0, UTC).isoformat()[:16])


def test_monitor_warns_on_drift_and_plots(tmp_path: Path, reference_bundle: Path) -> None:
    log = tmp_path / "d.jsonl"
    make_log(log, shift=-1.2)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["monitor", str(log), "--model", str(reference_bundle), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "score drift" in result.output and "PSI" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["drift"]["psi"] > PSI_WARNING and summary["drift"]["level"] == "drift"
    for name in ("verdict_rates.png", "scores.png", "latency.png"):
        png = out / name
        assert (
            png.is_file()
            and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            and png.stat().st_size > 10_000
        )
    assert sorted(Path(p).name for p in summary["plots"]) == [
        "latency.png",
        "scores.png",
        "verdict_rates.png",
    ]


def test_monitor_without_matplotlib_prints_the_summary(
    tmp_path: Path, reference_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "d.jsonl"
    make_log(log, shift=0.0, n=50)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    result = CliRunner().invoke(
        app, ["monitor", str(log), "--model", str(reference_bundle), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "matplotlib" in result.output and "decisions" in result.output
    assert not list((tmp_path / "o").glob("*.png"))
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["n_records"] == 50


def test_monitor_without_reference_scores_says_so(tmp_path: Path) -> None:
    bare = write_bundle(
        tmp_path / "bare",
        b"x",
        FrontendParams(),
        thresholds={"eer": 0.0},
        extra={"version": "ref-1"},
    )
    log = tmp_path / "d.jsonl"
    make_log(log, shift=0.0, n=30)
    result = CliRunner().invoke(app, ["monitor", str(log), "--model", str(bare), "--json"])
    assert result.exit_code == 0, result.output
    drift = json.loads(result.stdout)["summary"]["drift"]
    assert drift["psi"] is None and "calibration_scores" in drift["note"]


def test_export_clips_as_a_dataset_to_confirm(tmp_path: Path, reference_bundle: Path) -> None:
    log = tmp_path / "d.jsonl"
    clips = tmp_path / "clips"
    make_log(log, shift=-1.0, n=150, clips=clips)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    saved = [r for r in records if "clip" in r]
    assert saved and all(r["verdict"] == "spoof" or r["borderline"] for r in saved)
    Path(saved[0]["clip"]).unlink()  # as if deleted by the clip cap
    dataset = tmp_path / "wild"
    result = CliRunner().invoke(
        app,
        ["monitor", str(log), "--model", str(reference_bundle), "--export", str(dataset), "--json"],
    )
    assert result.exit_code == 0, result.output
    exp = json.loads(result.stdout)["export"]
    assert exp["exported"] == len(saved) - 1 and exp["missing"] == 1
    proto = read_protocol(dataset)
    assert len(proto.rows) == len(saved) - 1
    assert "label_confirmed" in proto.condition_columns
    by_name = {Path(r["clip"]).name: r for r in saved}
    for row in proto.rows:
        rec = by_name[Path(row.path).name]
        assert row.label == ("spoof" if rec["verdict"] == "spoof" else "bonafide")
        assert row.conditions["label_confirmed"] == "no"
        assert row.split in ("train", "dev")
        audio = row.audio_path(proto.root)
        assert audio.is_file() and stat.S_IMODE(audio.stat().st_mode) == 0o600
    assert stat.S_IMODE(dataset.stat().st_mode) == 0o700
    assert "label_confirmed" in (dataset / "datacard.md").read_text()
    # Exporting again adds nothing new.
    again = CliRunner().invoke(
        app,
        ["monitor", str(log), "--model", str(reference_bundle), "--export", str(dataset), "--json"],
    )
    exp2 = json.loads(again.stdout)["export"]
    assert exp2["exported"] == 0 and exp2["already_there"] == len(saved) - 1
    assert len(read_protocol(dataset).rows) == len(saved) - 1

    # The exported labels are the model's verdicts: training on them is refused until confirmed.
    refused = CliRunner().invoke(app, ["train", str(dataset), "--out", str(tmp_path / "run")])
    assert refused.exit_code == 2
    assert "label_confirmed" in refused.output and "protocol.csv" in refused.output
    assert not (tmp_path / "run").exists()


def test_monitor_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["monitor", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "not found" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("garbage\n")
    result = CliRunner().invoke(app, ["monitor", str(empty)])
    assert result.exit_code == 2 and "no decision records" in result.output


def test_monitor_skips_malformed_records_and_names_their_lines(
    tmp_path: Path, reference_bundle: Path
) -> None:
    log = tmp_path / "d.jsonl"
    make_log(log, shift=0.0, n=60)
    lines = log.read_text().splitlines()
    lines[10:10] = [
        '{"score": null, "verdict": "bonafide", "latency_ms": 3.0}',
        '{"score": 1.0, "verdict": "maybe", "latency_ms": "fast"}',
    ]
    lines.insert(40, '{"score": "high", "verdict": "spoof"}')
    log.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        app, ["monitor", str(log), "--model", str(reference_bundle), "--json"]
    )
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)["summary"]
    assert s["n_records"] == 60 and s["bad_lines"] == 3
    (warning,) = [w for w in s["warnings"] if "unreadable" in w]
    assert warning.startswith(f"3 unreadable line(s) in {log} (lines 11, 12, 41)")
    assert "score null is not a finite number" in warning and "cut short" not in warning


def test_monitor_input_errors_are_usage_errors(tmp_path: Path) -> None:
    folder = tmp_path / "mon"
    folder.mkdir()
    result = CliRunner().invoke(app, ["monitor", str(folder)])
    assert result.exit_code == 2 and "is a folder, not a decision log" in result.output
    not_records = tmp_path / "other.jsonl"
    not_records.write_text('{"a": 1}\n[1, 2]\n')
    result = CliRunner().invoke(app, ["monitor", str(not_records)])
    assert result.exit_code == 2, result.output
    assert f"{not_records} holds no decision records" in result.output
    wav = tmp_path / "x.wav"
    import soundfile as sf

    sf.write(wav, np.zeros(16_000, dtype=np.float32), 16_000)
    result = CliRunner().invoke(app, ["monitor", str(wav)])
    assert result.exit_code == 2 and f"{wav} holds no decision records" in result.output
    assert "binary data" in result.output and "cut short" not in result.output

    log = tmp_path / "d.jsonl"
    make_log(log, shift=0.0, n=5)
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for args, message in (
        (["--out", str(a_file)], f"--out {a_file}: {a_file} is a file, not a folder"),
        (["--out", str(a_file / "sub")], f"{a_file} is a file, not a folder"),
        (["--export", str(a_file)], f"--export {a_file}: {a_file} is a file, not a folder"),
        (
            [
                "--export",
                str(tmp_path / "wild"),
                "--dev-fraction",
                "2",
                "--out",
                str(tmp_path / "o"),
            ],
            "--dev-fraction must be in [0, 1]",
        ),
    ):
        result = CliRunner().invoke(app, ["monitor", str(log), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Errno" not in result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "wild").exists()


def test_monitor_runs_on_the_pi_without_training_libraries(
    tmp_path: Path, reference_bundle: Path
) -> None:
    """Summary and drift need numpy only; with matplotlib absent the plots are skipped with a note."""
    import subprocess

    log = tmp_path / "d.jsonl"
    make_log(log, shift=0.0, n=80)
    args = [
        "monitor",
        str(log),
        "--model",
        str(reference_bundle),
        "--out",
        str(tmp_path / "o"),
        "--json",
    ]
    code = f"""
import importlib.abc, sys
class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "librosa", "sklearn", "scipy", "matplotlib"):
            raise ImportError(f"{{name}} is not installed on the Pi")
sys.meta_path.insert(0, _Refuse())
sys.argv = ["wakeguard", *{args!r}]
from wakeguard.tools.cli import main
main()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["summary"]["n_records"] == 80 and out["summary"]["drift"]["psi"] is not None
    assert any("matplotlib" in n for n in out["notes"])
    assert not list((tmp_path / "o").glob("*.png"))
