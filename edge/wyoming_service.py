"""``wakeguard serve``: liveness screening for the Home Assistant / Rhasspy voice stack over Wyoming.

Two kinds of connection, one server:

**Wake proxy** (``upstream`` set). The satellite's ``--wake-uri`` points here. Every event
from the satellite (``describe``, ``detect``, audio) is forwarded to the real wake-word
service, and every event from it comes back, except ``detection``: the proxy keeps the
last seconds of audio in a bounded ring buffer, scores the wake-word audio (the
``wake_seconds`` before the detection) and passes the detection on only if the verdict is
``bonafide``. A ``spoof`` verdict swallows it (the satellite never starts streaming the
command) and is recorded in the decision log and the metrics. Audio the proxy cannot
score (too short, silent) passes the detection on (fail open: the assistant keeps
working) with a warning in the log.

**Direct screening** (``mode="screen"``, or a connection whose first event is
``wakeguard-screen``). ``audio-start`` / ``audio-chunk`` ... / ``audio-stop`` in, at any
rate, width (1-4 bytes) and channel count; one event out::

    {"type": "wakeguard-verdict",
     "data": {"score": 1.83, "verdict": "bonafide", "threshold": 0.0, "latency_ms": 6.1,
              "model_version": "...", "duration_s": 2.0, "n_windows": 1, "truncated": false}}

``score`` is the calibrated score (higher = more likely live), ``verdict`` is
``bonafide`` or ``spoof`` at ``threshold``, ``latency_ms`` the front-end + inference time,
``truncated`` true when the audio was longer than ``max_screen_seconds`` and only its end
was scored. Audio that cannot be scored gets a Wyoming ``error`` event (code
``audio-unusable``) instead, and the connection stays open for the next utterance.
``describe`` gets an ``info`` event with an extra ``wakeguard`` field (mode, model
version, threshold); proxied ``info`` events get the same field.

Nothing here blocks the event loop on the model: scoring runs in a worker thread behind a
lock (one TFLite interpreter). Buffers are bounded everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np

from .audio import SAMPLE_RATE, AudioError, resample
from .config import check_durations
from .scorer import BONAFIDE, Scorer, ScoreResult

log = logging.getLogger(__name__)

SCREEN_EVENT = "wakeguard-screen"
"""Sent first on a connection to a proxy to ask for direct screening instead of proxying."""
VERDICT_EVENT = "wakeguard-verdict"
"""The screening answer (see the module docstring for its data)."""
SERVICE_NAME = "wakeguard"

Mode = Literal["proxy", "screen"]

UPSTREAM_CHECK_TIMEOUT_S = 2.0
"""Longest wait for the one connection to the upstream tried at startup (see ``start``)."""


class ServiceError(RuntimeError):
    """The service cannot start (bad URI, port taken, upstream URI malformed)."""


# -- audio ---------------------------------------------------------------------------------


def pcm_to_float(audio: bytes, width: int, channels: int) -> np.ndarray:
    """Little-endian PCM bytes (8-bit unsigned, 16/24/32-bit signed) to mono float32 in [-1, 1)."""
    if channels < 1:
        raise AudioError(None, f"invalid channel count {channels}")
    frame = width * channels
    n = len(audio) // frame if frame else 0
    raw = memoryview(audio)[: n * frame]
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        raise AudioError(None, f"unsupported sample width {width} bytes (1-4 supported)")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return x


class AudioRing:
    """The last ``seconds`` of mono float32 audio at one rate, in a fixed-size circular array."""

    def __init__(self, seconds: float, rate: int = SAMPLE_RATE):
        self.seconds = float(seconds)
        self.reset(rate)

    def reset(self, rate: int) -> None:
        if rate <= 0:
            raise AudioError(None, f"invalid sample rate {rate}")
        self.rate = int(rate)
        self.capacity = max(1, int(round(self.seconds * self.rate)))
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self.total = 0
        """Samples written since the last reset (the stream position of the next sample)."""

    def append(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        n = x.size
        if n == 0:
            return
        if n > self.capacity:
            x = x[-self.capacity :]
        # Stream sample i lives at _buf[i % capacity].
        pos = (self.total + n - x.size) % self.capacity
        first = min(x.size, self.capacity - pos)
        self._buf[pos : pos + first] = x[:first]
        self._buf[: x.size - first] = x[first:]
        self.total += n

    def window(self, end: int | None = None, n: int | None = None) -> np.ndarray:
        """Samples ``[end - n, end)`` of the stream (clipped to what is still held), oldest first."""
        end = self.total if end is None else max(0, min(int(end), self.total))
        start = max(0, end - (self.capacity if n is None else int(n)), self.total - self.capacity)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        a, b = start % self.capacity, end % self.capacity
        if a < b:
            return self._buf[a:b].copy()
        return np.concatenate([self._buf[a:], self._buf[:b]])  # wraps around the end

    @property
    def held(self) -> int:
        return min(self.total, self.capacity)


# -- the decision, shared by every connection -----------------------------------------------


@dataclass
class Decision:
    """One scored utterance (``result`` None when it could not be scored, with ``error``)."""

    result: ScoreResult | None
    error: str | None
    duration_s: float


class Decider:
    """The scorer, decision log and metrics behind a lock, so connections share one model."""

    def __init__(
        self,
        scorer: Scorer,
        *,
        model_version: str,
        decision_log: Any = None,
        telemetry: Any = None,
    ):
        self.scorer = scorer
        self.model_version = model_version
        self.decision_log = decision_log
        self.telemetry = telemetry
        self._lock = threading.Lock()
        self.n_decisions = 0

    @property
    def threshold(self) -> float:
        return float(self.scorer.threshold)

    def score(self, audio16k: np.ndarray) -> Decision:
        """Score 16 kHz mono audio (thread-safe); unusable audio comes back with its error."""
        duration = (
            audio16k.size / SAMPLE_RATE
        )  # the level is computed by the log, off the critical path
        try:
            with self._lock:
                result = self.scorer.score(audio16k)
                self.n_decisions += 1
        except AudioError as exc:
            return Decision(None, exc.problem, duration)
        if self.telemetry is not None:
            self.telemetry.observe(result.verdict, result.score, result.latency_ms)
        return Decision(result, None, duration)

    def record(
        self,
        d: Decision,
        *,
        t_start: float,
        t_end: float,
        source: str,
        audio: np.ndarray | None,
        **extra: Any,
    ) -> None:
        """Append a scored decision to the decision log (never raises on disk errors)."""
        if self.decision_log is None or d.result is None:
            return
        r = d.result
        self.decision_log.record(
            t_start=t_start,
            t_end=t_end,
            score=r.score,
            verdict=r.verdict,
            threshold=r.threshold,
            latency_ms=r.latency_ms,
            duration_s=d.duration_s,
            model_version=self.model_version,
            source=source,
            audio=audio,
            **extra,
        )


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Settings of one ``wakeguard serve`` instance."""

    uri: str = "tcp://127.0.0.1:10400"
    """Where to listen: ``tcp://HOST:PORT`` (port 0 picks a free one) or ``unix://PATH``."""
    upstream: str | None = None
    """The real wake-word service (``tcp://`` or ``unix://``); None = screening only."""
    mode: Mode | None = None
    """``proxy`` or ``screen``; None = ``proxy`` when ``upstream`` is set, else ``screen``."""
    wake_seconds: float = 2.0
    """Audio before a detection that is scored as the wake word, in seconds."""
    buffer_seconds: float = 10.0
    """Audio kept per proxied connection (bounded ring buffer), in seconds."""
    max_screen_seconds: float = 30.0
    """Longest utterance held for direct screening; only the end of longer audio is scored."""
    connect_timeout_s: float = 5.0
    """Give up connecting to the upstream after this long."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM, wait this long for decisions in flight before closing connections."""

    @property
    def resolved_mode(self) -> Mode:
        if self.mode is not None:
            return self.mode
        return "proxy" if self.upstream else "screen"

    def check(self) -> None:
        """Raise ServiceError for settings that cannot work."""
        mode = self.resolved_mode
        if mode not in ("proxy", "screen"):
            raise ServiceError(f"mode must be proxy or screen, got {mode!r}")
        if mode == "proxy" and not self.upstream:
            raise ServiceError(
                "proxy mode needs --upstream ([serve] upstream in the config): tcp://HOST:PORT"
                " of the real wake-word service"
            )
        for name, uri in (("uri", self.uri), ("upstream", self.upstream)):
            if uri is None:
                continue
            u = urlparse(uri)
            if u.scheme == "tcp":
                try:
                    port = u.port
                except ValueError:  # urllib: "Port out of range 0-65535", naming neither
                    raise ServiceError(f"{name} {uri!r}: the port must be 1-65535") from None
                if u.hostname is None or port is None:
                    raise ServiceError(f"{name} {uri!r}: a tcp:// URI needs a host and a port")
            elif u.scheme == "unix":
                if not u.path:
                    raise ServiceError(f"{name} {uri!r}: a unix:// URI needs a socket path")
            else:
                raise ServiceError(f"{name} {uri!r}: only tcp:// and unix:// are supported")
        if self.upstream and self.upstream == self.uri:
            raise ServiceError(f"upstream {self.upstream} is this service's own address")
        try:
            check_durations(
                self,
                ("wake_seconds", "buffer_seconds", "max_screen_seconds", "connect_timeout_s"),
            )
            check_durations(self, ("shutdown_grace_s",), zero_ok=("shutdown_grace_s",))
        except ValueError as exc:
            raise ServiceError(str(exc)) from None
        if self.buffer_seconds < self.wake_seconds:
            raise ServiceError(
                f"buffer_seconds ({self.buffer_seconds}) must be at least wake_seconds ({self.wake_seconds})"
            )

    @property
    def is_loopback(self) -> bool:
        u = urlparse(self.uri)
        if u.scheme != "tcp":
            return True
        host = u.hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


