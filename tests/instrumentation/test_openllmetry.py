"""OpenLLMetry: Traceloop's opentelemetry-instrumentation-openai (semconv-ai >= 0.5 names).
Older versions: tests/processors/test_conventions_openllmetry.py (recorded fixtures).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.instrumentation import scenarios as sc
from tests.instrumentation.conftest import Captured
from tests.instrumentation.expect import expect, expect_ttft, keys, only

SETUPS = ["openllmetry"]  # see conftest.captured


@pytest.fixture
def run(captured: Callable[[str], Captured]) -> Captured:
    return captured("openllmetry")


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
        cache_read_tokens=sc.CACHED_TOKENS,
        reasoning_tokens=sc.REASONING_TOKENS,
        streaming=False,
        ttft_s=None,
        error_type="",
        counted=True,
    )
    # the names the openllmetry table reads
    assert {"gen_ai.usage.reasoning_tokens", "gen_ai.is_streaming"} <= keys(call)


def test_stream_ttft_from_chunk_events(run: Captured) -> None:
    call = only(run["stream"].calls)
    expect(
        call,
        input_tokens=sc.PROMPT_TOKENS,
        output_tokens=sc.STREAM_OUTPUT_TOKENS,
        cache_read_tokens=sc.CACHED_TOKENS,
        reasoning_tokens=None,  # not taken from a stream's usage chunk
        ttft_derived=True,
    )
    expect_ttft(call)
    assert "gen_ai.response.time_to_first_chunk" not in keys(call)  # no TTFT attribute
    chunks = [e for e in call.span.events if e.name == "gen_ai.content.completion.chunk"]
    assert len(chunks) == 8 + 2  # a word each, the finish chunk and the usage chunk
    assert call.time_per_token_s is not None and 0 < call.time_per_token_s < 0.1


def test_tool_call(run: Captured) -> None:
    expect(
        only(run["tools"].calls),
        input_tokens=sc.PROMPT_TOKENS,
        output_tokens=sc.TOOL_OUTPUT_TOKENS,
        reasoning_tokens=sc.REASONING_TOKENS,
    )


def test_embeddings(run: Captured) -> None:
    expect(
        only(run["embeddings"].calls),
        operation="embeddings",
        request_model=sc.EMBED_MODEL,
        input_tokens=sc.EMBED_TOKENS,
        output_tokens=0,  # gen_ai.usage.total_tokens - input
    )


@pytest.mark.parametrize(
    ("scenario", "error"), [("error_429", "RateLimitError"), ("error_500", "InternalServerError")]
)
def test_errors(run: Captured, scenario: str, error: str) -> None:
    s = run[scenario]
    assert s.client_error == error
    expect(only(s.calls), error_type=error, input_tokens=None, counted=True)


def test_app_spans_around_calls(run: Captured) -> None:
    s = run["agent"]
    assert s.batch.span_count == 4
    assert [c.counted for c in s.calls] == [True, True]
