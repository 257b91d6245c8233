"""``wakeguard serve`` over real sockets: a real Wyoming wake service upstream, both verdicts.

The tiny bundle is untrained, so which clip counts as "live" is set by the test: a copy of
the bundle gets its threshold half-way between the scores of two real speech clips, and the
higher-scoring clip plays the live talker. What is tested is the plumbing: forwarding,
buffering, scoring the right audio, passing or swallowing the detection, logging.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("wyoming")

from wakeguard.edge.audio import load_audio  # noqa: E402
from wakeguard.edge.bundle import load_bundle, write_bundle  # noqa: E402
from wakeguard.edge.decisionlog import DecisionLog, read_records  # noqa: E402
from wakeguard.edge.scorer import Scorer  # noqa: E402
from wakeguard.edge.wyoming_service import (  # noqa: E402
    SCREEN_EVENT,
    VERDICT_EVENT,
    AudioRing,
    Decider,
    ServiceConfig,
    WakeguardService,
    pcm_to_float,
)
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient, AsyncUnixClient  # noqa: E402
from wyoming.event import Event  # noqa: E402
from wyoming.info import Attribution, Describe, Info, WakeModel, WakeProgram  # noqa: E402
from wyoming.server import AsyncEventHandler, AsyncTcpServer  # noqa: E402
from wyoming.wake import Detect, Detection, NotDetected  # noqa: E402

PI_IMPORTS = """
import importlib.abc, sys
class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "librosa", "sklearn", "scipy", "matplotlib"):
            raise ImportError(f"{name} is not installed on the Pi")
sys.meta_path.insert(0, _Refuse())
"""

UNBINDABLE = ["--uri", "unix:///nonexistent-wakeguard-test/serve.sock"]
"""Flags for CLI tests that expect an early refusal: a service that got further fails to bind."""
CLIP_SAMPLES = 32_000  # 2.0 s at 16 kHz: one model window, and the proxy's wake_seconds
CHUNK = 1024  # what satellites send


def _pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


def _as_wire(x: np.ndarray) -> np.ndarray:
    """The float audio the service sees after 16-bit transport."""
    return np.frombuffer(_pcm16(x), dtype="<i2").astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def clips_and_bundle(tiny_bundle: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two 2 s speech clips and a bundle whose threshold lies half-way between their scores."""
    scorer = Scorer.from_bundle(tiny_bundle)
    files = sorted((shared_dir / "speech" / "librispeech" / "train-clean-100").glob("*.flac"))[:12]
    scored = []
    for f in files:
        x = load_audio(f)[8_000 : 8_000 + CLIP_SAMPLES]
        if x.size < CLIP_SAMPLES:
            continue
        x = _as_wire(0.5 * x / max(np.abs(x).max(), 1e-6))
        scored.append((scorer.score(x).score, x))
    scored.sort(key=lambda t: t[0])
    (lo_score, spoof_clip), (hi_score, live_clip) = scored[0], scored[-1]
    assert hi_score - lo_score > 0.05, "tiny model scores too close to separate"
    mid = (lo_score + hi_score) / 2
    b = load_bundle(tiny_bundle)
    folder = write_bundle(
        tmp_path_factory.mktemp("serve") / "bundle",
        b.model_bytes,
        b.frontend,
        thresholds={"eer": mid, "bpcer_1pct": mid, "bpcer_5pct": mid},
        calibration=b.calibration,
        extra={
            "version": "test-serve",
            "calibration_scores": {"bonafide": [hi_score], "spoof": [lo_score]},
        },
    )
    return {
        "live": live_clip,
        "spoof": spoof_clip,
        "live_score": hi_score,
        "spoof_score": lo_score,
        "bundle": folder,
    }


# -- a real Wyoming wake-word service, playing openWakeWord -------------------------------


