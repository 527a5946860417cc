"""serving: vLLM latency breakdown, the client/server TTFT gap, rate limits and evaluation
events, read from real OTLP requests through the chain."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pipeline.aggregation import DURATION_BUCKETS
from pipeline.model import LogBatch, set_any_value
from pipeline.processors.serving import SCORE_BUCKETS
from tests.instrumentation.otlp import Span, build_request, llm
from tests.processors._chain import Chain


def vllm_span(span: int, parent: int, out: int = 101, **kw: Any) -> Span:
    a = {
        "gen_ai.response.model": "llama-3-8b",
        "gen_ai.usage.prompt_tokens": 50,
        "gen_ai.usage.completion_tokens": out,
        "gen_ai.latency.time_to_first_token": 0.25,
        "gen_ai.latency.e2e": 2.25,
        "gen_ai.latency.time_in_queue": 0.05,
        "gen_ai.latency.time_in_model_prefill": 0.2,
        "gen_ai.latency.time_in_model_decode": 2.0,
    }
    return Span(span, parent, name="llm_request", kind=2, attrs=a, service="vllm", **kw)


def streamed_client(span: int, ttft_s: float = 0.4) -> Span:
    return llm(
        span,
        attrs={
            "gen_ai.request.model": "llama-3-8b",
            "gen_ai.provider.name": "vllm",
            "gen_ai.response.time_to_first_chunk": ttft_s,
        },
        end_ms=2400,
        service="app",
    )


def test_vllm_breakdown_and_decode_rate() -> None:
    chain = Chain()
    chain(build_request([vllm_span(2, 1)]))
    assert chain.total("llm_pipeline_server_queue_time_seconds") == pytest.approx(0.05)
    assert chain.total("llm_pipeline_server_prefill_time_seconds") == pytest.approx(0.2)
    assert chain.total("llm_pipeline_server_decode_time_seconds") == pytest.approx(2.0)
    # 100 tokens after the first over 2 s of decode
    assert chain.total("llm_pipeline_server_decode_tokens_per_second") == pytest.approx(50.0)
    [(labels, _)] = chain.series("llm_pipeline_server_queue_time_seconds")
    assert labels["service_name"] == "vllm" and labels["gen_ai_provider_name"] == "vllm"


@pytest.mark.parametrize("server_first", [False, True])
def test_client_server_ttft_gap_across_batches(server_first: bool) -> None:
    chain = Chain()
    client, server = build_request([streamed_client(1)]), build_request([vllm_span(2, 1)])
    for req in (server, client) if server_first else (client, server):
        chain(req)
    [(labels, s)] = chain.series("llm_pipeline_client_server_ttft_gap_seconds")
    assert s.count == 1 and s.total == pytest.approx(0.15)  # 0.4 - 0.25
    assert s.counts[DURATION_BUCKETS.index(0.16)] == 1
    assert labels["service_name"] == "app"  # the client's labels
    assert chain.serving._clients == {} and chain.serving._servers == {}


def test_no_gap_for_an_unrelated_server_span() -> None:
    chain = Chain()
    chain(build_request([streamed_client(1), vllm_span(3, 7)]))
    assert chain.count("llm_pipeline_client_server_ttft_gap_seconds") == 0


def test_rate_limited_calls_and_retry_after() -> None:
    chain = Chain()
    spans = [
        llm(
            1,
            attrs={
                "error.type": "openai.RateLimitError",
                "http.response.header.retry-after": ["7"],
            },
            status=2,
        ),
        llm(2, attrs={"error.type": "429"}, status=2),
        llm(3, attrs={"error.type": "500"}, status=2),
        llm(4),
    ]
    chain(build_request(spans, "chat-api"))
    [(labels, s)] = chain.series("llm_pipeline_rate_limited_calls")
    assert labels == {
        "service_name": "chat-api",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "m",
    }
    assert s.value == 2
    [(_, ra)] = chain.series("llm_pipeline_rate_limit_retry_after_seconds")
    assert (ra.count, ra.total) == (1, 7.0)


def _evaluation(span: Any, name: str, score: float | None, label: str) -> None:
    ev = span.events.add()
    ev.name = "gen_ai.evaluation.result"
    for k, v in (
        ("gen_ai.evaluation.name", name),
        ("gen_ai.evaluation.score.value", score),
        ("gen_ai.evaluation.score.label", label),
    ):
        if v is not None:
            kv = ev.attributes.add()
            kv.key = k
            set_any_value(kv.value, v)


def test_evaluation_events() -> None:
    chain = Chain()
    req = build_request([llm(1), llm(2, attrs={"gen_ai.request.model": "n"}), Span(3)], "bot")
    spans = req.resource_spans[0].scope_spans[0].spans
    _evaluation(spans[0], "relevance", 0.9, "pass")
    _evaluation(spans[0], "toxicity", 0.05, "pass")
    _evaluation(spans[1], "relevance", 0.3, "fail")
    _evaluation(spans[2], "relevance", None, "fail")  # no score, not on a model call
    chain(req)
    score = "llm_pipeline_evaluation_score"
    assert chain.total(
        score, gen_ai_evaluation_name="relevance", gen_ai_request_model="m"
    ) == pytest.approx(0.9)
    assert chain.total(
        score, gen_ai_evaluation_name="relevance", gen_ai_request_model="n"
    ) == pytest.approx(0.3)
    assert chain.count(score) == 3
    ev = "llm_pipeline_evaluations"
    assert chain.total(ev, gen_ai_evaluation_score_label="fail") == 2
    assert chain.total(ev, gen_ai_evaluation_score_label="pass") == 2
    assert chain.total(ev, gen_ai_evaluation_name="relevance", gen_ai_request_model="") == 1


def _eval_record(
    rl: Any, name: str, score: float | None, label: str, old_sdk: bool = False, **extra: Any
) -> Any:
    """A `gen_ai.evaluation.result` log record: `event_name`, or (older SDKs) `event.name`."""
    rec = rl.scope_logs[0].log_records.add()
    rec.trace_id, rec.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    attrs = {
        "gen_ai.evaluation.name": name,
        "gen_ai.evaluation.score.value": score,
        "gen_ai.evaluation.score.label": label,
        "gen_ai.evaluation.explanation": "judged by a test",
        **extra,
    }
    if old_sdk:
        attrs["event.name"] = "gen_ai.evaluation.result"
    else:
        rec.event_name = "gen_ai.evaluation.result"
    for k, v in attrs.items():
        if v is not None:
            kv = rec.attributes.add()
            kv.key = k
            set_any_value(kv.value, v)
    return rec


def _logs_request(service: str) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key = "service.name"
    kv.value.string_value = service
    rl.scope_logs.add().log_records.add().body.string_value = "an ordinary log line"
    return req


def test_evaluation_log_records() -> None:
    chain = Chain()
    req = _logs_request("judge")
    rl = req.resource_logs[0]
    _eval_record(rl, "relevance", 0.75, "pass", **{"gen_ai.request.model": "gpt-4o"})
    _eval_record(rl, "relevance", 0.25, "fail", old_sdk=True)
    _eval_record(rl, "relevance", None, "fail", **{"error.type": "timeout"})
    _eval_record(rl, "", 0.5, "pass")  # no evaluation name: not counted
    raw = req.SerializeToString()
    batch = LogBatch(req, raw)
    assert chain.serving.logs(batch) is batch
    assert batch.encode() is raw  # forwarded as received

    score = "llm_pipeline_evaluation_score"
    [(labels, s)] = chain.series(score, gen_ai_request_model="gpt-4o")
    assert labels == {
        "service_name": "judge",
        "gen_ai_evaluation_name": "relevance",
        "gen_ai_request_model": "gpt-4o",
    }
    assert (s.count, s.total) == (1, 0.75)
    assert s.counts[SCORE_BUCKETS.index(0.8)] == 1
    [(_, s)] = chain.series(score, gen_ai_request_model="")
    assert (s.count, s.total) == (1, 0.25)
    ev = "llm_pipeline_evaluations"
    assert chain.total(ev, gen_ai_evaluation_score_label="fail", gen_ai_request_model="") == 2
    assert chain.total(ev, gen_ai_evaluation_score_label="pass") == 1
    assert chain.total(ev, service_name="judge") == 3


def test_logs_without_evaluations_are_skipped_unread() -> None:
    chain = Chain()
    req = _logs_request("app")
    raw = req.SerializeToString()
    # the request object says otherwise: only the bytes are read, and they hold no evaluation
    _eval_record(req.resource_logs[0], "relevance", 0.5, "pass")
    chain.serving.logs(LogBatch(req, raw))
    assert chain.count("llm_pipeline_evaluation_score") == 0
    # without received bytes (OTLP/JSON) the request is read
    chain.serving.logs(LogBatch(req))
    assert chain.count("llm_pipeline_evaluation_score") == 1
