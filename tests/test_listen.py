"""`wakeguard listen` end to end: capture sources, listener, outputs, config, CLI, shutdown."""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner
from wakeguard.edge.audio import load_audio, resample, write_wav
from wakeguard.edge.capture import (
    DISCONTINUITY,
    BlockQueue,
    FakeSource,
    FileSource,
    MicSource,
    find_device,
    list_input_devices,
)
from wakeguard.edge.config import (
    ConfigError,
    RuntimeConfig,
    default_config_path,
    load_config,
    with_overrides,
)
from wakeguard.edge.listener import Listener, SkippedEvent, VerdictEvent, Webhook
from wakeguard.edge.scorer import Scorer
from wakeguard.edge.stream_resample import StreamResampler
from wakeguard.tools.cli import app

SR = 16_000
REQUIRED_KEYS = {
    "t_start",
    "t_end",
    "score",
    "verdict",
    "latency_ms",
    "level_dbfs",
    "duration_s",
    "model_version",
}
WAKEGUARD = [sys.executable, "-m", "wakeguard.tools.cli"]


@pytest.fixture(scope="module")
def commands(
    shared_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[tuple[float, float]]]:
    """Five short real LibriSpeech utterances separated by 1.5 s of faint noise, and their spans."""
    files = sorted(
        (shared_dir / "speech" / "librispeech").glob("*/*.flac"),
        key=lambda f: (sf.info(str(f)).frames, f.name),
    )[:5]
    rng = np.random.default_rng(0)
    parts, spans, pos = [rng.normal(0, 1e-3, SR).astype(np.float32)], [], SR
    for f in files:
        x = load_audio(f)
        spans.append((pos / SR, (pos + len(x)) / SR))
        parts += [x, rng.normal(0, 1e-3, int(1.5 * SR)).astype(np.float32)]
        pos += len(x) + int(1.5 * SR)
    path = tmp_path_factory.mktemp("listen") / "commands.wav"
    write_wav(path, np.concatenate(parts))
    return path, spans


def listen_events(scorer: Scorer, source, **kw) -> list:
    events: list = []
    Listener(scorer, model_version="t", sinks=[events.append], **kw).run(source, threading.Event())
    return events


def verdicts(events: list) -> list[tuple]:
    return [(e.t_start, e.t_end, e.score, e.verdict) for e in events if isinstance(e, VerdictEvent)]


# -- the listener on real speech -----------------------------------------------------------------


def test_listener_finds_each_command_in_real_speech(commands, tiny_bundle):
    path, spans = commands
    scorer = Scorer.from_bundle(tiny_bundle)
    events = listen_events(scorer, FileSource(path, speed=0))
    found = [e for e in events if isinstance(e, VerdictEvent)]
    assert len(found) == len(spans)
    for ev, (a, b) in zip(found, spans, strict=True):
        # Each verdict covers the speech of one file (LibriSpeech files carry their own short
        # leading and trailing silences, so the segment may start a little inside the file).
        assert a - 0.35 <= ev.t_start < b and a < ev.t_end <= b + 0.25
        assert ev.verdict in ("bonafide", "spoof") and np.isfinite(ev.score)
        assert ev.latency_ms > 0 and ev.model_version == "t"
        assert -45 < ev.level_dbfs < -10


@pytest.mark.parametrize("native", ["16k_mono", "44k_stereo"])
def test_chunk_size_invariance_through_the_capture_path(commands, tiny_bundle, native):
    path, _ = commands
    x = load_audio(path)
    rate = SR
    if native == "44k_stereo":
        rate = 44_100
        y = resample(x, SR, rate)
        x = np.stack([y, 0.5 * y], axis=1)
    scorer = Scorer.from_bundle(tiny_bundle)
    results = [
        verdicts(listen_events(scorer, FakeSource(x, rate, block_ms=ms))) for ms in (10, 64, 512)
    ]
    assert len(results[0]) == 5
    assert results[0] == results[1] == results[2]