class FakeWake(AsyncEventHandler):
    """Answers describe; after ``trigger`` samples since the last ``detect``, sends ``detection``."""

    received: list[str]
    trigger = CLIP_SAMPLES

    def __init__(self, reader, writer, received: list[str]):
        super().__init__(reader, writer)
        self.received = received
        self.count = 0
        self.armed = True

    async def handle_event(self, event: Event) -> bool:
        self.received.append(event.type)
        if Describe.is_type(event.type):
            model = WakeModel(
                name="hey_test",
                attribution=Attribution("test", ""),
                installed=True,
                description="test wake word",
                version="1",
                languages=["en"],
                phrase="hey test",
            )
            prog = WakeProgram(
                name="fake-wake",
                attribution=Attribution("test", ""),
                installed=True,
                description="fake wake service",
                version="1",
                models=[model],
            )
            await self.write_event(Info(wake=[prog]).event())
        elif Detect.is_type(event.type):
            self.count, self.armed = 0, True
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            self.count += chunk.samples
            if self.armed and self.count >= self.trigger:
                self.armed = False
                await self.write_event(
                    Detection(name="hey_test", timestamp=chunk.timestamp).event()
                )
        elif AudioStop.is_type(event.type) and self.armed:
            await self.write_event(NotDetected().event())
        return True


async def _start_fake_wake(received: list[str]) -> tuple[AsyncTcpServer, str]:
    server = AsyncTcpServer("127.0.0.1", 0)
    await server.start(lambda r, w: FakeWake(r, w, received))
    port = server._server.sockets[0].getsockname()[1]
    return server, f"tcp://127.0.0.1:{port}"


def _decider(bundle: Path, log: DecisionLog | None, telemetry: Any = None) -> Decider:
    b = load_bundle(bundle)
    return Decider(
        Scorer.from_bundle(b), model_version=b.version, decision_log=log, telemetry=telemetry
    )


async def _connect(uri: str) -> AsyncTcpClient | AsyncUnixClient:
    if uri.startswith("unix://"):
        client: AsyncTcpClient | AsyncUnixClient = AsyncUnixClient(
            uri.removeprefix("unix://"), connect_timeout=10, read_timeout=20
        )
    else:
        host, port = uri.removeprefix("tcp://").rsplit(":", 1)
        client = AsyncTcpClient(host, int(port), connect_timeout=10, read_timeout=20)
    await client.connect()
    return client


async def _send_audio(
    client: AsyncTcpClient,
    x: np.ndarray,
    *,
    ts0: int = 0,
    start: bool = True,
    stop: bool = False,
    rate: int = 16_000,
    width: int = 2,
    channels: int = 1,
) -> int:
    """Stream audio as Wyoming chunks (1024 frames); returns the next timestamp in ms."""
    if width == 2 and channels == 1:
        payload = _pcm16(x)
    else:
        payload = _encode(x, width, channels)
    frame = width * channels
    if start:
        await client.write_event(
            AudioStart(rate=rate, width=width, channels=channels, timestamp=ts0).event()
        )
    ts = ts0
    for i in range(0, len(payload), CHUNK * frame):
        chunk = AudioChunk(
            rate=rate,
            width=width,
            channels=channels,
            audio=payload[i : i + CHUNK * frame],
            timestamp=ts,
        )
        await client.write_event(chunk.event())
        ts += chunk.milliseconds
    if stop:
        await client.write_event(AudioStop(timestamp=ts).event())
    return ts


