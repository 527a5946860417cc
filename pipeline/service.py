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
from typing import Any, TypeVar

import structlog

from .aggregation import Aggregation
from .config import Config
from .exporters.file import FileSink
from .exporters.otlp import GrpcSender, HttpSender, redact_url
from .exporters.push import MetricsPusher, sender_for
from .exporters.queue import QueueFull, QueueStats, SendingQueue
from .exporters.spool import Spool
from .memlimit import MemoryLimited, MemoryLimiter, rss_bytes
from .model import LogBatch, MetricBatch, TraceBatch
from .processors.attribution import Attribution, dimension_labels
from .processors.fallback import FallbackDetector
from .processors.metrics import LLMMetrics, MetricsConfig
from .processors.redact import Redactor
from .processors.registry import Wiring, build_chain
from .processors.serving import ServingMetrics
from .receivers.decode import count_items, drop_invalid_spans
from .telemetry import Telemetry

log = structlog.get_logger("pipeline")
SIGNALS = ("traces", "logs", "metrics")


def _signal(queue_key: str) -> str:
    return "metrics" if queue_key == "push" else queue_key


@dataclass(frozen=True, slots=True)
class _Job:
    """An admitted request waiting for the processing thread."""

    signal: str
    request: Any
    raw: bytes | None
    items: int  # accepted items (reserved in the queue)
    nbytes: int  # bytes reserved in the queue


class _Unredacted(Exception):
    """The redactor failed on a batch: it is dropped rather than forwarded half-redacted."""


