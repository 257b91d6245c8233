"""`wakeguard data simulate`: the replay simulator, its devices, rooms and data card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner
from wakeguard.edge.protocol import read_protocol
from wakeguard.tools.cli import app

runner = CliRunner()
ATTACK_SIDE = (
    "attack",
    "speaker_device",
    "speaker_class",
    "device_quality",
    "equalised",
    "codec",
    "recorder",
    "attacker_room",
    "attacker_distance",
)
REQUIRED_COLUMNS = (
    "attack",
    "speaker_device",
    "speaker_class",
    "device_quality",
    "room",
    "t60",
    "talker_distance",
    "attacker_distance",
    "snr_db",
    "mic",
)


def _simulate(out: Path, *extra: str) -> object:
    return runner.invoke(app, ["data", "simulate", "--out", str(out), "--size", "tiny", *extra])


@pytest.fixture(scope="module")
def tiny(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "tiny"
    res = _simulate(out, "--workers", "2")
    assert res.exit_code == 0, res.output
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.wav"))} | {
        "protocol.csv": (folder / "protocol.csv").read_bytes()
    }


def test_tiny_build_is_a_valid_balanced_dataset(tiny: Path) -> None:
    prot = read_protocol(tiny)
    for col in REQUIRED_COLUMNS:
        assert col in prot.condition_columns
    assert set(prot.splits()) == {"train", "dev", "eval"}
    for split in ("train", "dev", "eval"):
        n_b, n_s = len(prot.where(split, "bonafide")), len(prot.where(split, "spoof"))
        assert n_b > 0 and n_b == n_s
    for row in prot.rows:
        info = sf.info(str(row.audio_path(tiny)))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 0.9 <= info.duration <= 4.6
        # The label is never readable from the file name.
        assert "spoof" not in row.path and "bonafide" not in row.path
        if row.label == "bonafide":
            assert all(row.conditions[c] == "-" for c in ATTACK_SIDE)
        else:
            assert all(row.conditions[c] not in ("", "-") for c in ATTACK_SIDE)
            assert row.conditions["device_quality"] in ("perfect", "high", "low")
    # Each segment has one bona fide/spoof pair per take (tiny: 2 in train, 1 elsewhere),
    # every take through its own conditions.
    for split, takes in (("train", 2), ("dev", 1), ("eval", 1)):
        by_source: dict[str, list] = {}
        for r in prot.where(split):
            by_source.setdefault(r.conditions["source"], []).append(r)
        for rows in by_source.values():
            assert sorted(r.label for r in rows) == ["bonafide"] * takes + ["spoof"] * takes
            assert len({r.audio_path(tiny).read_bytes() for r in rows}) == 2 * takes
    assert (tiny / "datacard.md").is_file()
    card = json.loads((tiny / "datacard.json").read_text())
    assert card["n_utterances"] == len(prot.rows)
    assert "shortcut_audit" in card and "phone_speaker_check" in card
    # Hundreds of train-only devices are one row per class in the markdown card; every
    # held-out device has its own row, and the JSON lists them all.
    md = (tiny / "datacard.md").read_text()
    for kind in ("loudspeakers", "microphones"):
        devices = card[kind]
        held_out = [n for n, d in devices.items() if d["splits"] != ["train"]]
        train_only = [n for n, d in devices.items() if d["splits"] == ["train"]]
        assert len(train_only) > 100 and held_out
        assert all(f"| {n} |" in md or f"| {n} (measured) |" in md for n in held_out)
        assert not any(f"| {n} |" in md for n in train_only)
        phone = sum(d["class"] == "phone" for n, d in devices.items() if n in train_only)
        assert f"| phone | {phone} |" in md
    # The T60 column is the bin of the room's own T60.
    rooms = {r["name"]: r for r in json.loads((tiny / "rooms.json").read_text())}
    for row in prot.rows:
        lo, hi = (float(v) / 1000 for v in row.conditions["t60"].removesuffix("ms").split("-"))
        assert lo <= rooms[row.conditions["room"]]["t60_s"] <= hi


def test_splits_are_speaker_disjoint_and_eval_holds_out_rooms_and_loudspeakers(tiny: Path) -> None:
    prot = read_protocol(tiny)
    speakers = {s: {r.speaker for r in prot.where(s)} for s in ("train", "dev", "eval")}
    assert not speakers["train"] & speakers["eval"]
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["dev"] & speakers["eval"]
    rooms = {s: {r.conditions["room"] for r in prot.where(s)} for s in ("train", "eval")}
    assert not rooms["train"] & rooms["eval"]
    from wakeguard.model.devices import build_devices

    devices = build_devices(None)
    train_only = set(devices.speakers_for("train"))
    eval_only = set(devices.speakers_for("eval")) - {"perfect"}
    assert not train_only & eval_only
    for r in prot.where("eval", "spoof"):
        assert r.conditions["speaker_device"] not in train_only - {"perfect"}
    # Microphones are held out the same way, victim devices and recorders alike.
    train_mics = set(devices.victim_mics_for("train")) | set(devices.recorders_for("train"))
    for split in ("dev", "eval"):
        for r in prot.where(split):
            assert r.conditions["mic"] not in train_mics
            if r.label == "spoof":
                assert r.conditions["recorder"] not in train_mics
    # Phone and laptop microphones record attacks and listen for live speech alike.
    both = set(devices.victim_mics_for("train")) & set(devices.recorders_for("train"))
    assert {devices.mics[m].mic_class for m in both} == {"phone", "laptop"}


def test_build_is_deterministic_and_independent_of_workers(tiny: Path, tmp_path: Path) -> None:
    res = _simulate(tmp_path / "again", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert _snapshot(tmp_path / "again") == _snapshot(tiny)


def test_interrupted_build_resumes_to_the_same_corpus(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    shutil.copytree(tiny, out)
    # Simulate an interruption: one source's metadata never written, another's audio lost,
    # a half-written file left behind, no protocol yet.
    metas = sorted((out / "meta").glob("*.json"))
    metas[0].unlink()
    lost = json.loads(metas[1].read_text())["rows"][0]["path"]
    (out / lost).unlink()
    (out / "audio" / "train" / "half.wav.part").write_bytes(b"RIFF")
    (out / "meta" / "half.part.json").write_text("{")
    (out / "protocol.csv").unlink()
    res = _simulate(out, "--workers", "1")
    assert res.exit_code == 0, res.output
    assert _snapshot(out) == _snapshot(tiny)
    assert not list(out.rglob("*.part*"))


def test_a_killed_build_resumes_to_the_same_corpus(tiny: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "wakeguard.tools.cli",
        "data",
        "simulate",
        "--out",
        str(out),
        "--size",
        "tiny",
        "--workers",
        "1",
        "--json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "meta").glob("*.json"))) >= 2 if (out / "meta").is_dir() else False:
            os.kill(proc.pid, signal.SIGKILL)  # as hard as a power cut
            break
        time.sleep(0.02)
    proc.wait(timeout=120)
    res = _simulate(out, "--workers", "2")
    assert res.exit_code == 0, res.output
    assert _snapshot(out) == _snapshot(tiny)


def test_a_full_disk_stops_the_build_at_once_and_a_rerun_resumes(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import wakeguard.model.simulate as sim

    real_write = sim.write_wav
    calls: list[Path] = []

    def full_after_ten(path: Path, y: np.ndarray) -> Path:
        calls.append(Path(path))
        if len(calls) > 10:
            raise OSError(errno.ENOSPC, f"cannot write {path}: disk full")
        return real_write(path, y)

    monkeypatch.setattr(sim, "write_wav", full_after_ten)
    out = tmp_path / "full"
    res = _simulate(out, "--workers", "1")
    assert res.exit_code != 0
    text = " ".join(res.output.split())
    assert "the disk is full" in text and calls[-1].name in text and "rerun to resume" in text
    assert len(calls) == 11  # the first failure ends the build: no file after it is tried
    assert not (out / "protocol.csv").exists()
    monkeypatch.setattr(sim, "write_wav", real_write)
    res = _simulate(out, "--workers", "1")
    assert res.exit_code == 0, res.output
    assert _snapshot(out) == _snapshot(tiny)


def test_a_different_build_in_the_same_folder_is_refused(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "other"
    shutil.copytree(tiny, out)
    res = _simulate(out, "--seed", "7")
    assert res.exit_code != 0
    assert "different build" in res.output
    res = runner.invoke(app, ["data", "simulate", "--out", str(tmp_path / "x"), "--size", "huge"])
    assert res.exit_code == 2 and "unknown size" in res.output


def test_missing_and_corrupt_speech_give_clear_errors(shared_dir: Path, tmp_path: Path) -> None:
    res = _simulate(tmp_path / "o1", "--speech", str(tmp_path / "nowhere"))
    assert res.exit_code == 2
    assert "speech folder not found" in res.output
    speech = tmp_path / "speech"
    speech.mkdir()
    for f in sorted((shared_dir / "speech" / "librispeech" / "train-clean-100").glob("*.flac"))[:8]:
        shutil.copy(f, speech / f.name)
    bad = speech / "9999-1-0000.flac"
    bad.write_bytes(b"fLaC this is not audio")
    res = _simulate(tmp_path / "o2", "--speech", str(speech))
    assert res.exit_code == 2
    assert "9999-1-0000.flac" in res.output and "unreadable" in res.output


def test_a_silent_source_fails_the_build_naming_it(shared_dir: Path, tmp_path: Path) -> None:
    speech = tmp_path / "speech"
    speech.mkdir()
    for f in sorted((shared_dir / "speech" / "librispeech" / "train-clean-100").glob("*.flac"))[:6]:
        shutil.copy(f, speech / f.name)
    sf.write(str(speech / "9998-1-0000.wav"), np.zeros(16000 * 3), 16000)  # valid but silent
    out = tmp_path / "o"
    res = _simulate(out, "--speech", str(speech), "--workers", "1")
    assert res.exit_code != 0
    assert "9998-1-0000.wav" in res.output and "silent" in res.output
    assert not (out / "protocol.csv").exists()  # no protocol that silently lacks a source


def test_utterances_are_cut_at_low_energy_points(speech_file: Path) -> None:
    from wakeguard.edge.audio import load_audio
    from wakeguard.model.simulate import cut_utterances

    x = load_audio(speech_file).astype(np.float64)
    segs = cut_utterances(x, np.random.default_rng(0))
    assert len(segs) >= 2
    for (_, b), (c, _) in zip(segs, segs[1:], strict=False):
        assert b <= c
    for a, b in segs:
        assert 0.8 <= (b - a) / 16000 <= 3.4
        edge = np.sqrt(np.mean(x[a : a + 160] ** 2)) + np.sqrt(np.mean(x[b - 160 : b] ** 2))
        assert edge < np.sqrt(np.mean(x[a:b] ** 2))  # starts and ends quieter than its speech


def test_parametric_phone_speaker_matches_the_measured_nexus_one(shared_dir: Path) -> None:
    from wakeguard.model.devices import build_devices, compare_phone_speaker

    devices = build_devices(shared_dir / "devices")
    check = compare_phone_speaker(devices)
    assert check.max_abs_error_db < 6.0
    measured = dict(zip(check.freqs, check.measured_db, strict=True))
    # The measured speaker itself: the steep bass cut the README describes.
    assert measured[400.0] < -30 and measured[600.0] < -10 and measured[4000.0] > 8
    nexus = devices.loudspeakers["nexus-one"]
    assert nexus.measured and nexus.quality == "low" and 550 < nexus.f_min < 800


def test_measured_device_responses_leave_their_measurement_room_behind(shared_dir: Path) -> None:
    """The Nexus One microphone IR holds its measurement room (11 dB decay in 50 ms); the
    simulator's microphone must not add that room to live speech, only the response."""
    import soundfile as sf
    from wakeguard.model.devices import NEXUS_MIC_IR, build_devices, fir_magnitude_db

    raw, rate = sf.read(str(shared_dir / "devices" / NEXUS_MIC_IR))
    raw = raw if raw.ndim == 1 else raw[:, 0]
    peak = int(np.argmax(np.abs(raw)))
    tail = np.sum(raw[peak + int(0.01 * rate) :] ** 2) / np.sum(raw[peak:] ** 2)
    assert tail > 0.3  # the file itself: most of its energy comes after 10 ms

    mic = build_devices(shared_dir / "devices").mics["nexus-one-mic"]
    e = np.cumsum(mic.fir**2) / np.sum(mic.fir**2)
    assert e[int(0.005 * 16000)] > 0.99  # the device: all but 1% within 5 ms
    # ...with the measured response kept: within about +-6 dB from 100 Hz to 4 kHz.
    db = fir_magnitude_db(mic.fir, np.geomspace(100, 4000, 40))
    assert np.all(np.abs(db) < 7.0)


