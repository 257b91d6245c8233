"""``wakeguard evaluate`` end to end: protocol -> int8 bundle via the edge Scorer -> scores + metrics.

Also home of :func:`make_replay_dataset`, a small dataset made from the shared LibriSpeech
speech (bona fide) and crude "replays" of it (500 Hz high-pass + soft clipping), used by
the baseline and report tests too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from wakeguard.edge.audio import load_audio, write_wav
from wakeguard.edge.protocol import Row, write_protocol
from wakeguard.tools.cli import app

runner = CliRunner()


def fake_replay(x: np.ndarray, cutoff_hz: float = 500.0, drive: float = 3.0) -> np.ndarray:
    """A crude loudspeaker: 4th-order high-pass at ``cutoff_hz`` and tanh soft clipping."""
    from scipy.signal import butter, sosfilt

    sos = butter(4, cutoff_hz, btype="highpass", fs=16_000, output="sos")
    y = sosfilt(sos, x)
    y = np.tanh(drive * y / (np.max(np.abs(y)) + 1e-9)) / np.tanh(drive)
    return (0.3 * y).astype(np.float32)


def make_replay_dataset(
    folder: Path,
    shared_dir: Path,
    *,
    n_speakers: int = 12,
    clips_per_speaker: int = 3,
    seconds: float = 2.0,
    seed: int = 0,
    broken: int = 0,
) -> Path:
    """Bona fide 2 s clips of LibriSpeech speakers and fake replays of other clips of theirs.

    Splits by speaker (half train, a quarter dev, a quarter eval); condition columns
    ``attack`` (``-`` for bona fide, the replay cut-off for spoofs) and ``room`` (both
    classes). ``broken`` adds that many eval rows whose audio file is corrupt.
    """
    rng = np.random.default_rng(seed)
    files = sorted((shared_dir / "speech" / "librispeech" / "train-clean-100").glob("*.flac"))
    n = int(seconds * 16_000)
    rows: list[Row] = []
    spk_used = 0
    for f in files:
        if spk_used == n_speakers:
            break
        x = load_audio(f)
        if x.size < n * 2 * clips_per_speaker:
            continue
        spk = f.name.split("-")[0]
        split = (
            "train"
            if spk_used < n_speakers // 2
            else ("dev" if spk_used < 3 * n_speakers // 4 else "eval")
        )
        spk_used += 1
        for k in range(clips_per_speaker):
            live = x[2 * k * n : (2 * k + 1) * n]
            live = 0.3 * live / (np.max(np.abs(live)) + 1e-9)
            cutoff = float(rng.choice([400.0, 700.0]))
            replay = fake_replay(x[(2 * k + 1) * n : (2 * k + 2) * n], cutoff)
            replay = replay + rng.normal(0, 1e-3, replay.size).astype(np.float32)
            room = str(rng.choice(["small", "large"]))
            write_wav(folder / "audio" / f"{spk}_{k}_live.wav", live)
            write_wav(folder / "audio" / f"{spk}_{k}_replay.wav", replay)
            rows.append(
                Row(
                    f"audio/{spk}_{k}_live.wav",
                    "bonafide",
                    spk,
                    split,
                    {"attack": "-", "room": room},
                )
            )
            rows.append(
                Row(
                    f"audio/{spk}_{k}_replay.wav",
                    "spoof",
                    spk,
                    split,
                    {"attack": f"hp{int(cutoff)}", "room": room},
                )
            )
    assert spk_used == n_speakers, "not enough long shared speech files"
    for i in range(broken):
        bad = folder / "audio" / f"broken_{i}.wav"
        bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
        rows.append(
            Row(
                f"audio/broken_{i}.wav",
                "spoof",
                "broken",
                "eval",
                {"attack": "hp400", "room": "small"},
            )
        )
    write_protocol(folder / "protocol.csv", rows, ["attack", "room"])
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_dir) -> Path:
    return make_replay_dataset(
        tmp_path_factory.mktemp("ds") / "toy",
        shared_dir,
        n_speakers=8,
        clips_per_speaker=2,
        broken=1,
    )


def test_evaluate_json_and_files(dataset, tiny_bundle, tmp_path):
    out = tmp_path / "eval"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--protocol",
            str(dataset / "protocol.csv"),
            "--model",
            str(tiny_bundle),
            "--out",
            str(out),
            "--json",
            "--bootstrap",
            "100",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])
    # Default split is eval: 2 speakers x 2 clips x 2 classes, plus one broken spoof row.
    assert m["split"] == "eval" and m["n_rows"] == 9
    assert (m["n_bonafide"], m["n_spoof"], m["n_unscored"]) == (4, 4, 1)
    assert (
        m["unscored"][0]["path"] == "audio/broken_0.wav"
        and "unreadable" in m["unscored"][0]["reason"]
    )
    for key in (
        "eer",
        "apcer",
        "bpcer",
        "apcer_at_bpcer_1pct",
        "apcer_at_bpcer_5pct",
        "ci",
        "threshold",
        "eer_threshold",
    ):
        assert key in m
    assert (
        m["threshold"] == 0.0 and m["operating_point"] == "eer"
    )  # the tiny bundle's EER threshold
    assert set(m["per_condition"]) == {"attack", "room"}
    assert m["ci"]["unit"] == "speaker" and m["ci"]["n_units"] == 2
    # The score file holds exactly the scored rows, and metrics recomputed from it agree.
    with (out / "scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and list(rows[0])[-1] == "score"
    from wakeguard.model.metrics import metrics_from_scores

    again = metrics_from_scores(out / "scores.csv", threshold=m["threshold"], n_boot=100)
    assert again["eer"] == m["eer"] and again["apcer"] == m["apcer"]
    assert json.loads((out / "metrics.json").read_text())["eer"] == m["eer"]
    assert "broken_0.wav" in (out / "unscored.csv").read_text()


def test_scores_match_the_edge_scorer(dataset, tiny_bundle):
    from wakeguard.edge.scorer import Scorer
    from wakeguard.model.evaluate import score_protocol

    run = score_protocol(dataset, bundle=tiny_bundle, split="dev")
    assert len(run.rows) == 8 and not run.unscored
    scorer = Scorer.from_bundle(tiny_bundle)
    for r in run.rows[:3]:
        assert r["score"] == scorer.score(load_audio(dataset / r["path"])).score


def test_strict_fails_on_unreadable_rows(dataset, tiny_bundle):
    res = runner.invoke(
        app,
        ["evaluate", "-p", str(dataset), "-m", str(tiny_bundle), "--strict", "--bootstrap", "10"],
    )
    assert res.exit_code == 2
    assert "broken_0.wav" in res.output and "could not be scored" in res.output


def test_table_output_and_errors(dataset, tiny_bundle, tmp_path):
    res = runner.invoke(
        app,
        [
            "evaluate",
            "-p",
            str(dataset),
            "-m",
            str(tiny_bundle),
            "--split",
            "dev",
            "--bootstrap",
            "10",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (
        "EER" in res.output and "APCER @ BPCER 1%" in res.output and "EER by attack" in res.output
    )
    res = runner.invoke(app, ["evaluate", "-p", str(tmp_path / "nope.csv"), "-m", str(tiny_bundle)])
    assert res.exit_code == 2 and "protocol file not found" in res.output
    res = runner.invoke(
        app, ["evaluate", "-p", str(dataset), "-m", str(tmp_path), "--split", "dev"]
    )
    assert res.exit_code == 2 and "manifest.json" in res.output


def test_live_only_protocol_gives_bpcer(dataset, tiny_bundle, tmp_path):
    from wakeguard.edge.protocol import read_protocol

    proto = read_protocol(dataset)
    live = [
        Row(str(dataset / r.path), r.label, r.speaker, r.split, r.conditions)
        for r in proto.where(split="dev", label="bonafide")
    ]
    write_protocol(tmp_path / "protocol.csv", live, proto.condition_columns)
    res = runner.invoke(app, ["evaluate", "-p", str(tmp_path), "-m", str(tiny_bundle), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["eer"] is None and m["apcer"] is None and m["n_bonafide"] == 4 and m["n_spoof"] == 0
    assert m["bpcer"] in (0.0, 0.25, 0.5, 0.75, 1.0) and "only bonafide" in m["note"]
    res = runner.invoke(app, ["evaluate", "-p", str(tmp_path), "-m", str(tiny_bundle)])
    assert res.exit_code == 0 and "BPCER" in res.output


def test_unconfirmed_labels_are_not_scored(dataset, tiny_bundle, tmp_path):
    """Scoring a model against its own exported verdicts is circular: such rows are refused."""
    from wakeguard.edge.protocol import LABEL_CONFIRMED, read_protocol

    proto = read_protocol(dataset)
    rows = [
        Row(
            str(dataset / r.path),
            r.label,
            r.speaker,
            r.split,
            {**r.conditions, LABEL_CONFIRMED: "no" if r.split == "eval" else "yes"},
        )
        for r in proto.rows
        if r.split in ("dev", "eval") and "broken" not in r.path
    ]
    n_eval = sum(r.split == "eval" for r in rows)
    csv_path = write_protocol(tmp_path / "protocol.csv", rows)
    res = runner.invoke(app, ["evaluate", "-p", str(tmp_path), "-m", str(tiny_bundle)])
    assert res.exit_code == 2
    assert f"{csv_path}: {n_eval} of the {n_eval} rows for evaluation (eval rows)" in res.output
    assert "label_confirmed=yes" in res.output
    # The confirmed dev split is scored as usual.
    res = runner.invoke(
        app,
        ["evaluate", "-p", str(tmp_path), "-m", str(tiny_bundle), "--split", "dev", "--json"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["n_rows"] == 8


def test_score_files_are_evaluated_and_averaged(dataset, tiny_bundle, tmp_path):
    """``--scores`` puts existing score CSVs through the same metrics without running a
    model, and averages several per utterance (a score-level ensemble of two systems)."""
    from wakeguard.model.metrics import compute_eer, read_scores, write_scores

    proto = str(dataset / "protocol.csv")

    def run(*args: str) -> tuple[int, str]:
        res = runner.invoke(app, ["evaluate", "--protocol", proto, *args, "--bootstrap", "100"])
        return res.exit_code, res.output

    a = tmp_path / "a"
    code, out = run("--model", str(tiny_bundle), "--out", str(a), "--json")
    assert code == 0, out
    m = json.loads(out.strip().splitlines()[-1])
    # One file at the bundle's threshold gives the model's own metrics back.
    code, out = run("--scores", str(a / "scores.csv"), "--threshold", str(m["threshold"]), "--json")
    assert code == 0, out
    one = json.loads(out.strip().splitlines()[-1])
    for key in ("eer", "apcer", "bpcer", "n_bonafide", "n_spoof", "per_condition", "threshold"):
        assert one[key] == m[key], key
    assert one["score_files"] == [str(a / "scores.csv")] and "bundle" not in one
    # The broken row is not in the model's score file: unscored, naming the file.
    assert one["n_unscored"] == 1 and one["unscored"][0]["reason"] == f"not in {a / 'scores.csv'}"

    # A second system's scores: every row's score is the mean of the two.
    table = read_scores(a / "scores.csv")
    rng = np.random.default_rng(0)
    other = [{**r, "score": float(rng.normal(0.0, 2.0))} for r in table.rows]
    b = write_scores(tmp_path / "b.csv", other, table.condition_columns)
    code, out = run("--scores", str(a / "scores.csv"), "--scores", str(b), "--json")
    assert code == 0, out
    both = json.loads(out.strip().splitlines()[-1])
    mean = {
        r["path"]: (r["score"] + o["score"]) / 2 for r, o in zip(table.rows, other, strict=True)
    }
    label = {r["path"]: r["label"] for r in table.rows}
    bona = [s for p, s in mean.items() if label[p] == "bonafide"]
    spoof = [s for p, s in mean.items() if label[p] == "spoof"]
    assert both["eer"] == pytest.approx(compute_eer(bona, spoof)[0])
    assert both["threshold"] == 0.0 and both["threshold_source"] == "given"
    assert both["apcer"] == pytest.approx(np.mean(np.asarray(spoof) >= 0.0))

    # Errors name the file and exit 2: a label that disagrees with the protocol, a file
    # whose paths match no row, and a model given as well as scores.
    flipped = [
        {
            **table.rows[0],
            "label": "spoof" if label[table.rows[0]["path"]] == "bonafide" else "bonafide",
        }
    ]
    c = write_scores(tmp_path / "c.csv", flipped + table.rows[1:], table.condition_columns)
    code, out = run("--scores", str(c))
    assert code == 2 and "c.csv" in out and "labelled" in out
    moved = [{**r, "path": "elsewhere/" + r["path"]} for r in table.rows]
    d = write_scores(tmp_path / "d.csv", moved, table.condition_columns)
    code, out = run("--scores", str(d))
    assert code == 2 and "d.csv" in out and "none of the" in out
    code, out = run("--scores", str(b), "--model", str(tiny_bundle))
    assert code == 2 and "not both" in out
    code, out = run("--model", str(tiny_bundle), "--threshold", "0.5")
    assert code == 2 and "--operating-point" in out


def _toy_scores(folder: Path, n: int = 4) -> tuple[Path, Path]:
    """A protocol of ``n`` bona fide and ``n`` spoof rows and a score file for it (no audio:
    ``--scores`` runs no model)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        Row(f"audio/{label}{i}.wav", label, f"s{i % 2}", "eval", {"room": f"r{i % 2}"})
        for label in ("bonafide", "spoof")
        for i in range(n)
    ]
    proto = write_protocol(folder / "protocol.csv", rows, ["room"])
    from wakeguard.model.metrics import write_scores

    scored = [
        {**r.as_dict(), "score": (1.0 if r.label == "bonafide" else -1.0) + 0.3 * i}
        for i, r in enumerate(rows)
    ]
    return proto, write_scores(folder / "scores.csv", scored, ["room"])