# -- one connection ----------------------------------------------------------------------------


@dataclass
class _ScreenState:
    rate: int | None = None
    width: int = 2
    channels: int = 1
    t_start: float = 0.0
    received: int = 0
    ring: AudioRing | None = None


class WakeguardHandler:
    """Events of one client connection (wrapped by the Wyoming ``AsyncEventHandler`` below)."""

    def __init__(
        self,
        service: WakeguardService,
        writer_fn: Callable[[Any], Any],
        close_fn: Callable[[], Any],
    ):
        self.service = service
        self.config = service.config
        self.mode: Mode = self.config.resolved_mode
        self._write = writer_fn
        self._close = close_fn
        self._write_lock = asyncio.Lock()
        self._first = True
        # proxy state
        self._upstream: Any = None
        self._upstream_task: asyncio.Task | None = None
        self._ring = AudioRing(self.config.buffer_seconds)
        self._ring_rate_known = False
        self._chunk_marks: deque[tuple[int, int]] = deque(maxlen=4096)  # (timestamp_ms, end sample)
        # screen state
        self._screen = _ScreenState()

    async def write(self, event: Any) -> None:
        async with self._write_lock:
            await self._write(event)

    # -- entry point --------------------------------------------------------------------
    async def handle_event(self, event: Any) -> bool:
        if self._first:
            self._first = False
            if event.type == SCREEN_EVENT:
                self.mode = "screen"
                return True
        if self.mode == "screen":
            return await self._handle_screen(event)
        return await self._handle_proxy(event)

    async def disconnect(self) -> None:
        if self._upstream_task is not None:
            self._upstream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._upstream_task
            self._upstream_task = None
        if self._upstream is not None:
            with contextlib.suppress(Exception):
                await self._upstream.disconnect()
            self._upstream = None

    def _info_event(self, event: Any = None) -> Any:
        from wyoming.info import Info

        ev = event if event is not None else Info().event()
        ev.data = dict(ev.data or {})
        ev.data[SERVICE_NAME] = self.service.describe(self.mode)
        return ev

    # -- proxy ----------------------------------------------------------------------------------
    async def _connect_upstream(self) -> bool:
        from wyoming.client import AsyncClient
        from wyoming.error import Error

        client = AsyncClient.from_uri(
            self.config.upstream, connect_timeout=self.config.connect_timeout_s
        )
        try:
            await client.connect()
        except OSError as exc:  # includes TimeoutError
            msg = f"wake-word service {self.config.upstream} is unreachable: {str(exc) or type(exc).__name__}"
            log.error(msg)
            with contextlib.suppress(Exception):
                await self.write(Error(text=msg, code="upstream-unreachable").event())
            return False
        self._upstream = client
        self._upstream_task = asyncio.create_task(
            self._pump_upstream(), name="wakeguard upstream reader"
        )
        return True

    async def _handle_proxy(self, event: Any) -> bool:
        from wyoming.audio import AudioChunk, AudioStart

        if self._upstream is None and not await self._connect_upstream():
            return False
        if AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            self._ring.reset(start.rate)
            self._ring_rate_known = True
            self._chunk_marks.clear()
        elif AudioChunk.is_type(event.type):
            self._buffer_chunk(AudioChunk.from_event(event))
        try:
            await self._upstream.write_event(event)
        except (OSError, ConnectionError) as exc:
            log.error("lost the wake-word service %s: %s", self.config.upstream, exc)
            return False
        return True

    def _buffer_chunk(self, chunk: Any) -> None:
        if not self._ring_rate_known or chunk.rate != self._ring.rate:
            self._ring.reset(chunk.rate)
            self._ring_rate_known = True
            self._chunk_marks.clear()
        try:
            x = pcm_to_float(chunk.audio, chunk.width, chunk.channels)
        except AudioError as exc:
            log.warning("audio chunk not buffered: %s", exc.problem)
            return
        self._ring.append(x)
        if chunk.timestamp is not None:
            self._chunk_marks.append((int(chunk.timestamp), self._ring.total))

    def _wake_end(self, timestamp: int | None) -> int:
        """Stream position where the wake word ends: the end of the chunk the detection names."""
        if timestamp is not None and self._chunk_marks:
            best = None
            for ts, end in self._chunk_marks:
                if ts <= timestamp:
                    best = end
                else:
                    break
            if best is not None:
                return best
        return self._ring.total

    async def _pump_upstream(self) -> None:
        from wyoming.info import Info
        from wyoming.wake import Detection

        try:
            while True:
                event = await self._upstream.read_event()
                if event is None:
                    log.warning("wake-word service %s closed the connection", self.config.upstream)
                    break
                if Detection.is_type(event.type):
                    await self._on_detection(event)
                elif Info.is_type(event.type):
                    await self.write(self._info_event(event))
                else:
                    await self.write(event)
        except asyncio.CancelledError:
            raise
        except (OSError, ConnectionError) as exc:
            log.warning("connection closed while forwarding: %s", exc)
        # Upstream gone (or client gone): end this client connection so the satellite reconnects.
        with contextlib.suppress(Exception):
            await self._close()

    async def _on_detection(self, event: Any) -> None:
        from wyoming.wake import Detection

        t0 = time.perf_counter()
        det = Detection.from_event(event)
        rate = self._ring.rate
        end = self._wake_end(det.timestamp)
        n = int(round(self.config.wake_seconds * rate))
        native = self._ring.window(end, n)
        t_end = end / rate
        t_start = t_end - native.size / rate
        audio = resample(native, rate, SAMPLE_RATE) if native.size else native
        async with self.service.decision_in_flight():
            d = await asyncio.to_thread(self.service.decider.score, audio)
            passed = d.result is None or d.result.verdict == BONAFIDE
            if passed:
                await self.write(event)
            added_ms = (time.perf_counter() - t0) * 1000.0
            self.service.note_proxy_latency(added_ms)
            if d.result is None:
                log.warning("detection %r passed unscreened: wake-word audio %s", det.name, d.error)
                return
            if not passed:
                log.info(
                    "detection %r rejected as replay (score %.3f < threshold %.3f)",
                    det.name,
                    d.result.score,
                    d.result.threshold,
                )
            await asyncio.to_thread(
                self.service.decider.record,
                d,
                t_start=t_start,
                t_end=t_end,
                source="wyoming-proxy",
                audio=audio,
                wake_word=det.name,
                added_ms=round(added_ms, 3),
            )

    # -- direct screening -----------------------------------------------------------------------
    async def _handle_screen(self, event: Any) -> bool:
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.error import Error
        from wyoming.info import Describe

        s = self._screen
        if Describe.is_type(event.type):
            await self.write(self._info_event())
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            self._start_screen(start.rate, start.width, start.channels, start.timestamp)
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            if s.ring is None:
                self._start_screen(chunk.rate, chunk.width, chunk.channels, chunk.timestamp)
            elif chunk.rate != s.rate:
                await self.write(
                    Error(
                        text=f"audio-chunk rate {chunk.rate} Hz differs from audio-start's {s.rate} Hz",
                        code="audio-format",
                    ).event()
                )
                s.ring = None
                return True
            try:
                x = pcm_to_float(chunk.audio, chunk.width, chunk.channels)
            except AudioError as exc:
                await self.write(Error(text=exc.problem, code="audio-format").event())
                s.ring = None
                return True
            assert s.ring is not None
            s.ring.append(x)
            s.received += x.size
        elif AudioStop.is_type(event.type):
            if s.ring is None:
                await self.write(
                    Error(text="audio-stop without audio", code="audio-unusable").event()
                )
                return True
            await self._finish_screen()
        return True

    def _start_screen(self, rate: int, width: int, channels: int, timestamp: int | None) -> None:
        s = self._screen
        s.rate, s.width, s.channels = int(rate), int(width), int(channels)
        s.t_start = 0.0 if timestamp is None else timestamp / 1000.0
        s.received = 0
        s.ring = AudioRing(self.config.max_screen_seconds, s.rate)

    async def _finish_screen(self) -> None:
        from wyoming.error import Error
        from wyoming.event import Event

        s = self._screen
        assert s.ring is not None and s.rate is not None
        native = s.ring.window()
        truncated = s.received > s.ring.held
        rate, t_start, received = s.rate, s.t_start, s.received
        s.ring = None
        audio = resample(native, rate, SAMPLE_RATE) if native.size else native
        async with self.service.decision_in_flight():
            d = await asyncio.to_thread(self.service.decider.score, audio)
            if d.result is None:
                await self.write(
                    Error(
                        text=f"audio cannot be screened: {d.error}", code="audio-unusable"
                    ).event()
                )
                return
            r = d.result
            data = {
                "score": round(r.score, 6),
                "verdict": r.verdict,
                "threshold": round(r.threshold, 6),
                "latency_ms": round(r.latency_ms, 3),
                "model_version": self.service.decider.model_version,
                "duration_s": round(d.duration_s, 3),
                "n_windows": r.n_windows,
                "truncated": truncated,
            }
            await self.write(Event(type=VERDICT_EVENT, data=data))
            t_end = t_start + received / rate
            await asyncio.to_thread(
                self.service.decider.record,
                d,
                t_start=t_end - d.duration_s,
                t_end=t_end,
                source="wyoming-screen",
                audio=audio,
            )


