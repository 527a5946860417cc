"""Prompt-cache savings: (input price - cache-read price) x cache-read tokens, per call and as
llm_pipeline_cache_savings_usd_total. Expected values are genai-prices' own: the price of the
same usage with the cache reads billed as plain input, minus the price as billed."""

from __future__ import annotations

from genai_prices import Usage
from genai_prices.data_snapshot import get_snapshot

from pipeline.aggregation import Aggregation
from pipeline.exporters.prometheus import AggregationCollector, render
from pipeline.model import LLMCall, TraceBatch
from pipeline.processors.cost import PROVIDER_IDS, CostConfig, CostProcessor, PriceOverride
from pipeline.processors.metrics import LLMMetrics
from tests.helpers.metrics import value


def _call(provider: str, model: str, inp: int, cr: int, service: str = "svc") -> LLMCall:
    return LLMCall(
        span=None,
        service_name=service,
        convention="t",
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        parent_span_id=b"",
        start_ns=0,
        end_ns=1_000_000,
        operation="chat",
        provider=provider,
        request_model=model,
        response_model=model,
        input_tokens=inp,
        output_tokens=100,
        cache_read_tokens=cr,
    )


def _genai_prices_saving(provider: str, model: str, inp: int, cr: int) -> float:
    _, info = get_snapshot().find_provider_model(model, None, PROVIDER_IDS[provider], None)
    mp = info.get_prices(None)
    uncached = mp.calc_price(Usage(input_tokens=inp, output_tokens=100))["total_price"]
    cached = mp.calc_price(Usage(input_tokens=inp, output_tokens=100, cache_read_tokens=cr))[
        "total_price"
    ]
    return float(uncached - cached)


def test_savings_equal_genai_prices_difference() -> None:
    proc = CostProcessor()
    cases = [
        ("anthropic", "claude-3-5-sonnet-20241022", 12_000, 9_000),
        ("openai", "gpt-4o", 5_000, 2_048),
        ("openai", "gpt-4o-mini", 1_000_000, 640_000),
    ]
    for provider, model, inp, cr in cases:
        call = _call(provider, model, inp, cr)
        proc(TraceBatch(request=None, calls=[call]))  # type: ignore[arg-type]
        want = _genai_prices_saving(provider, model, inp, cr)
        assert want > 0, model
        assert call.cache_savings_usd is not None
        assert abs(call.cache_savings_usd - want) <= 1e-12 + want * 1e-9, (model, want)
    none = _call("openai", "gpt-4o", 5_000, 0)
    proc(TraceBatch(request=None, calls=[none]))  # type: ignore[arg-type]
    assert none.cache_savings_usd is None


def test_override_savings_and_metric() -> None:
    cfg = CostConfig(
        {
            "house-model": PriceOverride(4.0, 8.0, cache_read_per_mtok=0.5),
            "no-cache-price": PriceOverride(2.0, 8.0),
        }
    )
    proc = CostProcessor(cfg)
    agg = Aggregation()
    metrics = LLMMetrics(agg)
    calls = [
        _call("custom", "house-model", 10_000, 4_000),
        _call("custom", "house-model", 20_000, 6_000),
        _call("custom", "house-model", 20_000, 6_000, service="other"),
        _call("custom", "no-cache-price", 20_000, 6_000),
    ]
    batch = TraceBatch(request=None, calls=calls)  # type: ignore[arg-type]
    metrics(proc(batch))
    rate = (4.0 - 0.5) / 1e6
    assert [c.cache_savings_usd for c in calls] == [
        4_000 * rate,
        6_000 * rate,
        6_000 * rate,
        0.0,  # cache reads billed at the input price: nothing saved
    ]
    text = render(AggregationCollector(agg), "application/openmetrics-text; version=1.0.0")[
        0
    ].decode()
    name = "llm_pipeline_cache_savings_usd_total"
    labels = {"gen_ai_provider_name": "custom", "gen_ai_request_model": "house-model"}
    assert abs(value(text, name, service_name="svc", **labels) - 10_000 * rate) < 1e-12
    assert abs(value(text, name, service_name="other", **labels) - 6_000 * rate) < 1e-12