def _evaluate(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["evaluate", *args])
    return res.exit_code, res.output


def test_output_write_failures_name_the_file_and_leave_nothing_half_written(tmp_path):
    proto, scores = _toy_scores(tmp_path / "ds")
    out = tmp_path / "out"
    (out / "metrics.json").mkdir(parents=True)  # unwritable target
    code, text = _evaluate("-p", str(proto), "--scores", str(scores), "--out", str(out))
    assert code == 1 and f"cannot write {out / 'metrics.json'}: Is a directory" in text
    assert not list(out.glob("*.part*")) and (out / "scores.csv").is_file()

    # unscored.csv is replaced whole or not at all: a failure half-way keeps the old file.
    from wakeguard.model.evaluate import Unscored, write_unscored

    old = write_unscored(out / "unscored.csv", [Unscored("a.wav", "spoof", "too short")])
    before = old.read_bytes()

    class FullDisk:
        def __str__(self) -> str:
            raise OSError(28, "No space left on device")

    rows = [Unscored("b.wav", "spoof", "silent"), Unscored(FullDisk(), "spoof", "silent")]  # type: ignore[arg-type]
    with pytest.raises(OSError, match=r"cannot write .*unscored.csv: No space left on device"):
        write_unscored(old, rows)
    assert old.read_bytes() == before and not list(out.glob("*.part*"))


