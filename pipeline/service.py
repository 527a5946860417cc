"""The service: receivers -> processor chain -> exporters, with a start/shutdown lifecycle.

Admission first: a request's items (and bytes) are reserved in its signal's sending queue
before any processor sees it, so a full queue answers 503/UNAVAILABLE and the sender's retry is
not counted twice. Then the sender gets its answer, and the processing thread runs the chain
(as the Collector's receivers answer once the data is in its pipeline): the added latency is
receive + parse + validate, not the chain. The backlog of unprocessed requests is bounded
(`queue.max_unprocessed_requests`; full -> 503 too), and shutdown processes it before the
queues drain. With a spool (`queue.spool_directory`) the answer waits for the chain and the
spool append instead: an acknowledged request must survive a SIGKILL, and the backlog lives
in memory only. The chain runs under one lock (processors keep state: dedupe, fallback,
aggregation); the GIL would serialize it anyway.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ._native import patch
from .aggregation import Aggregation
from .config import Config
from .exporters.file import FileSink
from .exporters.otlp import GrpcSender, HttpSender, redact_url
from .exporters.queue import QueueFull, QueueStats, SendingQueue
from .exporters.spool import Spool
from .model import LogBatch, MetricBatch, TraceBatch, settled
from .processors.fallback import FallbackDetector
from .processors.metrics import LLMMetrics, MetricsConfig
from .processors.redact import Redactor
from .processors.registry import Wiring, build_chain
from .receivers.decode import count_items, drop_invalid_spans, to_json
from .telemetry import Telemetry

log = structlog.get_logger("pipeline")
SIGNALS = ("traces", "logs", "metrics")


@dataclass(frozen=True, slots=True)
class _Job:
    """An admitted request waiting for the processing thread."""

    signal: str
    request: Any
    raw: bytes | None
    items: int  # accepted items (reserved in the queue)
    nbytes: int  # bytes reserved in the queue


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the receiver tells the sender: items rejected (partial_success) and why."""

    rejected: int = 0
    message: str = ""


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.agg = Aggregation()
        self.telemetry = Telemetry(self.agg, config.metrics.max_series)
        self.llm_metrics = LLMMetrics(
            self.agg, MetricsConfig(config.metrics.max_series, config.metrics.semconv)
        )
        self._lock = threading.Lock()
        self._fallback: FallbackDetector | None = None
        self.trace_chain = self._build_trace_chain()
        self.log_chain: list[Callable[[Any], Any]] = (
            [self._redactor] if "redact" in config.processors else []
        )
        self.queues = {s: self._build_queue(s) for s in SIGNALS}
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="fallback-ticker", daemon=True)
        self._jobs: deque[_Job] = deque()
        self._jobs_cv = threading.Condition()
        self._in_progress = False
        self._draining = False
        self._worker = threading.Thread(target=self._work, name="processor", daemon=True)
        self._register_gauges()

    # -- construction ---------------------------------------------------------------------

    def _build_trace_chain(self) -> list[Callable[[TraceBatch], TraceBatch]]:
        cfg = self.config
        tel = self.telemetry

        def redacted(kind: str, n: int) -> None:
            tel.inc(tel.redactions, (kind,), n)

        self._redactor = Redactor(cfg.redact, on_redact=redacted)  # the log chain's too
        steps = build_chain(cfg.processors, Wiring(cfg, tel, self.llm_metrics, self._redactor))
        fallback = steps.get("fallback")  # flushed by the ticker and at shutdown
        self._fallback = fallback if isinstance(fallback, FallbackDetector) else None
        return list(steps.values())

    def _build_queue(self, signal: str) -> SendingQueue:
        cfg = self.config
        ex = getattr(cfg.exporters, signal)
        sender: Callable[[bytes], None]
        if ex.protocol == "grpc":
            sender = GrpcSender(
                signal,
                ex.endpoint,
                ex.headers,
                ex.insecure,
                ex.timeout_s,
                ex.compression,
                ex.grpc_transport,
            )
            name = f"otlp_grpc/{signal}"
        elif ex.protocol == "http":
            sender = HttpSender(signal, ex.endpoint, ex.headers, ex.timeout_s, ex.compression)
            name = f"otlp_http/{signal}"
        else:
            sender = FileSink(cfg.file.directory, signal, cfg.file.max_bytes, cfg.file.max_files)
            name = f"file/{signal}"
        tel = self.telemetry

        def exported(n: int) -> None:
            tel.inc(tel.exported, (signal, name), n)

        def failed() -> None:
            tel.inc(tel.export_failures, (signal, name))

        def dropped(n: int, reason: str) -> None:
            tel.inc(tel.dropped, (signal, name, reason), n)

        q = cfg.queue
        spool = None
        if q.spool_directory:  # one directory per queue: its payloads are in its wire format
            spool = Spool(
                Path(q.spool_directory) / name.replace("/", "_"),
                q.spool_max_bytes,
                fsync_interval_s=q.spool_fsync_interval_s,
            )
        return SendingQueue(
            name,
            sender,
            q.max_items,
            q.retry_initial_s,
            q.retry_max_s,
            q.max_elapsed_s,
            QueueStats(exported, failed, dropped),
            spool,
            q.max_bytes,
        )

    def _register_gauges(self) -> None:
        queues = self.queues

        def sizes() -> list[tuple[tuple[str, ...], float]]:
            return [((s, q.name), float(q.size)) for s, q in queues.items()]

        def capacities() -> list[tuple[tuple[str, ...], float]]:
            return [((s, q.name), float(q.max_items)) for s, q in queues.items()]

        self.telemetry.gauge(
            "llm_pipeline_queue_size",
            "Items waiting to be exported.",
            ("signal", "exporter"),
            sizes,
        )
        self.telemetry.gauge(
            "llm_pipeline_queue_bytes",
            "Payload bytes waiting in memory to be exported (bounded by queue.max_bytes).",
            ("signal", "exporter"),
            lambda: [((s, q.name), float(q.size_bytes)) for s, q in queues.items()],
        )
        self.telemetry.gauge(
            "llm_pipeline_unprocessed_requests",
            "Requests answered but not through the processor chain yet.",
            (),
            lambda: [((), float(len(self._jobs)))],
        )
        self.telemetry.gauge(
            "llm_pipeline_queue_capacity",
            "Sending queue capacity in items.",
            ("signal", "exporter"),
            capacities,
        )

    def destinations(self) -> dict[str, str]:
        out = {}
        for s in SIGNALS:
            ex = getattr(self.config.exporters, s)
            if ex.protocol == "file":
                out[s] = f"{self.config.file.directory}/{s}.jsonl"
            elif ex.protocol == "http":
                out[s] = redact_url(ex.endpoint)  # already a URL
            else:
                out[s] = f"grpc://{redact_url(ex.endpoint)}"
        return out

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        for q in self.queues.values():
            q.start()
        self._ticker.start()
        # With a spool there is no processing thread: requests are processed before the answer,
        # so what was acknowledged is on disk (a backlog in memory would be lost by a kill).
        if not self.config.queue.spool_directory:
            self._worker.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            if self._fallback is not None:
                with self._lock:
                    self._fallback.flush()

    def shutdown(self) -> dict[str, int]:
        """Process what was admitted, close fallback windows, drain the queues within the
        timeout; items left per signal."""
        deadline = time.monotonic() + self.config.queue.shutdown_timeout_s
        with self._jobs_cv:
            self._draining = True
            self._jobs_cv.notify_all()
        if self._worker.is_alive():
            self._worker.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        if self._fallback is not None:
            with self._lock:
                self._fallback.flush(force=True)
        left = {}
        for s, q in self.queues.items():
            left[s] = q.shutdown(max(0.0, deadline - time.monotonic()))
        return left

    # -- the data path ----------------------------------------------------------------------

    def accept(self, signal: str, request: Any, raw: bytes | None, transport: str) -> Accepted:
        """Admit one decoded request; raises QueueFull when there is no room.

        Validation (partial_success) happens here; the processor chain runs afterwards on the
        processing thread once the service is started, so the sender's answer does not wait
        for it. It runs inline (the answer waits) before `start()`, as tests and the stage
        benchmark use it, and with a spool, so that what was acknowledged is on disk.
        """
        items = count_items(signal, request)
        queue = self.queues[signal]
        nbytes = len(raw) if raw is not None else request.ByteSize()
        queue.reserve(items, nbytes)
        rejected, message = 0, ""
        try:
            if signal == "traces":
                rejected, message = drop_invalid_spans(request, raw)
        except BaseException:
            queue.release(items, nbytes)
            raise
        accepted = items - rejected
        if rejected:
            queue.release(rejected)
            self.telemetry.inc(self.telemetry.rejected, (signal, "invalid_item"), rejected)
        job = _Job(signal, request, None if rejected else raw, accepted, nbytes)
        if not accepted:
            queue.release(0, nbytes)
        elif self._worker.is_alive():
            with self._jobs_cv:
                if len(self._jobs) >= self.config.queue.max_unprocessed_requests:
                    queue.release(accepted, nbytes)
                    raise QueueFull(1.0)
                self._jobs.append(job)
                self._jobs_cv.notify()
        else:
            self._process(job)
        self.telemetry.inc(self.telemetry.received, (signal, transport), accepted)
        return Accepted(rejected, message)

    def _work(self) -> None:
        """The processing thread: admitted requests through the chain into the queues."""
        jobs = self._jobs
        while True:
            with self._jobs_cv:
                while not jobs and not self._draining:
                    self._jobs_cv.wait()
                if not jobs:
                    return
                job = jobs.popleft()
                self._in_progress = True
            try:
                self._process(job)
            except Exception:  # nothing may stop the thread; the loss is counted
                log.exception("processing failed, request dropped", signal=job.signal)
                self.telemetry.inc(
                    self.telemetry.dropped,
                    (job.signal, self.queues[job.signal].name, "processing_error"),
                    job.items,
                )
            finally:
                with self._jobs_cv:
                    self._in_progress = False
                    self._jobs_cv.notify_all()

    def _process(self, job: _Job) -> None:
        """Run the chain over one admitted request and enqueue it (its room is reserved)."""
        signal, request, raw, items = job.signal, job.request, job.raw, job.items
        queue = self.queues[signal]
        try:
            if signal == "traces":
                batch = TraceBatch(request, raw=raw)
                with self._lock:
                    for step in self.trace_chain:
                        batch = step(batch)
                data = self._encode_traces(queue, batch)
                if batch.calls:
                    # counted per convention in C first: one add per convention, not per call
                    by_convention = Counter(call.convention for call in batch.calls)
                    with self.agg.lock:
                        for convention, n in by_convention.items():
                            self.telemetry.llm_spans.add((convention,), n)
            elif signal == "logs":
                lbatch = LogBatch(request, items, raw=raw)
                with self._lock:
                    for lstep in self.log_chain:
                        lbatch = lstep(lbatch)
                data = self._encode(queue, lbatch.request, lbatch.raw, lbatch.modified)
            else:
                mbatch = MetricBatch(request, items, raw)
                data = self._encode(queue, mbatch.request, mbatch.raw, False)
        except BaseException:
            queue.release(items, job.nbytes)
            raise
        queue.put(data, items, job.nbytes)

    def wait_processed(self, timeout_s: float = 10.0) -> bool:
        """Block until every admitted request went through the chain (for callers of `accept`
        that read the results, such as tests; shutdown joins the processing thread instead)."""
        deadline = time.monotonic() + timeout_s
        with self._jobs_cv:
            while self._jobs or self._in_progress:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._jobs_cv.wait(left)
        return True

    @staticmethod
    def _encode(queue: SendingQueue, request: Any, raw: bytes | None, modified: bool) -> bytes:
        if queue.name.startswith("file/"):
            return to_json(request).encode()
        if raw is not None and not modified:
            return raw
        return bytes(request.SerializeToString())

    @staticmethod
    def _encode_traces(queue: SendingQueue, batch: TraceBatch) -> bytes:
        file = queue.name.startswith("file/")
        if not file and batch.raw is not None and batch.edits and patch is not None:
            # every change was recorded as a byte edit: apply them, not a serialization
            try:
                return patch(batch.raw, batch.edits)
            except ValueError:  # an edit the wire walk does not place: serialize instead
                pass
        # the parsed request is read: enrich's deferred additions go into it first
        return Service._encode(queue, settled(batch), batch.raw, batch.modified)

    def reject(self, signal: str, reason: str, items: int = 0) -> None:
        self.telemetry.inc(self.telemetry.rejected, (signal, reason), max(items, 1))
