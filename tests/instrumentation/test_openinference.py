"""OpenInference: Arize's openinference-instrumentation-openai (`llm.*` names only)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.instrumentation import scenarios as sc
from tests.instrumentation.conftest import Captured
from tests.instrumentation.expect import expect, expect_ttft, keys, only

SETUPS = ["openinference"]  # see conftest.captured


@pytest.fixture
def run(captured: Callable[[str], Captured]) -> Captured:
    return captured("openinference")


def test_chat(run: Captured) -> None:
    call = only(run["chat"].calls)
    expect(
        call,
        convention="openinference",
        operation="chat",
        provider="openai",  # llm.system: the fake's host names no provider (llm.provider)
        request_model=sc.MODEL,  # from llm.invocation_parameters
        response_model=sc.RESPONSE_MODEL,  # llm.model_name
        input_tokens=sc.PROMPT_TOKENS,
        output_tokens=sc.CHAT_OUTPUT_TOKENS,
        cache_read_tokens=sc.CACHED_TOKENS,
        reasoning_tokens=sc.REASONING_TOKENS,
        streaming=False,
        ttft_s=None,
        error_type="",
        counted=True,
    )
    assert not any(k.startswith("gen_ai.") for k in keys(call))
    assert "llm.provider" not in keys(call)


def test_stream_ttft_from_first_token_event(run: Captured) -> None:
    call = only(run["stream"].calls)
    expect(
        call,
        input_tokens=sc.PROMPT_TOKENS,
        output_tokens=sc.STREAM_OUTPUT_TOKENS,
        cache_read_tokens=sc.CACHED_TOKENS,
        reasoning_tokens=sc.REASONING_TOKENS,
        ttft_derived=True,
    )
    expect_ttft(call)
    assert [e.name for e in call.span.events] == ["First Token Stream Event"]


def test_tool_call(run: Captured) -> None:
    expect(
        only(run["tools"].calls),
        input_tokens=sc.PROMPT_TOKENS,
        output_tokens=sc.TOOL_OUTPUT_TOKENS,
    )


def test_embeddings(run: Captured) -> None:
    expect(
        only(run["embeddings"].calls),
        operation="embeddings",  # openinference.span.kind EMBEDDING
        request_model=sc.EMBED_MODEL,  # embedding.model_name
        input_tokens=sc.EMBED_TOKENS,
        output_tokens=0,
    )


@pytest.mark.parametrize(
    ("scenario", "error"), [("error_429", "RateLimitError"), ("error_500", "InternalServerError")]
)
def test_errors_from_the_exception_event(run: Captured, scenario: str, error: str) -> None:
    s = run[scenario]
    assert s.client_error == error
    call = only(s.calls)
    assert "error.type" not in keys(call)
    expect(call, error_type=error, request_model=f"fake-{scenario.replace('_', '-')}")


def test_app_spans_around_calls(run: Captured) -> None:
    s = run["agent"]
    assert s.batch.span_count == 4
    assert [c.counted for c in s.calls] == [True, True]
