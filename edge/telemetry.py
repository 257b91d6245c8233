"""Prometheus metrics for the runtime: verdict counts, score and latency histograms, overruns.

Metrics live in their own registry (not the process-wide default), so several services or
tests in one process never collide. ``prometheus_client`` is imported when a
:class:`Telemetry` is made, not when this module is imported: a Pi without it still runs
``listen`` and ``serve``; asking for metrics there raises :class:`TelemetryError` saying
what to install.

Exposed names (all prefixed ``wakeguard_``): ``decisions_total{verdict}``,
``score`` (histogram of calibrated scores), ``decision_latency_seconds`` (histogram),
``audio_overruns_total``, ``model_info{version}``.
"""

from __future__ import annotations

import threading
from typing import Any

SCORE_BUCKETS = (
    -10.0,
    -6.0,
    -4.0,
    -3.0,
    -2.0,
    -1.5,
    -1.0,
    -0.5,
    0.0,
    0.5,
    1.0,
    1.5,
    2.0,
    3.0,
    4.0,
    6.0,
    10.0,
)
"""Score histogram edges: scores are log-likelihood ratios, 0 = equal prior threshold."""
LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
"""Latency histogram edges in seconds, finest around the 15 ms target."""


class TelemetryError(RuntimeError):
    """Metrics were asked for but cannot be served (library missing, port taken)."""


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise TelemetryError(
            "metrics need the prometheus-client package (pip install prometheus-client); "
            "run without a metrics port to go on without them"
        ) from exc
    return prometheus_client


class Telemetry:
    """Counters and histograms of the decisions one service makes, optionally served over HTTP.

    ``port=None`` keeps the metrics in memory only (see :meth:`render`); ``port=0`` picks a
    free port on :meth:`start` (read it back from :attr:`port`).
    """

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", model_version: str = "unknown"
    ):
        pc = _prometheus()
        self.host = host
        self.port = port
        self.model_version = model_version
        self.registry = pc.CollectorRegistry(auto_describe=True)
        self._generate = pc.generate_latest
        self._start_server = pc.start_http_server
        self.decisions = pc.Counter(
            "wakeguard_decisions",
            "Decisions made, by verdict.",
            ["verdict"],
            registry=self.registry,
        )
        for verdict in ("bonafide", "spoof"):
            self.decisions.labels(verdict=verdict)  # export zeros before the first decision
        self.score = pc.Histogram(
            "wakeguard_score",
            "Calibrated liveness score (higher = more likely live).",
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.latency = pc.Histogram(
            "wakeguard_decision_latency_seconds",
            "Front-end plus inference time per decision.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.overruns = pc.Counter(
            "wakeguard_audio_overruns",
            "Audio input overruns (blocks lost before processing).",
            registry=self.registry,
        )
        self.info = pc.Info("wakeguard_model", "The model bundle in use.", registry=self.registry)
        self.info.info({"version": str(model_version)})
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def observe(self, verdict: str, score: float, latency_ms: float) -> None:
        """Count one decision."""
        self.decisions.labels(verdict=verdict).inc()
        self.score.observe(float(score))
        self.latency.observe(float(latency_ms) / 1000.0)

    def add_overruns(self, n: int = 1) -> None:
        if n > 0:
            self.overruns.inc(n)

    def render(self) -> bytes:
        """The metrics in Prometheus text format (what the HTTP endpoint serves)."""
        return self._generate(self.registry)

    def start(self) -> int | None:
        """Serve ``/metrics`` on ``host:port`` in a daemon thread; returns the bound port."""
        if self.port is None:
            return None
        with self._lock:
            if self._server is not None:
                return self.port
            try:
                self._server, self._thread = self._start_server(
                    self.port, addr=self.host, registry=self.registry
                )
            except (OSError, OverflowError) as exc:  # taken, not ours, out of range
                raise TelemetryError(
                    f"cannot serve metrics on {self.host}:{self.port}: {exc}"
                ) from exc
            self.port = int(self._server.server_address[1])
            return self.port

    def stop(self) -> None:
        with self._lock:
            if self._server is None:
                return
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    def __enter__(self) -> Telemetry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Telemetry", "TelemetryError", "SCORE_BUCKETS", "LATENCY_BUCKETS_S"]
