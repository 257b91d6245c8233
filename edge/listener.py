"""The live screener: audio source -> endpointer -> scorer -> decision -> outputs.

:class:`Listener` runs on the consumer thread of an :class:`~wakeguard.edge.capture.AudioSource`
(the capture callback only fills a bounded queue). Each endpointed command is scored
once and becomes a typed :class:`VerdictEvent` (or a :class:`SkippedEvent` when it cannot
be scored or falls in the refractory time). Events go to sinks: callables the caller
supplies (``wakeguard listen`` prints JSON lines), the optional decision log and metrics,
and the optional hook command and webhook, which run on their own worker threads behind
bounded queues, so a slow hook or an unreachable webhook never holds up the audio.

``latency_ms`` of a verdict is the time from the arrival of the audio block in which the
endpointer decided the command had ended, to the verdict: VAD, front-end, inference and
decision, as a user waiting for the answer would feel it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import queue
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .audio import AudioError
from .capture import DISCONTINUITY, AudioSource
from .decision import Decider, DecisionParams
from .endpoint import Endpointer, EndpointParams, Segment
from .scorer import Scorer

log = logging.getLogger(__name__)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class VerdictEvent:
    """One command's verdict (what ``wakeguard listen`` prints as a JSON line)."""

    t_start: float
    """Start of the command, seconds since listening began (stream time)."""
    t_end: float
    score: float
    """Calibrated score of this command, higher = more likely live."""
    verdict: str
    latency_ms: float
    """End of utterance (endpoint decision) to verdict."""
    level_dbfs: float
    duration_s: float
    model_version: str
    threshold: float
    smoothed_score: float
    truncated: bool
    time: str = field(default_factory=_utc_now)
    """Wall-clock time of the verdict, UTC."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "score": round(self.score, 4),
            "verdict": self.verdict,
            "latency_ms": round(self.latency_ms, 2),
            "level_dbfs": round(self.level_dbfs, 1),
            "duration_s": round(self.duration_s, 3),
            "model_version": self.model_version,
            "threshold": round(self.threshold, 4),
            "smoothed_score": round(self.smoothed_score, 4),
            "truncated": self.truncated,
            "time": self.time,
        }

    def env(self) -> dict[str, str]:
        """The verdict as ``WAKEGUARD_*`` environment variables for a hook command."""
        d = self.to_dict()
        env = {
            f"WAKEGUARD_{k.upper()}": ("1" if v is True else "0" if v is False else str(v))
            for k, v in d.items()
        }
        env["WAKEGUARD_JSON"] = json.dumps(d)
        return env


@dataclass(frozen=True)
class SkippedEvent:
    """A command that got no reported verdict, and why."""

    t_start: float
    t_end: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "skipped": self.reason,
        }


Event = VerdictEvent | SkippedEvent
Sink = Callable[[Event], None]


# -- hook and webhook: off the audio path ------------------------------------------------------


class OutputWorker:
    """One daemon thread running jobs from a bounded queue; a full queue drops (and logs) the job."""

    def __init__(self, name: str, max_pending: int = 16):
        self.name = name
        self._q: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=max(1, max_pending))
        self.dropped = 0
        self.done = 0
        self._thread = threading.Thread(target=self._loop, name=f"wakeguard-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> bool:
        try:
            self._q.put_nowait(job)
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("%s: %d verdicts waiting already; dropped one", self.name, self._q.maxsize)
            return False

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            try:
                job()
            except Exception as exc:  # a job must never kill the worker
                log.error("%s failed: %s", self.name, exc)
            self.done += 1

    def close(self, timeout: float) -> None:
        """Let queued jobs finish (up to ``timeout`` seconds), then stop the thread."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._q.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    log.warning(
                        "%s: gave up on %d pending verdicts at shutdown", self.name, self._q.qsize()
                    )
                    return
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))


