"""The demo traffic generator: what it says it sent is what the SDK exported."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pipeline import demo
from pipeline.demo import DemoStats, TokenCounts, emit, emit_into, resolve_protocol, run_demo

SEED = 20240806


# --------------------------------------------------------------------------------------------
# Helpers: read the exported spans the way the sidecar does


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _is_llm(span: ReadableSpan) -> bool:
    a = _attrs(span)
    return "gen_ai.request.model" in a


def _provider(span: ReadableSpan) -> str:
    a = _attrs(span)
    return str(a.get("gen_ai.provider.name") or a.get("gen_ai.system"))


def _model(span: ReadableSpan) -> str:
    return str(_attrs(span)["gen_ai.request.model"])


def _failed(span: ReadableSpan) -> bool:
    return span.status.status_code is StatusCode.ERROR


def _error_label(span: ReadableSpan) -> str:
    a = _attrs(span)
    if a.get("error.type"):
        return str(a["error.type"])
    for ev in span.events:
        if ev.name == "exception":
            return str((ev.attributes or {})["exception.type"]).rsplit(".", 1)[-1]
    return "_OTHER"


def _tokens(span: ReadableSpan) -> TokenCounts:
    a = _attrs(span)
    return TokenCounts(
        calls=1,
        input=int(a.get("gen_ai.usage.input_tokens", a.get("gen_ai.usage.prompt_tokens", 0))),
        output=int(a.get("gen_ai.usage.output_tokens", a.get("gen_ai.usage.completion_tokens", 0))),
        cache_read=int(a.get("gen_ai.usage.cache_read.input_tokens", 0)),
        cache_creation=int(a.get("gen_ai.usage.cache_creation.input_tokens", 0)),
        reasoning=int(a.get("gen_ai.usage.reasoning.output_tokens", 0)),
    )


def _add(into: dict[Any, TokenCounts], key: Any, t: TokenCounts) -> None:
    cur = into.setdefault(key, TokenCounts())
    for f in ("calls", "input", "output", "cache_read", "cache_creation", "reasoning"):
        setattr(cur, f, getattr(cur, f) + getattr(t, f))


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def _by_parent(llm: Sequence[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    groups: dict[int, list[ReadableSpan]] = defaultdict(list)
    for s in llm:
        assert s.parent is not None
        groups[s.parent.span_id].append(s)
    for g in groups.values():
        g.sort(key=lambda s: s.start_time or 0)
    return groups


@pytest.fixture(scope="module")
def run() -> tuple[DemoStats, tuple[ReadableSpan, ...], tuple[ReadableLogRecord, ...]]:
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    stats = run_demo(rate=500, duration=0.8, seed=SEED, span_exporter=spans, log_exporter=logs)
    return stats, spans.get_finished_spans(), logs.get_finished_logs()


RunResult = tuple[DemoStats, tuple[ReadableSpan, ...], tuple[ReadableLogRecord, ...]]


# --------------------------------------------------------------------------------------------
# DemoStats against the exported spans and log records


def test_counts_match_exported(run: RunResult) -> None:
    stats, spans, logs = run
    assert stats.requests == 400
    assert len(spans) == stats.spans
    assert len(logs) == stats.log_records
    llm = [s for s in spans if _is_llm(s)]
    assert len(llm) == stats.llm_spans == stats.llm_calls
    assert sum(stats.requests_by_service.values()) == stats.requests
    assert set(stats.requests_by_service) == {"chat-api", "rag-worker", "support-bot"}
    assert {_service(s) for s in spans} == set(stats.requests_by_service)
    # Every scenario shows up in 400 requests.
    assert set(stats.scenarios) == set(demo.SCENARIOS)


def test_tokens_per_model_recomputed_from_spans(run: RunResult) -> None:
    stats, spans, _ = run
    per_model: dict[str, TokenCounts] = {}
    per_series: dict[tuple[str, str, str, str], TokenCounts] = {}
    for s in spans:
        if not _is_llm(s):
            continue
        t = _tokens(s)
        _add(per_model, _model(s), t)
        op = str(_attrs(s).get("gen_ai.operation.name", "chat"))  # legacy spans: chat
        _add(per_series, (_service(s), op, _provider(s), _model(s)), t)
    assert per_model == stats.tokens
    assert per_series == stats.tokens_by_series
    # The mix covers what the dashboards need.
    models = set(stats.tokens)
    assert {"gpt-4o", "gpt-4o-mini", "o3-mini", "claude-sonnet-4-5", "text-embedding-3-small"} <= (
        models
    )
    assert "ft:acme-support-v2" in models
    assert stats.tokens["claude-sonnet-4-5"].cache_read > 0
    assert stats.tokens["claude-sonnet-4-5"].cache_creation > 0
    assert stats.tokens["o3-mini"].reasoning > 0
    assert stats.tokens["o3-mini"].reasoning < stats.tokens["o3-mini"].output
    for t in stats.tokens.values():  # input includes the cached tokens (semconv)
        assert t.input >= t.cache_read + t.cache_creation


def test_llm_spans_follow_semconv(run: RunResult) -> None:
    stats, spans, _ = run
    legacy = 0
    for s in spans:
        if not _is_llm(s):
            continue
        a = _attrs(s)
        assert s.kind is SpanKind.CLIENT
        assert s.start_time is not None and s.end_time is not None
        assert s.end_time > s.start_time
        assert "server.address" in a
        if "gen_ai.system" in a:
            legacy += 1
            assert "gen_ai.provider.name" not in a
            assert "gen_ai.usage.input_tokens" not in a
            assert a["gen_ai.system"] == "openai"
        else:
            op = a["gen_ai.operation.name"]
            assert s.name == f"{op} {a['gen_ai.request.model']}"
            assert op in ("chat", "embeddings", "text_completion")
        if not _failed(s):
            assert a["gen_ai.response.model"]
            if a["gen_ai.request.model"] in ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"):
                assert a["gen_ai.response.model"] != a["gen_ai.request.model"]  # dated
    assert legacy == stats.legacy_convention > 0
    assert sum(stats.legacy_by_model.values()) == legacy
    # Every trace has one root: the HTTP server span.
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == stats.requests
    assert all(s.kind is SpanKind.SERVER and s.name.startswith("POST /") for s in roots)
    # Parents (HTTP, agent, router) never look like LLM calls: no model.
    ids = {s.context.span_id for s in spans if _is_llm(s)}
    assert not any(s.parent is not None and s.parent.span_id in ids for s in spans)


def test_unpriced_model_calls(run: RunResult) -> None:
    stats, spans, _ = run
    ft = [s for s in spans if _is_llm(s) and _model(s) == "ft:acme-support-v2" and not _failed(s)]
    assert len(ft) == stats.unpriced > 0


def test_errors_by_type(run: RunResult) -> None:
    stats, spans, _ = run
    failed = [s for s in spans if _is_llm(s) and _failed(s)]
    assert Counter(_error_label(s) for s in failed) == stats.errors
    assert Counter(_model(s) for s in failed) == stats.errors_by_model
    for s in failed:
        a = _attrs(s)
        assert not any(k.startswith("gen_ai.usage.") for k in a)
        assert [ev.name for ev in s.events if ev.name == "exception"] == ["exception"]
    # Both styles: `error.type` = HTTP status, and exception type only.
    assert {"RateLimitError", "APITimeoutError", "429"} <= set(stats.errors)


def test_fallback_structure(run: RunResult) -> None:
    stats, spans, _ = run
    by_id = {s.context.span_id: s for s in spans}
    pairs: Counter[tuple[str, str, str, str, str]] = Counter()
    for parent_id, group in _by_parent([s for s in spans if _is_llm(s)]).items():
        for a, b in itertools.pairwise(group):
            if _failed(a) and not _failed(b) and _provider(a) != _provider(b):
                pairs[(_service(a), _provider(a), _model(a), _provider(b), _model(b))] += 1
                parent = by_id[parent_id]
                assert parent.kind is SpanKind.INTERNAL
                assert "gen_ai.request.model" not in _attrs(parent)
                assert a.end_time is not None and b.start_time is not None
                assert a.end_time <= b.start_time  # failed, then the other provider
                assert a.context.trace_id == b.context.trace_id
    assert pairs == stats.fallback_pairs
    assert sum(pairs.values()) == stats.fallbacks > 0


def test_retry_structure(run: RunResult) -> None:
    stats, spans, _ = run
    retries: Counter[tuple[str, str, str]] = Counter()
    for group in _by_parent([s for s in spans if _is_llm(s)]).values():
        for a, b in itertools.pairwise(group):
            if _failed(a) and (_provider(a), _model(a)) == (_provider(b), _model(b)):
                retries[(_service(a), _provider(a), _model(a))] += 1
        # A failure is never followed by anything but its retry or fallback: no false positives.
        for a, b in itertools.pairwise(group):
            assert not _failed(a) or _model(b) != _model(a) or _provider(b) == _provider(a)
    assert retries == stats.retries_by
    assert sum(retries.values()) == stats.retries > 0


def test_streaming_ttft(run: RunResult) -> None:
    stats, spans, _ = run
    streamed: Counter[str] = Counter()
    from_events = 0
    for s in spans:
        if not _is_llm(s):
            continue
        a = _attrs(s)
        chunks = sorted(ev.timestamp for ev in s.events if ev.name == "gen_ai.choice.chunk")
        ttft = a.get("gen_ai.response.time_to_first_chunk")
        if ttft is None and not chunks:
            continue
        streamed[_model(s)] += 1
        assert s.start_time is not None and s.end_time is not None
        assert chunks and s.start_time < chunks[0] <= chunks[-1] <= s.end_time
        if ttft is None:
            from_events += 1
        else:
            assert float(ttft) == pytest.approx((chunks[0] - s.start_time) / 1e9, abs=1e-5)
    assert streamed == stats.streamed_by_model
    assert sum(streamed.values()) == stats.streamed
    assert from_events == stats.ttft_from_events
    assert 0 < from_events < stats.streamed
    chat_ok = sum(
        1
        for s in spans
        if _is_llm(s)
        and not _failed(s)
        and _attrs(s).get("gen_ai.operation.name", "chat") == "chat"
    )
    assert 0.25 < stats.streamed / chat_ok < 0.55


def test_logs_correlated_with_spans(run: RunResult) -> None:
    stats, spans, logs = run
    span_ids = {(s.context.trace_id, s.context.span_id): s for s in spans}
    severities: Counter[str] = Counter()
    for rec in logs:
        lr = rec.log_record
        assert lr.trace_id, "log record outside a span context"
        span = span_ids.get((lr.trace_id, lr.span_id or 0))
        assert span is not None, "log record's trace/span id is not a span's"
        assert _is_llm(span)
        sev = lr.severity_text or ""
        severities[sev] += 1
        assert (sev == "INFO") == (not _failed(span))
        attrs = dict(lr.attributes or {})
        assert attrs["gen_ai.request.model"] == _model(span)
        assert str(rec.resource.attributes["service.name"]) == _service(span)
    assert severities == stats.logs_by_severity
    assert set(severities) == {"INFO", "WARN", "ERROR"}
    # One record per LLM call.
    assert stats.log_records == stats.llm_spans


def test_pii_in_prompts(run: RunResult) -> None:
    stats, spans, logs = run
    email = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
    phone = re.compile(r"\+1 \d{3}-555-\d{4}|\(\d{3}\) 555-\d{4}")
    found: Counter[str] = Counter()
    for s in spans:
        values = list(_attrs(s).values())
        for ev in s.events:
            values += list((ev.attributes or {}).values())
        for v in values:
            if isinstance(v, str):
                found["email"] += len(email.findall(v))
                found["phone"] += len(phone.findall(v))
    assert found == stats.pii
    assert stats.pii["email"] > 0 and stats.pii["phone"] > 0
    in_logs = sum(len(email.findall(str(r.log_record.body))) for r in logs)
    assert in_logs == stats.pii_in_logs["email"]


# --------------------------------------------------------------------------------------------
# The sidecar's own processors read what the demo says it sent


def _otlp_batch(spans: Sequence[ReadableSpan]) -> Any:
    from pipeline.model import TraceBatch

    return TraceBatch(
        trace_service_pb2.ExportTraceServiceRequest.FromString(
            encode_spans(spans).SerializeToString()
        )
    )


def test_sidecar_normalize_agrees(run: RunResult) -> None:
    from pipeline.processors.normalize import normalize
    from pipeline.processors.ttft import ttft

    stats, spans, _ = run
    batch = ttft(normalize(_otlp_batch(spans)))
    assert len(batch.calls) == stats.llm_spans
    series: dict[tuple[str, str, str, str], TokenCounts] = {}
    for c in batch.calls:
        _add(
            series,
            (c.service_name, c.operation, c.provider, c.request_model),
            TokenCounts(
                1,
                c.input_tokens or 0,
                c.output_tokens or 0,
                c.cache_read_tokens or 0,
                c.cache_creation_tokens or 0,
                c.reasoning_tokens or 0,
            ),
        )
    assert series == stats.tokens_by_series
    assert Counter(c.error_type for c in batch.calls if c.failed) == stats.errors
    assert sum(1 for c in batch.calls if c.streaming and c.ttft_s is not None) == stats.streamed
    assert not any(c.server_side for c in batch.calls)


def test_sidecar_redaction_agrees(run: RunResult) -> None:
    redact = pytest.importorskip("pipeline.processors.redact")
    stats, spans, _ = run
    counts: Counter[str] = Counter()

    def on_redact(kind: str, n: int) -> None:
        counts[kind] += n

    redact.Redactor(on_redact=on_redact)(_otlp_batch(spans))
    assert counts == stats.pii


# --------------------------------------------------------------------------------------------
# Reproducibility, the other entry points, run control


def _fingerprint(spans: Sequence[ReadableSpan]) -> list[tuple[str, str, tuple[Any, ...]]]:
    # sorted: each service's batch processor exports from its own thread, so the three
    # services' spans interleave in the shared exporter in no fixed order
    return sorted(
        (_service(s), s.name, tuple(sorted((k, str(v)) for k, v in _attrs(s).items())))
        for s in spans
    )


def test_seed_reproduces_the_traffic() -> None:
    a, b = InMemorySpanExporter(), InMemorySpanExporter()
    sa = emit_into(a, None, 150, seed=7)
    sb = emit_into(b, None, 150, seed=7)
    strip = {"wall_s", "cpu_s"}
    assert {k: v for k, v in asdict(sa).items() if k not in strip} == {
        k: v for k, v in asdict(sb).items() if k not in strip
    }
    assert _fingerprint(a.get_finished_spans()) == _fingerprint(b.get_finished_spans())
    assert sa.log_records == 0
    c = InMemorySpanExporter()
    emit_into(c, None, 150, seed=8)
    assert _fingerprint(c.get_finished_spans()) != _fingerprint(a.get_finished_spans())


def test_emit_into_given_providers() -> None:
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    stats = emit(tp, lp, 60, seed=1, service="support-bot")
    assert stats.requests == 60
    assert stats.requests_by_service == Counter({"support-bot": 60})
    assert len(spans.get_finished_spans()) == stats.spans
    assert len(logs.get_finished_logs()) == stats.log_records
    assert any(s.name == "invoke_agent support-agent" for s in spans.get_finished_spans())


@pytest.mark.parametrize("scenario", sorted(demo.SCENARIOS))
def test_generate_request_each_scenario(scenario: str) -> None:
    import random

    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    service = {"rag": "rag-worker", "ingest": "rag-worker", "agent": "support-bot"}.get(
        scenario, "chat-api"
    )
    end = time.time_ns()
    stats = demo.generate_request(
        tp.get_tracer("t"), None, random.Random(3), service=service, scenario=scenario, end_ns=end
    )
    got = spans.get_finished_spans()
    assert len(got) == stats.spans and stats.requests == 1
    root = next(s for s in got if s.parent is None)
    assert root.end_time == end
    for s in got:  # children inside their parents' time
        assert s.start_time is not None and s.end_time is not None
        assert root.start_time is not None and root.start_time <= s.start_time <= s.end_time <= end
    llm = [s for s in got if _is_llm(s)]
    if scenario == "fallback":
        assert [_failed(s) for s in llm] == [True, False] and stats.fallbacks == 1
        assert _provider(llm[0]) != _provider(llm[1])
    if scenario == "retry":
        assert len({_model(s) for s in llm}) == 1 and not _failed(llm[-1])
        assert stats.retries == len(llm) - 1 >= 1
    if scenario == "error":
        assert [_failed(s) for s in llm] == [True]
        assert root.attributes is not None
        assert int(str(root.attributes["http.response.status_code"])) >= 429


def test_unknown_service_and_bad_rate() -> None:
    with pytest.raises(ValueError):
        run_demo(rate=0, span_exporter=InMemorySpanExporter())
    with pytest.raises(ValueError):
        run_demo(services=["nope"], span_exporter=InMemorySpanExporter())


def test_duration_zero_runs_until_stopped() -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    spans = InMemorySpanExporter()
    t0 = time.monotonic()
    stats = run_demo(rate=100, duration=0, seed=1, span_exporter=spans, stop=stop, logs=False)
    elapsed = time.monotonic() - t0
    assert 0.25 < elapsed < 5
    assert 10 <= stats.requests <= 100 * elapsed + 1  # paced, not as fast as possible
    assert len(spans.get_finished_spans()) == stats.spans
    assert stats.log_records == 0


def test_resolve_protocol() -> None:
    assert resolve_protocol("http://127.0.0.1:4317", None) == "grpc"
    assert resolve_protocol("http://collector:4318", None) == "http/protobuf"
    assert resolve_protocol("http://collector:4317", "http/protobuf") == "http/protobuf"
    assert resolve_protocol("http://collector:4318", "grpc") == "grpc"
    with pytest.raises(ValueError):
        resolve_protocol("http://x:1", "thrift")


def test_cpu_cost_is_small() -> None:
    """run_demo(rate=50, duration=2) must stay cheap: it drives the benchmarks too."""
    stats = run_demo(
        rate=50,
        duration=2,
        seed=5,
        span_exporter=InMemorySpanExporter(),
        log_exporter=InMemoryLogRecordExporter(),
    )
    assert stats.requests == 100
    assert 1.9 < stats.wall_s < 4
    # ~0.3-1 ms per request measured (SDK included); a generous bound against regressions.
    assert stats.cpu_per_request_ms < 10, stats.cpu_per_request_ms


# --------------------------------------------------------------------------------------------
# Over the wire: real OTLP exporters into tiny in-test receivers


class _Received:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans = 0
        self.logs = 0
        self.services: set[str] = set()

    def add_traces(self, req: Any) -> None:
        with self.lock:
            for rs in req.resource_spans:
                for kv in rs.resource.attributes:
                    if kv.key == "service.name":
                        self.services.add(kv.value.string_value)
                self.spans += sum(len(ss.spans) for ss in rs.scope_spans)

    def add_logs(self, req: Any) -> None:
        with self.lock:
            for rl in req.resource_logs:
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        assert len(rec.trace_id) == 16 and any(rec.trace_id)
                        assert len(rec.span_id) == 8 and any(rec.span_id)
                        self.logs += 1


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: _Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        self.received.add_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, received: _Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        self.received.add_logs(request)
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[int, _Received]]:
    received = _Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(received), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, received
    finally:
        server.stop(grace=None)


def test_otlp_grpc_export(grpc_receiver: tuple[int, _Received]) -> None:
    port, received = grpc_receiver
    stats = run_demo(endpoint=f"http://127.0.0.1:{port}", rate=200, duration=0.5, seed=11)
    assert stats.requests == 100
    assert received.spans == stats.spans
    assert received.logs == stats.log_records
    assert received.services == set(stats.requests_by_service)


@pytest.fixture
def http_receiver() -> Iterator[tuple[int, _Received]]:
    received = _Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/x-protobuf"
            if self.path == "/v1/traces":
                received.add_traces(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/logs":
                received.add_logs(logs_service_pb2.ExportLogsServiceRequest.FromString(body))
                out = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield int(server.server_address[1]), received
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_http_export(http_receiver: tuple[int, _Received]) -> None:
    port, received = http_receiver
    stats = run_demo(
        endpoint=f"http://127.0.0.1:{port}",
        rate=200,
        duration=0.5,
        seed=12,
        protocol="http/protobuf",
    )
    assert received.spans == stats.spans > 0
    assert received.logs == stats.log_records > 0
