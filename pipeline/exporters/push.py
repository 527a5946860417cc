"""Periodic OTLP push of the derived metrics (`metrics.push`), for backends that do not scrape.

Every `interval_s` the pusher takes a snapshot of the aggregation (the one /metrics reads),
encodes it (`otlp_metrics`) and hands it to its own `SendingQueue` (`otlp_grpc/push` or
`otlp_http/push`): the same retry, backoff, bounds and self-metrics as traces and logs, so a
backend outage within the queue's bounds loses nothing. Nothing happens per span.

A full queue costs nothing with cumulative temporality (the next request carries the totals);
with delta the encoder's state is rolled back, so the next request carries the change since
the last one that was queued.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from ..aggregation import Aggregation
from ..config import PushConfig
from ..telemetry import Telemetry
from .otlp import GrpcSender, HttpSender
from .otlp_metrics import MetricsEncoder, resource_attributes
from .queue import QueueFull, Sender, SendingQueue
from .snapshot import Snapshot, take

log = structlog.get_logger("pipeline.exporters.push")

SIGNAL = "metrics"


def is_self_metric(name: str) -> bool:
    """The sidecar's own telemetry (pushed only with `self: true`), not a derived metric."""
    return name.startswith("llm_pipeline_") and name != "llm_pipeline_time_per_output_token_seconds"


def sender_for(cfg: PushConfig) -> tuple[str, Sender]:
    """The queue name and sender for `metrics.push`."""
    if cfg.protocol == "grpc":
        sender: Sender = GrpcSender(
            SIGNAL,
            cfg.endpoint,
            cfg.headers,
            cfg.insecure,
            cfg.timeout_s,
            cfg.compression,
            cfg.grpc_transport,
        )
        return "otlp_grpc/push", sender
    return "otlp_http/push", HttpSender(
        SIGNAL, cfg.endpoint, cfg.headers, cfg.timeout_s, cfg.compression
    )


class QueueMetricExporter(MetricExporter):
    """The SDK's exporter for `metrics.push.self`: its requests go into the push queue.

    Always cumulative, whatever `temporality`: the SDK forgets a delta once exported, so a
    request a full queue refused would lose it; the next cumulative one carries the totals."""

    def __init__(self, pusher: MetricsPusher) -> None:
        t = AggregationTemporality.CUMULATIVE
        super().__init__(preferred_temporality={ObservableCounter: t, Counter: t, Histogram: t})
        self._pusher = pusher

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        req = encode_metrics(metrics_data)
        points = sum(
            len(getattr(m, m.WhichOneof("data")).data_points)
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.WhichOneof("data")
        )
        if points and not self._pusher.enqueue(req.SerializeToString(), points):
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class MetricsPusher:
    """Pushes the aggregation every `interval_s` through `queue` (the service builds it, as
    the exporters' queues, counted under the metrics signal and the queue's name)."""

    def __init__(
        self,
        agg: Aggregation,
        telemetry: Telemetry,
        queue: SendingQueue,
        *,
        interval_s: float = 15.0,
        temporality: str = "cumulative",
        include_self: bool = False,
        service_name: str = "llm-otel-pipeline",
    ) -> None:
        self.agg = agg
        self.telemetry = telemetry
        self.interval_s = interval_s
        self.include_self = include_self
        self.encoder = MetricsEncoder(
            resource_attributes(service_name), time.time_ns(), temporality
        )
        self.queue = queue
        self.pushes = 0  # requests queued
        self.skipped = 0  # snapshots not queued (queue full)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one push at a time (ticker, shutdown, tests)
        self._thread = threading.Thread(target=self._run, name="metrics-push", daemon=True)
        # `self: true`: the SDK's self-telemetry goes into the same queue, on the same period
        self._self_reader: PeriodicExportingMetricReader | None = None
        if include_self:
            self._self_reader = PeriodicExportingMetricReader(
                QueueMetricExporter(self), export_interval_millis=interval_s * 1000
            )
            telemetry.add_reader(self._self_reader)

    def start(self) -> None:
        self.queue.start()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.push()
            except Exception:  # the ticker must live on; the next push carries the totals
                log.exception("metrics push failed", queue=self.queue.name)

    def snapshot(self) -> Snapshot:
        snap = take(self.agg)
        if not self.include_self:
            fams = [f for f in snap.families if not is_self_metric(f.name)]
            snap = Snapshot(fams, snap.time_unix_nano)
        return snap

    def push(self) -> int:
        """Encode the current state and queue it; the data points queued (0: none)."""
        with self._lock:
            saved = self.encoder.save()
            req, points = self.encoder.encode(self.snapshot())
            if not points:
                return 0
            if not self.enqueue(req.SerializeToString(), points):
                self.encoder.restore(saved)
                return 0
            return points

    def enqueue(self, data: bytes, points: int) -> bool:
        """Queue one serialized request; False (logged, counted in `skipped`) when full."""
        try:
            self.queue.reserve(points, len(data))
        except QueueFull:
            self.skipped += 1
            log.warning("metrics push queue full: this request waits", queue=self.queue.name)
            return False
        self.queue.put(data, points, len(data))
        self.pushes += 1
        return True

    def stop(self) -> None:
        """Stop the ticker and queue a last push (its queue keeps delivering meanwhile)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        if self._self_reader is not None:
            try:
                self._self_reader.shutdown()  # its last export goes into the queue
            except Exception:
                log.exception("final self-telemetry push failed", queue=self.queue.name)
        try:
            self.push()
        except Exception:
            log.exception("final metrics push failed", queue=self.queue.name)

    def shutdown(self, timeout_s: float) -> int:
        """`stop`, then drain the queue for at most `timeout_s`; data points left."""
        self.stop()
        return self.queue.shutdown(timeout_s)