def _encode(x: np.ndarray, width: int, channels: int) -> bytes:
    scale = float(1 << (8 * width - 1))
    v = np.clip(np.round(x * scale), -scale, scale - 1).astype(np.int64)
    v = np.repeat(v[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        return (v + 128).astype(np.uint8).tobytes()
    if width == 3:
        u = v & 0xFFFFFF
        return (
            np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=1)
            .astype(np.uint8)
            .tobytes()
        )
    return v.astype({2: "<i2", 4: "<i4"}[width]).tobytes()


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- the wake proxy ----------------------------------------------------------------------------


def test_proxy_passes_live_wake_ups_and_swallows_replays(clips_and_bundle, tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from wakeguard.edge.telemetry import Telemetry

    c = clips_and_bundle
    log = DecisionLog(tmp_path / "decisions.jsonl")
    tel = Telemetry(model_version="test-serve")

    async def scenario() -> dict[str, Any]:
        received: list[str] = []
        upstream, up_uri = await _start_fake_wake(received)
        service = WakeguardService(
            ServiceConfig(uri="tcp://127.0.0.1:0", upstream=up_uri, wake_seconds=2.0),
            _decider(c["bundle"], log, tel),
        )
        uri = await service.start()
        client = await _connect(uri)
        out: dict[str, Any] = {}
        try:
            await client.write_event(Describe().event())
            info = await client.read_event()
            out["info"] = info
            # A live wake word: the detection comes through.
            await client.write_event(Detect(names=["hey_test"]).event())
            ts = await _send_audio(client, c["live"])
            out["after_live"] = await client.read_event()
            # Keep streaming a replayed wake word: the detection is swallowed; the next event the
            # satellite sees is the answer to a later describe.
            await client.write_event(Detect(names=["hey_test"]).event())
            await _send_audio(client, c["spoof"], ts0=ts, start=False)
            await client.write_event(Describe().event())
            out["after_spoof"] = await client.read_event()
        finally:
            await client.disconnect()
            await service.stop()
            await upstream.stop()
        out["received"] = received
        return out

    out = run(scenario())
    log.close()
    info = out["info"]
    assert info.type == "info"
    assert Info.from_event(info).wake[0].name == "fake-wake"  # the upstream's info, forwarded
    assert (
        info.data["wakeguard"]["mode"] == "proxy"
        and info.data["wakeguard"]["model_version"] == "test-serve"
    )
    assert out["after_live"].type == "detection"
    assert Detection.from_event(out["after_live"]).name == "hey_test"
    assert out["after_spoof"].type == "info"  # no detection in between
    # Everything the satellite sent reached the real wake service.
    for t in ("describe", "detect", "audio-start", "audio-chunk"):
        assert t in out["received"]
    assert out["received"].count("detect") == 2
    records, bad = read_records(tmp_path / "decisions.jsonl")
    assert bad == 0 and [r["verdict"] for r in records] == ["bonafide", "spoof"]
    # The proxy scored exactly the wake-word audio (the 2 s before each detection).
    assert records[0]["score"] == pytest.approx(c["live_score"], abs=1e-4)
    assert records[1]["score"] == pytest.approx(c["spoof_score"], abs=1e-4)
    for r in records:
        assert r["source"] == "wyoming-proxy" and r["wake_word"] == "hey_test"
        assert r["duration_s"] == 2.0 and r["added_ms"] >= r["latency_ms"] > 0
    assert records[1]["t_start"] == pytest.approx(2.0, abs=1e-3)  # second clip starts at 2 s
    metrics = tel.render().decode()
    assert 'wakeguard_decisions_total{verdict="bonafide"} 1.0' in metrics
    assert 'wakeguard_decisions_total{verdict="spoof"} 1.0' in metrics


async def _dead_port() -> int:
    """A port nothing listens on: bind one, note it, close it."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    return dead


def test_proxy_without_upstream_answers_with_an_error(clips_and_bundle) -> None:
    async def scenario():
        dead = await _dead_port()
        service = WakeguardService(
            ServiceConfig(
                uri="tcp://127.0.0.1:0", upstream=f"tcp://127.0.0.1:{dead}", connect_timeout_s=5
            ),
            _decider(clips_and_bundle["bundle"], None),
        )
        uri = await service.start()
        client = await _connect(uri)
        try:
            await client.write_event(Detect().event())
            reply = await client.read_event()
            closed = await client.read_event()
        finally:
            await client.disconnect()
            await service.stop()
        return reply, closed

    reply, closed = run(scenario())
    assert reply.type == "error" and reply.data["code"] == "upstream-unreachable"
    assert "unreachable" in reply.data["text"]
    assert closed is None  # the connection is closed so the satellite reconnects


def test_proxy_warns_at_startup_when_the_upstream_is_unreachable(
    clips_and_bundle, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong --upstream shows in the log when the service starts, not only when the first
    satellite connects; the service still starts and serves (the upstream may come up later)."""

    async def scenario() -> tuple[str, list[str], Event, list[str], list[str]]:
        down = f"tcp://127.0.0.1:{await _dead_port()}"
        service = WakeguardService(
            ServiceConfig(uri="tcp://127.0.0.1:0", upstream=down),
            _decider(clips_and_bundle["bundle"], None),
        )
        uri = await service.start()
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        client = await _connect(uri)
        try:  # still serving: a client that asks for screening is answered
            await client.write_event(Event(type=SCREEN_EVENT))
            await client.write_event(Describe().event())
            info = await client.read_event()
        finally:
            await client.disconnect()
            await service.stop()
        # An upstream that answers: no warning, and the check sends it nothing.
        caplog.clear()
        received: list[str] = []
        upstream, up_uri = await _start_fake_wake(received)
        service = WakeguardService(
            ServiceConfig(uri="tcp://127.0.0.1:0", upstream=up_uri),
            _decider(clips_and_bundle["bundle"], None),
        )
        try:
            await service.start()
        finally:
            await service.stop()
            await upstream.stop()
        quiet = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        return down, warned, info, quiet, received

    with caplog.at_level(logging.WARNING):
        down, warned, info, quiet, received = run(scenario())
    (message,) = warned
    assert message.startswith(f"wake-word service {down} is unreachable: ")
    assert "Connect call failed" in message  # the error, as the OS gave it
    assert info.type == "info" and info.data["wakeguard"]["mode"] == "screen"
    assert quiet == [] and received == []


def test_proxy_passes_a_detection_it_cannot_score(clips_and_bundle, tmp_path: Path) -> None:
    """Fail open: a detection with no audio before it (nothing to score) still reaches the satellite."""

    class Eager(FakeWake):
        trigger = 0

        async def handle_event(self, event: Event) -> bool:
            if Detect.is_type(event.type):
                await self.write_event(Detection(name="hey_test").event())
                return True
            return await super().handle_event(event)

    log = DecisionLog(tmp_path / "d.jsonl")

    async def scenario():
        upstream = AsyncTcpServer("127.0.0.1", 0)
        await upstream.start(lambda r, w: Eager(r, w, []))
        up_uri = f"tcp://127.0.0.1:{upstream._server.sockets[0].getsockname()[1]}"
        service = WakeguardService(
            ServiceConfig(uri="tcp://127.0.0.1:0", upstream=up_uri),
            _decider(clips_and_bundle["bundle"], log),
        )
        client = await _connect(await service.start())
        try:
            await client.write_event(Detect().event())
            return await client.read_event()
        finally:
            await client.disconnect()
            await service.stop()
            await upstream.stop()

    ev = run(scenario())
    log.close()
    assert ev.type == "detection"
    assert read_records(tmp_path / "d.jsonl")[0] == []  # nothing scored, nothing logged


# -- direct screening ----------------------------------------------------------------------------


def test_screening_any_format_both_verdicts(clips_and_bundle, tmp_path: Path) -> None:
    c = clips_and_bundle
    log = DecisionLog(tmp_path / "screen.jsonl")

    async def scenario():
        service = WakeguardService(
            ServiceConfig(uri="tcp://127.0.0.1:0"), _decider(c["bundle"], log)
        )
        uri = await service.start()
        client = await _connect(uri)
        events = []
        try:
            await client.write_event(Describe().event())
            events.append(await client.read_event())
            await _send_audio(client, c["spoof"], stop=True)
            events.append(await client.read_event())
            # The live clip as 48 kHz, 24-bit stereo: converted to 16 kHz mono float.
            from wakeguard.edge.audio import resample

            x48 = resample(c["live"], 16_000, 48_000)
            await _send_audio(client, x48, stop=True, rate=48_000, width=3, channels=2)
            events.append(await client.read_event())
            # Too short to score: an error, and the connection stays usable.
            await _send_audio(client, c["live"][:800], stop=True)
            events.append(await client.read_event())
            await _send_audio(client, c["live"], stop=True, width=4, channels=1)
            events.append(await client.read_event())
        finally:
            await client.disconnect()
            await service.stop()
        return events

    info, spoof, live48, short, live32 = run(scenario())
    log.close()
    assert info.type == "info" and info.data["wakeguard"]["verdict_event"] == VERDICT_EVENT
    assert spoof.type == VERDICT_EVENT and spoof.data["verdict"] == "spoof"
    assert spoof.data["score"] == pytest.approx(c["spoof_score"], abs=1e-4)
    for key in ("score", "verdict", "threshold", "latency_ms", "model_version"):
        assert key in spoof.data
    assert spoof.data["model_version"] == "test-serve" and spoof.data["truncated"] is False
    assert live48.type == VERDICT_EVENT and live48.data["verdict"] == "bonafide"
    assert live48.data["duration_s"] == pytest.approx(2.0, abs=1e-3)
    assert (
        short.type == "error"
        and short.data["code"] == "audio-unusable"
        and "too short" in short.data["text"]
    )
    assert live32.data["verdict"] == "bonafide"
    assert live32.data["score"] == pytest.approx(c["live_score"], abs=1e-3)
    records, _ = read_records(tmp_path / "screen.jsonl")
    assert [r["verdict"] for r in records] == ["spoof", "bonafide", "bonafide"]
    assert {r["source"] for r in records} == {"wyoming-screen"}


def test_screening_keeps_only_the_end_of_long_audio(clips_and_bundle) -> None:
    c = clips_and_bundle

    async def scenario():
        config = ServiceConfig(uri="tcp://127.0.0.1:0", max_screen_seconds=1.0)
        service = WakeguardService(config, _decider(c["bundle"], None))
        client = await _connect(await service.start())
        try:
            await _send_audio(client, c["live"], stop=True)  # 2 s into a 1 s buffer
            return await client.read_event()
        finally:
            await client.disconnect()
            await service.stop()

    verdict = run(scenario())
    assert verdict.type == VERDICT_EVENT and verdict.data["truncated"] is True
    assert verdict.data["duration_s"] == 1.0
    tail = Scorer.from_bundle(c["bundle"]).score(c["live"][-16_000:])
    assert verdict.data["score"] == pytest.approx(tail.score, abs=1e-4)


def test_proxy_server_screens_on_request(clips_and_bundle) -> None:
    """A connection that opens with wakeguard-screen is screened, not proxied (same server)."""
    c = clips_and_bundle

    async def scenario():
        received: list[str] = []
        upstream, up_uri = await _start_fake_wake(received)
        service = WakeguardService(
            ServiceConfig(uri="tcp://127.0.0.1:0", upstream=up_uri), _decider(c["bundle"], None)
        )
        uri = await service.start()
        client = await _connect(uri)
        try:
            await client.write_event(Event(type=SCREEN_EVENT))
            await _send_audio(client, c["live"], stop=True)
            verdict = await client.read_event()
        finally:
            await client.disconnect()
            await service.stop()
            await upstream.stop()
        return verdict, received

    verdict, received = run(scenario())
    assert verdict.type == VERDICT_EVENT and verdict.data["verdict"] == "bonafide"
    assert received == []  # nothing went to the wake service


def test_stop_finishes_the_decision_in_flight(clips_and_bundle, tmp_path: Path) -> None:
    """A stop request while a decision is running: the verdict is still sent and logged."""
    c = clips_and_bundle
    log = DecisionLog(tmp_path / "d.jsonl")
    decider = _decider(c["bundle"], log)
    entered, release = threading.Event(), threading.Event()
    real_score = decider.scorer.score

    def slow_score(audio, path=None):
        entered.set()
        release.wait(10)
        return real_score(audio, path)

    decider.scorer.score = slow_score  # type: ignore[method-assign]

    async def scenario():
        service = WakeguardService(ServiceConfig(uri="tcp://127.0.0.1:0"), decider)
        uri = await service.start()
        client = await _connect(uri)
        await _send_audio(client, c["live"], stop=True)
        await asyncio.to_thread(entered.wait, 10)
        stopping = asyncio.create_task(service.stop())
        await asyncio.sleep(0.05)
        release.set()
        verdict = await client.read_event()
        await stopping
        await client.disconnect()
        return verdict

    verdict = run(scenario())
    log.close()
    assert verdict is not None and verdict.type == VERDICT_EVENT
    records, _ = read_records(tmp_path / "d.jsonl")
    assert len(records) == 1


# -- the command ------------------------------------------------------------------------------


def _start_serve(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``wakeguard serve ARGS --json`` in a subprocess, as on the Pi (the training libraries
    cannot be imported: a meta-path finder refuses them); returns it and its "listening" line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = ["serve", *args, "--json"]
    code = (
        PI_IMPORTS
        + f"sys.argv = ['wakeguard', *{argv!r}]\nfrom wakeguard.tools.cli import main\nmain()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"wakeguard serve did not start: {err}")
    ready = json.loads(line)
    assert ready["event"] == "listening"
    return proc, ready


def _stop_serve(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """SIGTERM; checks the clean exit and returns the "stopped" line."""
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


async def _describe_and_screen(uri: str, *clips: np.ndarray) -> tuple[Event, list[Event]]:
    """Describe, then screen each clip in turn on one connection: the info and the answers."""
    client = await _connect(uri)
    answers = []
    try:
        await client.write_event(Describe().event())
        info = await client.read_event()
        for x in clips:
            await _send_audio(client, x, stop=True)
            answers.append(await client.read_event())
    finally:
        await client.disconnect()
    return info, answers


def test_serve_command_sigterm_exits_zero_and_flushes(clips_and_bundle, tmp_path: Path) -> None:
    c = clips_and_bundle
    log_path = tmp_path / "serve.jsonl"
    args = ["--mode", "screen", "--uri", "tcp://127.0.0.1:0", "--model", str(c["bundle"])]
    proc, ready = _start_serve([*args, "--log", str(log_path)])
    try:
        assert ready["uri"].startswith("tcp://127.0.0.1:") and ready["config"] == "defaults"

        async def ask():
            client = await _connect(ready["uri"])
            await _send_audio(client, c["spoof"], stop=True)
            ev = await client.read_event()
            await client.disconnect()
            return ev

        verdict = run(ask())
        assert verdict.type == VERDICT_EVENT and verdict.data["verdict"] == "spoof"
    finally:
        stopped = _stop_serve(proc)
    assert stopped["event"] == "stopped" and stopped["decisions"] == 1
    records, _ = read_records(log_path)
    assert len(records) == 1 and records[0]["verdict"] == "spoof"


@pytest.fixture(scope="module")
def three_point_bundle(clips_and_bundle, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The test bundle with three different operating points: ``eer`` (the default) between the
    clips, ``bpcer_1pct`` above both (everything spoof), ``bpcer_5pct`` below both."""
    c = clips_and_bundle
    b = load_bundle(c["bundle"])
    thresholds = {
        "eer": (c["live_score"] + c["spoof_score"]) / 2,
        "bpcer_1pct": c["live_score"] + 10.0,
        "bpcer_5pct": c["spoof_score"] - 10.0,
    }
    folder = write_bundle(
        tmp_path_factory.mktemp("serve-ops") / "bundle",
        b.model_bytes,
        b.frontend,
        thresholds=thresholds,
        calibration=b.calibration,
        extra={"version": "test-serve-ops"},
    )
    return {"bundle": folder, "thresholds": thresholds}


def _serve_toml(path: Path, *, sock: Path, bundle: Path, log: Path) -> Path:
    """A config that changes every kind of serve setting away from its default."""
    path.write_text(
        "[serve]\n"
        f'uri = "unix://{sock}"\n'
        'upstream = "tcp://127.0.0.1:9"  # set, yet mode says screen: never contacted\n'
        'mode = "screen"\n'
        "max_screen_seconds = 1.0\n"
        "wake_seconds = 1.5\n"
        "[model]\n"
        f'bundle = "{bundle}"\n'
        'operating_point = "bpcer_1pct"\n'
        "[log]\n"
        f'path = "{log}"\n'
        "max_bytes = 200\n"
        "backups = 1\n"
    )
    return path


def test_serve_takes_its_settings_from_the_config_file(
    clips_and_bundle, three_point_bundle, tmp_path: Path
) -> None:
    c, ops = clips_and_bundle, three_point_bundle
    sock, log_path = tmp_path / "wg.sock", tmp_path / "from-config.jsonl"
    cfg = _serve_toml(tmp_path / "wg.toml", sock=sock, bundle=ops["bundle"], log=log_path)
    proc, ready = _start_serve(["--config", str(cfg)])
    try:
        assert ready["uri"] == f"unix://{sock}" and ready["config"] == str(cfg)  # [serve] uri
        info, verdicts = run(_describe_and_screen(ready["uri"], *[c["live"]] * 3))
    finally:
        stopped = _stop_serve(proc)
    assert stopped["decisions"] == 3
    # [serve] mode = screen wins over the upstream that would otherwise make it a proxy.
    assert info.type == "info" and info.data["wakeguard"]["mode"] == "screen"
    assert info.data["wakeguard"]["model_version"] == "test-serve-ops"  # [model] bundle
    assert info.data["wakeguard"]["wake_seconds"] == 1.5
    strict = ops["thresholds"]["bpcer_1pct"]
    for v in verdicts:
        assert v.type == VERDICT_EVENT
        assert v.data["threshold"] == pytest.approx(strict)  # [model] operating_point
        assert v.data["verdict"] == "spoof"  # even the live clip, at that threshold
        assert v.data["truncated"] is True and v.data["duration_s"] == 1.0  # max_screen_seconds
    # [log] path; max_bytes = 200 (shorter than one record: every record rotates the log);
    # backups = 1 (the default 3 would keep all three records).
    assert log_path.is_file() and (tmp_path / "from-config.jsonl.1").is_file()
    assert not (tmp_path / "from-config.jsonl.2").exists()
    records, bad = read_records(log_path)
    assert bad == 0 and [r["verdict"] for r in records] == ["spoof", "spoof"]


def test_serve_flags_override_the_config_file(
    clips_and_bundle, three_point_bundle, tmp_path: Path
) -> None:
    c, ops = clips_and_bundle, three_point_bundle
    sock, cfg_log = tmp_path / "wg.sock", tmp_path / "from-config.jsonl"
    cfg = _serve_toml(tmp_path / "wg.toml", sock=sock, bundle=ops["bundle"], log=cfg_log)
    flag_log = tmp_path / "from-flag.jsonl"
    args = ["--config", str(cfg), "--uri", "tcp://127.0.0.1:0", "--operating-point", "bpcer_5pct"]
    args += ["--max-seconds", "30", "--wake-seconds", "0", "--log", str(flag_log)]
    proc, ready = _start_serve(args)
    try:
        assert ready["uri"].startswith("tcp://127.0.0.1:") and not sock.exists()
        info, (verdict,) = run(_describe_and_screen(ready["uri"], c["spoof"]))
    finally:
        _stop_serve(proc)
    assert info.data["wakeguard"]["mode"] == "screen"  # not overridden: still the file's
    assert info.data["wakeguard"]["model_version"] == "test-serve-ops"
    window = load_bundle(ops["bundle"]).frontend.window_seconds
    assert info.data["wakeguard"]["wake_seconds"] == window  # 0 = one model window
    assert verdict.data["threshold"] == pytest.approx(ops["thresholds"]["bpcer_5pct"])
    assert verdict.data["verdict"] == "bonafide"  # even the replay, at that threshold
    assert verdict.data["truncated"] is False and verdict.data["duration_s"] == 2.0
    assert not cfg_log.exists()
    records, _ = read_records(flag_log)
    assert [r["verdict"] for r in records] == ["bonafide"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[serve]\nmode = screen\n", "not valid TOML"),
        ('[serve]\nupstrem = "tcp://127.0.0.1:10401"\n', "unknown key [serve] upstrem"),
        ('[serve]\nwake_seconds = "2"\n', "[serve] wake_seconds must be a number"),
        ('[metrics]\nport = "9100"\n', "[metrics] port must be an integer"),
        ("[serve]\nuri = 10400\n", "[serve] uri must be a string (in quotes), got 10400"),
        ("[serve]\nwake_seconds = nan\n", "[serve] wake_seconds must be 0 or more seconds, got nan"),
        ("[serve]\nconnect_timeout_s = 0\n", "[serve] connect_timeout_s must be a positive number"),
        (None, "configuration file not found"),
    ],
)
def test_serve_bad_config_is_a_clear_error(
    clips_and_bundle, tmp_path: Path, text: str | None, problem: str
) -> None:
    from wakeguard.tools.cli import app

    cfg = tmp_path / "broken.toml"
    if text is not None:
        cfg.write_text(text)
    # The unusable --uri makes a service that ignored the config fail at once, not serve on.
    args = ["--config", str(cfg), "--model", str(clips_and_bundle["bundle"]), *UNBINDABLE]
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2
    assert f"{cfg}: {problem}" in result.stderr.replace("\n", "")


def test_serve_config_semantics(clips_and_bundle, tmp_path: Path) -> None:
    """Empty strings and zeros mean what the config says; unusable settings are refused."""
    from wakeguard.tools.cli import app
    from wakeguard.tools.serve_cmd import resolve_config

    cfg = tmp_path / "wg.toml"
    cfg.write_text(
        '[serve]\nupstream = "tcp://127.0.0.1:10401"\nwake_seconds = 1.5\n'
        "[log]\nclip_cap_bytes = 7\n[metrics]\nport = 9100\n"
    )
    r = resolve_config(cfg, model=Path("b"), clip_cap_mb=2.5, metrics_port=0, upstream="")
    assert r.serve.upstream == "" and r.serve.wake_seconds == 1.5  # "" on the command line clears
    assert r.model.bundle == "b" and r.log.clip_cap_bytes == 2_500_000
    assert r.metrics.port == 0  # 0 = no metrics
    assert resolve_config(cfg).log.clip_cap_bytes == 7 and resolve_config(None).serve.upstream == ""

    def serve_with(text: str) -> str:
        cfg.write_text(text)
        args = ["-c", str(cfg), "--model", str(clips_and_bundle["bundle"]), *UNBINDABLE]
        result = CliRunner().invoke(app, ["serve", *args])
        assert result.exit_code == 2
        return result.stderr.replace("\n", "")

    # Clips need a decision log, whether they were asked for by flag or by the file.
    assert "needs --log ([log] path)" in serve_with(f'[log]\nclips_dir = "{tmp_path / "c"}"\n')
    # [serve] mode = proxy with no upstream anywhere: refused, naming both ways to give one.
    assert "--upstream ([serve] upstream in the config)" in serve_with('[serve]\nmode = "proxy"\n')
    assert "mode must be proxy or screen" in serve_with('[serve]\nmode = "veto"\n')
    # A port out of range names the setting, not only urllib's "Port out of range".
    said = serve_with('[serve]\nupstream = "tcp://127.0.0.1:99999"\n')
    assert "upstream 'tcp://127.0.0.1:99999': the port must be 1-65535" in said


def test_serve_refuses_a_corrupt_or_mismatched_bundle(clips_and_bundle, tmp_path: Path) -> None:
    from wakeguard.tools.cli import app

    corrupt = tmp_path / "corrupt"
    shutil.copytree(clips_and_bundle["bundle"], corrupt)
    data = bytearray((corrupt / "model.tflite").read_bytes())
    data[100] ^= 0xFF
    (corrupt / "model.tflite").write_bytes(bytes(data))
    result = CliRunner().invoke(
        app, ["serve", "--model", str(corrupt), "--uri", "tcp://127.0.0.1:0"]
    )
    assert result.exit_code == 2
    assert "corrupt" in result.output

    mismatched = tmp_path / "mismatched"
    shutil.copytree(clips_and_bundle["bundle"], mismatched)
    manifest = json.loads((mismatched / "manifest.json").read_text())
    manifest["frontend"]["kind"] = "mfcc-from-the-future"
    (mismatched / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["serve", "--model", str(mismatched)])
    assert result.exit_code == 2
    assert "cannot be reproduced" in result.output

    result = CliRunner().invoke(
        app, ["serve", "--model", str(clips_and_bundle["bundle"]), "--mode", "proxy"]
    )
    assert result.exit_code == 2 and "--upstream" in result.output


# -- units ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_pcm_to_float_every_width_and_channel_mix(width: int) -> None:
    x = (0.5 * np.sin(np.linspace(0, 20, 500))).astype(np.float32)
    tol = 2.0 / (1 << (8 * width - 1))
    assert np.allclose(pcm_to_float(_encode(x, width, 1), width, 1), x, atol=tol)
    assert np.allclose(pcm_to_float(_encode(x, width, 2), width, 2), x, atol=tol)


def test_ring_keeps_the_last_seconds_in_order() -> None:
    ring = AudioRing(1.0, rate=10)
    stream = np.arange(37, dtype=np.float32)
    for i in range(0, 37, 4):
        ring.append(stream[i : i + 4])
    assert ring.total == 37 and ring.held == 10
    assert np.array_equal(ring.window(), stream[27:37])
    assert np.array_equal(ring.window(end=33, n=5), stream[28:33])
    assert np.array_equal(ring.window(end=20, n=5), stream[27:20])  # no longer held: empty
    ring.append(np.arange(100, 125, dtype=np.float32))  # longer than the ring
    assert ring.total == 62 and np.array_equal(ring.window(), np.arange(115, 125))
