"""Providers, OTLP exporters and the run loop: `run_demo` (paced, until a duration or a stop),
`emit` / `emit_into` (as fast as possible, for tests and the bench), and `summary`."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from opentelemetry._logs import Logger
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer

from .agentic import AgentRuns
from .emission import generate_request
from .profiles import DEFAULT_ENDPOINT, SCOPE, SERVICES, DemoStats, ServiceProfile
from .scenarios import _profile

# Providers, exporters and the run loop


class _Borrowed(SpanExporter):
    """A caller's span exporter shared by several providers: never shut down by them."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export(spans)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _BorrowedLogs(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        return self.inner.export(batch)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def resolve_protocol(endpoint: str, protocol: str | None) -> str:
    """The OTLP protocol: `protocol` if given, else HTTP for port 4318 and gRPC otherwise."""
    if protocol is not None:
        p = protocol.strip().lower()
        if p in ("grpc",):
            return "grpc"
        if p in ("http/protobuf", "http", "http/proto"):
            return "http/protobuf"
        raise ValueError(f"unsupported OTLP protocol {protocol!r}: grpc or http/protobuf")
    return "http/protobuf" if urlsplit(endpoint).port == 4318 else "grpc"


def otlp_exporters(
    endpoint: str, protocol: str | None = None
) -> tuple[SpanExporter, LogRecordExporter]:
    """An OTLP span exporter and log exporter for `endpoint` (see `resolve_protocol`)."""
    if resolve_protocol(endpoint, protocol) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcLogExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        insecure = not endpoint.startswith("https://")
        return (
            GrpcSpanExporter(endpoint=endpoint, insecure=insecure),
            GrpcLogExporter(endpoint=endpoint, insecure=insecure),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    base = endpoint.rstrip("/")
    if "://" not in base:
        base = "http://" + base
    return (
        HttpSpanExporter(endpoint=f"{base}/v1/traces"),
        HttpLogExporter(endpoint=f"{base}/v1/logs"),
    )


def make_resource(profile: ServiceProfile) -> Resource:
    return Resource.create(
        {
            "service.name": profile.name,
            "service.version": profile.version,
            "service.namespace": "acme",
            "deployment.environment.name": "demo",
        }
    )


@dataclass(slots=True)
class _Service:
    profile: ServiceProfile
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider | None
    tracer: Tracer
    logger: Logger | None


def _providers(
    profile: ServiceProfile,
    span_exporter: SpanExporter,
    log_exporter: LogRecordExporter | None,
    schedule_delay_ms: float,
) -> _Service:
    resource = make_resource(profile)
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(
        BatchSpanProcessor(
            span_exporter,
            max_queue_size=16384,
            schedule_delay_millis=schedule_delay_ms,
            max_export_batch_size=512,
        )
    )
    lp: LoggerProvider | None = None
    logger: Logger | None = None
    if log_exporter is not None:
        lp = LoggerProvider(resource=resource)
        lp.add_log_record_processor(
            BatchLogRecordProcessor(
                log_exporter,
                schedule_delay_millis=schedule_delay_ms,
                max_export_batch_size=512,
                max_queue_size=16384,
            )
        )
        logger = lp.get_logger(f"{profile.name.replace('-', '_')}.llm", profile.version)
    tracer = tp.get_tracer(SCOPE, profile.version)
    return _Service(profile, tp, lp, tracer, logger)


def _shutdown(services: Sequence[_Service]) -> None:
    # Flush every provider before shutting any down: exporters may be shared.
    for s in services:
        s.tracer_provider.force_flush(10_000)
        if s.logger_provider is not None:
            s.logger_provider.force_flush(10_000)
    for s in services:
        s.tracer_provider.shutdown()
        if s.logger_provider is not None:
            s.logger_provider.shutdown()


def _pick(rng: random.Random, services: Sequence[_Service]) -> _Service:
    if len(services) == 1:
        return services[0]
    total = sum(s.profile.weight for s in services)
    x = rng.random() * total
    for s in services:
        x -= s.profile.weight
        if x < 0:
            return s
    return services[-1]


@contextlib.contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(
    endpoint: str = DEFAULT_ENDPOINT,
    rate: float = 5.0,
    duration: float = 30.0,
    protocol: str | None = None,
    seed: int | None = None,
    services: Sequence[ServiceProfile | str] | None = None,
    *,
    span_exporter: SpanExporter | None = None,
    log_exporter: LogRecordExporter | None = None,
    logs: bool = True,
    stop: threading.Event | None = None,
    schedule_delay_ms: float = 1000.0,
    agents: bool = False,
) -> DemoStats:
    """Send `rate` LLM requests a second for `duration` seconds; return what was sent.

    `duration` <= 0 runs until KeyboardInterrupt, SIGTERM or `stop` is set. The providers are
    flushed and shut down before returning. `span_exporter` / `log_exporter` replace the OTLP
    exporters (the caller keeps ownership: they are not shut down); `logs=False` sends no logs.
    `services` picks service profiles (names from `SERVICES` or `ServiceProfile`s).
    `agents` adds an agent run (`agentic.py`: tools, evaluations, vLLM server spans, rate
    limits) after every third request, from services of its own.
    """
    if not rate > 0 or math.isnan(rate):
        raise ValueError("rate must be > 0")
    profiles = [_profile(s) for s in (services if services is not None else SERVICES.values())]
    if not profiles:
        raise ValueError("no services")
    rng = random.Random(seed)
    stop = stop or threading.Event()
    made: list[_Service] = []
    for p in profiles:
        if span_exporter is None:
            sx, lx = otlp_exporters(endpoint, protocol)
            made.append(_providers(p, sx, lx if logs else None, schedule_delay_ms))
        else:
            borrowed = _BorrowedLogs(log_exporter) if logs and log_exporter is not None else None
            made.append(_providers(p, _Borrowed(span_exporter), borrowed, schedule_delay_ms))
    runs = (
        _agent_runs(endpoint, protocol, seed, span_exporter, schedule_delay_ms) if agents else None
    )
    stats = DemoStats()
    total = math.ceil(rate * duration - 1e-9) if duration > 0 else -1
    wall0, cpu0 = time.monotonic(), time.process_time()
    try:
        with _stop_on_sigterm(stop):
            sent = 0
            while not stop.is_set() and sent != total:
                due = int((time.monotonic() - wall0) * rate) + 1
                if total >= 0:
                    due = min(due, total)
                while sent < due:
                    s = _pick(rng, made)
                    generate_request(s.tracer, s.logger, rng, service=s.profile, stats=stats)
                    sent += 1
                    if runs is not None and sent % 3 == 0:
                        runs.emit()
                if sent == total:
                    break
                stop.wait(max(0.0, min(wall0 + sent / rate - time.monotonic(), 0.5)))
    except KeyboardInterrupt:
        pass
    finally:
        _shutdown(made)
        if runs is not None:
            runs.shutdown()
        stats.wall_s = time.monotonic() - wall0
        stats.cpu_s = time.process_time() - cpu0
    return stats


def _agent_runs(
    endpoint: str,
    protocol: str | None,
    seed: int | None,
    span_exporter: SpanExporter | None,
    schedule_delay_ms: float,
) -> AgentRuns:
    if span_exporter is None:
        a, b = otlp_exporters(endpoint, protocol)[0], otlp_exporters(endpoint, protocol)[0]
    else:
        a, b = _Borrowed(span_exporter), _Borrowed(span_exporter)
    return AgentRuns(a, b, seed, schedule_delay_ms)


def emit(
    tracer_provider: TracerProvider,
    logger_provider: LoggerProvider | None,
    n: int,
    *,
    seed: int | None = None,
    service: ServiceProfile | str = "chat-api",
    stats: DemoStats | None = None,
) -> DemoStats:
    """Emit `n` requests of `service`'s mix, as fast as possible, through the given providers.

    For benchmarks: wire the providers to any exporter; nothing is flushed or shut down here.
    """
    profile = _profile(service)
    rng = random.Random(seed)
    tracer = tracer_provider.get_tracer(SCOPE, profile.version)
    logger = (
        logger_provider.get_logger(f"{profile.name.replace('-', '_')}.llm", profile.version)
        if logger_provider is not None
        else None
    )
    stats = stats if stats is not None else DemoStats()
    for _ in range(n):
        generate_request(tracer, logger, rng, service=profile, stats=stats)
    return stats


def emit_into(
    span_exporter: SpanExporter,
    log_exporter: LogRecordExporter | None,
    n: int,
    *,
    seed: int | None = None,
    services: Sequence[ServiceProfile | str] | None = None,
) -> DemoStats:
    """`n` requests over all `services` into the given exporters, as fast as possible.

    One TracerProvider/LoggerProvider pair per service around the caller's exporters, flushed
    and shut down before returning (the exporters themselves are left open).
    """
    profiles = [_profile(s) for s in (services if services is not None else SERVICES.values())]
    rng = random.Random(seed)
    made = [
        _providers(
            p,
            _Borrowed(span_exporter),
            _BorrowedLogs(log_exporter) if log_exporter is not None else None,
            1000.0,
        )
        for p in profiles
    ]
    stats = DemoStats()
    wall0, cpu0 = time.monotonic(), time.process_time()
    try:
        for _ in range(n):
            s = _pick(rng, made)
            generate_request(s.tracer, s.logger, rng, service=s.profile, stats=stats)
    finally:
        _shutdown(made)
        stats.wall_s = time.monotonic() - wall0
        stats.cpu_s = time.process_time() - cpu0
    return stats


def summary(stats: DemoStats) -> str:
    lines = [
        f"requests={stats.requests} spans={stats.spans} llm_spans={stats.llm_spans} "
        f"logs={stats.log_records} streamed={stats.streamed} retries={stats.retries} "
        f"fallbacks={stats.fallbacks} legacy={stats.legacy_convention} "
        f"unpriced={stats.unpriced}",
        f"errors={dict(stats.errors)}",
        f"cpu={stats.cpu_s:.3f}s ({stats.cpu_per_request_ms:.2f} ms/request) "
        f"wall={stats.wall_s:.1f}s",
    ]
    for model, t in sorted(stats.tokens.items()):
        lines.append(
            f"  {model}: calls={t.calls} input={t.input} output={t.output} "
            f"cache_read={t.cache_read} cache_creation={t.cache_creation} "
            f"reasoning={t.reasoning}"
        )
    return "\n".join(lines)
