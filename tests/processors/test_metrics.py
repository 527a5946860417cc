"""metrics: recording through the per-label-set series cache equals recording every
observation through the families (the straightforward way, kept here as the oracle), overflow
folding and its count included."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.aggregation import Aggregation
from pipeline.model import LLMCall
from pipeline.processors.metrics import LLMMetrics, MetricsConfig


def _reference_record(m: LLMMetrics, call: LLMCall, now: float) -> None:
    """Every observation through `HistogramFamily.observe` / `CounterFamily.add`."""
    tid, sid = call.trace_id, call.span_id
    base = (call.service_name, call.operation, call.provider, call.request_model)
    base = (*base, call.response_model)
    if call.server_side:
        if (v := call.server_ttft_s) is not None:
            m.server_ttft.observe(base, v, (tid, sid, v, now))
        d = call.server_duration_s if call.server_duration_s is not None else call.duration_s
        m.server_duration.observe((*base, call.error_type), d, (tid, sid, d, now))
    else:
        d = call.duration_s
        m.duration.observe((*base, call.error_type), d, (tid, sid, d, now))
        if call.streaming and (v := call.ttft_s) is not None:
            m.ttft.observe(base, v, (tid, sid, v, now))
            if (v := call.time_per_chunk_s) is not None:
                m.time_per_chunk.observe(base, v, (tid, sid, v, now))
    for token_type, n in (("input", call.input_tokens), ("output", call.output_tokens)):
        if n is not None:
            m.token_usage.observe((*base, token_type), n, (tid, sid, n, now))
            if n:
                m.tokens.add((*base, token_type), n, (tid, sid, n, now))
    for token_type, value in (
        ("cache_read", call.cache_read_tokens),
        ("cache_creation", call.cache_creation_tokens),
        ("reasoning", call.reasoning_tokens),
    ):
        if value:
            m.tokens.add((*base, token_type), value, (tid, sid, value, now))
    if (c := call.cost_usd) is not None:
        m.cost.add(base, c, (tid, sid, c, now))


def _state(m: LLMMetrics) -> list[Any]:
    out = []
    for fam in m.agg.families:
        series = {
            k: (
                (list(s.counts), s.total, s.count, list(s.exemplars))
                if hasattr(s, "counts")
                else (s.value, s.exemplar)
            )
            for k, s in fam.series.items()
        }
        out.append((fam.name, fam.overflowed, series))
    return out


_tokens = st.none() | st.integers(0, 5000)
_seconds = st.none() | st.floats(0, 30)
_call = st.builds(
    lambda i, svc, model, err, server, streaming, toks, secs, cost: LLMCall(
        span=None,
        service_name=svc,
        convention="otel_genai",
        trace_id=bytes([i % 256]) * 16,
        span_id=bytes([i % 256]) * 8,
        parent_span_id=b"",
        start_ns=1_000_000_000,
        end_ns=1_000_000_000 + int((secs[0] or 0) * 1e9),
        operation="chat",
        provider="openai",
        request_model=model,
        response_model=model,
        input_tokens=toks[0],
        output_tokens=toks[1],
        cache_read_tokens=toks[2],
        cache_creation_tokens=toks[3],
        reasoning_tokens=toks[4],
        streaming=streaming,
        ttft_s=secs[1],
        time_per_chunk_s=secs[2],
        error_type=err,
        server_side=server,
        server_ttft_s=secs[3],
        server_duration_s=secs[4],
        cost_usd=cost,
    ),
    st.integers(0, 1000),
    st.sampled_from(["a", "b"]),
    st.sampled_from(["m1", "m2", "m3", "m4"]),
    st.sampled_from(["", "", "RateLimitError", "Timeout"]),
    st.booleans(),
    st.booleans(),
    st.tuples(*[_tokens] * 5),
    st.tuples(*[_seconds] * 5),
    st.none() | st.floats(0, 2),
)


@settings(max_examples=200, deadline=None)
@given(calls=st.lists(_call, max_size=40), max_series=st.sampled_from([2, 5, 2000]))
def test_recording_equals_observing_through_the_families(
    calls: list[LLMCall], max_series: int
) -> None:
    fast = LLMMetrics(Aggregation(), MetricsConfig(max_series=max_series))
    slow = LLMMetrics(Aggregation(), MetricsConfig(max_series=max_series))
    for n, call in enumerate(calls):
        fast.record(call, 1000.0 + n)
        _reference_record(slow, call, 1000.0 + n)
    assert _state(fast) == _state(slow)
