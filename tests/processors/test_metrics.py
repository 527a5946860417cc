"""metrics: recording through the per-label-set series cache equals recording every
observation through the families (the straightforward way, kept here as the oracle), overflow
folding and its count included."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.aggregation import Aggregation
from pipeline.model import LLMCall, TraceBatch
from pipeline.processors.metrics import BASE_LABELS, LLMMetrics, MetricsConfig
from pipeline.processors.plausible import suspect


def _intervals(call: LLMCall) -> list[float]:
    chunks = call.chunk_ns or ()
    out = []
    for i in range(1, len(chunks)):
        if chunks[i] > call.end_ns:
            break
        out.append((chunks[i] - chunks[i - 1]) / 1e9)
    return out


def _reference_record(m: LLMMetrics, call: LLMCall, now: float) -> None:
    """Every observation through `HistogramFamily.observe` / `CounterFamily.add`, of the call
    as `Plausibility.check` corrects it when `suspect` says it may need it."""
    if suspect(call):
        call = m.plausibility.check(call)
    tid, sid = call.trace_id, call.span_id
    base = (call.service_name, call.operation, call.provider, call.request_model)
    base = (*base, call.response_model)
    err = (*base, call.error_type)
    # the attribution labels the token and cost families carry (by default), none unlabelled
    dims = (call.dimensions or ("",) * len(m.dimension_names)) if m.dimension_names else ()
    if call.server_side:
        st = call.server_ttft_s
        if st is not None:
            m.server_ttft.observe(base, st, (tid, sid, st, now))
        d = call.server_duration_s if call.server_duration_s is not None else call.duration_s
        m.server_duration.observe(err, d, (tid, sid, d, now))
        out = call.output_tokens
        if st is not None and not call.error_type and out is not None and out > 1 and d >= st:
            v = (d - st) / (out - 1)
            m.server_tpot.observe(base, v, (tid, sid, v, now))
    else:
        d = call.duration_s
        if m.v141:
            m.duration.observe(err, d, (tid, sid, d, now))
        if call.streaming and (v := call.ttft_s) is not None:
            if m.v141:
                m.ttft.observe(base, v, (tid, sid, v, now))
            if (v := call.time_per_token_s) is not None:
                m.time_per_token.observe(base, v, (tid, sid, v, now))
            if m.v141:
                for v in _intervals(call):
                    m.time_per_chunk.observe(base, v, (tid, sid, v, now))
    for token_type, n in (("input", call.input_tokens), ("output", call.output_tokens)):
        if n is not None:
            if m.v141:
                m.token_usage.observe((*base, token_type), n, (tid, sid, n, now))
            if n:
                m.tokens.add((*base, *dims, token_type), n, (tid, sid, n, now))
    for token_type, value in (
        ("cache_read", call.cache_read_tokens),
        ("cache_creation", call.cache_creation_tokens),
        ("reasoning", call.reasoning_tokens),
    ):
        if value:
            m.tokens.add((*base, *dims, token_type), value, (tid, sid, value, now))
    if (c := call.cost_usd) is not None:
        m.cost.add((*base, *dims), c, (tid, sid, c, now))
    if not m.development or call.server_side:
        return
    d = call.duration_s
    if call.operation == "embeddings":
        m.embeddings_duration.observe(err, d, (tid, sid, d, now))
        if (n := call.input_tokens) is not None:
            m.embeddings_input_tokens.observe(err, n, (tid, sid, n, now))
        return
    m.inference_duration.observe(err, d, (tid, sid, d, now))
    if call.streaming and (v := call.ttft_s) is not None:
        m.inference_ttft.observe(base, v, (tid, sid, v, now))
        for v in _intervals(call):
            m.inference_tpc.observe(base, v, (tid, sid, v, now))
    for kind, count in (("input_tokens", call.input_tokens), ("output_tokens", call.output_tokens)):
        n = count or 0
        m.operation_tokens[kind].observe(err, n, (tid, sid, n, now))
        m.usage[kind].add((*base, "unknown"), n, (tid, sid, n, now))
    for kind, count in (
        ("cache_read_input_tokens", call.cache_read_tokens),
        ("cache_write_input_tokens", call.cache_creation_tokens),
        ("reasoning_output_tokens", call.reasoning_tokens),
    ):
        if count is not None:
            m.usage[kind].add((*base, "unknown"), count, (tid, sid, count, now))


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


_tokens = st.none() | st.integers(0, 5000) | st.just(2**63 - 1)
_seconds = st.none() | st.floats(0, 30)
_chunks = st.none() | st.lists(st.integers(1_000_000_000, 40_000_000_000), max_size=4).map(
    lambda ts: tuple(sorted(ts))
)
_call = st.builds(
    lambda i, svc, op, model, err, server, streaming, toks, secs, cost, chunks: LLMCall(
        span=None,
        service_name=svc,
        convention="otel_genai",
        trace_id=bytes([i % 256]) * 16,
        span_id=bytes([i % 256]) * 8,
        parent_span_id=b"",
        start_ns=1_000_000_000,
        end_ns=1_000_000_000 + int((secs[0] or 0) * 1e9),
        operation=op,
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
        time_per_token_s=secs[2],
        error_type=err,
        server_side=server,
        server_ttft_s=secs[3],
        server_duration_s=secs[4],
        cost_usd=cost,
        chunk_ns=chunks,
    ),
    st.integers(0, 1000),
    st.sampled_from(["a", "b"]),
    st.sampled_from(["chat", "chat", "embeddings"]),
    st.sampled_from(["m1", "m2", "m3", "m4"]),
    st.sampled_from(["", "", "RateLimitError", "Timeout"]),
    st.booleans(),
    st.booleans(),
    st.tuples(*[_tokens] * 5),
    st.tuples(*[_seconds] * 5),
    st.none() | st.floats(0, 2) | st.just(1e7),
    _chunks,
)


_DIMS = st.sampled_from([(), ("u1", "t1"), ("u2", "t1"), ("u3", "t2"), ("__other__", "t1")])


@settings(max_examples=200, deadline=None)
@given(
    calls=st.lists(st.tuples(_call, _DIMS), max_size=40),
    max_series=st.sampled_from([2, 5, 2000]),
    semconv=st.sampled_from(["v1.41", "development", "both"]),
    labelled=st.booleans(),
)
def test_recording_equals_observing_through_the_families(
    calls: list[tuple[LLMCall, tuple[str, ...]]], max_series: int, semconv: str, labelled: bool
) -> None:
    """With attribution labels too (user and team on tokens and cost): the series cache per
    label set, emptied when it holds 4 * max_series sets, changes nothing."""
    names = ("user", "team") if labelled else ()
    by_family = {"tokens": names, "cost": names} if labelled else {}
    fast = LLMMetrics(Aggregation(), MetricsConfig(max_series, semconv, names, by_family))
    slow = LLMMetrics(Aggregation(), MetricsConfig(max_series, semconv, names, by_family))
    for n, (call, dims) in enumerate(calls):
        call.dimensions = dims if labelled else ()
        fast.record(call, 1000.0 + n)
        _reference_record(slow, call, 1000.0 + n)
    assert _state(fast) == _state(slow)


# -- what the families hold, value by value ----------------------------------------------------

_S = 1_000_000_000  # ns per second


def _call(**kw: Any) -> LLMCall:
    args: dict[str, Any] = dict(
        span=None,
        service_name="svc",
        convention="otel_genai",
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        parent_span_id=b"",
        start_ns=10 * _S,
        end_ns=int(11.5 * _S),
        operation="chat",
        provider="openai",
        request_model="gpt-4o",
        response_model="gpt-4o",
        input_tokens=100,
        output_tokens=20,
    )
    return LLMCall(**(args | kw))


def _one(fam: Any) -> Any:
    (series,) = fam.series.values()
    return series


def _observed(fam: Any) -> list[tuple[float, int]]:
    """(upper bound, count) per non-empty bucket of the family's one series."""
    s = _one(fam)
    bounds = (*fam.bounds, float("inf"))
    return [(bounds[i], n) for i, n in enumerate(s.counts) if n]