def test_unusable_out_folder_is_a_usage_error(tmp_path):
    proto, scores = _toy_scores(tmp_path / "ds")
    base = ["-p", str(proto), "--scores", str(scores), "--bootstrap", "0", "--out"]
    code, text = _evaluate(*base, str(scores))
    assert code == 2 and f"cannot create output folder {scores}: a file of that name exists" in text
    code, text = _evaluate(*base, str(scores / "sub"))
    assert code == 2
    assert f"cannot create output folder {scores / 'sub'}: {scores} is a file, not a folder" in text
    if Path("/proc/self").is_dir():
        code, text = _evaluate(*base, "/proc/x")
        assert code == 2 and "cannot create output folder /proc/x: No such file" in text


def test_csvs_that_are_not_utf8_name_the_file_and_bom_is_read(tmp_path):
    proto, scores = _toy_scores(tmp_path / "ds")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(proto.read_bytes() + "audio/caf\xe9.wav,spoof,s0,eval,r0\n".encode("latin-1"))
    code, text = _evaluate("-p", str(latin), "--scores", str(scores))
    assert code == 2 and f"{latin}:10: not a UTF-8 text CSV (byte 0xe9)" in text
    code, text = _evaluate("-p", str(proto), "--scores", str(latin))
    assert code == 2 and f"{latin}:10: not a UTF-8 text CSV" in text
    wav = tmp_path / "clip.wav"
    write_wav(wav, np.full(1600, 0.5, np.float32))
    code, text = _evaluate("-p", str(wav), "--scores", str(scores))
    assert code == 2 and f"{wav}:1: not a UTF-8 text CSV" in text
    # Excel's "CSV UTF-8" starts with a byte-order mark: both files read as usual.
    for f in (proto, scores):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    code, text = _evaluate("-p", str(proto), "--scores", str(scores), "--json", "--bootstrap", "0")
    assert code == 0, text
    assert json.loads(text.strip().splitlines()[-1])["n_bonafide"] == 4


