"""LiteLLM's OpenTelemetry callback (`litellm.callbacks = ["otel"]`, `integrations/opentelemetry.py`).

Verified against the installed source and real spans of litellm 1.106.2 (1.107.0 on PyPI was
compromised; stay below it). One `litellm_request` span per call (named `{operation} {model}`
and of kind CLIENT with `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`), created
after the call returned with the call's start and end times, plus a non-LLM child
`raw_gen_ai_request` (`llm.openai.*`, not in latest mode). It writes mostly OTel names, read by
`semconv.py` and `openllmetry.py`:

- `gen_ai.system` (latest mode: `gen_ai.provider.name`), empty for embeddings;
  `gen_ai.request.model` without the `openai/` prefix, `gen_ai.response.model` (the request
  model again when streamed), `gen_ai.usage.input_tokens|output_tokens|total_tokens`, no cache
  or reasoning tokens for OpenAI (latest mode adds `gen_ai.usage.cache_*.input_tokens` only
  for Anthropic-style usage).
- `gen_ai.operation.name`: `chat`, else the call type (`embedding`, `acompletion`: aliased in
  `semconv.py`); `llm.request.type`: the call type.
- `llm.is_streaming` as the string "True"/"False" (latest mode: `gen_ai.request.stream`);
  `gen_ai.response.finish_reasons` as a JSON string.
- `gen_ai.cost.*` from its price table: `total_cost`, `input_cost`, `output_cost`,
  `cache_read_cost`, `reasoning_cost`, ... (absent for models it cannot price).
- on failure: status ERROR, `error.type` (LiteLLM's exception class: `RateLimitError`),
  `error.code`, `error.llm_provider`, and an `exception` event.
- `litellm.provider.model`: the model as routed (`openai/gpt-4o-mini`).
- no TTFT span attribute or event: TTFT is only its `gen_ai.client.time_to_first_token` metric.
"""

from __future__ import annotations

from typing import Any

from ._table import Convention, Mapping, to_float, to_str

LITELLM = Convention(
    name="litellm",
    priority=70,
    mappings=(Mapping("gen_ai.cost.total_cost", "cost_usd", to_float),),
)


def provider_prefix(v: Any) -> str | None:
    """`openai/gpt-4o-mini` -> `openai`; None when the model has no provider prefix."""
    s = to_str(v)
    head, sep, _ = s.partition("/")
    return head if sep and head else None


# Read only when no other name gives the provider (LiteLLM leaves `gen_ai.system` empty for
# embeddings).
LITELLM_FALLBACK = Convention(
    name="litellm",
    priority=20,
    mappings=(
        Mapping("error.llm_provider", "provider", to_str),
        Mapping("litellm.provider.model", "provider", provider_prefix),
    ),
)