def test_the_spec_buckets() -> None:
    m = LLMMetrics(Aggregation(), MetricsConfig(semconv="both"))
    spec = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
    for fam in (m.duration, m.ttft, m.time_per_chunk, m.inference_ttft, m.inference_tpc):
        assert list(fam.bounds) == spec, fam.name
    assert list(m.server_ttft.bounds)[-3:] == [5.0, 7.5, 10.0]
    assert list(m.server_tpot.bounds) == [
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5
    ]  # fmt: skip


def test_a_slow_first_chunk_lands_in_its_bucket_not_in_inf() -> None:
    m = LLMMetrics(Aggregation())
    m.record(_call(streaming=True, ttft_s=30.0, end_ns=45 * _S), 1.0)
    assert _observed(m.ttft) == [(40.96, 1)]


def test_time_per_output_chunk_is_one_observation_per_chunk_after_the_first() -> None:
    m = LLMMetrics(Aggregation(), MetricsConfig(semconv="both"))
    chunks = (int(10.3 * _S), int(10.35 * _S), int(10.5 * _S), int(11.2 * _S), 12 * _S)
    m.record(_call(streaming=True, ttft_s=0.3, time_per_token_s=0.06, chunk_ns=chunks), 1.0)
    # the chunk after the end (12 s > 11.5 s) is not the call's
    for fam in (m.time_per_chunk, m.inference_tpc):
        assert _observed(fam) == [(0.08, 1), (0.16, 1), (1.28, 1)]
        assert _one(fam).total == pytest.approx(0.05 + 0.15 + 0.7)
    assert _observed(m.time_per_token) == [(0.075, 1)]  # the per-call average, apart
    assert m.time_per_token.name == "llm_pipeline_time_per_output_token_seconds"