def test_a_path_listed_twice_is_an_error(tmp_path):
    """A second score for a path silently replaced the first (the EER changed, exit 0); a
    protocol row listed twice counted twice. Both name the file, the line and the path."""
    proto, scores = _toy_scores(tmp_path / "ds")
    dup = tmp_path / "dup.csv"
    lines = scores.read_text().splitlines(keepends=True)
    dup.write_text("".join(lines) + lines[1].rsplit(",", 1)[0] + ",-9.0\n")
    code, text = _evaluate("-p", str(proto), "--scores", str(dup))
    assert code == 2
    assert f"{dup}:10: path audio/bonafide0.wav is scored twice (first on line 2)" in text
    lines = proto.read_text().splitlines(keepends=True)
    proto.write_text("".join(lines) + lines[3])
    code, text = _evaluate("-p", str(proto), "--scores", str(scores))
    assert code == 2
    assert f"{proto}:10: path audio/bonafide2.wav is listed twice (first on line 4)" in text


def test_score_file_without_path_column_says_so(tmp_path):
    proto, scores = _toy_scores(tmp_path / "ds")
    no_path = tmp_path / "no_path.csv"
    no_path.write_text(
        "".join(line.split(",", 1)[1] for line in scores.read_text().splitlines(keepends=True))
    )
    code, text = _evaluate("-p", str(proto), "--scores", str(no_path))
    assert code == 2 and f"{no_path}: no 'path' column; header is ['label'," in text


