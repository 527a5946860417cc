"""The sidecar end to end: the OTel SDK's own exporters -> the real sidecar process ->
an OTLP sink (forwarded, enriched spans and logs) and /metrics (derived metrics, exemplars).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from pipeline.receivers.decode import to_json
from tests.helpers.metrics import find, value
from tests.helpers.otlp_sink import OtlpSink
from tests.helpers.sidecar import SidecarProcess, start_sidecar

pytestmark = pytest.mark.e2e

T0 = time.time_ns() - 60_000_000_000  # spans a minute in the past, with exact durations
SEC = 1_000_000_000


def emit_scenario(exporter: SpanExporter, service: str = "e2e-svc") -> dict[str, str]:
    """Four LLM calls with exact figures; returns trace ids (hex) by call name."""
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("e2e")
    ids: dict[str, str] = {}

    # A: current conventions, cached input, 1.5 s, not streamed.
    s = tracer.start_span(
        "chat gpt-4o",
        kind=SpanKind.CLIENT,
        start_time=T0,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 200,
            "gen_ai.input.messages": '[{"role":"user","content":"mail me at jane.doe@example.com"}]',
        },
    )
    ids["A"] = format(s.get_span_context().trace_id, "032x")
    s.end(end_time=T0 + 1_500_000_000)

    # B: deprecated names, streamed; TTFT only from a chunk event 0.3 s after start.
    s = tracer.start_span(
        "chat claude",
        kind=SpanKind.CLIENT,
        start_time=T0,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.usage.prompt_tokens": 500,
            "gen_ai.usage.completion_tokens": 101,
        },
    )
    s.add_event("gen_ai.choice.chunk", timestamp=T0 + 300_000_000)
    s.add_event("gen_ai.choice.chunk", timestamp=T0 + 800_000_000)
    ids["B"] = format(s.get_span_context().trace_id, "032x")
    s.end(end_time=T0 + 2_300_000_000)

    # C: a rate-limited call: ERROR status and an exception event.
    s = tracer.start_span(
        "chat gpt-4o-mini",
        kind=SpanKind.CLIENT,
        start_time=T0,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
        },
    )
    s.add_event(
        "exception", {"exception.type": "openai.RateLimitError", "exception.message": "429"}
    )
    s.set_status(Status(StatusCode.ERROR, "rate limited"))
    ids["C"] = format(s.get_span_context().trace_id, "032x")
    s.end(end_time=T0 + 50_000_000)

    # D: a fine-tuned model no price list knows.
    s = tracer.start_span(
        "chat ft",
        kind=SpanKind.CLIENT,
        start_time=T0,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "ft:acme-support-v2",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 5,
        },
    )
    ids["D"] = format(s.get_span_context().trace_id, "032x")
    s.end(end_time=T0 + 200_000_000)
    tp.shutdown()
    return ids


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink().start()
    yield s
    s.stop()


@pytest.fixture
def sidecar(tmp_path: Path, sink: OtlpSink) -> Iterator[SidecarProcess]:
    sc = start_sidecar(
        tmp_path,
        {
            "exporters": {
                "traces": {"protocol": "grpc", "endpoint": f"127.0.0.1:{sink.grpc_port}"},
                "logs": {"protocol": "http", "endpoint": f"http://127.0.0.1:{sink.http_port}"},
            },
            "queue": {"retry_initial_s": 0.2, "retry_max_s": 1.0},
        },
    )
    yield sc
    assert sc.stop() == 0, sc.logs()


def _wait(pred: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def _attrs(span: Any) -> dict[str, Any]:
    from pipeline.model import any_value

    return {kv.key: any_value(kv.value) for kv in span.attributes}


def _grpc_exporter(sc: SidecarProcess) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=sc.grpc_endpoint, insecure=True)


def test_grpc_sdk_exporter_derives_exact_metrics(sidecar: SidecarProcess, sink: OtlpSink) -> None:
    ids = emit_scenario(_grpc_exporter(sidecar))
    _wait(lambda: len(sink.spans()) == 4)
    text = sidecar.scrape()
    base = {"service_name": "e2e-svc", "gen_ai_provider_name": "openai"}

    # Tokens, to the token.
    a = {**base, "gen_ai_request_model": "gpt-4o", "gen_ai_response_model": "gpt-4o-2024-08-06"}
    assert value(text, "gen_ai_client_tokens_total", **a, gen_ai_token_type="input") == 1200
    assert value(text, "gen_ai_client_tokens_total", **a, gen_ai_token_type="output") == 300
    assert value(text, "gen_ai_client_tokens_total", **a, gen_ai_token_type="cache_read") == 200
    b = {"gen_ai_provider_name": "anthropic", "gen_ai_request_model": "claude-sonnet-4-5"}
    assert value(text, "gen_ai_client_tokens_total", **b, gen_ai_token_type="input") == 500
    assert value(text, "gen_ai_client_tokens_total", **b, gen_ai_token_type="output") == 101

    # Cost, against genai-prices' own calculation (response model billed).
    want_a = calc_price(
        Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=200),
        model_ref="gpt-4o-2024-08-06",
        provider_id="openai",
    ).total_price
    assert value(text, "gen_ai_client_cost_usd_total", **a) == pytest.approx(
        float(want_a), abs=1e-12
    )
    want_b = calc_price(
        Usage(input_tokens=500, output_tokens=101),
        model_ref="claude-sonnet-4-5",
        provider_id="anthropic",
    ).total_price
    assert value(text, "gen_ai_client_cost_usd_total", **b) == pytest.approx(
        float(want_b), abs=1e-12
    )

    # Duration histogram: 1.5 s lands in le=2.56, not le=1.28; exemplar is A's trace.
    dur = "gen_ai_client_operation_duration_seconds_bucket"
    assert value(text, dur, **a, error_type="", le="1.28") == 0
    assert value(text, dur, **a, error_type="", le="2.56") == 1
    [bucket] = find(text, dur, **a, error_type="", le="2.56")
    assert bucket.exemplar is not None and bucket.exemplar.labels["trace_id"] == ids["A"]

    # TTFT from the first chunk event: 0.3 s -> le=0.32 but not le=0.16 (the spec's buckets).
    ttft = "gen_ai_client_operation_time_to_first_chunk_seconds"
    assert value(text, f"{ttft}_bucket", **b, le="0.16") == 0
    assert value(text, f"{ttft}_bucket", **b, le="0.32") == 1
    assert value(text, f"{ttft}_sum", **b) == pytest.approx(0.3)
    # Time per output chunk: one observation per chunk after the first (0.8 - 0.3 s); the
    # call's average per output token, (2.3 - 0.3) / 100, under its own name.
    tpc = "gen_ai_client_operation_time_per_output_chunk_seconds"
    assert value(text, f"{tpc}_count", **b) == 1
    assert value(text, f"{tpc}_sum", **b) == pytest.approx(0.5)
    tpt = "llm_pipeline_time_per_output_token_seconds"
    assert value(text, f"{tpt}_sum", **b) == pytest.approx(0.02)
    assert value(text, f"{ttft}_count", **a) == 0  # not streamed

    # Error type tidied from the exception event.
    assert (
        value(
            text,
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_request_model="gpt-4o-mini",
            error_type="RateLimitError",
        )
        == 1
    )

    # The unknown model: no cost series at all (never a made-up 0), counted as unpriced.
    assert (
        find(text, "gen_ai_client_cost_usd_total", gen_ai_request_model="ft:acme-support-v2") == []
    )
    assert (
        value(text, "llm_pipeline_unpriced_spans_total", gen_ai_request_model="ft:acme-support-v2")
        == 1
    )
    assert value(text, "llm_pipeline_received_items_total", signal="traces", transport="grpc") == 4

    # Forwarded spans are enriched, never overwritten.
    spans = {s.name: _attrs(s) for s in sink.spans()}
    assert spans["chat gpt-4o"]["gen_ai.usage.cost"] == pytest.approx(float(want_a), abs=1e-12)
    assert spans["chat gpt-4o"]["gen_ai.usage.input_tokens"] == 1200
    claude = spans["chat claude"]
    assert claude["gen_ai.provider.name"] == "anthropic"
    assert claude["gen_ai.usage.input_tokens"] == 500
    assert claude["gen_ai.usage.output_tokens"] == 101
    assert claude["gen_ai.system"] == "anthropic"  # the original stays
    assert claude["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.3)
    assert "gen_ai.usage.cost" not in spans["chat ft"]


def test_http_protobuf_and_json_and_logs(sidecar: SidecarProcess, sink: OtlpSink) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    emit_scenario(OTLPSpanExporter(endpoint=f"{sidecar.http_url}/v1/traces"), "http-svc")
    # OTLP/JSON: the SDK's protobuf encoding, rendered as OTLP/JSON (hex IDs).
    mem = InMemorySpanExporter()
    emit_scenario(mem, "json-svc")
    body = to_json(encode_spans(mem.get_finished_spans()))
    r = httpx.post(
        f"{sidecar.http_url}/v1/traces", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text

    # Logs via the SDK's HTTP log exporter, correlated with a span.
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    lp = LoggerProvider(resource=Resource.create({"service.name": "http-svc"}))
    lp.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{sidecar.http_url}/v1/logs"))
    )
    logger = lp.get_logger("e2e")
    logger.emit(body="llm call completed for bob@example.com", attributes={"k": "v"})
    lp.shutdown()

    _wait(lambda: len(sink.spans()) == 8 and len(sink.log_records()) == 1)
    text = sidecar.scrape()
    for svc in ("http-svc", "json-svc"):
        assert (
            value(
                text,
                "gen_ai_client_tokens_total",
                service_name=svc,
                gen_ai_request_model="gpt-4o",
                gen_ai_token_type="input",
            )
            == 1200
        )
    assert value(text, "llm_pipeline_received_items_total", signal="traces", transport="http") == 8
    assert value(text, "llm_pipeline_received_items_total", signal="logs", transport="http") == 1
    [rec] = sink.log_records()
    assert rec.body.string_value == "llm call completed for [REDACTED:email]"


@pytest.mark.parametrize(
    ("ctype", "encoding", "body", "status", "needle"),
    [
        ("application/x-protobuf", "", b"\xff\xff\xff\x0f", 400, "invalid OTLP/protobuf"),
        ("application/json", "", b'{"resourceSpans": [', 400, "invalid JSON"),
        ("application/json", "", b'{"resourceSpans": 5}', 400, "invalid OTLP/JSON"),
        ("text/plain", "", b"hello", 415, "unsupported Content-Type"),
        ("application/x-protobuf", "gzip", b"not gzip at all", 400, "invalid gzip"),
        ("application/x-protobuf", "br", b"x", 415, "unsupported Content-Encoding"),
    ],
)
def test_bad_http_input_gets_clear_error(
    sidecar: SidecarProcess, ctype: str, encoding: str, body: bytes, status: int, needle: str
) -> None:
    headers = {"Content-Type": ctype}
    if encoding:
        headers["Content-Encoding"] = encoding
    r = httpx.post(f"{sidecar.http_url}/v1/traces", content=body, headers=headers)
    assert r.status_code == status
    assert needle in r.text
    # ...and the sidecar still serves good requests.
    mem = InMemorySpanExporter()
    emit_scenario(mem, "after-bad")
    ok = httpx.post(
        f"{sidecar.http_url}/v1/traces",
        content=encode_spans(mem.get_finished_spans()).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert ok.status_code == 200


def test_oversize_and_grpc_invalid_argument(tmp_path: Path, sink: OtlpSink) -> None:
    import grpc

    sc = start_sidecar(tmp_path, {"receivers": {"max_request_bytes": 4096}})
    try:
        r = httpx.post(
            f"{sc.http_url}/v1/traces",
            content=b"\0" * 10_000,
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert r.status_code == 413 and "exceeds 4096" in r.text
        ch = grpc.insecure_channel(sc.grpc_endpoint)
        call = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as e:
            call(b"\xff\xff\xff\x0f", timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid OTLP/protobuf" in (e.value.details() or "")
        with pytest.raises(grpc.RpcError) as e:
            call(b"\x0a" + b"\x80" * 5000, timeout=5)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ch.close()
        text = sc.scrape()
        assert value(text, "llm_pipeline_rejected_items_total", reason="too_large") >= 1
        assert value(text, "llm_pipeline_rejected_items_total", reason="malformed") >= 1
    finally:
        assert sc.stop() == 0


def test_partial_success_for_invalid_spans(sidecar: SidecarProcess, sink: OtlpSink) -> None:
    mem = InMemorySpanExporter()
    emit_scenario(mem, "partial")
    req = encode_spans(mem.get_finished_spans())
    req.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\x01\x02"  # corrupt one span
    r = httpx.post(
        f"{sidecar.http_url}/v1/traces",
        content=to_json(req),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "trace_id" in r.json()["partialSuccess"]["errorMessage"]
    _wait(lambda: len(sink.spans()) == 3)


def test_destination_down_then_back_loses_nothing(sidecar: SidecarProcess, sink: OtlpSink) -> None:
    sink.failing = True
    sent = 0
    for i in range(5):
        emit_scenario(_grpc_exporter(sidecar), f"outage-{i}")
        sent += 4
    _wait(lambda: sink.attempts >= 3)  # the sidecar is retrying
    time.sleep(1.0)
    text = sidecar.scrape(openmetrics=False)
    assert "llm_pipeline_export_failures_total" in text
    sink.failing = False
    _wait(lambda: len(sink.spans()) == sent, timeout=30)
    time.sleep(0.5)
    assert len(sink.spans()) == sent  # nothing lost, nothing duplicated
    text = sidecar.scrape()
    assert value(text, "llm_pipeline_exported_items_total", signal="traces") == sent
    assert value(text, "llm_pipeline_dropped_items_total") == 0


def test_logs_encoded_records_keep_trace_ids(sidecar: SidecarProcess, sink: OtlpSink) -> None:
    """OTLP/JSON logs with hex trace/span ids arrive with the same ids."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    mem = InMemoryLogRecordExporter()
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(mem))
    tp = TracerProvider()
    with tp.get_tracer("t").start_as_current_span("parent") as span:
        lp.get_logger("t").emit(body="inside span")
        want = format(span.get_span_context().trace_id, "032x")
    lp.shutdown()
    body = to_json(encode_logs(mem.get_finished_logs()))
    assert want in body
    r = httpx.post(
        f"{sidecar.http_url}/v1/logs", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200, r.text
    _wait(lambda: len(sink.log_records()) == 1)
    assert sink.log_records()[0].trace_id.hex() == want
