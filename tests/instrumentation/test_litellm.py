"""LiteLLM's OpenTelemetry callback (litellm < 1.107: 1.107.0 on PyPI was compromised), in its
default mode and with OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental.

It writes cost (`gen_ai.cost.*`, from its own price table) but neither cached nor reasoning
tokens for OpenAI, and no TTFT (its TTFT is a metric only).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.instrumentation import scenarios as sc
from tests.instrumentation.conftest import Captured
from tests.instrumentation.expect import expect, keys, only
from tests.instrumentation.otlp import attrs

SETUPS = MODES = ["litellm", "litellm_latest"]

# gpt-4o-mini per token (LiteLLM's price table): input 0.15, cached input 0.075, output 0.60 $/M
IN, CACHED, OUT = 0.15e-6, 0.075e-6, 0.60e-6


def cost(output_tokens: int) -> float:
    fresh = sc.PROMPT_TOKENS - sc.CACHED_TOKENS
    return fresh * IN + sc.CACHED_TOKENS * CACHED + output_tokens * OUT


@pytest.fixture(params=MODES)
def run(request: pytest.FixtureRequest, captured: Callable[[str], Captured]) -> Captured:
    return captured(request.param)


def test_the_mode_is_the_one_asked_for(captured: Callable[[str], Captured]) -> None:
    default = only(captured("litellm")["chat"].calls)
    latest = only(captured("litellm_latest")["chat"].calls)
    assert default.span.name == "litellm_request" and default.span.kind == 1  # INTERNAL
    assert {"gen_ai.system", "llm.is_streaming"} <= keys(default)
    assert latest.span.name == f"chat {sc.MODEL}" and latest.span.kind == 3  # CLIENT
    assert "gen_ai.provider.name" in keys(latest) and "gen_ai.system" not in keys(latest)


def test_chat(run: Captured) -> None:
    call = only(run["chat"].calls)
    expect(
        call,
        operation="chat",
        provider="openai",
        request_model=sc.MODEL,
        response_model=sc.RESPONSE_MODEL,
        input_tokens=sc.PROMPT_TOKENS,
        output_tokens=sc.CHAT_OUTPUT_TOKENS,
        cache_read_tokens=None,
        reasoning_tokens=None,
        streaming=False,
        ttft_s=None,
        error_type="",
        counted=True,
    )
    assert call.cost_usd == pytest.approx(cost(sc.CHAT_OUTPUT_TOKENS))
    # raw_gen_ai_request (default mode) is not a second call
    assert run["chat"].batch.span_count == (2 if call.span.name == "litellm_request" else 1)


def test_stream(run: Captured) -> None:
    call = only(run["stream"].calls)
    expect(
        call,
        input_tokens=sc.PROMPT_TOKENS,
        output_tokens=sc.STREAM_OUTPUT_TOKENS,
        response_model=sc.MODEL,  # LiteLLM reports the request model for a stream
        streaming=True,  # llm.is_streaming "True" / gen_ai.request.stream
        ttft_s=None,
    )
    assert call.cost_usd == pytest.approx(cost(sc.STREAM_OUTPUT_TOKENS))


def test_embeddings(run: Captured) -> None:
    call = only(run["embeddings"].calls)
    a = attrs(call.span)
    assert a.get("gen_ai.system", a.get("gen_ai.provider.name")) == ""  # LiteLLM leaves it empty
    expect(
        call,
        provider="openai",  # so it comes from litellm.provider.model "openai/..."
        operation="embeddings",  # "embedding" in default mode
        request_model=sc.EMBED_MODEL,
        input_tokens=sc.EMBED_TOKENS,
        output_tokens=0,
    )
    assert call.cost_usd == pytest.approx(sc.EMBED_TOKENS * 0.02e-6)


@pytest.mark.parametrize(
    ("scenario", "error"), [("error_429", "RateLimitError"), ("error_500", "InternalServerError")]
)
def test_errors(run: Captured, scenario: str, error: str) -> None:
    s = run[scenario]
    assert s.client_error == error  # litellm's own exception classes, same names
    expect(
        only(s.calls),
        error_type=error,
        provider="openai",
        request_model=f"fake-{scenario.replace('_', '-')}",
        input_tokens=None,
        cost_usd=None,
        counted=True,
    )


def test_app_spans_around_calls(run: Captured) -> None:
    s = run["agent"]
    assert len(s.calls) == 2 and all(c.counted for c in s.calls)
    assert all(c.parent_span_id for c in s.calls)  # under the app's spans