def _wyoming_handler_class() -> type:
    """The ``AsyncEventHandler`` subclass, built on first use so importing this module needs no wyoming."""
    from wyoming.server import AsyncEventHandler

    class _Handler(AsyncEventHandler):
        def __init__(
            self,
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            service: WakeguardService,
        ):
            super().__init__(reader, writer)
            self.logic = WakeguardHandler(service, self.write_event, self.stop)
            service._handlers.add(self)

        async def handle_event(self, event: Any) -> bool:
            return await self.logic.handle_event(event)

        async def disconnect(self) -> None:
            await self.logic.disconnect()
            self.logic.service._handlers.discard(self)

    return _Handler


# -- the service -------------------------------------------------------------------------------


@dataclass
class ServeSummary:
    """What a service run did, returned when it stops."""

    uri: str
    mode: str
    decisions: int
    proxy_added_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.proxy_added_ms, dtype=float)
        d: dict[str, Any] = {"uri": self.uri, "mode": self.mode, "decisions": self.decisions}
        if lat.size:
            d["proxy_added_ms"] = {
                "n": int(lat.size),
                "p50": round(float(np.percentile(lat, 50)), 3),
                "p95": round(float(np.percentile(lat, 95)), 3),
                "max": round(float(lat.max()), 3),
            }
        return d


