"""``wakeguard data import`` on small fake corpora built in the real layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner
from wakeguard.edge.protocol import read_protocol
from wakeguard.tools.cli import app

runner = CliRunner()


def _tone(path: Path, rate: int = 16_000, seconds: float = 0.3, channels: int = 1, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    x = 0.2 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(path, x, rate, format=fmt)


def _run(*args: str) -> object:
    return runner.invoke(app, ["data", "import", *map(str, args)])


# ----------------------------------------------------------------------------- corpora


def make_asvspoof2017(root: Path) -> Path:
    lines = {
        "train": ["T_1000001.wav genuine M0001 S01 - - -", "T_1000002.wav spoof M0001 S02 E02 P02 R03"],
        "dev": ["D_1000001.wav genuine M0011 S06 - - -", "D_1000002.wav spoof M0011 S02 E05 P10 R12"],
        "eval": ["E_1000001.wav spoof M0029 S03 E19 P22 R22", "E_1000002.wav genuine M0030 S02 - - -"],
    }
    names = {"train": "ASVspoof2017_V2_train.trn.txt", "dev": "ASVspoof2017_V2_dev.trl.txt", "eval": "ASVspoof2017_V2_eval.trl.txt"}
    (root / "protocol_V2").mkdir(parents=True)
    for split, ls in lines.items():
        (root / "protocol_V2" / names[split]).write_text("\n".join(ls) + "\n")
        for line in ls:
            _tone(root / f"ASVspoof2017_V2_{split}" / line.split()[0])
    return root


def make_asvspoof2019pa(root: Path) -> Path:
    pa = root / "PA"
    lines = {
        "train": ["PA_0079 PA_T_0000001 aaa - bonafide", "PA_0079 PA_T_0000002 abc BA spoof"],
        "dev": ["PA_0069 PA_D_0000001 cca - bonafide", "PA_0069 PA_D_0000002 bbb CC spoof"],
        "eval": ["PA_0001 PA_E_0000001 cbc AB spoof", "PA_0002 PA_E_0000002 aab - bonafide"],
    }
    names = {"train": "ASVspoof2019.PA.cm.train.trn.txt", "dev": "ASVspoof2019.PA.cm.dev.trl.txt", "eval": "ASVspoof2019.PA.cm.eval.trl.txt"}
    (pa / "ASVspoof2019_PA_cm_protocols").mkdir(parents=True)
    for split, ls in lines.items():
        (pa / "ASVspoof2019_PA_cm_protocols" / names[split]).write_text("\n".join(ls) + "\n")
        for line in ls:
            _tone(pa / f"ASVspoof2019_PA_{split}" / "flac" / f"{line.split()[1]}.flac", fmt="FLAC")
    return root


def make_asvspoof2021pa(root: Path) -> Path:
    keys = root / "PA-keys-full" / "keys" / "PA" / "CM" / "trial_metadata.txt"
    keys.parent.mkdir(parents=True)
    lines = [
        "PA_0010 PA_E_1000001 R3 M3 d4 r1 m1 s4 c4 spoof notrim eval",
        "PA_0010 PA_E_1000002 R3 M3 d4 - - - - bonafide notrim eval",
        "PA_0024 PA_E_1000003 R1 M2 d1 r2 m3 s2 c2 spoof trim progress",
    ]
    keys.write_text("\n".join(lines) + "\n")
    for i, line in enumerate(lines):  # audio split over the distribution's part folders
        part = root / f"ASVspoof2021_PA_eval_part0{i % 2}" / "ASVspoof2021_PA_eval" / "flac"
        _tone(part / f"{line.split()[1]}.flac", fmt="FLAC")
    return root


def make_remasc(root: Path) -> Path:
    meta = [
        "010101,1,01,1,1,1,-1,-1,2.1",  # source recording: not a trial
        "010102,2,01,1,1,-1,-1,3,2.2",
        "010103,3,01,1,2,1,2,3,2.3",
        "020101,2,02,4,1,-1,-1,1,1.9",
        "020102,3,02,4,1,2,5,1,1.8",
    ]
    (root).mkdir(parents=True)
    (root / "meta.csv").write_text("\n".join(meta) + "\n")
    for line in meta:
        _tone(root / "data" / f"env{line.split(',')[3]}" / f"{line.split(',')[0]}.wav", rate=44_100, channels=4)
    return root


# ----------------------------------------------------------------------------- tests


def test_asvspoof2017_keeps_splits_and_conditions(tmp_path):
    src = make_asvspoof2017(tmp_path / "ASVspoof2017")
    r = _run("asvspoof2017", src, tmp_path / "out")
    assert r.exit_code == 0, r.output
    p = read_protocol(tmp_path / "out")
    assert len(p.rows) == 6 and p.splits() == ["train", "dev", "eval"]
    assert p.condition_columns == ["phrase", "environment", "playback", "recorder"]
    spoof = next(r for r in p.rows if r.path.endswith("E_1000001.wav"))
    assert (spoof.label, spoof.speaker, spoof.split) == ("spoof", "M0029", "eval")
    assert spoof.conditions == {"phrase": "S03", "environment": "E19", "playback": "P22", "recorder": "R22"}
    genuine = next(r for r in p.rows if r.path.endswith("T_1000001.wav"))
    assert genuine.label == "bonafide" and genuine.conditions["environment"] == ""
    assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in p.rows)


def test_asvspoof2019pa_decodes_letters(tmp_path):
    src = make_asvspoof2019pa(tmp_path / "ASVspoof2019")
    r = _run("asvspoof2019pa", src, tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["counts"] == {s: {"bonafide": 1, "spoof": 1} for s in ("train", "dev", "eval")}
    rows = {Path(r.path).stem: r for r in read_protocol(tmp_path / "out").rows}
    s = rows["PA_T_0000002"].conditions
    assert (s["env"], s["attack"]) == ("abc", "BA")
    assert (s["room_size_m2"], s["t60_ms"], s["talker_distance_cm"]) == ("2-5", "200-600", "100-150")
    assert (s["attacker_distance_cm"], s["device_quality_class"]) == ("50-100", "perfect")
    b = rows["PA_D_0000001"].conditions
    assert b["room_size_m2"] == "10-20" and b["attack"] == "" and b["device_quality_class"] == ""
    assert rows["PA_D_0000001"].label == "bonafide" and rows["PA_D_0000001"].speaker == "PA_0069"


def test_asvspoof2021pa_eval_keys_over_part_folders(tmp_path):
    src = make_asvspoof2021pa(tmp_path / "ASVspoof2021")
    r = _run("asvspoof2021pa", src, tmp_path / "out")
    assert r.exit_code == 0, r.output
    p = read_protocol(tmp_path / "out")
    assert [c for c in p.condition_columns] == [
        "asv_room", "asv_mic", "dis_to_asv", "att_room", "att_mic", "att_d", "att_to_spk", "trim", "subset",
    ]
    assert {r.split for r in p.rows} == {"eval"}
    rows = {Path(r.path).stem: r for r in p.rows}
    assert rows["PA_E_1000003"].conditions["subset"] == "progress"
    assert rows["PA_E_1000003"].conditions["att_to_spk"] == "c2"
    assert rows["PA_E_1000002"].label == "bonafide" and rows["PA_E_1000002"].conditions["att_room"] == ""


def test_remasc_maps_types_and_copies_to_16k_mono(tmp_path):
    src = make_remasc(tmp_path / "ReMASC")
    r = _run("remasc", src, tmp_path / "out", "--copy", "--split", "train", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["not_used"] == {"remasc_source_recordings": 1}
    p = read_protocol(tmp_path / "out")
    assert sorted(r.label for r in p.rows) == ["bonafide", "bonafide", "spoof", "spoof"]
    assert {r.split for r in p.rows} == {"train"}
    assert p.condition_columns == ["environment", "position", "source_recorder", "playback_device", "recording_device"]
    replay = next(r for r in p.rows if r.conditions["playback_device"] == "5")
    assert replay.speaker == "02" and replay.conditions["environment"] == "4"
    for row in p.rows:
        info = sf.info(str(row.audio_path(p.root)))
        assert not Path(row.path).is_absolute()
        assert (info.samplerate, info.channels) == (16_000, 1)
    # Rerunning with --copy reuses the converted files (resumable).
    r2 = _run("remasc", src, tmp_path / "out", "--copy", "--split", "train")
    assert r2.exit_code == 0, r2.output


def test_remasc_header_row_names_columns(tmp_path):
    src = tmp_path / "ReMASC"
    src.mkdir()
    (src / "meta.csv").write_text(
        "ID,Type,Speaker,Environment,Position,Source Recorder,Playback Device,Recording Device,Length\n"
        "000001,2,07,2,1,-1,-1,4,2.0\n"
    )
    _tone(src / "000001.wav")
    r = _run("remasc", src / "meta.csv", tmp_path / "out")
    assert r.exit_code == 0, r.output
    row = read_protocol(tmp_path / "out").rows[0]
    assert row.speaker == "07" and row.conditions["recording_device"] == "4"


def test_folder_layout_with_splits_and_speakers(tmp_path):
    src = tmp_path / "mine"
    _tone(src / "train" / "bonafide" / "alice" / "a1.wav")
    _tone(src / "train" / "spoof" / "alice" / "a1.wav")
    _tone(src / "eval" / "bonafide" / "b1.flac", fmt="FLAC")
    _tone(src / "eval" / "spoof" / "b1.wav")
    (src / "eval" / "spoof" / "notes.txt").write_text("not audio")
    r = _run("folder", src, tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["not_used"] == {"non_audio_files": 1}
    p = read_protocol(tmp_path / "out")
    assert sorted((r.split, r.label, r.speaker) for r in p.rows) == [
        ("eval", "bonafide", ""), ("eval", "spoof", ""), ("train", "bonafide", "alice"), ("train", "spoof", "alice"),
    ]


def test_folder_files_that_are_not_audio_are_named_not_imported(tmp_path):
    src = tmp_path / "mine"
    _tone(src / "bonafide" / "ok.wav")
    _tone(src / "spoof" / "ok.wav")
    (src / "bonafide" / "empty.wav").write_bytes(b"")
    (src / "spoof" / "text.wav").write_text("this is not a recording")
    r = _run("folder", src, tmp_path / "out")
    assert r.exit_code == 2
    assert "2 protocol row(s) cannot be imported" in r.output
    assert f"{src / 'bonafide' / 'empty.wav'}: unreadable audio" in r.output  # no ":0:"
    assert "text.wav" in r.output and "--skip-missing" in r.output
    assert not (tmp_path / "out" / "protocol.csv").exists()
    r = _run("folder", src, tmp_path / "out", "--skip-missing", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n_skipped"] == 2
    assert len(read_protocol(tmp_path / "out").rows) == 2


def test_a_different_protocol_in_out_is_replaced_only_when_asked(tmp_path):
    src = tmp_path / "mine"
    _tone(src / "bonafide" / "a.wav")
    _tone(src / "spoof" / "a.wav")
    out = tmp_path / "out"
    assert _run("folder", src, out).exit_code == 0
    assert _run("folder", src, out).exit_code == 0  # the same import again: fine
    edited = (out / "protocol.csv").read_text().replace(",spoof,", ",bonafide,")
    (out / "protocol.csv").write_text(edited)
    r = _run("folder", src, out)
    assert r.exit_code == 2 and "already exists and differs" in r.output and "--overwrite" in r.output
    assert (out / "protocol.csv").read_text() == edited  # the hand edit is kept
    assert sorted(p.name for p in out.iterdir()) == ["import_report.json", "protocol.csv"]
    assert _run("folder", src, out, "--overwrite").exit_code == 0
    assert {r.label for r in read_protocol(out).rows} == {"bonafide", "spoof"}


def test_missing_audio_is_an_error_naming_protocol_and_line(tmp_path):
    src = make_asvspoof2017(tmp_path / "ASVspoof2017")
    (src / "ASVspoof2017_V2_dev" / "D_1000002.wav").unlink()
    r = _run("asvspoof2017", src, tmp_path / "out")
    assert r.exit_code == 2
    assert "ASVspoof2017_V2_dev.trl.txt:2" in r.output and "D_1000002.wav" in r.output
    assert "--skip-missing" in r.output
    assert not (tmp_path / "out" / "protocol.csv").exists()


def test_malformed_line_is_an_error_and_skip_missing_reports_it(tmp_path):
    src = make_asvspoof2019pa(tmp_path / "ASVspoof2019")
    proto = src / "PA" / "ASVspoof2019_PA_cm_protocols" / "ASVspoof2019.PA.cm.train.trn.txt"
    proto.write_text(proto.read_text() + "PA_0079 PA_T_0000003 axz - bonafide\nPA_0079 PA_T_0000004 aaa\n")
    r = _run("asvspoof2019pa", src, tmp_path / "out")
    assert r.exit_code == 2
    assert "ASVspoof2019.PA.cm.train.trn.txt:3" in r.output and "'axz'" in r.output
    r = _run("asvspoof2019pa", src, tmp_path / "out", "--skip-missing")
    assert r.exit_code == 0, r.output
    assert "skipped 2 row(s)" in r.output
    report = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert report["n_skipped"] == 2 and report["n_rows"] == 6
    assert [s["line"] for s in report["skipped"]] == [3, 4]
    assert "expected 5 fields" in report["skipped"][1]["reason"]


def test_wrong_layout_says_what_was_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    r = _run("asvspoof2019pa", tmp_path / "empty", tmp_path / "out")
    assert r.exit_code == 2 and "ASVspoof2019_PA_cm_protocols" in r.output
    r = _run("asvspoof2021pa", tmp_path / "empty", tmp_path / "out")
    assert r.exit_code == 2 and "trial_metadata.txt" in r.output


@pytest.mark.parametrize("fmt", ["asvspoof2017", "asvspoof2019pa", "asvspoof2021pa", "remasc"])
def test_help_says_where_to_get_each_corpus(fmt):
    r = runner.invoke(app, ["data", "import", "--help"])
    assert r.exit_code == 0
    url = {
        "asvspoof2017": "10283/3055",
        "asvspoof2019pa": "10283/3336",
        "asvspoof2021pa": "index2021",
        "remasc": "YuanGongND/ReMASC",
    }[fmt]
    assert url in r.output


def test_protocol_write_failure_names_the_file_and_leaves_no_part(tmp_path, monkeypatch):
    import errno

    from wakeguard.edge.protocol import Row, write_protocol

    class FullDisk:
        def as_dict(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "protocol.csv").write_text("path,label\nold.wav,bonafide\n")
    with pytest.raises(OSError, match=r"cannot write .*protocol\.csv: No space left on device"):
        write_protocol(tmp_path, [Row("a.wav", "bonafide", "", "", {}), FullDisk()], [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["protocol.csv"]
    assert "old.wav" in (tmp_path / "protocol.csv").read_text()  # the old one is untouched
