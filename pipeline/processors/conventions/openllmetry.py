"""OpenLLMetry (Traceloop's `opentelemetry-instrumentation-*`, names from
`opentelemetry-semantic-conventions-ai`): the names it writes beside the OTel GenAI ones.

Verified against the installed source and real spans of `opentelemetry-instrumentation-openai`:

- 0.62 (semconv-ai 0.5): `gen_ai.provider.name`, `gen_ai.usage.input_tokens|output_tokens`,
  `gen_ai.usage.cache_read.input_tokens` (the semconv names, read by `semconv.py`) plus
  `gen_ai.usage.total_tokens`, `gen_ai.usage.reasoning_tokens`, `gen_ai.is_streaming`, and one
  `gen_ai.content.completion.chunk` span event per streamed chunk.
- 0.53 (semconv-ai 0.4.x): `gen_ai.system`, `llm.request.type`, `llm.usage.total_tokens`,
  `gen_ai.usage.cache_read_input_tokens`, `llm.usage.reasoning_tokens`, `llm.is_streaming`,
  and `llm.content.completion.chunk` events.
- 0.38 (semconv-ai 0.4.3): `gen_ai.usage.prompt_tokens|completion_tokens` (`semconv.py`'s
  deprecated table) with `llm.usage.total_tokens`.

No version writes a TTFT span attribute: `streaming_time_to_first_token` is a histogram
(`gen_ai.server.time_to_first_token` in 0.62), so TTFT comes from the first chunk event.
"""

from __future__ import annotations

from typing import Any

from ._table import Convention, Mapping, to_bool, to_int, to_str

# `llm.request.type` (LLMRequestTypeValues) -> `gen_ai.operation.name` well-known values.
REQUEST_TYPES: dict[str, str] = {
    "chat": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
}


def to_operation(v: Any) -> str:
    s = to_str(v)
    return REQUEST_TYPES.get(s, s)


OPENLLMETRY = Convention(
    name="openllmetry",
    priority=80,
    mappings=(
        # semconv-ai >= 0.5
        Mapping("gen_ai.usage.total_tokens", "total_tokens", to_int),
        Mapping("gen_ai.usage.reasoning_tokens", "reasoning_tokens", to_int),
        Mapping("gen_ai.is_streaming", "streaming", to_bool),
        # semconv-ai < 0.5
        Mapping("llm.request.type", "operation", to_operation),
        Mapping("llm.usage.total_tokens", "total_tokens", to_int),
        Mapping("llm.usage.reasoning_tokens", "reasoning_tokens", to_int),
        Mapping("llm.is_streaming", "streaming", to_bool),  # LiteLLM writes it too, as "True"
        Mapping("gen_ai.usage.cache_read_input_tokens", "cache_read_tokens", to_int),
        Mapping("gen_ai.usage.cache_creation_input_tokens", "cache_creation_tokens", to_int),
    ),
    chunk_events=("gen_ai.content.completion.chunk", "llm.content.completion.chunk"),
)
