"""Input tokens include the cached ones whoever wrote the span (conventions/anthropic.py): each
convention's names for an OpenAI and an Anthropic call with cache reads and writes, read by
normalize and priced by cost, give the token counts and genai-prices' own price of the usage in
the summed shape."""

from __future__ import annotations

from typing import Any

import pytest
from genai_prices import Usage, calc_price

from pipeline.model import LLMCall, TraceBatch
from pipeline.processors.conventions.anthropic import excludes_cache
from pipeline.processors.cost import CostProcessor
from pipeline.processors.normalize import normalize
from tests.instrumentation.otlp import Span, build_request

# One Anthropic call as its API reports it: input_tokens excludes the cache.
RAW_INPUT, CACHE_READ, CACHE_WRITE, OUTPUT = 5, 2000, 300, 40
SUMMED = RAW_INPUT + CACHE_READ + CACHE_WRITE  # 2305
# One OpenAI call: prompt_tokens include cached_tokens; no cache writes.
OAI_PROMPT, OAI_CACHED, OAI_OUTPUT = 1200, 1024, 50

CLAUDE = "claude-3-5-sonnet-20241022"
GPT = "gpt-4o-2024-08-06"


def semconv(provider: str, model: str, inp: int, out: int, cr: int, cw: int) -> dict[str, Any]:
    a: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
        "gen_ai.usage.cache_read.input_tokens": cr,
    }
    if cw:
        a["gen_ai.usage.cache_creation.input_tokens"] = cw
    return a


def openllmetry_old(
    provider: str, model: str, inp: int, out: int, cr: int, cw: int
) -> dict[str, Any]:
    # OpenLLMetry (Python) 0.33-0.4x: deprecated OTel names plus its own cache names.
    a: dict[str, Any] = {
        "gen_ai.system": provider,
        "llm.request.type": "chat",
        "gen_ai.request.model": model,
        "gen_ai.usage.prompt_tokens": inp,
        "gen_ai.usage.completion_tokens": out,
        "llm.usage.total_tokens": inp + out,
        "gen_ai.usage.cache_read_input_tokens": cr,
    }
    if cw:
        a["gen_ai.usage.cache_creation_input_tokens"] = cw
    return a


def openinference(
    provider: str, model: str, inp: int, out: int, cr: int, cw: int
) -> dict[str, Any]:
    a: dict[str, Any] = {
        "openinference.span.kind": "LLM",
        "llm.provider": provider,
        "llm.model_name": model,
        "llm.token_count.prompt": inp,
        "llm.token_count.completion": out,
        "llm.token_count.total": inp + out,
        "llm.token_count.prompt_details.cache_read": cr,
    }
    if cw:
        a["llm.token_count.prompt_details.cache_write"] = cw
    return a


def litellm(provider: str, model: str, inp: int, out: int, cr: int, cw: int) -> dict[str, Any]:
    a = semconv(provider, model, inp, out, cr, cw)
    a["gen_ai.system"] = a.pop("gen_ai.provider.name")
    a["gen_ai.usage.total_tokens"] = inp + out
    a["gen_ai.cost.total_cost"] = 123.0  # its own price: used only when genai-prices has none
    return a


# (convention, attribute writer, scope, scope version) as each library writes an Anthropic
# call: all of these sum the cached tokens into the input (see conventions/anthropic.py).
SUMMING = [
    ("otel_genai", semconv, "opentelemetry.instrumentation.anthropic", "0.62.1"),
    ("otel_genai", semconv, "@traceloop/instrumentation-anthropic", "0.27.1"),
    ("otel_genai", openllmetry_old, "opentelemetry.instrumentation.anthropic", "0.38.0"),
    ("openinference", openinference, "openinference.instrumentation.anthropic", "0.1.20"),
    ("otel_genai", litellm, "litellm", ""),
]


def read(attrs: dict[str, Any], scope: str = "s", version: str = "", raw: bool = False) -> LLMCall:
    req = build_request([Span(1, name="chat", attrs=attrs, scope=scope)])
    req.resource_spans[0].scope_spans[0].scope.version = version
    batch = TraceBatch(request=req, raw=req.SerializeToString() if raw else None)
    normalize(batch)
    CostProcessor()(batch)
    (call,) = batch.calls
    return call


def genai_prices(provider: str, model: str, inp: int, out: int, cr: int, cw: int) -> float:
    usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cr, cache_write_tokens=cw)
    return float(calc_price(usage, model_ref=model, provider_id=provider).total_price)


@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "native_or_parsed"])
@pytest.mark.parametrize(("convention", "write", "scope", "version"), SUMMING)
def test_an_anthropic_call_in_the_summed_shape(
    convention: str, write: Any, scope: str, version: str, raw: bool
) -> None:
    attrs = write("anthropic", CLAUDE, SUMMED, OUTPUT, CACHE_READ, CACHE_WRITE)
    call = read(attrs, scope, version, raw)
    assert call.convention == convention
    assert (call.input_tokens, call.cache_read_tokens, call.cache_creation_tokens) == (
        SUMMED,
        CACHE_READ,
        CACHE_WRITE,
    )
    assert call.output_tokens == OUTPUT
    want = genai_prices("anthropic", CLAUDE, SUMMED, OUTPUT, CACHE_READ, CACHE_WRITE)
    assert call.cost_usd == pytest.approx(want, rel=1e-12)
    # $3 input, $0.30 cache read, $3.75 cache write, $15 output per million
    assert want == pytest.approx((5 * 3 + 2000 * 0.3 + 300 * 3.75 + 40 * 15) / 1e6)


