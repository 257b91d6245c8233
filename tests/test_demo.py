"""``wakeguard demo``: the terminal UI fed from files (CliRunner and a real terminal under tmux)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from wakeguard.edge.audio import load_audio, write_wav
from wakeguard.tools.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """Two files, each quiet room noise around one or two spoken commands of real speech."""
    folder = tmp_path_factory.mktemp("demo_in")
    files = sorted((shared_dir / "speech" / "librispeech" / "test-other").rglob("*.flac"))[:2]
    rng = np.random.default_rng(0)

    def quiet(s: float) -> np.ndarray:
        return rng.normal(0, 3e-4, int(s * 16_000)).astype(np.float32)

    for i, f in enumerate(files):
        x = load_audio(f)[4_000 : 4_000 + 40_000]
        write_wav(folder / f"cmd{i}.wav", np.concatenate([quiet(0.8), x, quiet(1.0)]))
    return folder


def test_demo_files_show_verdicts(tiny_bundle: Path, commands: Path):
    res = runner.invoke(app, ["demo", "--input", str(commands), "--model", str(tiny_bundle), "--speed", "0"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "wakeguard demo" in out and "last verdicts" in out and "dBFS" in out
    assert "done: 2 file(s)" in out
    assert "cmd0.wav" in out and "cmd1.wav" in out
    assert out.count("LIVE ✓") + out.count("REPLAY ✗") >= 2  # a verdict per command at least
    assert " ms" in out  # latency column


def test_demo_challenge_from_a_file_shows_both_takes(tiny_bundle: Path, commands: Path):
    pytest.importorskip("scipy")
    res = runner.invoke(
        app, ["demo", "--challenge", "--input", str(commands / "cmd0.wav"), "--model", str(tiny_bundle), "--speed", "0"]
    )
    assert res.exit_code == 0, res.output
    assert "1 · live take" in res.output and "2 · replayed take" in res.output
    assert "told apart" in res.output  # the round was decided one way or the other
    assert "↻ cmd0.wav" in res.output  # the replayed take went through the listener too


def test_demo_without_microphone_says_how_to_pick_one(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as on a machine without it
    res = runner.invoke(app, ["demo", "--model", str(tiny_bundle)])
    assert res.exit_code == 2
    assert "--list-devices" in res.output and "--input" in res.output
    res = runner.invoke(app, ["demo", "--list-devices"])
    assert res.exit_code == 2 and "sounddevice" in res.output


def test_demo_bad_input_is_named(tiny_bundle: Path, tmp_path: Path):
    res = runner.invoke(app, ["demo", "--input", str(tmp_path), "--model", str(tiny_bundle)])
    assert res.exit_code == 2 and str(tmp_path) in res.output and "no audio files" in res.output
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    res = runner.invoke(app, ["demo", "--input", str(bad), "--model", str(tiny_bundle)])
    assert res.exit_code == 2 and "bad.wav" in res.output and "unreadable" in res.output


def test_demo_plays_the_rest_of_a_folder_past_a_bad_file(tiny_bundle: Path, commands: Path, tmp_path: Path):
    folder = tmp_path / "takes"
    folder.mkdir()
    shutil.copy(commands / "cmd0.wav", folder / "a.wav")
    (folder / "b.wav").write_text("not audio")
    shutil.copy(commands / "cmd1.wav", folder / "c.wav")
    res = runner.invoke(app, ["demo", "--input", str(folder), "--speed", "0", "--model", str(tiny_bundle)])
    assert res.exit_code == 2  # as screen: the others still run, the failure shows in the code
    assert "b.wav: unreadable audio" in res.output
    assert "a.wav" in res.output and "c.wav" in res.output  # both good files were played
    assert "could not be played" in res.output


def _pane(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def _wait_for(session: str, needle: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _pane(session)
        if needle in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{needle!r} never appeared on the screen:\n{screen}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_demo_in_a_real_terminal(tiny_bundle: Path, commands: Path, tmp_path: Path):
    """Type the demo into a shell in a tmux pane (a real terminal: Rich Live redraws in place),
    read the screen while it plays and when it is done, then stop a second run with Ctrl-C."""
    session = f"wgdemo-{uuid.uuid4().hex[:8]}"
    exe = Path(sys.executable).parent / "wakeguard"
    env = {**os.environ, "TERM": "xterm-256color", "PS1": "$ "}
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "110", "-y", "40", "bash --norc --noprofile"],
        check=True,
        env=env,
    )
    try:
        run = f"{exe} demo --input {commands} --model {tiny_bundle}"
        subprocess.run(["tmux", "send-keys", "-t", session, f"clear; {run} --speed 2; echo DEMO-EXIT=$?", "Enter"], check=True)
        running = _wait_for(session, "playing cmd")
        assert "dBFS" in running and "input   file cmd" in running and "voice" in running
        screen = _wait_for(session, "DEMO-EXIT=")
        (tmp_path / "screen.txt").write_text(screen)
        assert "DEMO-EXIT=0" in screen, screen
        assert "last verdicts" in screen and "done: 2 file(s)" in screen
        assert screen.count("LIVE ✓") + screen.count("REPLAY ✗") >= 2
        assert screen.count("wakeguard demo") == 1  # redrawn in place, not scrolled frame after frame

        subprocess.run(["tmux", "send-keys", "-t", session, f"clear; {run} --speed 1; echo STOP-EXIT=$?", "Enter"], check=True)
        _wait_for(session, "playing cmd0")
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        screen = _wait_for(session, "STOP-EXIT=")
        assert "STOP-EXIT=0" in screen and "stopped" in screen, screen
        assert "Traceback" not in screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


class _FakeStatus:
    input_overflow = False


class FakeSoundDevice:
    """A sounddevice stand-in: a talker says one command into the microphone; what the demo
    plays through the speaker comes back into the microphone bass-cut and quieter (a phone
    speaker in the room), so the mic challenge runs end to end without audio hardware."""

    RATE = 48_000

    def __init__(self, talker: np.ndarray):
        import threading

        self.talker = talker  # at RATE, mono
        self.played: np.ndarray | None = None
        self.play_at = 0
        self.pos = 0
        self.lock = threading.Lock()
        self.default = type("Default", (), {"device": [0, 1]})()

    # discovery
    def query_hostapis(self):
        return [{"name": "fake"}]

    def query_devices(self, device=None, kind=None):
        devs = [
            {"name": "Fake USB Mic", "index": 0, "hostapi": 0, "max_input_channels": 2, "max_output_channels": 0, "default_samplerate": float(self.RATE)},
            {"name": "Fake Speaker", "index": 1, "hostapi": 0, "max_input_channels": 0, "max_output_channels": 2, "default_samplerate": float(self.RATE)},
        ]
        if kind == "output":
            return devs[1]
        return devs if device is None else devs[int(device)]

    def check_input_settings(self, device=None, samplerate=None, channels=None, dtype=None):
        if samplerate != self.RATE:  # a USB mic that refuses 16 kHz
            raise ValueError("Invalid sample rate")

    # output
    def play(self, y, samplerate, device=None):
        assert samplerate == self.RATE
        spec = np.fft.rfft(np.asarray(y, dtype=np.float64))
        f = np.fft.rfftfreq(len(y), 1 / samplerate)
        spec *= 1.0 / (1.0 + (600.0 / np.maximum(f, 1.0)) ** 4)  # a phone speaker's bass cut
        with self.lock:
            self.played = (0.5 * np.fft.irfft(spec, len(y))).astype(np.float32)
            self.play_at = self.pos

    # input
    def InputStream(self, device, samplerate, channels, dtype, blocksize, callback):  # noqa: N802
        fake = self

        class Stream:
            active = True

            def start(self):
                import threading

                self._stop = threading.Event()
                self._t = threading.Thread(target=self._run, daemon=True)
                self._t.start()

            def _run(self):
                rng = np.random.default_rng(0)
                while not self._stop.is_set():
                    with fake.lock:
                        i = fake.pos
                        block = rng.normal(0, 3e-4, blocksize).astype(np.float32)
                        t = fake.talker[i : i + blocksize]
                        block[: len(t)] += t
                        if fake.played is not None:
                            j = i - fake.play_at
                            p = fake.played[max(j, 0) : max(j, 0) + blocksize]
                            block[: len(p)] += p
                        fake.pos += blocksize
                    callback(np.repeat(block[:, None], channels, axis=1), blocksize, None, _FakeStatus())
                    time.sleep(blocksize / samplerate / 2)  # twice real time

            def close(self):
                self._stop.set()
                self._t.join(timeout=2)

        return Stream()


def test_demo_mic_challenge_with_a_fake_microphone_and_speaker(
    tiny_bundle: Path, commands: Path, monkeypatch: pytest.MonkeyPatch
):
    from wakeguard.edge.audio import resample

    speech = load_audio(commands / "cmd0.wav")
    talker = resample(np.concatenate([speech, np.zeros(16_000 * 8, np.float32)]), 16_000, FakeSoundDevice.RATE)
    fake = FakeSoundDevice(talker)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    res = runner.invoke(
        app, ["demo", "--challenge", "--rounds", "1", "--model", str(tiny_bundle), "--device", "USB", "--output-device", "1"]
    )
    assert res.exit_code == 0, res.output
    out = res.output
    assert "microphone 0: Fake USB Mic → speaker: Fake Speaker" in out
    assert "done: 1 round(s)" in out
    assert fake.played is not None  # the live take was played back
    assert "1 · live take" in out and "2 · replayed take" in out
    assert "told apart" in out  # both takes were scored and compared
    res = runner.invoke(app, ["demo", "--list-devices"])
    assert res.exit_code == 0 and "Fake USB Mic" in res.output and "Fake Speaker" in res.output
