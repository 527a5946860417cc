"""Older OpenLLMetry versions, from fixtures recorded with the real libraries against the fake
LLM server (`python -m tests.instrumentation.runner --record openllmetry LABEL OUT` in a venv
holding that version). The current version runs live in tests/instrumentation.
"""

from __future__ import annotations

import pytest

from pipeline.model import LLMCall
from tests.instrumentation import scenarios as sc
from tests.instrumentation.otlp import by_scenario, load_fixture, run_chain

FIXTURES = {
    "0.53.0": "openllmetry-0.53.0.json",  # semconv-ai 0.4.16: llm.* names, input/output tokens
    "0.38.12": "openllmetry-0.38.12.json",  # semconv-ai 0.4.3: prompt/completion tokens
}


def calls(version: str) -> dict[str, list[LLMCall]]:
    return {
        name: run_chain(req).calls
        for name, req in by_scenario(load_fixture(FIXTURES[version])).items()
    }


@pytest.mark.parametrize("version", list(FIXTURES))
def test_chat(version: str) -> None:
    (call,) = calls(version)["chat"]
    assert (call.operation, call.provider) == ("chat", "openai")
    assert (call.request_model, call.response_model) == (sc.MODEL, sc.RESPONSE_MODEL)
    assert (call.input_tokens, call.output_tokens) == (sc.PROMPT_TOKENS, sc.CHAT_OUTPUT_TOKENS)
    assert (call.streaming, call.ttft_s, call.error_type, call.counted) == (False, None, "", True)
    if version == "0.53.0":
        assert (call.cache_read_tokens, call.reasoning_tokens) == (
            sc.CACHED_TOKENS,
            sc.REASONING_TOKENS,
        )
    else:  # 0.38 does not record them
        assert (call.cache_read_tokens, call.reasoning_tokens) == (None, None)


@pytest.mark.parametrize("version", list(FIXTURES))
def test_stream_ttft_from_chunk_events(version: str) -> None:
    (call,) = calls(version)["stream"]
    assert call.streaming is True
    assert call.ttft_derived is True
    assert call.ttft_s is not None
    assert sc.FIRST_CHUNK_DELAY_S < call.ttft_s < sc.FIRST_CHUNK_DELAY_S + 0.5
    if version == "0.53.0":
        assert (call.input_tokens, call.output_tokens) == (
            sc.PROMPT_TOKENS,
            sc.STREAM_OUTPUT_TOKENS,
        )
        assert call.time_per_token_s is not None and call.time_per_token_s > 0
    else:  # 0.38 ignores the usage chunk of a stream
        assert (call.input_tokens, call.output_tokens) == (None, None)


@pytest.mark.parametrize("version", list(FIXTURES))
def test_embeddings(version: str) -> None:
    (call,) = calls(version)["embeddings"]
    assert (call.operation, call.request_model) == ("embeddings", sc.EMBED_MODEL)
    assert call.input_tokens == sc.EMBED_TOKENS


@pytest.mark.parametrize("version", list(FIXTURES))
@pytest.mark.parametrize(
    ("scenario", "error"), [("error_429", "RateLimitError"), ("error_500", "InternalServerError")]
)
def test_errors(version: str, scenario: str, error: str) -> None:
    (call,) = calls(version)[scenario]
    assert call.failed and call.counted
    assert call.request_model == f"fake-{scenario.replace('_', '-')}"
    # 0.38 sets only the span status: no error.type, no exception event.
    assert call.error_type == (error if version == "0.53.0" else "_OTHER")


@pytest.mark.parametrize("version", list(FIXTURES))
def test_agent_spans_are_not_calls_and_both_calls_count(version: str) -> None:
    got = calls(version)["agent"]
    assert len(got) == 2 and all(c.counted for c in got)
    assert sum(c.input_tokens or 0 for c in got) == 2 * sc.PROMPT_TOKENS


@pytest.mark.parametrize("version", list(FIXTURES))
def test_stream_chunk_times_one_per_chunk_event(version: str) -> None:
    from pipeline.model import TraceBatch
    from pipeline.processors.ttft import ttft

    (call,) = calls(version)["stream"]
    events = [e.time_unix_nano for e in call.span.events if "chunk" in e.name]
    assert call.chunk_ns == tuple(sorted(events)) and len(events) > 1
    assert call.ttft_s == pytest.approx((events[0] - call.start_ns) / 1e9)
    # an int there (a native reader built before chunk_ns handed the first chunk's time):
    # the events are read again
    read = call.chunk_ns
    call.chunk_ns = events[0]  # type: ignore[assignment]
    ttft(TraceBatch(request=None, calls=[call]))  # type: ignore[arg-type]
    assert call.chunk_ns == read