def test_server_time_per_output_token_from_a_vllm_span() -> None:
    m = LLMMetrics(Aggregation())
    vllm = dict(server_side=True, server_ttft_s=0.2, server_duration_s=2.2, output_tokens=41)
    m.record(_call(**vllm), 1.0)
    assert _one(m.server_tpot).total == pytest.approx(0.05)  # (2.2 - 0.2) / 40
    m.record(_call(**vllm | {"error_type": "Timeout"}), 1.0)  # successful responses only
    m.record(_call(**vllm | {"output_tokens": 1}), 1.0)  # no token after the first
    assert _one(m.server_tpot).count == 1


def test_development_names_and_modality() -> None:
    agg = Aggregation()
    m = LLMMetrics(agg, MetricsConfig(semconv="development"))
    m.record(_call(cache_read_tokens=60, cache_creation_tokens=30, error_type="Timeout"), 1.0)
    m.record(_call(operation="embeddings", input_tokens=8, output_tokens=None), 1.0)
    names = {f.name for f in agg.families if f.series}
    assert "gen_ai_client_operation_duration_seconds" not in {f.name for f in agg.families}
    assert {
        "gen_ai_client_inference_duration_seconds",
        "gen_ai_client_inference_usage_input_tokens",
        "gen_ai_client_inference_usage_output_tokens",
        "gen_ai_client_inference_usage_cache_read_input_tokens",
        "gen_ai_client_inference_usage_cache_write_input_tokens",
        "gen_ai_client_inference_operation_input_tokens",
        "gen_ai_client_embeddings_duration_seconds",
        "gen_ai_client_embeddings_operation_input_tokens",
    } <= names
    base = ("svc", "chat", "openai", "gpt-4o", "gpt-4o")
    assert m.usage["cache_write_input_tokens"].series[(*base, "unknown")].value == 30
    assert m.usage["input_tokens"].series[(*base, "unknown")].value == 100
    assert (*base, "Timeout") in m.operation_tokens["output_tokens"].series
    assert list(m.embeddings_input_tokens.series) == [
        ("svc", "embeddings", "openai", "gpt-4o", "gpt-4o", "")
    ]