@pytest.mark.parametrize(("convention", "write", "scope", "version"), SUMMING)
def test_an_openai_call_is_left_as_it_is(
    convention: str, write: Any, scope: str, version: str
) -> None:
    scope = scope.replace("anthropic", "openai")
    attrs = write("openai", GPT, OAI_PROMPT, OAI_OUTPUT, OAI_CACHED, 0)
    call = read(attrs, scope, version)
    assert (call.input_tokens, call.cache_read_tokens, call.output_tokens) == (
        OAI_PROMPT,
        OAI_CACHED,
        OAI_OUTPUT,
    )
    want = genai_prices("openai", GPT, OAI_PROMPT, OAI_OUTPUT, OAI_CACHED, 0)
    assert call.cost_usd == pytest.approx(want, rel=1e-12)
    # $2.50 input, $1.25 cached input, $10 output per million
    assert want == pytest.approx((176 * 2.5 + 1024 * 1.25 + 50 * 10) / 1e6)


@pytest.mark.parametrize("raw", [False, True], ids=["parsed", "native_or_parsed"])
@pytest.mark.parametrize("version", ["0.23.0", "0.25.2", "0.27.0"])
def test_openllmetry_js_before_the_fix_writes_anthropics_own_count(raw: bool, version: str) -> None:
    # @traceloop/instrumentation-anthropic 0.23-0.27.0: input_tokens as Anthropic reports it,
    # even when the cache is smaller than the input (nothing else would tell).
    attrs = semconv("anthropic", CLAUDE, 500, OUTPUT, 100, 50)
    call = read(attrs, "@traceloop/instrumentation-anthropic", version, raw)
    assert call.input_tokens == 650
    assert call.cost_usd == pytest.approx(
        genai_prices("anthropic", CLAUDE, 650, OUTPUT, 100, 50), rel=1e-12
    )
    # the same numbers from a summing writer stay as they are
    assert read(attrs, "opentelemetry.instrumentation.anthropic", "0.62.1").input_tokens == 500


@pytest.mark.parametrize("write", [semconv, openllmetry_old, openinference, litellm])
def test_cache_reads_above_the_input_are_anthropics_own_count(write: Any) -> None:
    # A sender copying Anthropic's usage (input 5, cache read 2000): priced, never raises.
    attrs = write("anthropic", "claude-3-5-sonnet", RAW_INPUT, OUTPUT, CACHE_READ, 0)
    call = read(attrs)
    assert (call.input_tokens, call.cache_read_tokens) == (RAW_INPUT + CACHE_READ, CACHE_READ)
    want = genai_prices("anthropic", "claude-3-5-sonnet", 2005, OUTPUT, CACHE_READ, 0)
    assert call.cost_usd == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="cannot exceed"):  # the shape genai-prices refuses
        genai_prices("anthropic", "claude-3-5-sonnet", RAW_INPUT, OUTPUT, CACHE_READ, 0)


def test_one_anthropic_style_span_among_49_others_costs_nothing_else() -> None:
    spans = [
        Span(
            n,
            trace=n,
            name="chat",
            attrs=semconv("openai", GPT, OAI_PROMPT, OAI_OUTPUT, OAI_CACHED, 0),
        )
        for n in range(1, 50)
    ]
    spans.append(
        Span(50, trace=50, attrs=semconv("anthropic", "claude-3-5-sonnet", 5, 10, 2000, 0))
    )
    batch = TraceBatch(request=build_request(spans))
    normalize(batch)
    CostProcessor()(batch)
    assert len(batch.calls) == 50 and all(c.cost_usd is not None for c in batch.calls)
    assert batch.calls[-1].input_tokens == 2005


@pytest.mark.parametrize(
    ("scope", "version", "want"),
    [
        ("@traceloop/instrumentation-anthropic", "0.22.6", False),  # no cache attributes yet
        ("@traceloop/instrumentation-anthropic", "0.23.0", True),
        ("@traceloop/instrumentation-anthropic", "v0.27.0", True),
        ("@traceloop/instrumentation-anthropic", "0.27.0-rc.1", True),
        ("@traceloop/instrumentation-anthropic", "0.27.1", False),
        ("@traceloop/instrumentation-anthropic", "", False),
        ("@traceloop/instrumentation-anthropic", "dev", False),
        ("opentelemetry.instrumentation.anthropic", "0.25.0", False),
    ],
)
def test_which_scopes_write_anthropics_own_count(scope: str, version: str, want: bool) -> None:
    assert excludes_cache(scope, version) is want
