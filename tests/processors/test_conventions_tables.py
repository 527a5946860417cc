"""The convention tables as data: well-formed, no key read twice, and each name read right.

Real spans of each library are checked in tests/instrumentation (live) and in
test_conventions_<library>.py (recorded fixtures); these hand-made spans cover the names and
precedences the installed versions do not exercise.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.fields import FIELDS
from pipeline.processors.conventions import CHUNK_EVENTS, CONVENTIONS, LOOKUP
from pipeline.processors.conventions.litellm import provider_prefix
from pipeline.processors.conventions.openinference import invocation_model
from pipeline.processors.conventions.openinference import to_operation as oi_operation
from pipeline.processors.conventions.openllmetry import to_operation as ol_operation
from pipeline.processors.conventions.semconv import (
    PROVIDER_ALIASES,
    normalize_provider,
    to_operation,
)
from tests.helpers.otlp_build import read_call as read


def test_every_mapping_targets_a_known_field() -> None:
    for conv in CONVENTIONS:
        for m in conv.mappings:
            assert m.field in FIELDS, (conv.name, m.key, m.field)


def test_no_attribute_key_is_mapped_by_two_tables() -> None:
    seen: dict[str, str] = {}
    for conv in CONVENTIONS:
        for m in conv.mappings:
            assert m.key not in seen, f"{m.key} in {seen.get(m.key)} and {conv.name}"
            seen[m.key] = conv.name
    assert set(seen) == set(LOOKUP)


def test_chunk_events_of_every_library_are_registered() -> None:
    assert {
        "gen_ai.content.completion.chunk",
        "llm.content.completion.chunk",
        "First Token Stream Event",
    } <= CHUNK_EVENTS


def test_provider_aliases_map_to_fixed_points() -> None:
    for target in PROVIDER_ALIASES.values():
        assert normalize_provider(target) == target
    assert normalize_provider("hosted_vllm") == "vllm"
    assert normalize_provider(" Azure ") == "azure.ai.openai"
    assert normalize_provider("somebody-new") == "somebody-new"


@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [
        (to_operation, "acompletion", "chat"),
        (to_operation, "embedding", "embeddings"),
        (to_operation, "chat", "chat"),
        (ol_operation, "completion", "text_completion"),
        (ol_operation, "embedding", "embeddings"),
        (ol_operation, "rerank", "rerank"),
        (oi_operation, "LLM", "chat"),
        (oi_operation, "EMBEDDING", "embeddings"),
        (oi_operation, "CHAIN", None),
        (oi_operation, None, None),
        (invocation_model, '{"model": "gpt-4o", "stream": true}', "gpt-4o"),
        (invocation_model, '{"temperature": 1}', None),
        (invocation_model, '{"model": 3}', None),
        (invocation_model, 'not json, with a "model" in it', None),
        (invocation_model, 7, None),
        (provider_prefix, "openai/gpt-4o-mini", "openai"),
        (provider_prefix, "gpt-4o-mini", None),
        (provider_prefix, "/x", None),
    ],
)
def test_transforms(fn: Any, value: Any, expected: Any) -> None:
    assert fn(value) == expected


def test_openllmetry_legacy_names() -> None:
    call = read(
        {
            "llm.request.type": "completion",
            "gen_ai.system": "Anthropic",
            "gen_ai.request.model": "claude-3-5-haiku",
            "gen_ai.usage.prompt_tokens": 100,
            "llm.usage.total_tokens": 130,
            "gen_ai.usage.cache_read_input_tokens": 40,
            "gen_ai.usage.cache_creation_input_tokens": 20,
            "llm.usage.reasoning_tokens": 7,
            "llm.is_streaming": True,
        }
    )
    assert call is not None
    assert (call.operation, call.provider, call.request_model) == (
        "text_completion",
        "anthropic",
        "claude-3-5-haiku",
    )
    assert (call.input_tokens, call.output_tokens) == (100, 30)  # output = total - input
    assert (call.cache_read_tokens, call.cache_creation_tokens, call.reasoning_tokens) == (
        40,
        20,
        7,
    )
    assert call.streaming is True


def test_current_semconv_names_win_over_other_tables() -> None:
    call = read(
        {
            "gen_ai.operation.name": "chat",
            "llm.request.type": "completion",
            "gen_ai.provider.name": "aws.bedrock",
            "gen_ai.system": "anthropic",
            "llm.system": "openai",
            "gen_ai.request.model": "m",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.prompt_tokens": 99,
            "llm.token_count.prompt": 98,
            "gen_ai.usage.reasoning.output_tokens": 4,
            "gen_ai.usage.reasoning_tokens": 3,
        }
    )
    assert call is not None
    assert (call.operation, call.provider, call.input_tokens, call.reasoning_tokens) == (
        "chat",
        "aws.bedrock",
        10,
        4,
    )


def test_openinference_names_and_precedence() -> None:
    call = read(
        {
            "openinference.span.kind": "LLM",
            "llm.system": "openai",
            "llm.provider": "azure",
            "llm.model_name": "gpt-4o-2024-08-06",
            "llm.invocation_parameters": '{"model": "gpt-4o", "stream": true}',
            "llm.token_count.prompt": 50,
            "llm.token_count.completion": 10,
            "llm.token_count.prompt_details.cache_read": 30,
            "llm.token_count.prompt_details.cache_write": 5,
            "llm.token_count.completion_details.reasoning": 2,
            "llm.cost.total": 0.0012,
        }
    )
    assert call is not None
    assert call.convention == "openinference"
    assert (call.provider, call.request_model, call.response_model) == (
        "azure.ai.openai",  # llm.provider (host) beats llm.system (model family)
        "gpt-4o",
        "gpt-4o-2024-08-06",
    )
    assert (call.input_tokens, call.output_tokens, call.cache_read_tokens) == (50, 10, 30)
    assert (call.cache_creation_tokens, call.reasoning_tokens) == (5, 2)
    assert call.cost_usd == pytest.approx(0.0012)


def test_openinference_newer_model_names() -> None:
    call = read(
        {
            "openinference.span.kind": "LLM",
            "llm.request.model_name": "claude-sonnet-4",
            "llm.response.model_name": "claude-sonnet-4-20250514",
            "llm.model_name": "ignored-when-the-above-exist",
            "llm.invocation_parameters": '{"model": "ignored-too"}',
        }
    )
    assert call is not None
    assert (call.request_model, call.response_model) == (
        "claude-sonnet-4",
        "claude-sonnet-4-20250514",
    )


def test_openinference_non_llm_kinds_are_not_calls() -> None:
    attrs = {"openinference.span.kind": "CHAIN", "llm.model_name": "gpt-4o"}
    assert read(attrs) is None
    embedding = read({"openinference.span.kind": "EMBEDDING", "embedding.model_name": "e3"})
    assert embedding is not None and embedding.operation == "embeddings"


def test_litellm_names() -> None:
    call = read(
        {
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.system": "",  # LiteLLM leaves it empty for embeddings
            "litellm.provider.model": "openai/text-embedding-3-small",
            "gen_ai.operation.name": "embedding",
            "llm.is_streaming": "False",
            "gen_ai.usage.input_tokens": 3,
            "gen_ai.cost.total_cost": 6e-08,
            "gen_ai.cost.input_cost": 6e-08,
        }
    )
    assert call is not None
    assert (call.provider, call.operation, call.streaming) == ("openai", "embeddings", False)
    assert call.cost_usd == pytest.approx(6e-08)
    streamed = read({"gen_ai.request.model": "m", "llm.is_streaming": "True", "gen_ai.system": "x"})
    assert streamed is not None and streamed.streaming is True


def test_litellm_provider_fallbacks_lose_to_an_explicit_provider() -> None:
    call = read(
        {
            "gen_ai.request.model": "m",
            "gen_ai.system": "azure",
            "litellm.provider.model": "openai/m",
            "error.llm_provider": "openai",
        }
    )
    assert call is not None and call.provider == "azure.ai.openai"


def test_semconv_stream_flag_and_cache_write_variant() -> None:
    call = read(
        {
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "m",
            "gen_ai.request.stream": True,
            "gen_ai.usage.cache_write.input_tokens": 11,
        }
    )
    assert call is not None and call.streaming is True and call.cache_creation_tokens == 11


def test_cache_write_is_read_before_its_v141_name_cache_creation() -> None:
    attrs = {"gen_ai.provider.name": "anthropic", "gen_ai.request.model": "m"}
    old = read({**attrs, "gen_ai.usage.cache_creation.input_tokens": 7})
    assert old is not None and old.cache_creation_tokens == 7
    both = read(
        {
            **attrs,
            "gen_ai.usage.cache_creation.input_tokens": 7,
            "gen_ai.usage.cache_write.input_tokens": 9,
        }
    )
    assert both is not None and both.cache_creation_tokens == 9


def test_vllm_server_span_without_a_model_is_a_server_call() -> None:
    call = read(
        {
            "gen_ai.latency.time_to_first_token": 0.2,
            "gen_ai.latency.e2e": 0.9,
            "gen_ai.latency.time_in_queue": 0.01,
            "gen_ai.usage.prompt_tokens": 12,
            "gen_ai.usage.completion_tokens": 9,
        },
        kind=2,
    )
    assert call is not None
    assert (call.provider, call.request_model, call.server_side) == ("vllm", "", True)
    assert (call.server_ttft_s, call.server_duration_s) == (0.2, 0.9)
    assert (call.input_tokens, call.output_tokens) == (12, 9)
    assert call.ttft_s is None  # a server latency is not the client's TTFT


def test_negative_server_latencies_are_dropped_not_the_call() -> None:
    # found by tests/receivers/test_fuzz_decode.py: a negative TTFT made the histogram's
    # _sum negative, which Prometheus' OpenMetrics parser refuses for the whole scrape
    call = read(
        {
            "gen_ai.latency.time_to_first_token": -0.2,
            "gen_ai.latency.e2e": 0.9,
            "gen_ai.usage.prompt_tokens": 12,
        },
        kind=2,
    )
    assert call is not None and call.server_side is True
    assert (call.server_ttft_s, call.server_duration_s) == (None, 0.9)


def test_vllm_provider_stand_in_loses_to_an_explicit_one() -> None:
    attrs = {"gen_ai.latency.time_in_queue": 0.01, "gen_ai.latency.e2e": 0.9}
    call = read({**attrs, "gen_ai.system": "sglang"})
    assert call is not None and call.provider == "sglang"


def test_a_span_without_model_or_server_latency_is_not_a_call() -> None:
    assert read({"gen_ai.usage.prompt_tokens": 5, "gen_ai.system": "openai"}) is None