_B = TypeVar("_B", TraceBatch, LogBatch)


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the receiver tells the sender: items rejected (partial_success) and why."""

    rejected: int = 0
    message: str = ""


class Service:
    def __init__(self, config: Config, limit_memory: bool = False) -> None:
        """`limit_memory`: apply `memory_limit_mib` to this process's RSS (the sidecar does;
        a Service embedded in a larger process, such as a test's, would measure its host)."""
        self.config = config
        self.agg = Aggregation()
        self.telemetry = Telemetry(self.agg, config.metrics.max_series)
        self.llm_metrics = LLMMetrics(
            self.agg,
            MetricsConfig(
                config.metrics.max_series, config.metrics.semconv, *dimension_labels(config)
            ),
        )
        self._lock = threading.Lock()
        self._fallback: FallbackDetector | None = None
        self._attribution: Attribution | None = None
        self._stage_names: dict[int, str] = {}  # id(processor) -> its name in the config
        self._failure_causes: set[tuple[str, str]] = set()  # logged once each
        self.trace_chain = self._build_trace_chain()
        self.log_chain: list[Callable[[Any], Any]] = (
            [self._redactor] if "redact" in config.processors else []
        )
        if self._serving is not None:  # gen_ai.evaluation.result events sent as log records
            self.log_chain.append(self._serving.logs)
            self._stage_names[id(self.log_chain[-1])] = "serving"
        self.queues = {s: self._build_queue(s) for s in SIGNALS}
        self.pusher = self._build_pusher()
        self.memory = MemoryLimiter(
            config.memory_limit_mib if limit_memory else 0,
            config.memory_soft_limit_percent,
            busy=self._holds_data,
        )
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="fallback-ticker", daemon=True)
        self._jobs: deque[_Job] = deque()
        self._jobs_cv = threading.Condition()
        self._in_progress = False
        self._draining = False
        self._abandoned = False  # shutdown ran out of time for the backlog
        self._current: _Job | None = None  # the request the processing thread is on
        self._worker = threading.Thread(target=self._work, name="processor", daemon=True)
        self._register_gauges()

    # -- construction ---------------------------------------------------------------------

    def _build_trace_chain(self) -> list[Callable[[TraceBatch], TraceBatch]]:
        cfg = self.config
        tel = self.telemetry

        def redacted(kind: str, n: int) -> None:
            tel.inc(tel.redactions, (kind,), n)

        self._redactor = Redactor(cfg.redact, on_redact=redacted)  # the log chain's too
        wiring = Wiring(cfg, tel, self.llm_metrics, self._redactor, self.processor_failed)
        steps = build_chain(cfg.processors, wiring)
        self._stage_names.update((id(step), name) for name, step in steps.items())
        fallback = steps.get("fallback")  # flushed by the ticker and at shutdown
        self._fallback = fallback if isinstance(fallback, FallbackDetector) else None
        attribution = steps.get("attribution")  # its idle traces too
        self._attribution = attribution if isinstance(attribution, Attribution) else None
        serving = steps.get("serving")
        self._serving = serving if isinstance(serving, ServingMetrics) else None
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
            tel = self.telemetry

            def deleted(nbytes: int) -> None:
                tel.inc(tel.file_deleted, (signal,))
                tel.inc(tel.file_deleted_bytes, (signal,), nbytes)

            f = cfg.file
            sender = FileSink(f.directory, signal, f.max_bytes, f.max_files, deleted)
            name = f"file/{signal}"
        spool = None
        q = cfg.queue
        if q.spool_directory:  # one directory per queue: its payloads are in its wire format
            spool = Spool(
                Path(q.spool_directory) / name.replace("/", "_"),
                q.spool_max_bytes,
                fsync_interval_s=q.spool_fsync_interval_s,
            )
        return self._queue(signal, name, sender, spool)

    def _queue(
        self, signal: str, name: str, sender: Callable[[bytes], None], spool: Spool | None
    ) -> SendingQueue:
        """A sending queue on `config.queue`'s bounds and retry, counted under (signal, name)."""
        tel, q = self.telemetry, self.config.queue

        def exported(n: int) -> None:
            tel.inc(tel.exported, (signal, name), n)

        def failed() -> None:
            tel.inc(tel.export_failures, (signal, name))

        def dropped(n: int, reason: str) -> None:
            tel.inc(tel.dropped, (signal, name, reason), n)

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

    def _build_pusher(self) -> MetricsPusher | None:
        """`metrics.push`: the derived metrics over OTLP, through a queue of its own (no spool:
        a push carries the totals, the next one replaces a lost one)."""
        p = self.config.metrics.push
        if not p.endpoint:
            return None
        name, sender = sender_for(p)
        return MetricsPusher(
            self.agg,
            self.telemetry,
            self._queue("metrics", name, sender, None),
            interval_s=p.interval_s,
            temporality=p.temporality,
            include_self=p.self,
            service_name=p.service_name,
        )

    def _register_gauges(self) -> None:
        queues = dict(self.queues.items())
        if self.pusher is not None:  # signal "metrics" too, told apart by the exporter label
            queues["push"] = self.pusher.queue

        def sizes() -> list[tuple[tuple[str, ...], float]]:
            return [((_signal(s), q.name), float(q.size)) for s, q in queues.items()]

        def capacities() -> list[tuple[tuple[str, ...], float]]:
            return [((_signal(s), q.name), float(q.max_items)) for s, q in queues.items()]

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
            lambda: [((_signal(s), q.name), float(q.size_bytes)) for s, q in queues.items()],
        )
        self.telemetry.gauge(
            "llm_pipeline_unprocessed_requests",
            "Requests answered but not through the processor chain yet.",
            (),
            lambda: [((), float(len(self._jobs)))],
        )
        memory = self.memory
        self.telemetry.gauge(
            "llm_pipeline_memory_rss_bytes",
            "The process's resident set size (what memory_limit_mib bounds).",
            (),
            lambda: [((), float(rss_bytes() or 0))],
        )
        self.telemetry.gauge(
            "llm_pipeline_memory_limit_bytes",
            "memory_limit_mib, and the soft limit above which requests are refused (0: off).",
            ("limit",),
            lambda: [(("hard",), float(memory.limit)), (("soft",), float(memory.soft))],
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
        # the self-telemetry's SDK, with the push's resource when it pushes them too
        self.telemetry.start(self.pusher.encoder.resource if self.pusher is not None else None)
        if self.pusher is not None:
            self.pusher.start()
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
            if self._attribution is not None:
                with self._lock:
                    self._attribution.flush()

    def shutdown(self) -> dict[str, int]:
        """Process what was admitted, close fallback windows, drain the queues within the
        timeout; items left per signal."""
        deadline = time.monotonic() + self.config.queue.shutdown_timeout_s
        with self._jobs_cv:
            self._draining = True
            self._jobs_cv.notify_all()
        if self._worker.is_alive():
            self._worker.join(max(0.0, deadline - time.monotonic()))
        unprocessed = self._abandon()
        self._stop.set()
        if self._fallback is not None and self._lock.acquire(timeout=1.0):
            try:
                self._fallback.flush(force=True)
            finally:
                self._lock.release()
        if self._attribution is not None and self._lock.acquire(timeout=1.0):
            try:
                self._attribution.flush(force=True)
            finally:
                self._lock.release()
        if self.pusher is not None:
            self.pusher.stop()  # its last push delivers while the other queues drain
        left = {}
        for s, q in self.queues.items():
            left[s] = q.shutdown(max(0.0, deadline - time.monotonic())) + unprocessed[s]
        if self.pusher is not None:
            left["metrics"] += self.pusher.shutdown(max(0.0, deadline - time.monotonic()))
        return left

    def _abandon(self) -> Counter[str]:
        """Give up on the requests the processing thread did not get to in time: counted as
        dropped (reason shutdown) and logged, items per signal."""
        with self._jobs_cv:
            self._abandoned = True
            waiting = list(self._jobs)
            self._jobs.clear()
            current = self._current  # its thread sees `_abandoned` and releases its room
        lost: Counter[str] = Counter()
        for job in waiting:
            self.queues[job.signal].release(job.items, job.nbytes)
        for job in (*waiting, *([current] if current is not None else [])):
            lost[job.signal] += job.items
        for signal, items in lost.items():
            name = self.queues[signal].name
            self.telemetry.inc(self.telemetry.dropped, (signal, name, "shutdown"), items)
            log.warning(
                "acknowledged items dropped at shutdown: not processed within"
                " queue.shutdown_timeout_s",
                signal=signal,
                items=items,
                requests=sum(1 for j in (*waiting, current) if j and j.signal == signal),
            )
        return lost

    # -- the data path ----------------------------------------------------------------------

    def accept(self, signal: str, request: Any, raw: bytes | None, transport: str) -> Accepted:
        """Admit one decoded request; raises QueueFull when there is no room.

        Validation (partial_success) happens here; the processor chain runs afterwards on the
        processing thread once the service is started, so the sender's answer does not wait
        for it. It runs inline (the answer waits) before `start()`, as tests and the stage
        benchmark use it, and with a spool, so that what was acknowledged is on disk.
        """
        if not self.memory.ok():
            raise MemoryLimited()
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
                full = len(self._jobs) >= self.config.queue.max_unprocessed_requests
                if full or self._abandoned:  # (shutting down: not acknowledged, retried)
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
                self._current = job
            try:
                self._process(job)
            except Exception:  # nothing may stop the thread; the loss is counted
                log.exception("request dropped: it cannot be forwarded", signal=job.signal)
                self.telemetry.inc(
                    self.telemetry.dropped,
                    (job.signal, self.queues[job.signal].name, "processing_error"),
                    job.items,
                )
            finally:
                with self._jobs_cv:
                    self._in_progress = False
                    self._current = None
                    self._jobs_cv.notify_all()

    def _process(self, job: _Job) -> None:
        """Run the chain over one admitted request and enqueue it (its room is reserved).

        A processor that raises costs what it would have derived, not the request: the chain
        goes on without it (`_run`), and a batch that cannot be encoded as processed is
        forwarded as received. Only the redactor fails closed (`_Unredacted`)."""
        signal, request, raw, items = job.signal, job.request, job.raw, job.items
        queue = self.queues[signal]
        try:
            try:
                data = self._processed(job, queue)
            except _Unredacted:
                queue.release(items, job.nbytes)
                self.telemetry.inc(
                    self.telemetry.dropped, (signal, queue.name, "redaction_failed"), items
                )
                return
            except Exception as e:  # encoding what the chain left failed: forward as received
                self.processor_failed("encode", e, items)
                data = raw if raw is not None else bytes(request.SerializeToString())
        except BaseException:
            queue.release(items, job.nbytes)
            raise
        if threading.current_thread() is self._worker:
            with self._jobs_cv:  # shutdown may have given up on it (and counted it) meanwhile
                if self._abandoned:
                    queue.release(items, job.nbytes)
                    return
                queue.put(data, items, job.nbytes)
            return
        queue.put(data, items, job.nbytes)

    def _processed(self, job: _Job, queue: SendingQueue) -> bytes:
        signal, request, raw, items = job.signal, job.request, job.raw, job.items
        if signal == "traces":
            batch = TraceBatch(request, raw=raw)
            with self._lock:
                batch = self._run(self.trace_chain, batch, items)
            data = batch.encode()
            if batch.calls:
                # counted per convention in C first: one add per convention, not per call
                by_convention = Counter(call.convention for call in batch.calls)
                with self.agg.lock:
                    for convention, n in by_convention.items():
                        self.telemetry.llm_spans.add((convention,), n)
            return data
        if signal == "logs":
            lbatch = LogBatch(request, raw)
            with self._lock:
                lbatch = self._run(self.log_chain, lbatch, items)
            return lbatch.encode()
        return MetricBatch(request, raw).encode()

    def _run(self, chain: list[Callable[[_B], _B]], batch: _B, items: int) -> _B:
        """The batch through `chain`; a stage that raises is counted and skipped, the batch
        going on as that stage left it (stages keep state: re-running one would count twice)."""
        for step in chain:
            try:
                batch = step(batch)
            except Exception as e:
                name = self._stage_names.get(id(step))
                if name is None:
                    name = str(getattr(step, "__name__", type(step).__name__))
                self.processor_failed(name, e, items)
                if step is self._redactor:
                    # half-redacted data must not leave: dropped, counted (never seen so far)
                    raise _Unredacted from e
        return batch

    def processor_failed(self, processor: str, error: Exception, items: int) -> None:
        """Count items whose derived data a processor could not produce; log once a cause."""
        cause = type(error).__name__
        self.telemetry.inc(self.telemetry.processor_failures, (processor, cause), items)
        if (processor, cause) not in self._failure_causes and len(self._failure_causes) < 1000:
            self._failure_causes.add((processor, cause))
            log.error(
                "processor failed; its data skipped, the spans forwarded (logged once a cause,"
                " counted in llm_pipeline_processor_failures_total)",
                processor=processor,
                cause=cause,
                error=str(error)[:500],
                exc_info=error,
            )

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

    def _holds_data(self) -> bool:
        """Admitted requests not yet processed, or items waiting in a sending queue."""
        return (
            bool(self._jobs)
            or self._current is not None
            or any(q.size for q in self.queues.values())
        )

    def memory_ok(self, signal: str) -> bool:
        """For the receivers, before they read or decode a request: False (the refusal
        counted) while the process is above its soft memory limit; answer 503/UNAVAILABLE."""
        if self.memory.ok():
            return True
        self.reject(signal, "memory_limit")
        return False

    def reject(self, signal: str, reason: str, items: int = 0) -> None:
        self.telemetry.inc(self.telemetry.rejected, (signal, reason), max(items, 1))