def test_extra_train_and_dev_devices_leave_the_eval_devices_as_they_were(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The many train-only and the extra dev devices come from their own random streams."""
    from wakeguard.model import devices as dv

    full = dv.build_devices(None)
    assert len(set(full.speakers_for("train")) - {"perfect"}) == sum(
        n - 2 + dv.EXTRA_TRAIN_SPEAKERS_PER_CLASS[c] for c, n in dv.SPEAKERS_PER_CLASS.items()
    )
    assert len(set(full.speakers_for("dev")) - {"perfect"}) == sum(
        1 + dv.EXTRA_DEV_SPEAKERS_PER_CLASS[c] for c in dv.SPEAKERS_PER_CLASS
    )
    monkeypatch.setattr(dv, "EXTRA_SPEAKERS_PER_CLASS", {"train": {}, "dev": {}})
    monkeypatch.setattr(dv, "EXTRA_MICS_PER_CLASS", {"train": {}, "dev": {}})
    bare = dv.build_devices(None)
    assert full.speakers_for("eval") == bare.speakers_for("eval")
    assert full.victim_mics_for("eval") == bare.victim_mics_for("eval")
    for name in bare.speakers_for("eval"):
        np.testing.assert_array_equal(full.loudspeakers[name].fir, bare.loudspeakers[name].fir)
    for name in set(bare.victim_mics_for("eval")) | set(bare.recorders_for("eval")):
        np.testing.assert_array_equal(full.mics[name].fir, bare.mics[name].fir)
    assert len(set(full.loudspeakers)) == len(full.loudspeakers)  # no name reused


def test_train_replays_favour_good_loudspeakers_and_dev_eval_draws_do_not_depend_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from wakeguard.model import devices as dv
    from wakeguard.model import simulate as sim

    rooms = {split: [f"{split}-r{i}" for i in range(8)] for split in ("train", "dev", "eval")}
    ctx = SimpleNamespace(
        devices=dv.build_devices(None),
        rooms_by_split=rooms,
        oracle="",
        directivity=False,
        direct_share=0.25,
        direct_quality="all",
    )

    def draws(split: str, n: int) -> list[dict]:
        rng = np.random.default_rng(7)
        return [sim.draw_conditions("spoof", split, ctx, rng) for _ in range(n)]

    def class_shares(conds: list[dict]) -> dict[str, float]:
        cls = [ctx.devices.loudspeakers[c["speaker_device"]].device_class for c in conds]
        return {k: cls.count(k) / len(cls) for k in sim.SPEAKER_CLASS_WEIGHTS}

    train, dev = class_shares(draws("train", 2000)), class_shares(draws("dev", 2000))
    for k in sim.SPEAKER_CLASS_WEIGHTS:
        assert abs(train[k] - sim.TRAIN_SPEAKER_CLASS_WEIGHTS[k]) < 0.04, (k, train)
        assert abs(dev[k] - sim.SPEAKER_CLASS_WEIGHTS[k]) < 0.04, (k, dev)
    good = ("bluetooth", "smart-speaker", "perfect")
    assert sum(train[k] for k in good) > sum(dev[k] for k in good) + 0.15
    before = draws("eval", 200)
    monkeypatch.setattr(sim, "TRAIN_SPEAKER_CLASS_WEIGHTS", {"phone": 1.0})
    assert draws("eval", 200) == before
    assert {c["speaker_device"] for c in draws("train", 50)} <= set(
        n for n, d in ctx.devices.loudspeakers.items() if d.device_class == "phone"
    )


@pytest.mark.parametrize("oracle", ["rooms", "devices", "mics", "all"])
def test_oracle_builds_share_only_the_named_conditions_with_eval(oracle: str) -> None:
    """Train and dev draw the named conditions from eval's lists, the rest from their own;
    eval draws exactly as in a normal build."""
    from types import SimpleNamespace

    from wakeguard.model import devices as dv
    from wakeguard.model import simulate as sim

    rooms = {split: [f"{split}-r{i}" for i in range(8)] for split in ("train", "dev", "eval")}
    devices = dv.build_devices(None)
    normal = SimpleNamespace(
        devices=devices, rooms_by_split=rooms, oracle="",
        directivity=False,
        direct_share=0.25,
        direct_quality="all",
    )
    study = SimpleNamespace(
        devices=devices, rooms_by_split=rooms, oracle=oracle,
        directivity=False,
        direct_share=0.25,
        direct_quality="all",
    )

    def draws(ctx: SimpleNamespace, split: str) -> list[dict]:
        rng = np.random.default_rng(3)
        return [sim.draw_conditions("spoof", split, ctx, rng) for _ in range(300)]

    assert draws(study, "eval") == draws(normal, "eval")
    eval_spk = set(devices.speakers_for("eval"))
    eval_mics = set(devices.victim_mics_for("eval"))
    eval_rec = set(devices.recorders_for("eval"))
    for split in ("train", "dev"):
        got = draws(study, split)
        in_eval = {
            "rooms": all(
                c["room"] in rooms["eval"] and c["attacker_room"] in rooms["eval"] for c in got
            ),
            "speakers": all(c["speaker_device"] in eval_spk for c in got),
            "recorders": all(c["recorder"] in eval_rec for c in got),
            "mics": all(c["mic"] in eval_mics for c in got),
        }
        want = {
            "rooms": oracle in ("rooms", "all"),
            "speakers": oracle in ("devices", "all"),
            "recorders": oracle in ("devices", "all"),
            "mics": oracle in ("devices", "mics", "all"),
        }
        assert in_eval == want, (split, in_eval)
        # what is not shared stays the split's own, drawn as in a normal build
        mine = draws(normal, split)
        if not want["mics"]:
            assert [c["mic"] for c in got] == [c["mic"] for c in mine]


def test_an_oracle_build_keeps_eval_and_says_what_it_is(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "oracle"
    res = _simulate(out, "--workers", "2", "--oracle", "rooms")
    assert res.exit_code == 0, res.output
    prot = read_protocol(out)
    eval_rooms = {r.conditions["room"] for r in prot.where("eval")}
    assert {r.conditions["room"] for r in prot.where("train")} <= eval_rooms
    ours, theirs = _snapshot(out), _snapshot(tiny)
    evals = [k for k in theirs if k.startswith("audio/eval/")]
    assert evals and all(ours[k] == theirs[k] for k in evals)
    assert json.loads((out / "build.json").read_text())["oracle"] == "rooms"
    assert "Oracle build (`--oracle rooms`)" in (out / "datacard.md").read_text()
    # a normal build is not resumed into an oracle one, nor the other way round
    normal = tmp_path / "normal"
    shutil.copytree(tiny, normal)
    res = _simulate(normal, "--oracle", "rooms")
    assert res.exit_code != 0 and "different build" in res.output
    res = _simulate(out)
    assert res.exit_code != 0 and "different build" in res.output
    res = _simulate(tmp_path / "x", "--oracle", "speakers")
    assert res.exit_code == 2 and "unknown oracle" in res.output


def test_extra_rooms_leave_the_eval_rooms_as_they_were() -> None:
    from dataclasses import replace

    from wakeguard.model.simulate import SIZES, build_rooms

    preset = SIZES["default"]
    full = build_rooms(preset, 0)
    bare = build_rooms(replace(preset, extra_rooms={}), 0)
    assert [r for r in full if r.split == "eval"] == [r for r in bare if r.split == "eval"]
    for split in ("train", "dev"):
        n = preset.rooms[split] + preset.extra_rooms[split]
        names = [r.name for r in full if r.split == split]
        assert len(names) == len(set(names)) == n
        assert [r for r in full if r.split == split][: preset.rooms[split]] == [
            r for r in bare if r.split == split
        ]


def test_loudspeaker_distortion_is_calibrated_and_grows_with_level_and_bass() -> None:
    from wakeguard.model.devices import REFERENCE_RMS, make_loudspeaker, speech_shaped_noise

    spk = make_loudspeaker("p", "phone", np.random.default_rng(3))
    x = speech_shaped_noise(np.random.default_rng(0), 32000) * REFERENCE_RMS

    def lnr(sig: np.ndarray) -> float:
        lin, nl = spk._branches(sig)
        return 10 * np.log10(np.mean(lin**2) / np.mean((spk.nl_gain * nl) ** 2))

    assert abs(lnr(x) - spk.lnr_db) < 1.5
    assert lnr(2 * x) < lnr(x) - 4  # 6 dB louder: the polynomial terms grow faster
    eq = np.convolve(x, spk.inverse_eq())[: len(x)]
    eq *= REFERENCE_RMS / np.sqrt(np.mean(eq**2))
    assert lnr(eq) < lnr(x)  # the equaliser's bass boost drives the cone harder
    # And the equalised response is flatter over 300 Hz-7 kHz.
    from wakeguard.model.devices import fir_magnitude_db

    f = np.geomspace(300, 7000, 60)
    raw = fir_magnitude_db(spk.fir, f)
    flat = fir_magnitude_db(np.convolve(spk.fir, spk.inverse_eq()), f)
    assert np.std(flat) < 0.5 * np.std(raw)
    y, _ = spk.play(x, 0.0)
    assert y.shape == x.shape and np.all(np.isfinite(y))


def test_device_quality_follows_asvspoof_terms() -> None:
    from wakeguard.model.devices import make_loudspeaker

    rng = np.random.default_rng(0)
    assert make_loudspeaker("x", "perfect", rng).quality == "perfect"
    for _ in range(3):
        assert make_loudspeaker("x", "phone", rng).quality == "low"  # f_min > 600 Hz
        s = make_loudspeaker("x", "smart-speaker", rng)
        assert s.f_min < 600 and s.bandwidth > 10_000


def test_rooms_have_their_t60_and_lose_direct_sound_with_distance() -> None:
    from wakeguard.model.rooms import compute_irs, draw_room

    rng = np.random.default_rng(1)
    for size, t60 in (("a", "c"), ("b", "b"), ("c", "a")):
        cfg = draw_room("r", "train", size, t60, rng)
        irs = compute_irs(cfg)
        assert abs(irs.measured_t60 - cfg.t60) < 0.25 * cfg.t60
        drr = {}
        for k, h in irs.victim.items():
            d = irs.victim_delay[k]
            drr[k] = np.sum(h[d - 40 : d + 41] ** 2) / np.sum(h[d + 41 :] ** 2)
        if cfg.victim["a"].distance < cfg.victim["c"].distance:
            assert drr["a"] > drr["c"]


def test_source_directivity_keeps_the_direct_sound_and_thins_the_reflections_per_band() -> None:
    from wakeguard.model.rooms import DIRECT_SAMPLES, compute_irs, directional, draw_room

    cfg = draw_room("r", "train", "b", "c", np.random.default_rng(3))
    irs = compute_irs(cfg)
    h, d = irs.victim["c"], irs.victim_delay["c"]
    cut = d + DIRECT_SAMPLES
    # A flat 3 dB directivity index halves the reflected energy and leaves the direct sound.
    flat = directional(h, d, (3.0,) * 7)
    np.testing.assert_allclose(flat[:cut], h[:cut], atol=1e-6 * np.abs(h).max())
    ratio = np.sum(flat[cut:] ** 2) / np.sum(h[cut:] ** 2)
    assert abs(ratio - 10 ** (-3 / 10)) < 0.02

    # A talker beams its highs: 4 kHz reverberation falls by about its 4 kHz DI re omni.
    def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
        spec = np.abs(np.fft.rfft(x[cut:], 1 << 16)) ** 2
        f = np.fft.rfftfreq(1 << 16, 1 / 16000)
        return float(np.sum(spec[(f >= lo) & (f < hi)]))

    talker = directional(h, d, (2.0, 2.0, 2.5, 3.5, 4.5, 5.5, 6.5))
    drop_low = 10 * np.log10(band_energy(talker, 200, 300) / band_energy(h, 200, 300))
    drop_high = 10 * np.log10(band_energy(talker, 3500, 4500) / band_energy(h, 3500, 4500))
    assert abs(drop_low + 2.0) < 0.5 and abs(drop_high + 5.5) < 0.5


def test_a_directivity_build_renders_the_same_draws_with_directional_sources(
    tiny: Path, tmp_path: Path
) -> None:
    import csv

    out = tmp_path / "di"
    res = _simulate(out, "--directivity")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "build.json").read_text())["directivity"] is True
    assert "directivity" not in json.loads((tiny / "build.json").read_text())
    # The same utterances under the same conditions (the protocol is identical); only the
    # reflections differ, so every file changes (the endpointer's cut may move a little,
    # as it cuts where the reverberation dies away).
    assert (out / "protocol.csv").read_bytes() == (tiny / "protocol.csv").read_bytes()
    rows = read_protocol(out).rows
    for row in rows:
        a, _ = sf.read(out / row.path)
        b, _ = sf.read(tiny / row.path)
        assert abs(len(a) - len(b)) < 0.1 * len(b)
        assert len(a) != len(b) or not np.array_equal(a, b)
    exact = list(csv.DictReader((out / "simulation.csv").open()))
    di = {r["path"]: float(r["source_di_4k_db"]) for r in exact}
    assert all(0.0 < v < 12.0 for v in di.values())
    assert "source_di_4k_db" not in (tiny / "simulation.csv").read_text().splitlines()[0]
    assert "Source directivity" in (out / "datacard.md").read_text()
    assert "omnidirectional" in (tiny / "datacard.md").read_text()
    # A folder holding the default build is not resumed as a directivity build.
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    res = _simulate(other, "--directivity")
    assert res.exit_code != 0 and "directivity differs" in res.output


def test_direct_replays_play_the_source_itself_and_leave_every_other_utterance_alone(
    tiny: Path, tmp_path: Path
) -> None:
    """The default build plays a fifth of the low-quality loudspeakers' replays from the
    source recording itself; every other utterance is the one a build without direct
    replays (``--direct-share 0``, build 8's corpus) renders."""
    plain_dir = tmp_path / "plain"
    res = _simulate(plain_dir, "--direct-share", "0")
    assert res.exit_code == 0, res.output
    manifest = json.loads((plain_dir / "build.json").read_text())
    assert manifest["direct_share"] == 0 and "direct_quality" not in manifest
    default = json.loads((tiny / "build.json").read_text())
    assert (default["direct_share"], default["direct_quality"]) == (0.2, "low")
    out = tmp_path / "direct"
    res = _simulate(out, "--direct-share", "0.25", "--direct-quality", "all")
    assert res.exit_code == 0, res.output
    plain = {r.path: r for r in read_protocol(plain_dir).rows}
    for build, folder, qualities in (
        ("default", tiny, {"low"}),
        ("all qualities, 0.25", out, {"high", "low"}),
    ):
        rows = {r.path: r for r in read_protocol(folder).rows}
        assert rows.keys() == plain.keys()
        direct = [p for p, r in rows.items() if r.conditions["recorder"] == "direct"]
        assert direct, f"the tiny {build} build of seed 0 holds direct replays"
        for p, r in rows.items():
            c = r.conditions
            if p in direct:
                # the source recording itself through a real loudspeaker: no attacker's
                # room, distance or recorder, attack code D + the loudspeaker's quality letter
                assert r.label == "spoof" and c["speaker_class"] != "perfect"
                assert c["device_quality"] in qualities, (build, c)
                assert c["attacker_room"] == c["attacker_distance"] == "direct"
                assert c["attack"] == "D" + {"high": "B", "low": "C"}[c["device_quality"]]
                assert plain[p].conditions["recorder"] != "direct"
                assert (folder / p).read_bytes() != (plain_dir / p).read_bytes()
            else:
                # every other utterance is the one the build without renders: the direct
                # draw has its own random stream
                assert c == plain[p].conditions
                assert (folder / p).read_bytes() == (plain_dir / p).read_bytes()
        assert "direct spoof" in (folder / "datacard.md").read_text()
    assert "low-quality loudspeaker" in (tiny / "datacard.md").read_text()
    assert "No direct spoofs" in (plain_dir / "datacard.md").read_text()
    # A folder holding one build is not resumed as another, and the share is a fraction.
    res = _simulate(out)
    assert res.exit_code != 0 and "direct_share differs" in res.output
    res = _simulate(out, "--direct-share", "0.25")  # the default quality, low
    assert res.exit_code != 0 and "direct_quality differs" in res.output
    res = _simulate(plain_dir)
    assert res.exit_code != 0 and "direct_share differs" in res.output
    res = _simulate(tmp_path / "bad", "--direct-share", "1.5")
    assert res.exit_code != 0
    res = _simulate(tmp_path / "bad", "--direct-quality", "medium")
    assert res.exit_code != 0 and "unknown direct_quality 'medium'" in res.output
    assert not (tmp_path / "bad" / "build.json").exists()
    res = _simulate(tmp_path / "bad", "--direct-share", "0", "--direct-quality", "low")
    assert res.exit_code != 0 and "a share of 0 has none" in res.output
    assert not (tmp_path / "bad" / "build.json").exists()


def test_a_quality_filter_keeps_the_direct_replays_of_that_quality_and_no_others() -> None:
    """``direct_quality`` leaves the direct draw as it is and keeps it only where the
    loudspeaker has that quality: the low-quality build's direct replays are the full
    build's low-quality ones, and every other draw is the same."""
    from types import SimpleNamespace

    from wakeguard.model import devices as dv
    from wakeguard.model import simulate as sim

    rooms = {split: [f"{split}-r{i}" for i in range(8)] for split in ("train", "dev", "eval")}
    devices = dv.build_devices(None)

    def draws(quality: str) -> list[dict]:
        ctx = SimpleNamespace(
            devices=devices,
            rooms_by_split=rooms,
            oracle="",
            directivity=False,
            direct_share=0.5,
            direct_quality=quality,
        )
        rng = np.random.default_rng(11)
        return [sim.draw_conditions("spoof", "dev", ctx, rng) for _ in range(400)]

    def rest(c: dict) -> dict:
        return {k: v for k, v in c.items() if k != "direct"}

    every = draws("all")
    qualities = [
        devices.loudspeakers[c["speaker_device"]].quality for c in every if c.get("direct")
    ]
    assert {"high", "low"} <= set(qualities)  # both filters below have direct replays to keep
    for q in ("low", "high"):
        for full, c in zip(every, draws(q), strict=True):
            q_spk = devices.loudspeakers[c["speaker_device"]].quality
            assert c.get("direct", False) == (full.get("direct", False) and q_spk == q)
            assert rest(c) == rest(full)
    with pytest.raises(ValueError, match="direct_quality"):
        sim.simulate(Path("unused"), direct_share=0.5, direct_quality="medium")


def test_loudspeakers_get_a_scale_of_their_class_directivity_for_every_build(
    shared_dir: Path,
) -> None:
    from wakeguard.model.devices import SPEAKER_DI_DB, SPEAKER_DI_SCALE, build_devices

    devices = build_devices(shared_dir / "devices", seed=0)
    again = build_devices(shared_dir / "devices", seed=0)
    lo, hi = SPEAKER_DI_SCALE
    for name, spk in devices.loudspeakers.items():
        base = np.asarray(SPEAKER_DI_DB[spk.device_class])
        scale = np.asarray(spk.directivity_db) / base
        assert np.all(scale >= lo - 1e-3) and np.all(scale <= hi + 1e-3)
        assert np.ptp(scale) < 0.01  # one scale of the class curve
        assert spk.directivity_db == again.loudspeakers[name].directivity_db
    smart = [s for s in devices.loudspeakers.values() if s.device_class == "smart-speaker"]
    perfect = devices.loudspeakers["perfect"]
    assert all(s.directivity_db[5] < perfect.directivity_db[5] for s in smart)


def test_shortcut_audit_catches_a_planted_silence_shortcut(tmp_path: Path) -> None:
    from wakeguard.edge.audio import write_wav
    from wakeguard.edge.protocol import Row, write_protocol
    from wakeguard.model.datacard import build_datacard

    rng = np.random.default_rng(0)
    rows = []
    for i in range(80):
        for label in ("bonafide", "spoof"):
            split = "train" if i < 50 else "eval"
            tail = 0.1 if label == "bonafide" else 0.6  # ASVspoof 2019 PA's artefact
            speech = rng.normal(0, 0.1, int(16000 * rng.uniform(1, 2)))
            x = np.concatenate([np.zeros(1600), speech, np.zeros(int(16000 * tail))])
            x += rng.normal(0, 1e-4, len(x))
            path = f"{split}/{label}{i}.wav"
            write_wav(tmp_path / path, x)
            rows.append(Row(path, label, f"s{i}", split))
    write_protocol(tmp_path / "protocol.csv", rows)
    audit = build_datacard(tmp_path)["shortcut_audit"]
    assert audit["passed"] is False
    assert audit["min_eer"] < 0.1


@pytest.mark.slow
def test_small_build_passes_the_shortcut_audit(shared_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["data", "simulate", "--out", str(tmp_path / "s"), "--size", "small", "--json"]
    )
    assert res.exit_code == 0, res.output
    card = json.loads(res.output.strip().splitlines()[-1])
    assert card["counts"]["eval"]["bonafide"] == card["counts"]["eval"]["spoof"] >= 100
    assert card["shortcut_audit"]["passed"], card["shortcut_audit"]