def test_bad_split_bootstrap_and_threads_are_usage_errors(tmp_path):
    proto, scores = _toy_scores(tmp_path / "ds")
    base = ["-p", str(proto), "--scores", str(scores)]
    code, text = _evaluate(*base, "--split", "bogus")
    assert code == 2 and "split 'bogus' is not one of train, dev, eval, all" in text
    for args in (["--bootstrap", "-3"], ["--threads", "0"], ["--threads", "-2"]):
        code, text = _evaluate(*base, *args)
        assert code == 2 and args[0] in text and "Invalid value" in text, args
    code, text = _evaluate(*base, "--bootstrap", "0", "--json")  # no intervals
    assert code == 0, text
    assert json.loads(text.strip().splitlines()[-1])["ci"]["eer"] is None


def test_single_label_protocol_explains_missing_eer(tmp_path):
    proto, scores = _toy_scores(tmp_path / "ds")
    live = tmp_path / "live.csv"
    live.write_text(
        "".join(line for line in proto.read_text().splitlines(True) if "spoof" not in line)
    )
    code, text = _evaluate("-p", str(live), "--scores", str(scores))
    assert code == 0, text
    assert "note: only bonafide rows were scored (4 bonafide, 0 spoof): EER" in text
    assert "need both labels" in text
    code, text = _evaluate("-p", str(live), "--scores", str(scores), "--json")
    m = json.loads(text.strip().splitlines()[-1])
    assert code == 0 and m["eer"] is None and "4 bonafide, 0 spoof" in m["note"]


def test_a_row_with_more_fields_than_the_header_is_named(tmp_path):
    """An unquoted comma shifts every later column of its row: refused with the line, while a
    trailing comma (an empty extra field, as spreadsheets write) is not a problem."""
    from wakeguard.edge.protocol import ProtocolError, read_protocol

    proto = tmp_path / "protocol.csv"
    proto.write_text("path,label\na.wav,bonafide,\nb,1.wav,spoof\n")
    with pytest.raises(
        ProtocolError, match=r"protocol\.csv:3: 3 fields but the header has 2 \(a comma"
    ):
        read_protocol(proto)
    proto.write_text("path,label\na.wav,bonafide,\nb.wav,spoof,,\n")
    assert [r.path for r in read_protocol(proto).rows] == ["a.wav", "b.wav"]