class HookCommand:
    """Runs a command per verdict with the verdict in its environment, killed after a timeout."""

    def __init__(
        self, command: str, *, timeout_s: float = 5.0, on: str = "all", max_pending: int = 16
    ):
        argv = shlex.split(command)
        if not argv:
            raise ValueError("hook command is empty")
        if on not in ("all", "spoof", "bonafide"):
            raise ValueError(f"hook_on must be all, spoof or bonafide, got {on!r}")
        self.argv = argv
        self.timeout_s = float(timeout_s)
        self.on = on
        self.failures = 0
        self.worker = OutputWorker("hook", max_pending)

    def __call__(self, event: Event) -> None:
        if not isinstance(event, VerdictEvent) or self.on not in ("all", event.verdict):
            return
        env = {**os.environ, **event.env()}
        self.worker.submit(lambda: self._run(env))

    def _run(self, env: dict[str, str]) -> None:
        try:
            r = subprocess.run(
                self.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.failures += 1
            log.warning("hook %s killed after %.1f s", self.argv[0], self.timeout_s)
            return
        except OSError as exc:
            self.failures += 1
            log.error("hook %s cannot run: %s", self.argv[0], exc)
            return
        if r.returncode != 0:
            self.failures += 1
            tail = r.stderr.decode(errors="replace").strip()[-300:]
            log.warning("hook %s exited %d: %s", self.argv[0], r.returncode, tail)

    def close(self) -> None:
        self.worker.close(self.timeout_s + 1.0)


def _is_local_host(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Webhook:
    """POSTs each verdict as JSON to a URL; errors are logged, never raised."""

    def __init__(
        self, url: str, *, timeout_s: float = 2.0, allow_remote: bool = False, max_pending: int = 16
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook must be an http(s) URL, got {url!r}")
        if not allow_remote and not _is_local_host(parts.hostname):
            raise ValueError(
                f"webhook host {parts.hostname!r} is not this machine; set output.allow_remote_webhook "
                "(or --allow-remote-webhook) to send verdicts elsewhere"
            )
        self.url = url
        self.timeout_s = float(timeout_s)
        self.failures = 0
        self.sent = 0
        self.worker = OutputWorker("webhook", max_pending)

    def __call__(self, event: Event) -> None:
        if isinstance(event, VerdictEvent):
            body = json.dumps(event.to_dict()).encode()
            self.worker.submit(lambda: self._post(body))

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read(1024)
            self.sent += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.failures += 1
            log.warning("webhook %s failed: %s", self.url, exc)

    def close(self) -> None:
        self.worker.close(self.timeout_s + 1.0)


# -- the listener ----------------------------------------------------------------------------


@dataclass
class ListenStats:
    """Counters of one listening session (bounded: latencies keep the last 10,000)."""

    samples: int = 0
    blocks: int = 0
    segments: int = 0
    verdicts: int = 0
    skipped: int = 0
    overruns: int = 0
    reconnects: int = 0
    log_write_errors: int = 0
    """Decision records and clips the decision log could not write (full disk...)."""
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=10_000))

    @property
    def audio_seconds(self) -> float:
        return self.samples / 16_000

    def latency_percentile(self, q: float) -> float | None:
        return (
            float(np.percentile(np.fromiter(self.latencies_ms, float), q))
            if self.latencies_ms
            else None
        )

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        d["audio_seconds"] = round(self.audio_seconds, 3)
        d["latency_p50_ms"] = self.latency_percentile(50)
        d["latency_p95_ms"] = self.latency_percentile(95)
        return d


class Listener:
    """Endpoint, score and decide a 16 kHz mono stream; deliver events to sinks."""

    def __init__(
        self,
        scorer: Scorer,
        *,
        model_version: str = "unknown",
        endpoint: EndpointParams | None = None,
        decision: DecisionParams | None = None,
        sinks: Iterable[Sink] = (),
        decision_log: Any = None,
        telemetry: Any = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.scorer = scorer
        self.model_version = model_version
        self.endpointer = Endpointer(endpoint)
        self.decider = Decider(decision or DecisionParams(threshold=scorer.threshold))
        self.sinks = list(sinks)
        self.decision_log = decision_log
        self.telemetry = telemetry
        self.clock = clock
        self.stats = ListenStats()
        self._overruns_seen = 0

    def process(self, block: np.ndarray, t_arrival: float | None = None) -> list[Event]:
        """Feed one block; returns (and delivers) the events of commands that ended in it."""
        t0 = self.clock() if t_arrival is None else t_arrival
        self.stats.blocks += 1
        self.stats.samples += len(block)
        return self._decide(self.endpointer.push(block), t0)

    def finish(self) -> list[Event]:
        """End of stream (or a restart): decide a command still in progress."""
        return self._decide(self.endpointer.flush(), self.clock())

    def run(self, source: AudioSource, stop: threading.Event) -> ListenStats:
        """Listen until the source ends or ``stop`` is set; then finish the command in progress."""
        try:
            for block in source.blocks(stop):
                if block is DISCONTINUITY:
                    self.finish()
                    self.stats.reconnects += 1
                else:
                    self.process(block)
                self._count_overruns(source)
        finally:
            self.finish()
            self._count_overruns(source)
        return self.stats

    def _count_overruns(self, source: AudioSource) -> None:
        n = source.overruns
        if n > self._overruns_seen:
            if self.telemetry is not None:
                self.telemetry.add_overruns(n - self._overruns_seen)
            self._overruns_seen = n
        self.stats.overruns = n

    def _decide(self, segments: list[Segment], t0: float) -> list[Event]:
        events: list[Event] = []
        for seg in segments:
            self.stats.segments += 1
            try:
                r = self.scorer.score(seg.audio, endpointed=True)
            except AudioError as exc:
                self._deliver(SkippedEvent(seg.t_start, seg.t_end, exc.problem), events)
                continue
            d = self.decider.decide(r.score, seg.t_start, seg.t_end)
            if d.suppressed:
                self._deliver(SkippedEvent(seg.t_start, seg.t_end, "refractory"), events)
                continue
            latency = (self.clock() - t0) * 1000.0
            ev = VerdictEvent(
                t_start=seg.t_start,
                t_end=seg.t_end,
                score=d.score,
                verdict=d.verdict,
                latency_ms=latency,
                level_dbfs=seg.level_dbfs,
                duration_s=seg.duration_s,
                model_version=self.model_version,
                threshold=d.threshold,
                smoothed_score=d.smoothed_score,
                truncated=seg.truncated,
            )
            self.stats.latencies_ms.append(latency)
            if self.telemetry is not None:
                self.telemetry.observe(ev.verdict, ev.score, ev.latency_ms)
            if self.decision_log is not None:
                self.decision_log.record(
                    t_start=ev.t_start,
                    t_end=ev.t_end,
                    score=ev.score,
                    verdict=ev.verdict,
                    threshold=ev.threshold,
                    latency_ms=ev.latency_ms,
                    level_dbfs=ev.level_dbfs,
                    duration_s=ev.duration_s,
                    model_version=ev.model_version,
                    source="listen",
                    audio=seg.audio,
                    smoothed_score=round(ev.smoothed_score, 6),
                    truncated=ev.truncated,
                )
            self._deliver(ev, events)
        return events

    def _deliver(self, ev: Event, events: list[Event]) -> None:
        events.append(ev)
        if isinstance(ev, VerdictEvent):
            self.stats.verdicts += 1
        else:
            self.stats.skipped += 1
        for sink in self.sinks:
            sink(ev)


__all__ = [
    "Event",
    "HookCommand",
    "ListenStats",
    "Listener",
    "OutputWorker",
    "SkippedEvent",
    "VerdictEvent",
    "Webhook",
]