class WakeguardService:
    """A Wyoming server in front of a :class:`Decider`; start/stop from a running event loop."""

    def __init__(self, config: ServiceConfig, decider: Decider):
        config.check()
        self.config = config
        self.decider = decider
        self.mode: Mode = config.resolved_mode
        self._server: Any = None
        self._handlers: set[Any] = set()
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self.bound_uri: str | None = None
        self.proxy_added_ms: deque[float] = deque(maxlen=10_000)

    def describe(self, mode: str) -> dict[str, Any]:
        return {
            "mode": mode,
            "model_version": self.decider.model_version,
            "threshold": self.decider.threshold,
            "wake_seconds": self.config.wake_seconds,
            "verdict_event": VERDICT_EVENT,
            "screen_event": SCREEN_EVENT,
        }

    def note_proxy_latency(self, ms: float) -> None:
        self.proxy_added_ms.append(ms)

    @contextlib.asynccontextmanager
    async def decision_in_flight(self):
        """Count a decision as in flight, so shutdown waits for it to be answered and logged."""
        assert self._idle is not None
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def start(self) -> str:
        """Bind and start accepting connections; returns the bound URI (real port if 0 was asked).

        A proxy then tries its upstream once (at most :data:`UPSTREAM_CHECK_TIMEOUT_S`, while
        already serving) and logs a warning if nothing answers there."""
        from wyoming.server import AsyncServer

        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()
        if not self.config.is_loopback:
            log.warning("listening on %s: reachable from other machines", self.config.uri)
        server = AsyncServer.from_uri(self.config.uri)
        handler_cls = _wyoming_handler_class()
        try:
            await server.start(lambda r, w: handler_cls(r, w, self))
        except OSError as exc:
            raise ServiceError(
                f"cannot listen on {self.config.uri}: {exc.strerror or exc}"
            ) from exc
        self._server = server
        self.bound_uri = self.config.uri
        inner = getattr(server, "_server", None)
        u = urlparse(self.config.uri)
        if u.scheme == "tcp" and inner is not None and inner.sockets:
            host, port = inner.sockets[0].getsockname()[:2]
            self.bound_uri = f"tcp://{u.hostname}:{port}"
        log.info("wakeguard serve (%s) listening on %s", self.mode, self.bound_uri)
        if self.mode == "proxy":
            await self._check_upstream()
        return self.bound_uri

    async def _check_upstream(self) -> None:
        """Connect to the upstream once and warn if that fails, so a wrong ``--upstream`` or a
        wake-word service that is down shows at startup, not at the first satellite. Never
        fatal: the upstream may come up later, and every connection tries it again."""
        from wyoming.client import AsyncClient

        upstream = self.config.upstream
        timeout = min(UPSTREAM_CHECK_TIMEOUT_S, self.config.connect_timeout_s)
        client = AsyncClient.from_uri(upstream, connect_timeout=timeout)
        try:
            await client.connect()
        except OSError as exc:  # includes TimeoutError
            if isinstance(exc, TimeoutError):
                problem = f"no answer in {timeout:g} s"
            else:
                problem = str(exc) or type(exc).__name__
            log.warning(
                "wake-word service %s is unreachable: %s (serving anyway; each connection"
                " tries it again)",
                upstream,
                problem,
            )
            return
        with contextlib.suppress(Exception):
            await client.disconnect()

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def wait_stopped(self) -> None:
        assert self._stop is not None
        await self._stop.wait()

    async def stop(self) -> None:
        """Stop accepting, let decisions in flight finish (up to the grace time), close connections."""
        if self._server is None:
            return
        inner = getattr(self._server, "_server", None)
        if inner is not None:
            inner.close()  # no new connections
        if self._idle is not None and not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=self.config.shutdown_grace_s)
            except TimeoutError:
                log.warning(
                    "shutdown: %d decision(s) still running after %.0f s",
                    self._inflight,
                    self.config.shutdown_grace_s,
                )
        await self._server.stop()
        for h in list(self._handlers):
            with contextlib.suppress(Exception):
                await h.logic.disconnect()
        self._server = None

    async def run(
        self, on_ready: Callable[[str], None] | None = None, handle_signals: bool = True
    ) -> ServeSummary:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`), then shut down cleanly."""
        uri = await self.start()
        loop = asyncio.get_running_loop()
        installed = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self.request_stop)
                    installed.append(sig)
        try:
            if on_ready is not None:
                on_ready(uri)
            await self.wait_stopped()
            log.info("stopping: finishing decisions in flight")
        finally:
            await self.stop()
            for sig in installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        return ServeSummary(uri, self.mode, self.decider.n_decisions, list(self.proxy_added_ms))


__all__ = [
    "AudioRing",
    "Decider",
    "Decision",
    "SCREEN_EVENT",
    "ServeSummary",
    "ServiceConfig",
    "ServiceError",
    "VERDICT_EVENT",
    "WakeguardHandler",
    "WakeguardService",
    "pcm_to_float",
]
