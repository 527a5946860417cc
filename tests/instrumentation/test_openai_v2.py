"""opentelemetry-instrumentation-openai-v2 (the OTel contrib one), in both of its modes: default
(semconv 1.30: `gen_ai.system`) and OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental
(`gen_ai.provider.name`, spans from opentelemetry-util-genai's handler).

It records neither cached nor reasoning tokens for chat completions, and nothing that marks a
call as streamed or gives its TTFT (no attribute, no chunk events).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.instrumentation import scenarios as sc
from tests.instrumentation.conftest import Captured
from tests.instrumentation.expect import expect, keys, only

SETUPS = MODES = ["openai_v2", "openai_v2_latest"]


@pytest.fixture(params=MODES)
def run(request: pytest.FixtureRequest, captured: Callable[[str], Captured]) -> Captured:
    return captured(request.param)


def test_the_mode_is_the_one_asked_for(captured: Callable[[str], Captured]) -> None:
    default = only(captured("openai_v2")["chat"].calls)
    latest = only(captured("openai_v2_latest")["chat"].calls)
    assert "gen_ai.system" in keys(default) and "gen_ai.provider.name" not in keys(default)
    assert "gen_ai.provider.name" in keys(latest) and "gen_ai.system" not in keys(latest)


def test_chat(run: Captured) -> None:
    call = only(run["chat"].calls)
    expect(
        call,
        convention="otel_genai",
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
        server_side=False,
        counted=True,
    )


def test_stream(run: Captured) -> None:
    call = only(run["stream"].calls)
    expect(
        call,
        input_tokens=sc.PROMPT_TOKENS,
        output_tokens=sc.STREAM_OUTPUT_TOKENS,
        response_model=sc.RESPONSE_MODEL,
        streaming=False,  # nothing on the span says it was streamed
        ttft_s=None,
    )
    assert call.duration_s > sc.FIRST_CHUNK_DELAY_S


def test_tool_call(run: Captured) -> None:
    expect(
        only(run["tools"].calls), input_tokens=sc.PROMPT_TOKENS, output_tokens=sc.TOOL_OUTPUT_TOKENS
    )


def test_embeddings(run: Captured) -> None:
    expect(
        only(run["embeddings"].calls),
        operation="embeddings",
        provider="openai",
        request_model=sc.EMBED_MODEL,
        input_tokens=sc.EMBED_TOKENS,
        output_tokens=None,
    )


@pytest.mark.parametrize(
    ("scenario", "error"), [("error_429", "RateLimitError"), ("error_500", "InternalServerError")]
)
def test_errors(run: Captured, scenario: str, error: str) -> None:
    s = run[scenario]
    assert s.client_error == error
    expect(
        only(s.calls),
        error_type=error,
        request_model=f"fake-{scenario.replace('_', '-')}",
        input_tokens=None,
        counted=True,
    )


def test_app_spans_around_calls(run: Captured) -> None:
    s = run["agent"]
    assert s.batch.span_count == 4
    assert [c.counted for c in s.calls] == [True, True]
