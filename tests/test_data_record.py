"""``wakeguard data record`` with a fake audio backend and scripted keys (no sound card)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner
from wakeguard.edge.protocol import read_protocol
from wakeguard.model.record import Device, align_replay, read_prompts
from wakeguard.tools import data_record_cmd
from wakeguard.tools.cli import app

runner = CliRunner()


class FakeBackend:
    """Two devices; 48 kHz only. Takes are tone bursts; a replay is the played audio delayed,
    high-passed (a small loudspeaker) and quieter. Remembers what it played."""

    RATE = 48_000

    def __init__(self, takes: list[str] | None = None, delay: int = 4_800, has_mic: bool = True):
        self.takes = list(takes or [])  # per record(): "ok", "silent" or "clipped"
        self.delay = delay
        self.has_mic = has_mic
        self.played: list[tuple[str, str, np.ndarray, int]] = []
        self.recorded: list[tuple[str, int]] = []
        self.rng = np.random.default_rng(0)

    def devices(self) -> list[Device]:
        mic = Device(0, "USB Mic", 1 if self.has_mic else 0, 0, 48_000)
        return [mic, Device(1, "Phone Speaker", 0, 2, 48_000)]

    def default_device(self, kind: str) -> int | None:
        return 0 if kind == "input" else 1

    def supports(self, device: Device, rate: int, kind: str) -> bool:
        return rate == self.RATE

    def record(self, device: Device, frames: int, rate: int) -> np.ndarray:
        kind = self.takes.pop(0) if self.takes else "ok"
        self.recorded.append((device.name, rate))
        if kind == "silent":
            return np.zeros(frames, np.float32)
        t = np.arange(frames) / rate
        x = 0.3 * np.sin(2 * np.pi * 1000 * t) * (np.abs(t - t[-1] / 2) < 0.5) + self.rng.normal(0, 0.003, frames)
        if kind == "clipped":
            x = np.clip(x * 20, -1, 1)
        return x.astype(np.float32)

    def play_record(self, output: Device, input: Device, audio: np.ndarray, rate: int) -> np.ndarray:
        self.played.append((output.name, input.name, audio.copy(), rate))
        y = np.concatenate([np.zeros(self.delay, np.float32), audio])[: audio.size]
        y = 0.5 * np.diff(y, prepend=0.0)  # crude high-pass
        return (y + self.rng.normal(0, 0.001, y.size)).astype(np.float32)


def _keys(seq: list[str]):
    it = iter(seq)

    def next_key() -> str:
        try:
            return next(it)
        except StopIteration:  # a test that runs out of keys has a wrong script: fail loudly
            raise AssertionError("key script exhausted") from None

    return next_key


@pytest.fixture()
def prompts(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("# test prompts\nOK Google, what's the weather\nAlexa, turn off the lights\n\nHey Siri, stop\n")
    return p


def _record(monkeypatch, backend, keys, *args):
    monkeypatch.setattr(data_record_cmd, "backend_factory", lambda: backend)
    monkeypatch.setattr(data_record_cmd, "key_source", _keys(keys))
    return runner.invoke(app, ["data", "record", *map(str, args)])


def test_session_records_pairs_with_redo_skip_and_resume(monkeypatch, tmp_path, prompts):
    out = tmp_path / "mine"
    be = FakeBackend(takes=["silent", "ok", "clipped", "ok"])
    # prompt 1: start, silent take -> Enter refused, redo; start, ok -> accept; replay -> accept
    # prompt 2: start, clipped -> redo; start, ok -> accept; replay -> redo; replay -> accept
    # prompt 3: quit before recording
    keys = ["\r", "\r", "r", "\r", "\r", "\r", "\r", "r", "\r", "\r", "r", "\r", "q"]
    r = _record(monkeypatch, be, keys, out, "--prompts", prompts, "--speaker", "ann", "--split", "train", "--output-device", "phone")
    assert r.exit_code == 0, r.output
    assert "flagged:" in r.output and "silent" in r.output and "clipped" in r.output
    assert "a silent take cannot be used" in r.output
    p = read_protocol(out)
    assert [(x.label, x.conditions["prompt"]) for x in p.rows] == [
        ("bonafide", "OK Google, what's the weather"),
        ("spoof", "OK Google, what's the weather"),
        ("bonafide", "Alexa, turn off the lights"),
        ("spoof", "Alexa, turn off the lights"),
    ]
    b, s = p.rows[0], p.rows[1]
    assert (b.speaker, b.split) == ("ann", "train")
    assert b.conditions == {"recording_device": "USB Mic", "playback_device": "", "session": "default", "prompt": b.conditions["prompt"]}
    assert s.conditions["playback_device"] == "Phone Speaker" and s.conditions["recording_device"] == "USB Mic"
    # Both classes 16 kHz mono, the same length (no duration shortcut), replay aligned to the take.
    xb, rb = sf.read(p.root / b.path)
    xs, rs = sf.read(p.root / s.path)
    assert rb == rs == 16_000 and xb.shape == xs.shape == (48_000,)
    env_b = np.abs(xb) > 0.5 * np.abs(xb).max()
    env_s = np.abs(xs) > 0.5 * np.abs(xs).max()
    assert abs(np.argmax(env_b) - np.argmax(env_s)) < 80  # onsets within 5 ms after alignment
    # The replay was played at the device's rate, 0.5 s longer than the take for latency.
    assert len(be.played) == 3 and all(p_[3] == 48_000 and p_[0] == "Phone Speaker" for p_ in be.played)
    assert be.played[0][2].size == 48_000 * 3 + 24_000

    # Rerun: resumes at the third prompt; skip it, so nothing new is written.
    be2 = FakeBackend()
    r = _record(monkeypatch, be2, ["s"], out, "--prompts", prompts, "--speaker", "ann", "--output-device", "1", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert (res["already_done"], res["recorded"], res["skipped"], res["remaining"]) == (2, 0, 1, 1)
    assert be2.recorded == []

    # Rerun and record the last one: the protocol grows to three pairs.
    r = _record(monkeypatch, FakeBackend(), ["\r", "\r", "\r"], out, "--prompts", prompts, "--speaker", "ann", "--output-device", "1")
    assert r.exit_code == 0, r.output
    assert len(read_protocol(out).rows) == 6
    assert "resuming: 2 of 3" in r.output


def test_missing_microphone_points_to_list_devices(monkeypatch, tmp_path, prompts):
    r = _record(monkeypatch, FakeBackend(has_mic=False), [], tmp_path / "x", "--prompts", prompts)
    assert r.exit_code == 2
    assert "no microphone found" in r.output and "--list-devices" in r.output
    r = _record(monkeypatch, FakeBackend(), [], tmp_path / "x", "--prompts", prompts, "--input-device", "Blue Yeti")
    assert r.exit_code == 2 and "no microphone (input) device matches 'Blue Yeti'" in r.output


def test_list_devices(monkeypatch):
    r = _record(monkeypatch, FakeBackend(), [], "--list-devices", "--json")
    assert r.exit_code == 0, r.output
    devs = json.loads(r.stdout)
    assert [(d["name"], d["default"]) for d in devs] == [("USB Mic", "input"), ("Phone Speaker", "output")]


def test_no_portaudio_is_a_clear_error(monkeypatch, tmp_path):
    """The real backend on a machine without PortAudio (or without a sound card)."""
    monkeypatch.setattr(data_record_cmd, "backend_factory", data_record_cmd._sounddevice_backend)
    r = runner.invoke(app, ["data", "record", str(tmp_path / "x"), "--list-devices"])
    if r.exit_code == 0:
        pytest.skip("PortAudio is installed here")
    assert r.exit_code == 2 and "--list-devices" in r.output and "PortAudio" in r.output


def test_shipped_prompts_and_alignment():
    prompts = read_prompts()
    assert len(prompts) >= 30 and all(p and not p.startswith("#") for p in prompts)
    assert any(p.startswith("OK Google") for p in prompts) and any(p.startswith("Hey Mycroft") for p in prompts)
    rng = np.random.default_rng(3)
    take = rng.normal(0, 0.1, 16_000).astype(np.float32)
    replay = np.concatenate([np.zeros(1234, np.float32), 0.3 * take, np.zeros(8000 - 1234, np.float32)])
    aligned, lag = align_replay(take, replay, 8000)
    assert lag == 1234 and aligned.size == take.size
    assert np.allclose(aligned, 0.3 * take)


def test_sounddevice_backend_maps_portaudio_calls():
    """The real backend's calls, against a stand-in for the sounddevice module."""
    from types import SimpleNamespace

    from wakeguard.model.record import SoundDeviceBackend, choose_rate, resolve_device

    calls = []

    def check_input_settings(device, samplerate, channels, dtype):
        if samplerate != 44_100:
            raise ValueError("Invalid sample rate")

    def rec(frames, samplerate, channels, dtype, device):
        calls.append(("rec", frames, samplerate, device))
        return np.full((frames, channels), 0.1, np.float32)

    def playrec(data, samplerate, channels, dtype, device):
        calls.append(("playrec", data.shape, samplerate, device))
        return np.zeros((data.shape[0], channels), np.float32)

    sd = SimpleNamespace(
        query_devices=lambda: [
            {"name": "HDA Intel: ALC892 Analog", "max_input_channels": 2, "max_output_channels": 6, "default_samplerate": 44100.0},
            {"name": "JBL Go", "max_input_channels": 0, "max_output_channels": 2, "default_samplerate": 44100.0},
        ],
        default=SimpleNamespace(device=[0, 0]),
        check_input_settings=check_input_settings,
        check_output_settings=check_input_settings,
        rec=rec,
        playrec=playrec,
        wait=lambda: None,
    )
    be = object.__new__(SoundDeviceBackend)
    be.sd = sd
    mic = resolve_device(be, None, "input")
    spk = resolve_device(be, "jbl", "output")
    assert (mic.name, spk.index) == ("HDA Intel: ALC892 Analog", 1)
    assert choose_rate(be, mic, spk) == 44_100
    assert be.record(mic, 100, 44_100).shape == (100,)
    be.play_record(spk, mic, np.zeros(50, np.float32), 44_100)
    assert calls == [("rec", 100, 44_100, 0), ("playrec", (50, 1), 44_100, (0, 1))]


