"""Anthropic's usage: whether a span's input tokens include the cached ones.

Anthropic's API reports `input_tokens` *without* the tokens read from or written to the prompt
cache (`cache_read_input_tokens`, `cache_creation_input_tokens`), unlike OpenAI's
`prompt_tokens`, which include `cached_tokens`. The GenAI semantic conventions ask for the
OpenAI shape: `gen_ai.usage.input_tokens` SHOULD include cached tokens, and for Anthropic
`input_tokens + cache_read_input_tokens + cache_creation_input_tokens` (semantic-conventions
v1.41.1 `docs/gen-ai/anthropic.md`). genai-prices wants the same shape (a cache read more
than the input is an error there). What each instrumentation writes, from its source:

- OpenLLMetry `opentelemetry-instrumentation-anthropic` (Python) since 0.33.4 (2024-10, the
  first to report cache tokens): the sum, under `gen_ai.usage.input_tokens` (earlier
  `gen_ai.usage.prompt_tokens`), with `gen_ai.usage.cache_read.input_tokens` /
  `cache_creation.input_tokens` (earlier `gen_ai.usage.cache_read_input_tokens` /
  `cache_creation_input_tokens`).
- OpenLLMetry JS `@traceloop/instrumentation-anthropic` 0.23.0 to 0.27.0: Anthropic's
  `input_tokens` as it is, with the cache attributes (fixed after 0.27.0, openllmetry-js
  #1028); before 0.23 no cache attributes at all.
- OpenInference `openinference-instrumentation-anthropic` since 0.1.14 (2025-03) and its
  bedrock and litellm instrumentations: the sum, under `llm.token_count.prompt`, with
  `llm.token_count.prompt_details.cache_read|cache_write` (written since 0.1.15).
- LiteLLM's OTel callback: `gen_ai.usage.input_tokens` is LiteLLM's `prompt_tokens`, which its
  Anthropic adapter makes the sum; `gen_ai.usage.cache_read|cache_creation.input_tokens`.
- OTel contrib's `opentelemetry-instrumentation-anthropic` (never released from contrib): the sum.

So the sum is the rule, and `input_tokens` is made the sum (the cached tokens added) when the
writer is known to write Anthropic's own count, or when the cached tokens exceed the input
(impossible in the summed shape, whoever wrote it: a sender copying Anthropic's usage).
"""

from __future__ import annotations

# Instrumentation scope -> the versions (inclusive range) that write Anthropic's own count.
_EXCLUDING_SCOPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "@traceloop/instrumentation-anthropic": ((0, 23, 0), (0, 27, 0)),
}


def _version(text: str) -> tuple[int, ...] | None:
    parts = []
    for part in text.strip().lstrip("v").split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            return None
        parts.append(int(digits))
        if len(digits) != len(part):
            break  # "0-rc1", "27+build": the numeric head is the release
    return tuple(parts) if parts else None


def excludes_cache(scope: str, version: str) -> bool:
    """Whether spans of this instrumentation scope count input tokens without cached ones."""
    bounds = _EXCLUDING_SCOPES.get(scope)
    if bounds is None:
        return False
    v = _version(version)
    return v is not None and bounds[0] <= v <= bounds[1]


def input_with_cache(
    input_tokens: int, cache_read: int, cache_creation: int, excluding: bool
) -> int:
    """The input tokens in the summed shape (cached tokens included)."""
    cached = cache_read + cache_creation
    if excluding or cached > input_tokens:
        return input_tokens + cached
    return input_tokens