def test_stream_resampler_matches_one_shot_for_any_blocks():
    x = np.random.default_rng(1).normal(0, 0.2, 44_100).astype(np.float32)
    ref = resample(x, 44_100, SR)
    for block in (1, 441, 1411, 30_000):
        r = StreamResampler(44_100, SR)
        y = np.concatenate(
            [r.push(x[i : i + block]) for i in range(0, len(x), block)] + [r.flush()]
        )
        np.testing.assert_allclose(y, ref, atol=1e-5)


def test_skipped_and_refractory_events(tiny_bundle):
    from wakeguard.edge.decision import DecisionParams

    scorer = Scorer.from_bundle(tiny_bundle)
    t = np.arange(int(0.8 * SR)) / SR
    v = (0.1 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 15))).astype(np.float32)
    gap = np.zeros(int(1.2 * SR), dtype=np.float32)
    x = np.concatenate([gap, v, gap, v, np.zeros(SR, dtype=np.float32)])
    events = listen_events(
        scorer, FakeSource(x), decision=DecisionParams(threshold=0.0, refractory_s=2.0)
    )
    assert [type(e).__name__ for e in events] == ["VerdictEvent", "SkippedEvent"]
    assert events[1].reason == "refractory"


# -- capture ---------------------------------------------------------------------------------------


def test_block_queue_is_bounded_and_counts_drops():
    q = BlockQueue(3)
    assert all(q.offer(np.zeros(4)) for _ in range(3))
    assert not q.offer(np.zeros(4)) and not q.offer(np.zeros(4))
    assert q.dropped == 2 and q.qsize() == 3


def test_real_time_source_drops_instead_of_growing(tiny_bundle):
    # A producer that does not wait (like a microphone) and a queue of two blocks: a slow
    # consumer loses blocks, counted as overruns, and the listener carries on.
    src = FakeSource(
        np.zeros(10 * SR, dtype=np.float32),
        block_ms=10,
        queue_seconds=0.02,
        real_time_drops=True,
        speed=50,
    )
    stop = threading.Event()
    n = 0
    for _ in src.blocks(stop):
        n += 1
        threading.Event().wait(0.01)
    assert src.overruns > 0 and n > 0
    assert src.queue.max_blocks == 2