def test_implausible_values_are_kept_out_and_counted() -> None:
    m = LLMMetrics(Aggregation())
    calls = [
        _call(streaming=True, ttft_s=1e9),  # TTFT 1e9 s on a 1.5 s span
        _call(input_tokens=2**63 - 1, cost_usd=9e12),  # the cost priced from it too
        _call(end_ns=9 * _S),  # end before start
        _call(end_ns=10 * _S + 18 * 10**18),  # an 18e9 s duration
        _call(streaming=True, ttft_s=0.5, cost_usd=0.00036),  # a plausible one
    ]
    batch = m(TraceBatch(request=None, calls=calls))  # type: ignore[arg-type]
    assert batch.calls == calls  # the calls (and their spans) go on as they were
    reasons = {k[0]: s.value for k, s in m.plausibility.implausible.series.items()}
    assert reasons == {
        "ttft_after_end": 1,
        "tokens_too_large": 1,
        "cost_too_large": 1,
        "end_before_start": 1,
        "duration_too_long": 1,
    }
    assert _observed(m.ttft) == [(0.64, 1)]  # only the plausible TTFT
    # every call still counts; the durations clamped to [0, a day]
    assert _observed(m.duration) == [(0.01, 1), (2.56, 3), (float("inf"), 1)]
    assert _one(m.duration).total == pytest.approx(3 * 1.5 + 86_400)
    usage = m.token_usage.series[("svc", "chat", "openai", "gpt-4o", "gpt-4o", "input")]
    assert usage.count == 4 and usage.total == 400
    assert _one(m.cost).value == pytest.approx(0.00036)


def test_development_names_as_prometheus_scrapes_them() -> None:
    from pipeline.exporters.prometheus import AggregationCollector, render
    from tests.helpers.metrics import value

    agg = Aggregation()
    m = LLMMetrics(agg, MetricsConfig(semconv="both"))
    chunks = (int(10.3 * _S), int(10.5 * _S))
    m.record(_call(streaming=True, ttft_s=0.3, chunk_ns=chunks), 1.0)
    text = render(AggregationCollector(agg), "application/openmetrics-text; version=1.0.0")[
        0
    ].decode()
    labels = dict(zip(BASE_LABELS, ("svc", "chat", "openai", "gpt-4o", "gpt-4o"), strict=True))
    usage = "gen_ai_client_inference_usage_input_tokens_total"
    assert value(text, usage, **labels, gen_ai_token_modality="unknown") == 100
    for name in ("inference", "operation"):  # both mode: both names
        duration = f"gen_ai_client_{name}_duration_seconds_count"
        assert value(text, duration, **labels, error_type="") == 1
        tpc = f"gen_ai_client_{name}_time_per_output_chunk_seconds_bucket"
        assert value(text, tpc, **labels, le="0.16") == 0
        assert value(text, tpc, **labels, le="0.32") == 1  # the one 0.2 s interval


def test_token_and_cost_exemplars_point_at_the_heaviest_call_of_the_window() -> None:
    m = LLMMetrics(Aggregation(), MetricsConfig())
    heavy = _call(trace_id=b"\x0a" * 16, input_tokens=900, cost_usd=0.09)
    light = _call(trace_id=b"\x0b" * 16, input_tokens=10, cost_usd=0.001)
    m.record(heavy, 1000.0)
    m.record(light, 1010.0)
    cost = _one(m.cost)
    assert cost.value == 0.091 and cost.exemplar[0] == b"\x0a" * 16
    tokens = m.tokens.series[("svc", "chat", "openai", "gpt-4o", "gpt-4o", "input")]
    assert tokens.value == 910 and tokens.exemplar[:3] == (b"\x0a" * 16, b"\x02" * 8, 900)
    # the duration histogram's exemplar is the latest call's, as before
    (duration,) = m.duration.series.values()
    assert b"\x0b" * 16 in {e[0] for e in duration.exemplars if e}
    m.record(light, 1031.0)  # 31 s after the heavy one: a new window
    assert _one(m.cost).exemplar[0] == b"\x0b" * 16
