"""Decision log (rotation, clip store, permissions, full disk, threads) and Prometheus telemetry."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from wakeguard.edge.decisionlog import DecisionLog, log_files, not_a_log, read_log, read_records


def _tone(seconds: float = 0.5, amp: float = 0.1) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    return (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _rec(log: DecisionLog, score: float, verdict: str, threshold: float = 0.0, **kw):
    return log.record(
        t_start=1.0,
        t_end=2.5,
        score=score,
        verdict=verdict,
        threshold=threshold,
        latency_ms=7.5,
        model_version="v-test",
        **kw,
    )


def test_record_writes_one_json_line_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "decisions.jsonl"
    with DecisionLog(path) as log:
        rec = _rec(log, 1.25, "bonafide", audio=_tone(1.5, 0.1))
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    got = json.loads(lines[0])
    assert got == rec
    for key in (
        "time",
        "t_start",
        "t_end",
        "score",
        "verdict",
        "threshold",
        "latency_ms",
        "level_dbfs",
        "duration_s",
        "model_version",
        "source",
    ):
        assert key in got
    assert (
        got["verdict"] == "bonafide" and got["score"] == 1.25 and got["model_version"] == "v-test"
    )
    assert got["duration_s"] == 1.5
    assert got["level_dbfs"] == pytest.approx(20 * np.log10(0.1 / np.sqrt(2)), abs=0.05)
    assert "clip" not in got  # clips are opt-in
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    records, bad = read_records(path)
    assert records == [rec] and bad == 0


def test_rotation_bounds_total_size_and_keeps_newest(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    with DecisionLog(path, max_bytes=2_000, backups=2) as log:
        for i in range(200):
            _rec(log, float(i), "bonafide", level_dbfs=-20.0, duration_s=1.0)
    files = log_files(path)
    assert [f.name for f in files] == ["d.jsonl.2", "d.jsonl.1", "d.jsonl"]
    assert all(f.stat().st_size <= 2_000 for f in files)
    records, bad = read_records(path)
    assert bad == 0
    scores = [r["score"] for r in records]
    assert scores == sorted(scores)  # oldest first across backups
    assert scores[-1] == 199.0  # the newest survive, the oldest were dropped
    assert len(records) < 200


def test_clips_only_rejected_and_borderline_private_and_capped(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    audio = _tone(0.5)  # 16,044 bytes as 16-bit WAV
    with DecisionLog(
        tmp_path / "d.jsonl", clips_dir=clips, clip_cap_bytes=40_000, borderline_margin=0.5
    ) as log:
        clear_live = _rec(log, 3.0, "bonafide", audio=audio)
        borderline = _rec(log, 0.2, "bonafide", audio=audio)
        rejected = _rec(log, -3.0, "spoof", audio=audio)
        assert "clip" not in clear_live
        assert borderline["borderline"] and Path(borderline["clip"]).is_file()
        assert Path(rejected["clip"]).is_file()
        assert stat.S_IMODE(clips.stat().st_mode) == 0o700
        for p in clips.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600
        saved, rate = sf.read(rejected["clip"], dtype="float32")
        assert rate == 16_000 and np.allclose(saved, audio, atol=1e-4)
        # A third clip does not fit under 40 kB: the oldest (the borderline one) goes.
        third = _rec(log, -2.0, "spoof", audio=audio)
        assert not Path(borderline["clip"]).exists()
        assert Path(rejected["clip"]).exists() and Path(third["clip"]).exists()
        assert log.clip_bytes <= 40_000
    assert sum(p.stat().st_size for p in clips.iterdir()) <= 40_000


def test_clip_cap_survives_restart(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    audio = _tone(0.5)
    for _ in range(3):  # three service runs, two clips each
        with DecisionLog(tmp_path / "d.jsonl", clips_dir=clips, clip_cap_bytes=50_000) as log:
            _rec(log, -1.0, "spoof", audio=audio)
            _rec(log, -1.0, "spoof", audio=audio)
    assert sum(p.stat().st_size for p in clips.iterdir()) <= 50_000
    assert len(list(clips.iterdir())) == 3


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_is_logged_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="wakeguard.edge.decisionlog")
    log = DecisionLog("/dev/full")
    for i in range(5):
        rec = _rec(log, float(i), "spoof")
        assert rec["verdict"] == "spoof"  # the decision still comes back
    log.close()
    assert log.write_errors == 5
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "/dev/full" in errors[0].getMessage()


def test_concurrent_records_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    log = DecisionLog(path, max_bytes=10_000, backups=50)

    def work(k: int) -> None:
        for i in range(40):
            _rec(log, k * 1000 + i, "bonafide", worker=k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    records, bad = read_records(path)
    assert bad == 0 and len(records) == 240
    for k in range(6):
        mine = [r["score"] for r in records if r["worker"] == k]
        assert mine == sorted(mine) and len(mine) == 40


def test_record_after_close_raises(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    log.close()
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        _rec(log, 0.0, "spoof")


def test_read_records_skips_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    with DecisionLog(path) as log:
        _rec(log, 1.0, "bonafide")
    with path.open("a") as fh:
        fh.write('{"score": 2.0, "verd')  # cut short by a crash
    records, bad = read_records(path)
    assert len(records) == 1 and bad == 1
    with pytest.raises(FileNotFoundError, match="not found"):
        read_records(tmp_path / "missing.jsonl")


def test_read_log_skips_records_of_the_wrong_type_and_names_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    with DecisionLog(path) as log:
        _rec(log, 1.0, "bonafide")
        _rec(log, -1.0, "spoof")
    good = path.read_text().splitlines()
    bad = [
        '{"score": null, "verdict": "bonafide"}',
        '{"score": 1.0, "verdict": "maybe", "latency_ms": "fast"}',
        '{"score": "high", "verdict": "spoof"}',
        '{"score": 1.0, "verdict": "spoof", "latency_ms": "fast"}',
        '{"score": 1.0, "verdict": "spoof", "unix_time": 1e300}',
        '{"score": 1.0, "verdict": "spoof", "clip": 5}',
        "not json at all",
        "[1, 2]",
    ]
    path.write_text("\n".join([good[0], *bad, good[1]]) + "\n")
    contents = read_log(path)
    assert [r["score"] for r in contents.records] == [1.0, -1.0]
    assert [b.line for b in contents.bad] == list(range(2, 2 + len(bad)))
    assert "score null is not a finite number" in contents.bad[0].problem
    assert 'verdict "maybe"' in contents.bad[1].problem
    assert 'score "high"' in contents.bad[2].problem
    assert 'latency_ms "fast"' in contents.bad[3].problem
    assert "unix_time" in contents.bad[4].problem and "clip" in contents.bad[5].problem
    text = contents.describe_bad()
    assert text.startswith(
        f"{len(bad)} unreadable line(s) in {path} (lines 2, 3, 4, 5, 6 and 3 more)"
    )
    assert "cut short" not in text  # garbage in the middle of the file is not a torn last line
    assert read_records(path) == (contents.records, len(bad))


def test_only_a_torn_last_line_is_called_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    with DecisionLog(path) as log:
        _rec(log, 1.0, "bonafide")
    with path.open("a") as fh:
        fh.write('garbage\n{"score": 1.0, "verdict": "spoof"}\n{"score": 2.0, "verd')
    contents = read_log(path)
    assert [b.line for b in contents.bad] == [2, 4]
    assert "cut short" not in contents.bad[0].problem and "cut short" in contents.bad[1].problem
    assert "the last line: not JSON (cut short" in contents.describe_bad()


def test_skipped_lines_of_a_backup_name_the_backup(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rec = '{"score": 1.0, "verdict": "spoof"}'
    (tmp_path / "d.jsonl.1").write_text(f"{rec}\ngarbage\n{rec}\n")
    path.write_text(f'{rec}\n{{"score": 1.0, "verdict": 3}}\n')
    (tmp_path / "d.jsonl.2").mkdir()  # not a backup: skipped, not an error
    contents = read_log(path)
    assert len(contents.records) == 3
    assert contents.describe_bad().startswith(
        f"2 unreadable line(s) in {path} (d.jsonl.1 line 2, line 2) skipped; d.jsonl.1 line 2: not JSON"
    )


def test_read_log_refuses_a_folder_and_skips_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a folder, not a decision log"):
        read_log(tmp_path)
    wav = tmp_path / "x.wav"
    sf.write(wav, _tone(), 16_000)
    contents = read_log(wav)
    assert contents.records == [] and "binary data" in contents.bad[0].problem


# -- telemetry -------------------------------------------------------------------------


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.rsplit(" ", 1)[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_telemetry_counts_and_histograms() -> None:
    pytest.importorskip("prometheus_client")
    from wakeguard.edge.telemetry import Telemetry

    tel = Telemetry(model_version="v-test")
    tel.observe("bonafide", 2.0, 8.0)
    tel.observe("spoof", -3.0, 12.0)
    tel.observe("spoof", -0.2, 30.0)
    tel.add_overruns(4)
    text = tel.render().decode()
    assert _metric(text, 'wakeguard_decisions_total{verdict="spoof"}') == 2
    assert _metric(text, 'wakeguard_decisions_total{verdict="bonafide"}') == 1
    assert _metric(text, "wakeguard_score_count") == 3
    assert _metric(text, 'wakeguard_score_bucket{le="0.0"}') == 2
    assert _metric(text, "wakeguard_decision_latency_seconds_sum") == pytest.approx(0.050)
    assert _metric(text, 'wakeguard_decision_latency_seconds_bucket{le="0.01"}') == 1
    assert _metric(text, "wakeguard_audio_overruns_total") == 4
    assert 'wakeguard_model_info{version="v-test"} 1.0' in text
    # Two services in one process do not share counters.
    other = Telemetry(model_version="v2")
    assert _metric(other.render().decode(), 'wakeguard_decisions_total{verdict="spoof"}') == 0


def test_telemetry_serves_http_on_localhost() -> None:
    pytest.importorskip("prometheus_client")
    from wakeguard.edge.telemetry import Telemetry

    tel = Telemetry(port=0, model_version="v-http")
    port = tel.start()
    try:
        assert port and port > 0
        tel.observe("spoof", -1.0, 5.0)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert _metric(body, 'wakeguard_decisions_total{verdict="spoof"}') == 1
    finally:
        tel.stop()
    tel.stop()  # idempotent


def test_telemetry_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    import wakeguard.edge.telemetry as telemetry

    importlib.reload(telemetry)  # the module itself imports fine without it
    with pytest.raises(telemetry.TelemetryError, match="prometheus-client"):
        telemetry.Telemetry()


def test_the_clip_cap_deletes_only_its_own_clips(tmp_path: Path) -> None:
    """A --clips-dir that already holds the user's recordings: they are neither counted
    against the cap nor deleted by it, however old."""
    clips = tmp_path / "recordings"
    clips.mkdir()
    mine = []
    for i in range(5):
        p = clips / f"take{i}.wav"
        sf.write(p, _tone(0.5), 16_000, subtype="PCM_16")
        os.utime(p, (1_000_000 + i, 1_000_000 + i))  # older than any clip
        mine.append((p, p.read_bytes()))
    audio = _tone(0.5)
    with DecisionLog(tmp_path / "d.jsonl", clips_dir=clips, clip_cap_bytes=40_000) as log:
        saved = [_rec(log, -3.0, "spoof", audio=audio)["clip"] for _ in range(3)]
    assert all(p.read_bytes() == data for p, data in mine)
    assert not Path(saved[0]).exists() and Path(saved[1]).exists() and Path(saved[2]).exists()
    # A second session counts the clips it finds by their names, still not the takes.
    with DecisionLog(tmp_path / "d.jsonl", clips_dir=clips, clip_cap_bytes=40_000) as log:
        assert log.clip_bytes == sum(Path(p).stat().st_size for p in saved[1:])
    assert all(p.read_bytes() == data for p, data in mine)


def test_a_file_that_is_not_a_log_is_refused_and_left_alone(tmp_path: Path) -> None:
    wav = tmp_path / "take.wav"
    sf.write(wav, _tone(0.2), 16_000, subtype="PCM_16")
    before = wav.read_bytes()
    with pytest.raises(ValueError, match=r"take\.wav holds binary data \(audio\?\), not JSON"):
        DecisionLog(wav)
    assert wav.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n")
    assert "text that is not JSON lines (it starts 'shopping list')" in not_a_log(notes)
    # A log, an empty file, a missing one, and a log whose tail a power cut filled with NULs.
    log = tmp_path / "d.jsonl"
    with DecisionLog(log) as dl:
        _rec(dl, 1.0, "bonafide")
    with log.open("ab") as fh:
        fh.write(b"\x00" * 300)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    for ok in (log, tmp_path / "empty.jsonl", tmp_path / "new.jsonl"):
        assert not_a_log(ok) is None
    with DecisionLog(log) as dl:
        _rec(dl, 2.0, "bonafide")
    assert log.read_bytes().count(b"\n") == 2