def test_file_source_errors_name_the_file(tmp_path):
    from wakeguard.edge.audio import AudioError

    with pytest.raises(AudioError, match="missing.wav: file not found"):
        FileSource(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    with pytest.raises(AudioError, match="bad.wav: unreadable"):
        FileSource(bad)


class FakeFlags:
    def __init__(self, overflow: bool):
        self.input_overflow = overflow

    def __bool__(self) -> bool:
        return self.input_overflow


class FakeSoundDevice:
    """Just enough of sounddevice: two input devices, a 48 kHz-only USB mic that fails to open
    twice, delivers audio from a thread, reports one overflow, and is then unplugged once."""

    class PortAudioError(Exception):
        pass

    def __init__(self, fail_opens: int = 2, unplug_after: int = 20):
        self.fail_opens = fail_opens
        self.unplug_after = unplug_after
        self.opened: list[tuple[int, int, int]] = []
        self.default = type("D", (), {"device": [0, 0]})()

    def query_hostapis(self):
        return [{"name": "ALSA"}]

    def query_devices(self):
        return [
            {
                "name": "Built-in Audio",
                "max_input_channels": 0,
                "default_samplerate": 48000.0,
                "hostapi": 0,
            },
            {
                "name": "USB PnP Sound Device",
                "max_input_channels": 2,
                "default_samplerate": 48000.0,
                "hostapi": 0,
            },
        ]

    def check_input_settings(self, device, samplerate, channels, dtype):
        if samplerate != 48000 or channels != 2:
            raise self.PortAudioError("Invalid sample rate")

    def InputStream(self, device, samplerate, channels, dtype, blocksize, callback):  # noqa: N802
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise self.PortAudioError("Device unavailable [PaErrorCode -9985]")
        self.opened.append((device, samplerate, channels))
        sd = self

        class Stream:
            active = True

            def start(self):
                def feed():
                    t = np.arange(blocksize) / samplerate
                    for i in range(sd.unplug_after if len(sd.opened) == 1 else 10_000):
                        if not self.active:
                            return
                        block = np.stack(
                            [0.1 * np.sin(2 * np.pi * 440 * (t + i * blocksize / samplerate))]
                            * channels,
                            1,
                        )
                        callback(block.astype(np.float32), blocksize, None, FakeFlags(i == 3))
                        threading.Event().wait(0.001)
                    self.active = False  # unplugged: PortAudio stops calling back

                threading.Thread(target=feed, daemon=True).start()

            def close(self):
                self.active = False

        return Stream()


def test_microphone_retries_converts_counts_overruns_and_reconnects(caplog):
    sd = FakeSoundDevice()
    waits: list[float] = []

    def sleep(stop, seconds):
        waits.append(seconds)
        return stop.is_set()

    mic = MicSource("usb", block_ms=10, backoff_s=0.5, sd_module=sd, sleep=sleep, stall_s=5)
    stop = threading.Event()
    got, gaps = 0, 0
    with caplog.at_level(logging.INFO, logger="wakeguard.edge.capture"):
        for block in mic.blocks(stop):
            if block is DISCONTINUITY:
                gaps += 1
                continue
            assert block.ndim == 1 and block.dtype == np.float32
            got += len(block)
            if gaps and got > 2 * SR * 0.01 * 20:
                stop.set()
    assert waits == [0.5, 1.0]  # exponential back-off
    assert sd.opened[0] == (1, 48000, 2)  # the device refuses 16 kHz mono: opened as it allows
    assert gaps == 1 and mic.reconnects == 1
    assert mic.status_overruns >= 1
    text = caplog.text
    assert (
        "microphone 'usb' unavailable (Device unavailable [PaErrorCode -9985]); retrying in 0.5 s"
        in text
    )
    assert "retrying in 1.0 s" in text
    assert "lost (stream stopped" in text and "48000 Hz, 2 channel(s)" in text


def test_no_such_microphone_fails_at_once_unless_told_to_wait():
    """A person at a terminal hears at once that there is no microphone; a service started
    with --wait-for-mic (the shipped systemd unit) keeps retrying until one is plugged in."""
    from wakeguard.edge.capture import CaptureError

    waits: list[float] = []

    def sleep(stop, seconds):
        waits.append(seconds)
        if len(waits) == 3:
            stop.set()
        return stop.is_set()

    class Unplugged(FakeSoundDevice):
        def query_devices(self):
            return []

    for spec, sd in ((None, Unplugged()), ("blue yeti", FakeSoundDevice())):
        mic = MicSource(spec, sd_module=sd, sleep=sleep)
        with pytest.raises(CaptureError, match="--wait-for-mic"):
            next(mic.blocks(threading.Event()))
        with pytest.raises(CaptureError, match="--wait-for-mic"):  # before "listening to ..."
            mic.check_present()
    assert waits == []  # no retrying before the error
    MicSource("usb", sd_module=FakeSoundDevice()).check_present()
    mic = MicSource("blue yeti", sd_module=FakeSoundDevice(), sleep=sleep, wait_for_device=True)
    mic.check_present()  # a service waits for it: nothing to say yet
    assert list(mic.blocks(threading.Event())) == []  # waited until stopped
    assert waits == [1.0, 2.0, 4.0] and mic.open_failures == 3


def test_the_listening_service_waits_for_its_microphone():
    unit = (Path(__file__).resolve().parents[1] / "edge" / "wakeguard.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert " listen " in exec_start and " --wait-for-mic" in exec_start


def test_microphone_missing_portaudio_is_a_clear_error(monkeypatch):
    import builtins

    from wakeguard.edge.capture import CaptureError, import_sounddevice

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(CaptureError, match="libportaudio2"):
        import_sounddevice()


def test_device_by_name_or_index():
    devices = list_input_devices(FakeSoundDevice())
    assert [d.index for d in devices] == [1]
    assert find_device("usb pnp", devices).index == 1
    assert find_device("1", devices).name == "USB PnP Sound Device"
    assert find_device(None, devices).index == 1
    with pytest.raises(LookupError, match="no input device named like 'blue yeti'"):
        find_device("blue yeti", devices)
    with pytest.raises(LookupError, match="index 7"):
        find_device(7, devices)


# -- outputs ---------------------------------------------------------------------------------------


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802
        n = int(self.headers["Content-Length"])
        Receiver.bodies.append(json.loads(self.rfile.read(n)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_cli_prints_json_lines_runs_hook_webhook_and_log(commands, tiny_bundle, tmp_path):
    path, spans = commands
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.bodies = []
    hook_out = tmp_path / "hook.txt"
    hook = f"{sys.executable} -c \"import os; open('{hook_out}', 'a').write(os.environ['WAKEGUARD_VERDICT'] + ' ' + os.environ['WAKEGUARD_SCORE'] + chr(10))\""
    log = tmp_path / "decisions.jsonl"
    try:
        r = subprocess.run(
            [
                *WAKEGUARD,
                "listen",
                "--input",
                str(path),
                "--speed",
                "0",
                "--model",
                str(tiny_bundle),
                "--hook",
                hook,
                "--webhook",
                f"http://127.0.0.1:{server.server_port}/verdict",
                "--log",
                str(log),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == len(spans)
    for d in lines:
        assert REQUIRED_KEYS <= d.keys()
        assert d["model_version"] == "test-tiny" and d["verdict"] in ("bonafide", "spoof")
    hooked = hook_out.read_text().splitlines()
    assert sorted(hooked) == sorted(f"{d['verdict']} {d['score']}" for d in lines)
    assert sorted(b["t_start"] for b in Receiver.bodies) == [d["t_start"] for d in lines]
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [rec["t_start"] for rec in logged] == [d["t_start"] for d in lines]
    assert "listening to" in r.stderr and "5 verdicts" in r.stderr


def test_decision_log_wrong_path_fails_at_start_full_disk_is_counted(
    commands, tiny_bundle, tmp_path
):
    path, spans = commands
    base = [*WAKEGUARD, "listen", "--input", str(path), "--speed", "0", "--model", str(tiny_bundle)]
    (tmp_path / "afile").write_text("")
    bad = tmp_path / "afile" / "decisions.jsonl"  # under a file: no such folder can exist
    r = subprocess.run([*base, "--log", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stdout == ""  # nothing decided without the log asked for
    assert (
        f"error: cannot open decision log {bad}: {tmp_path / 'afile'} is a file, not a folder"
        in r.stderr
    )
    if not os.path.exists("/dev/full"):
        return
    # A full disk (/dev/full opens, every write fails): decisions go on, the loss is counted.
    r = subprocess.run([*base, "--log", "/dev/full"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(spans)
    assert "records are dropped until it can be written again" in r.stderr
    assert (
        f"{len(spans)} decision record(s) or clip(s) could not be written to /dev/full" in r.stderr
    )


def test_log_never_appends_to_a_recording_and_bad_ports_are_refused(
    commands, tiny_bundle, tmp_path
):
    """--log and --input swapped must not write JSON into the user's WAV; a port no socket
    can bind is a one-line error, not a traceback."""
    path, _ = commands
    base = [*WAKEGUARD, "listen", "--input", str(path), "--speed", "0", "--model", str(tiny_bundle)]
    victim = tmp_path / "take.wav"
    victim.write_bytes(path.read_bytes())
    r = subprocess.run([*base, "--log", str(victim)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert f"decision log {victim} holds binary data (audio?), not JSON lines" in r.stderr
    assert victim.read_bytes() == path.read_bytes()
    for port in ("99999", "-5"):
        r = subprocess.run(
            [*base, "--metrics-port", port], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "Invalid value for '--metrics-port'" in r.stderr
    conf = tmp_path / "ports.toml"
    conf.write_text("[metrics]\nport = 70000\n")
    r = subprocess.run([*base, "--config", str(conf)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "[metrics] port must be 1-65535 (or 0 for no metrics), got 70000" in r.stderr
    for flag in (["--device", "3"], ["--wait-for-mic"]):  # they choose a mic; --input is a file
        r = subprocess.run([*base, *flag], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stdout == ""
        assert f"{flag[0]} chooses a microphone, but --input plays a file" in r.stderr


def test_a_file_with_no_command_in_it_says_so(tiny_bundle, tmp_path):
    fan = tmp_path / "fan.wav"
    write_wav(fan, 0.05 * np.random.default_rng(0).standard_normal(3 * SR))
    r = subprocess.run(
        [*WAKEGUARD, "listen", "--input", str(fan), "--speed", "0", "--model", str(tiny_bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout == ""
    assert f"no command found in {fan}: silence, steady noise" in r.stderr


def test_a_cut_file_is_refused_and_a_short_or_silent_one_named_as_such(
    commands, tiny_bundle, tmp_path
):
    """listen reads files as screen does: a truncated WAV is an error naming it, not a
    stream of what is left; a file too short or silent says that, not "try screen"."""
    path, _ = commands
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    short = tmp_path / "short.wav"
    write_wav(short, 0.1 * np.random.default_rng(1).standard_normal(SR // 10))
    zeros = tmp_path / "zeros.wav"
    write_wav(zeros, np.zeros(2 * SR, np.float32))
    runs = {}
    for f in (cut, short, zeros):
        runs[f] = subprocess.run(
            [*WAKEGUARD, "listen", "--input", str(f), "--speed", "0", "--model", str(tiny_bundle)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    r = runs[cut]
    assert r.returncode == 2 and r.stdout == ""
    assert f"error: {cut}: truncated WAV: its data chunk declares" in r.stderr
    r = runs[short]
    assert r.returncode == 0 and "screen" not in r.stderr
    assert f"no command found in {short}: it is too short to score (0.100 s < 0.3 s)" in r.stderr
    r = runs[zeros]
    assert r.returncode == 0 and "screen" not in r.stderr
    assert (
        f"no command found in {zeros}: it is silent (digital silence: every sample is zero)"
        in r.stderr
    )


def test_failing_hook_and_dead_webhook_are_logged_not_fatal(commands, tiny_bundle):
    path, spans = commands
    result = CliRunner().invoke(
        app,
        [
            "listen",
            "--input",
            str(path),
            "--speed",
            "0",
            "--model",
            str(tiny_bundle),
            "--hook",
            "/nonexistent/hook",
            "--webhook",
            "http://127.0.0.1:9/none",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sum(1 for line in result.stdout.splitlines() if line.startswith("{")) == len(spans)


def test_remote_webhook_refused_unless_allowed():
    with pytest.raises(ValueError, match="not this machine"):
        Webhook("http://192.0.2.1/hook")
    Webhook("http://192.0.2.1/hook", allow_remote=True).close()
    with pytest.raises(ValueError, match="http"):
        Webhook("ftp://127.0.0.1/x")


def test_metrics_count_verdicts_and_overruns(commands, tiny_bundle):
    from wakeguard.edge.telemetry import Telemetry

    path, spans = commands
    tel = Telemetry(None, model_version="test-tiny")
    Listener(Scorer.from_bundle(tiny_bundle), telemetry=tel).run(
        FileSource(path, speed=0), threading.Event()
    )
    text = tel.render().decode()
    total = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("wakeguard_decisions_total{")
    )
    assert total == len(spans)


def test_sigterm_finishes_and_exits_zero(commands, tiny_bundle, tmp_path):
    path, _ = commands
    log = tmp_path / "d.jsonl"
    p = subprocess.Popen(
        [
            *WAKEGUARD,
            "listen",
            "--input",
            str(path),
            "--speed",
            "1",
            "--model",
            str(tiny_bundle),
            "--log",
            str(log),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = p.stdout.readline()  # the first command's verdict arrives in real time (~3 s)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    lines = [json.loads(line) for line in [first, *out.splitlines()] if line.strip()]
    assert 1 <= len(lines) < 5
    assert "SIGTERM: finishing" in err and "stopped:" in err
    assert len(log.read_text().splitlines()) == len(lines)  # flushed


# -- bad input and config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "missing.wav"], "missing.wav: file not found"),
        (["--input", "{wav}", "--model", "{tmp}/nobundle"], "model bundle"),
        (["--input", "{wav}", "--config", "{tmp}/bad.toml"], "unknown key [endpoint] hangover"),
        (["--input", "{wav}", "--webhook", "http://example.com/x"], "not this machine"),
        (
            ["--input", "{wav}", "--clips-dir", "{tmp}/clips"],
            "--clips-dir ([log] clips_dir) needs --log",
        ),
    ],
)
def test_bad_input_is_a_clear_error(commands, tiny_bundle, tmp_path, args, message):
    path, _ = commands
    (tmp_path / "bad.toml").write_text("[endpoint]\nhangover = 0.5\n")
    args = [a.format(wav=path, tmp=tmp_path) for a in args]
    if "--model" not in args:
        args += ["--model", str(tiny_bundle)]
    result = CliRunner().invoke(app, ["listen", *args])
    assert result.exit_code == 2
    assert message in result.stderr.replace("\n", "")


def test_shipped_config_equals_the_defaults():
    assert load_config(default_config_path()).to_dict() == RuntimeConfig().to_dict()


def test_config_file_then_flags(tmp_path):
    f = tmp_path / "w.toml"
    f.write_text(
        "[capture]\ndevice = 2\nblock_ms = 20\n[decision]\nthreshold = 1.5\n[endpoint]\nhangover_s = 0.8\n"
    )
    cfg = load_config(f)
    assert cfg.capture.device == "2" and cfg.capture.block_ms == 20.0
    assert cfg.decision.params(0.0).threshold == 1.5
    assert cfg.endpoint.params().hangover_s == 0.8
    assert RuntimeConfig().decision.params(-0.25).threshold == -0.25  # unset: the bundle's
    cfg2 = with_overrides(cfg, {"capture.device": "USB", "metrics.port": 9100, "log.path": None})
    assert (
        cfg2.capture.device == "USB" and cfg2.metrics.port == 9100 and cfg2.capture.block_ms == 20.0
    )
    for bad, msg in [
        ("[capture]\nblock_ms = 'x'\n", "must be a number"),
        ("[nope]\na = 1\n", "unknown section [nope]"),
        ("[endpoint]\nmax_seconds = 0.1\n", "max_seconds"),
        ("not toml [", "not valid TOML"),
    ]:
        f.write_text(bad)
        with pytest.raises(ConfigError, match=msg.replace("[", r"\[")):
            load_config(f)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # A number where a string belongs is a mistake, not a string: only the device (an
        # index or part of a name) takes one.
        ("[serve]\nuri = 5\n", "[serve] uri must be a string (in quotes), got 5"),
        ("[metrics]\nhost = 127\n", "[metrics] host must be a string (in quotes), got 127"),
        ("[output]\nhook_on = true\n", "[output] hook_on must be a string (in quotes), got True"),
        ("[capture]\ndevice = 2.5\n", "[capture] device must be a string or an index, got 2.5"),
        # Strings are never read as booleans or numbers, nor booleans as numbers.
        (
            '[capture]\nwait_for_device = "true"\n',
            "[capture] wait_for_device must be true or false, got 'true'",
        ),
        (
            "[output]\nallow_remote_webhook = 1\n",
            "[output] allow_remote_webhook must be true or false, got 1",
        ),
        ('[capture]\nblock_ms = "20"\n', "[capture] block_ms must be a number, got '20'"),
        ("[decision]\nthreshold = true\n", "[decision] threshold must be a number, got True"),
        ("[model]\nthreads = 1.5\n", "[model] threads must be an integer, got 1.5"),
    ],
)
def test_config_refuses_wrong_types_naming_file_and_key(tmp_path, text: str, problem: str):
    f = tmp_path / "w.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{f}: {problem}")):
        load_config(f)


def test_config_keeps_reasonable_conversions(tmp_path):
    f = tmp_path / "w.toml"
    f.write_text("[capture]\ndevice = 0\nblock_ms = 20\n[serve]\nwake_seconds = 2\n")
    cfg = load_config(f)
    assert cfg.capture.device == "0"  # an index names a device
    assert cfg.capture.block_ms == 20.0 and isinstance(cfg.capture.block_ms, float)
    assert cfg.serve.wake_seconds == 2.0 and isinstance(cfg.serve.wake_seconds, float)
    assert with_overrides(cfg, {"capture.device": 3}).capture.device == "3"
    with pytest.raises(ConfigError, match=re.escape("command line: [serve] uri must be a string")):
        with_overrides(cfg, {"serve.uri": 10400})


def test_systemd_unit_ships_with_restart_and_dedicated_user():
    unit = (Path(__file__).resolve().parents[1] / "edge" / "wakeguard.service").read_text()
    for line in ("Restart=on-failure", "User=wakeguard", "KillSignal=SIGTERM"):
        assert line in unit.splitlines()
    assert "wakeguard listen --config /etc/wakeguard/wakeguard.toml" in unit


def test_skipped_event_shape():
    e = SkippedEvent(1.0, 2.0, "too short")
    assert e.to_dict() == {"t_start": 1.0, "t_end": 2.0, "skipped": "too short"}


def test_env_of_a_verdict():
    ev = VerdictEvent(1.0, 2.5, 0.5, "bonafide", 3.2, -30.0, 1.5, "v1", 0.0, 0.5, False)
    env = ev.env()
    assert env["WAKEGUARD_VERDICT"] == "bonafide" and env["WAKEGUARD_SCORE"] == "0.5"
    assert env["WAKEGUARD_TRUNCATED"] == "0" and json.loads(env["WAKEGUARD_JSON"])["t_end"] == 2.5
    assert os.environ.get("WAKEGUARD_VERDICT") is None


def test_broken_driver_samples_are_repaired_not_poisoning():
    from wakeguard.edge.capture import Converter
    from wakeguard.edge.endpoint import Endpointer

    c = Converter(16_000, 2)
    bad = np.full((320, 2), np.nan, dtype=np.float32)
    bad[::7] = 1e30
    out = c(bad)
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0 and c.repaired_blocks == 1
    ep = Endpointer()
    ep.push(np.full(1600, np.nan, dtype=np.float32))
    assert np.isfinite(ep.state.floor_db)


def test_metrics_port_taken_is_a_clear_error(commands, tiny_bundle):
    import socket

    path, _ = commands
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(
            app,
            [
                "listen",
                "--input",
                str(path),
                "--speed",
                "0",
                "--model",
                str(tiny_bundle),
                "--metrics-port",
                str(port),
            ],
        )
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr


def test_slow_hook_is_killed_and_its_backlog_bounded(commands, tiny_bundle, tmp_path):
    path, spans = commands
    cfg = tmp_path / "slow.toml"
    cfg.write_text("[output]\nhook = 'sleep 30'\nhook_timeout_s = 0.3\nmax_pending = 2\n")
    r = subprocess.run(
        [
            *WAKEGUARD,
            "listen",
            "--input",
            str(path),
            "--speed",
            "0",
            "--model",
            str(tiny_bundle),
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(
        spans
    )  # every verdict printed, none waited for the hook
    assert "hook sleep killed after 0.3 s" in r.stderr
    assert "dropped one" in r.stderr or "gave up on" in r.stderr