def test_read_key_takes_lines_from_a_script_and_quits_at_its_end(monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("s\n\n"))
    assert [data_record_cmd._read_key() for _ in range(4)] == ["s\n", "\n", "q", "q"]


@pytest.mark.skipif(not hasattr(__import__("os"), "openpty"), reason="needs a pseudo-terminal")
def test_read_key_reads_one_key_from_a_terminal_and_restores_it(monkeypatch):
    """The real key source on a pseudo-terminal: one key without Enter, Ctrl-C interrupts,
    Ctrl-D quits, and the terminal's settings are put back each time."""
    import os
    import termios
    import threading

    master, slave = os.openpty()
    stdin = os.fdopen(slave, "r")
    monkeypatch.setattr("sys.stdin", stdin)
    before = termios.tcgetattr(slave)

    def press(key: bytes):
        # raw mode flushes what was typed before it, so keep typing until the key is read
        done = threading.Event()

        def typist():
            while not done.wait(0.02):
                os.write(master, key)

        t = threading.Thread(target=typist, daemon=True)
        t.start()
        try:
            return data_record_cmd._read_key()
        finally:
            done.set()
            t.join()
            termios.tcflush(slave, termios.TCIFLUSH)

    try:
        assert press(b"r")[:1] == "r"
        assert termios.tcgetattr(slave) == before
        assert press(b"\x04") == "q"
        with pytest.raises(KeyboardInterrupt):
            press(b"\x03")
        assert termios.tcgetattr(slave) == before
    finally:
        stdin.close()
        os.close(master)
