"""cost: the rate cache must give genai-prices' own answer, to the last decimal."""

from __future__ import annotations

import random

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot

from pipeline.model import LLMCall
from pipeline.processors.cost import PROVIDER_IDS, CostConfig, CostProcessor, PriceOverride

_SEMCONV_FOR = {v: k for k, v in PROVIDER_IDS.items()}


def _call(
    provider: str,
    model: str,
    inp: int,
    out: int,
    cr: int = 0,
    cw: int = 0,
    response_model: str = "",
) -> LLMCall:
    return LLMCall(
        span=None,
        service_name="s",
        convention="t",
        trace_id=b"",
        span_id=b"",
        parent_span_id=b"",
        start_ns=0,
        end_ns=0,
        provider=provider,
        request_model=model,
        response_model=response_model,
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cr,
        cache_creation_tokens=cw,
    )


def test_matches_genai_prices_across_models_and_tiers() -> None:
    rng = random.Random(7)
    cp = CostProcessor()
    checked = 0
    for prov in get_snapshot().providers:
        if prov.id not in ("openai", "anthropic", "google", "mistral", "aws", "deepseek"):
            continue
        for model in prov.models[:60]:
            for _ in range(2):
                # Inputs straddle the 200k tier boundary of long-context prices.
                inp = rng.choice([0, 7, 1000, 199_999, 200_000, 200_001, 350_000])
                cr = rng.randint(0, inp // 2)
                cw = rng.randint(0, (inp - cr) // 2)
                out = rng.randint(0, 8000)
                try:
                    want = calc_price(
                        Usage(
                            input_tokens=inp,
                            output_tokens=out,
                            cache_read_tokens=cr,
                            cache_write_tokens=cw,
                        ),
                        model_ref=model.id,
                        provider_id=prov.id,
                    ).total_price
                except Exception:
                    continue  # a model genai-prices itself cannot price for this usage
                got = cp.price(_call(_SEMCONV_FOR.get(prov.id, ""), model.id, inp, out, cr, cw))
                assert got == pytest.approx(float(want), abs=1e-12), (prov.id, model.id)
                checked += 1
    assert checked > 300


def test_response_model_is_billed_first_and_unknown_is_none() -> None:
    cp = CostProcessor()
    both = cp.price(_call("openai", "gpt-4o", 1000, 100, response_model="gpt-4o-mini"))
    mini = cp.price(_call("openai", "gpt-4o-mini", 1000, 100))
    assert both == mini
    assert cp.price(_call("openai", "ft:nobody-knows-me", 1000, 100)) is None


def test_override_wins_and_prices_cache_at_its_rate() -> None:
    o = PriceOverride(input_per_mtok=3.0, output_per_mtok=12.0, cache_read_per_mtok=0.3)
    cp = CostProcessor(CostConfig({"gpt-4o": o}))
    got = cp.price(_call("openai", "gpt-4o", 1_000_000, 500_000, cr=400_000))
    assert got == pytest.approx(600_000 * 3e-6 + 400_000 * 0.3e-6 + 500_000 * 12e-6)


def test_negative_override_is_rejected() -> None:
    with pytest.raises(ValueError, match="prices must be >= 0"):
        CostProcessor(CostConfig({"m": PriceOverride(-1.0, 1.0)}))
