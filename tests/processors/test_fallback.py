"""fallback: retries and fallbacks read from real OTLP spans (normalize -> FallbackDetector)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2

from pipeline.aggregation import Aggregation
from pipeline.model import TraceBatch
from pipeline.processors.fallback import FallbackConfig, FallbackDetector
from pipeline.processors.metrics import LLMMetrics
from pipeline.processors.normalize import normalize

SVC = "checkout"
T1 = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
T2 = bytes.fromhex("00f067aa0ba902b700f067aa0ba902b7")
P = bytes.fromhex("aaaaaaaaaaaaaaaa")  # the parent of most calls (an agent step)
Q = bytes.fromhex("bbbbbbbbbbbbbbbb")
S = 1_700_000_000_000_000_000  # ns


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def llm_span(
    trace_id: bytes,
    span_id: int,
    parent: bytes,
    provider: str,
    model: str,
    start_ms: int,
    end_ms: int,
    error: str | None = None,
    operation: str = "chat",
    via_exception_event: bool = False,
) -> trace_pb2.Span:
    span = trace_pb2.Span(
        trace_id=trace_id,
        span_id=sid(span_id),
        parent_span_id=parent,
        name=f"{operation} {model}",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=S + start_ms * 1_000_000,
        end_time_unix_nano=S + end_ms * 1_000_000,
    )

    def attr(key: str, value: Any) -> None:
        kv = span.attributes.add()
        kv.key = key
        if isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = value

    attr("gen_ai.operation.name", operation)
    attr("gen_ai.provider.name", provider)
    attr("gen_ai.request.model", model)
    if error is None:
        attr("gen_ai.response.model", model + "-2024")
        attr("gen_ai.usage.input_tokens", 12)
        attr("gen_ai.usage.output_tokens", 7)
    else:
        span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        if via_exception_event:
            ev = span.events.add()
            ev.name = "exception"
            kv = ev.attributes.add()
            kv.key = "exception.type"
            kv.value.string_value = error
        else:
            attr("error.type", error)
    return span


def batch_of(*spans: trace_pb2.Span, service: str = SVC) -> TraceBatch:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key = "service.name"
    kv.value.string_value = service
    rs.scope_spans.add().spans.extend(spans)
    return normalize(TraceBatch(req))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(**cfg: Any) -> tuple[FallbackDetector, LLMMetrics, Clock]:
    metrics = LLMMetrics(Aggregation())
    clock = Clock()
    return FallbackDetector(FallbackConfig(**cfg), metrics, clock=clock), metrics, clock


def counts(family: Any) -> dict[tuple[str, ...], float]:
    return {k: s.value for k, s in family.series.items()}


def close_all(det: FallbackDetector, clock: Clock) -> int:
    return det.flush(now=clock.t + det.config.window_s)


def test_rate_limited_openai_then_anthropic_is_one_fallback() -> None:
    det, m, clock = make()
    b = batch_of(
        llm_span(T1, 1, P, "openai", "gpt-4o", 0, 120, error="openai.RateLimitError"),
        llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 130, 900),
    )
    assert [c.failed for c in b.calls] == [True, False]
    assert b.calls[0].error_type == "RateLimitError"
    assert det(b) is b
    assert close_all(det, clock) == 1
    assert counts(m.fallbacks) == {(SVC, "openai", "gpt-4o", "anthropic", "claude-3-5-sonnet"): 1.0}
    assert counts(m.retries) == {}
    ex = m.fallbacks.series[(SVC, "openai", "gpt-4o", "anthropic", "claude-3-5-sonnet")].exemplar
    assert ex is not None
    assert ex[:3] == (T1, sid(2), 1.0)  # trace id, span id, value


def test_same_model_again_is_a_retry_not_a_fallback() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
            llm_span(T1, 2, P, "openai", "gpt-4o", 1100, 1900),
        )
    )
    close_all(det, clock)
    assert counts(m.retries) == {(SVC, "openai", "gpt-4o"): 1.0}
    assert counts(m.fallbacks) == {}
    ex = m.retries.series[(SVC, "openai", "gpt-4o")].exemplar
    assert ex is not None and ex[1] == sid(2)


def test_fail_retry_fails_then_fallback_succeeds() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
            llm_span(T1, 2, P, "openai", "gpt-4o", 200, 300, error="RateLimitError"),
            llm_span(T1, 3, P, "anthropic", "claude-3-5-sonnet", 400, 1400),
        )
    )
    close_all(det, clock)
    assert counts(m.retries) == {(SVC, "openai", "gpt-4o"): 1.0}
    assert counts(m.fallbacks) == {(SVC, "openai", "gpt-4o", "anthropic", "claude-3-5-sonnet"): 1.0}
    ex = m.retries.series[(SVC, "openai", "gpt-4o")].exemplar
    assert ex is not None and ex[1] == sid(2)  # the retry that failed


def test_every_failed_attempt_followed_by_the_same_model_is_a_retry() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="APITimeoutError"),
            llm_span(T1, 2, P, "openai", "gpt-4o", 200, 300, error="APITimeoutError"),
            llm_span(T1, 3, P, "openai", "gpt-4o", 400, 500, error="APITimeoutError"),
        )
    )
    close_all(det, clock)
    assert counts(m.retries) == {(SVC, "openai", "gpt-4o"): 2.0}
    assert counts(m.fallbacks) == {}


def test_chain_of_three_models_counts_the_last_hop() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
            llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300, error="Overloaded"),
            llm_span(T1, 3, P, "gcp.gemini", "gemini-1.5-pro", 400, 900),
        )
    )
    close_all(det, clock)
    assert counts(m.fallbacks) == {
        (SVC, "anthropic", "claude-3-5-sonnet", "gcp.gemini", "gemini-1.5-pro"): 1.0
    }
    assert counts(m.retries) == {}


def test_same_provider_other_model_is_a_fallback() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="BadRequestError"),
            llm_span(T1, 2, P, "openai", "gpt-4o-mini", 150, 500),
        )
    )
    close_all(det, clock)
    assert counts(m.fallbacks) == {(SVC, "openai", "gpt-4o", "openai", "gpt-4o-mini"): 1.0}


def test_success_then_other_model_and_failure_at_the_end_count_nothing() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100),
            llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300),
            llm_span(T1, 3, P, "openai", "gpt-4o", 400, 500, error="RateLimitError"),
        )
    )
    close_all(det, clock)
    assert counts(m.fallbacks) == {} and counts(m.retries) == {}


def test_error_from_exception_event_counts_as_failed() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(
                T1, 1, P, "openai", "gpt-4o", 0, 100, "openai.InternalServerError", "chat", True
            ),
            llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300),
        )
    )
    close_all(det, clock)
    assert counts(m.fallbacks) == {(SVC, "openai", "gpt-4o", "anthropic", "claude-3-5-sonnet"): 1.0}


def test_calls_under_different_parents_are_not_related() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
            llm_span(T1, 2, Q, "anthropic", "claude-3-5-sonnet", 200, 300),
            llm_span(T1, 3, Q, "openai", "gpt-4o", 400, 500),
        )
    )
    close_all(det, clock)
    assert counts(m.fallbacks) == {} and counts(m.retries) == {}


def test_calls_in_different_traces_are_not_related() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
            llm_span(T2, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300),
        )
    )
    assert close_all(det, clock) == 2
    assert counts(m.fallbacks) == {}


def test_other_operations_are_not_related() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(
                T1, 1, P, "openai", "text-embedding-3-small", 0, 100, "RateLimitError", "embeddings"
            ),
            llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300),
        )
    )
    close_all(det, clock)
    assert counts(m.fallbacks) == {}


def test_overlapping_calls_are_concurrent_not_a_fallback() -> None:
    det, m, clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 300, error="RateLimitError"),
            llm_span(
                T1, 2, P, "anthropic", "claude-3-5-sonnet", 100, 900
            ),  # started before 1 ended
        )
    )
    close_all(det, clock)
    assert counts(m.fallbacks) == {}


def test_order_is_by_start_time_not_arrival() -> None:
    det, m, clock = make()
    det(batch_of(llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300)))
    det(batch_of(llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError")))
    close_all(det, clock)
    assert counts(m.fallbacks) == {(SVC, "openai", "gpt-4o", "anthropic", "claude-3-5-sonnet"): 1.0}


def test_batches_within_the_window_are_combined() -> None:
    det, m, clock = make(window_s=10.0)
    det(batch_of(llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError")))
    clock.t += 9.5
    assert det.flush() == 0
    det(batch_of(llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300)))
    assert counts(m.fallbacks) == {}
    clock.t += 0.5  # 10 s after the trace's first call
    assert det.flush() == 1
    assert counts(m.fallbacks) == {(SVC, "openai", "gpt-4o", "anthropic", "claude-3-5-sonnet"): 1.0}
    assert len(det) == 0


def test_nothing_is_counted_before_the_window_closes() -> None:
    det, m, clock = make(window_s=10.0)
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
            llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300),
        )
    )
    assert det.flush(now=clock.t + 9.999) == 0
    assert counts(m.fallbacks) == {} and counts(m.retries) == {}
    assert len(det) == 1
    assert det.flush(now=clock.t + 10.0) == 1
    assert sum(counts(m.fallbacks).values()) == 1.0


def test_calls_after_the_window_closed_open_a_new_window() -> None:
    det, m, clock = make(window_s=10.0)
    det(batch_of(llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError")))
    clock.t += 11
    assert det.flush() == 1
    det(batch_of(llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300)))
    assert det.flush(force=True) == 1
    assert counts(m.fallbacks) == {}  # the documented limit: too late to be related


def test_force_flush_closes_every_window() -> None:
    det, m, _clock = make()
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
            llm_span(T1, 2, P, "openai", "gpt-4o", 200, 300),
            llm_span(T2, 3, P, "openai", "gpt-4o", 0, 100),
        )
    )
    assert det.flush() == 0
    assert det.flush(force=True) == 2
    assert len(det) == 0
    assert counts(m.retries) == {(SVC, "openai", "gpt-4o"): 1.0}
    assert det.flush(force=True) == 0


def test_uncounted_calls_take_no_part() -> None:
    # Under P: the failed call, and the LiteLLM span describing the same failed attempt, which
    # dedupe marks counted=False. Counted as one attempt, there is no retry.
    def run(mark_duplicate: bool) -> dict[tuple[str, ...], float]:
        det, m, clock = make()
        b = batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
            llm_span(T1, 2, P, "openai", "gpt-4o", 101, 102, error="RateLimitError"),
        )
        if mark_duplicate:
            b.calls[1].counted = False
        det(b)
        close_all(det, clock)
        return counts(m.retries)

    assert run(mark_duplicate=True) == {}
    assert run(mark_duplicate=False) == {(SVC, "openai", "gpt-4o"): 1.0}


def test_server_spans_take_no_part() -> None:
    det, m, clock = make()
    failed = llm_span(T1, 1, P, "vllm", "llama-3-8b", 0, 100, error="InternalServerError")
    failed.kind = trace_pb2.Span.SPAN_KIND_SERVER
    again = llm_span(T1, 2, P, "vllm", "llama-3-8b", 200, 300)
    again.kind = trace_pb2.Span.SPAN_KIND_SERVER
    b = batch_of(failed, again)
    assert [c.server_side for c in b.calls] == [True, True]
    det(b)
    close_all(det, clock)
    assert counts(m.retries) == {}


def test_a_resent_span_counts_once() -> None:
    det, m, clock = make()
    first = llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError")
    det(batch_of(first, llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300)))
    det(batch_of(first))  # the exporter retried a batch that had arrived
    close_all(det, clock)
    assert counts(m.fallbacks) == {(SVC, "openai", "gpt-4o", "anthropic", "claude-3-5-sonnet"): 1.0}
    assert counts(m.retries) == {}


def test_service_name_label_is_the_later_calls() -> None:
    det, m, clock = make()
    det(batch_of(llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError")))
    det(batch_of(llm_span(T1, 2, P, "openai", "gpt-4o", 200, 300), service="billing"))
    close_all(det, clock)
    assert counts(m.retries) == {("billing", "openai", "gpt-4o"): 1.0}


def test_max_traces_bounds_memory_under_a_flood_of_trace_ids() -> None:
    det, _m, _clock = make(max_traces=100)
    for i in range(1000):
        det(batch_of(llm_span(i.to_bytes(16, "big"), 1, P, "openai", "gpt-4o", 0, 100)))
        assert len(det) <= 100
    assert len(det) == 100
    assert det.forced_closes == 900
    assert det.flush(force=True) == 100


def test_forced_close_still_counts_the_oldest_trace() -> None:
    det, m, _clock = make(max_traces=2)
    det(
        batch_of(
            llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
            llm_span(T1, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300),
        )
    )
    det(batch_of(llm_span(T2, 3, P, "openai", "gpt-4o", 0, 100)))
    assert counts(m.fallbacks) == {}
    det(batch_of(llm_span(bytes(15) + b"\x03", 4, P, "openai", "gpt-4o", 0, 100)))
    assert det.forced_closes == 1
    assert counts(m.fallbacks) == {(SVC, "openai", "gpt-4o", "anthropic", "claude-3-5-sonnet"): 1.0}
    assert len(det) == 2


def test_max_calls_per_trace_bounds_one_trace() -> None:
    det, m, clock = make(max_calls_per_trace=3)
    spans = [
        llm_span(T1, i, P, "openai", "gpt-4o", i * 100, i * 100 + 50, error="RateLimitError")
        for i in range(1, 6)
    ]
    det(batch_of(*spans))
    assert det.dropped_calls == 2
    close_all(det, clock)
    assert counts(m.retries) == {(SVC, "openai", "gpt-4o"): 2.0}  # 3 calls kept: 2 pairs


def test_max_buffered_calls_bounds_the_total() -> None:
    det, m, _clock = make(max_calls_per_trace=4, max_buffered_calls=10)
    for i in range(1, 21):  # 20 traces of 3 calls: a failure and two retries each
        tid = i.to_bytes(16, "big")
        det(
            batch_of(
                *[
                    llm_span(tid, k, P, "openai", "gpt-4o", k * 100, k * 100 + 50, "Timeout")
                    for k in range(1, 4)
                ]
            )
        )
        assert det._buffered <= 10
        assert det._buffered == sum(len(w) - 1 for w in det._windows.values())
    assert len(det) == 3  # 9 calls buffered; a 4th trace would exceed 10
    assert det.forced_closes == 17
    assert det.flush(force=True) == 3
    assert det._buffered == 0
    # every trace was decided in full, early or not: 2 retries each
    assert counts(m.retries) == {(SVC, "openai", "gpt-4o"): 40.0}


def test_concurrent_feeding_and_flushing_loses_nothing() -> None:
    metrics = LLMMetrics(Aggregation())
    det = FallbackDetector(FallbackConfig(window_s=0.001), metrics)
    stop = threading.Event()

    def feed(worker: int) -> None:
        for i in range(200):
            tid = (worker * 1000 + i + 1).to_bytes(16, "big")
            det(
                batch_of(
                    llm_span(tid, 1, P, "openai", "gpt-4o", 0, 100, error="RateLimitError"),
                    llm_span(tid, 2, P, "anthropic", "claude-3-5-sonnet", 200, 300),
                )
            )

    def flusher() -> None:
        while not stop.is_set():
            det.flush()

    f = threading.Thread(target=flusher)
    f.start()
    workers = [threading.Thread(target=feed, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    f.join()
    det.flush(force=True)
    assert counts(metrics.fallbacks) == {
        (SVC, "openai", "gpt-4o", "anthropic", "claude-3-5-sonnet"): 800.0
    }
    assert len(det) == 0


def test_batch_is_passed_through_unchanged() -> None:
    det, _m, _clock = make()
    b = batch_of(llm_span(T1, 1, P, "openai", "gpt-4o", 0, 100))
    before = b.request.SerializeToString()
    assert det(b) is b
    assert b.request.SerializeToString() == before
    assert not b.modified


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"window_s": 0}, "window_s must be > 0"),
        ({"window_s": -1.0}, "window_s must be > 0"),
        ({"window_s": float("nan")}, "window_s must be a finite"),
        ({"max_traces": 0}, "max_traces must be >= 1"),
        ({"max_calls_per_trace": 1}, "max_calls_per_trace must be >= 2"),
        ({"max_buffered_calls": 100}, "max_buffered_calls must be >= max_calls_per_trace"),
    ],
)
def test_config_validation(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FallbackConfig(**cfg).validate()
    with pytest.raises(ValueError, match=message):
        FallbackDetector(FallbackConfig(**cfg))


def test_default_config_is_valid() -> None:
    cfg = FallbackConfig()
    cfg.validate()
    assert (cfg.window_s, cfg.max_traces, cfg.max_calls_per_trace, cfg.max_buffered_calls) == (
        10.0,
        50_000,
        256,
        1_000_000,
    )
