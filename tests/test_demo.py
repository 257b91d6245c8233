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


def _pane(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_demo_in_a_real_terminal(tiny_bundle: Path, commands: Path, tmp_path: Path):
    """Run the demo in a tmux pane (a real terminal: Rich Live redraws in place) and read the screen."""
    session = f"wgdemo-{uuid.uuid4().hex[:8]}"
    exe = Path(sys.executable).parent / "wakeguard"
    cmd = f"{exe} demo --input {commands} --model {tiny_bundle} --speed 2; echo DEMO-EXIT=$?; sleep 120"
    env = {**os.environ, "TERM": "xterm-256color"}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "110", "-y", "40", cmd], check=True, env=env)
    try:
        seen_running = ""
        deadline = time.monotonic() + 90
        screen = ""
        while time.monotonic() < deadline:
            screen = _pane(session)
            if "playing cmd" in screen and not seen_running:
                seen_running = screen
            if "DEMO-EXIT=" in screen:
                break
            time.sleep(0.3)
        (tmp_path / "screen.txt").write_text(screen)
        assert "DEMO-EXIT=0" in screen, screen
        assert seen_running, "never saw the screen while it was playing"
        assert "dBFS" in seen_running and "input   file cmd" in seen_running
        assert "last verdicts" in screen and "done: 2 file(s)" in screen
        assert screen.count("LIVE ✓") + screen.count("REPLAY ✗") >= 2
        assert screen.count("wakeguard demo") == 1  # redrawn in place, not scrolled frame after frame
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
