"""OpenInference (Arize; `openinference-semantic-conventions`): `llm.*` names.

Verified against the installed source and real spans of `openinference-instrumentation-openai`
0.1.66 (semantic conventions 0.1.42):

- `openinference.span.kind` is `LLM` (chat/completions) or `EMBEDDING`; the span has no
  `gen_ai.*` attribute at all.
- `llm.model_name` is set from the request and then overwritten by the response's model, so
  it is read as the response model; the request model is only inside the JSON string
  `llm.invocation_parameters` (`{"model": ..., "stream": ...}`), and on a failed call that is
  the only model name there is. Newer conventions add `llm.request.model_name` /
  `llm.response.model_name`.
- `llm.system` is the model family (`openai`); `llm.provider` the hosting provider, written
  only when inferred from a known API host (`api.openai.com` -> `openai`, Azure -> `azure`).
- tokens: `llm.token_count.prompt|completion|total`, `.prompt_details.cache_read|cache_write`,
  `.completion_details.reasoning`; cost: `llm.cost.total`.
- a streamed call gets one `First Token Stream Event` span event at its first chunk.
- errors: status ERROR and an `exception` event (no `error.type`).
"""

from __future__ import annotations

import json
from typing import Any

from ._table import Convention, Mapping, to_float, to_int, to_str

# `openinference.span.kind` -> operation. Other kinds (CHAIN, AGENT, TOOL, RETRIEVER, ...) are
# not model calls: no operation, so the kind alone does not make a span an LLM call.
SPAN_KINDS: dict[str, str] = {"LLM": "chat", "EMBEDDING": "embeddings"}


def to_operation(v: Any) -> str | None:
    return SPAN_KINDS.get(to_str(v))


def invocation_model(v: Any) -> str | None:
    """The `model` inside `llm.invocation_parameters` (a JSON object as a string)."""
    if not isinstance(v, str) or '"model"' not in v:
        return None
    try:
        params = json.loads(v)
    except ValueError:
        return None
    model = params.get("model") if isinstance(params, dict) else None
    return model if isinstance(model, str) and model else None


OPENINFERENCE = Convention(
    name="openinference",
    priority=60,
    mappings=(
        Mapping("openinference.span.kind", "operation", to_operation),
        Mapping("llm.provider", "provider", to_str),
        Mapping("llm.request.model_name", "request_model", to_str),
        Mapping("llm.response.model_name", "response_model", to_str),
        Mapping("embedding.model_name", "request_model", to_str),
        Mapping("llm.token_count.prompt", "input_tokens", to_int),
        Mapping("llm.token_count.completion", "output_tokens", to_int),
        Mapping("llm.token_count.total", "total_tokens", to_int),
        Mapping("llm.token_count.prompt_details.cache_read", "cache_read_tokens", to_int),
        Mapping("llm.token_count.prompt_details.cache_write", "cache_creation_tokens", to_int),
        Mapping("llm.token_count.completion_details.reasoning", "reasoning_tokens", to_int),
        Mapping("llm.cost.total", "cost_usd", to_float),
    ),
    chunk_events=("First Token Stream Event",),
)

# Read only when the names above are absent: the model family stands in for the provider,
# `llm.model_name` for the response model, the invocation parameters for the request model.
OPENINFERENCE_FALLBACK = Convention(
    name="openinference",
    priority=55,
    mappings=(
        Mapping("llm.system", "provider", to_str),
        Mapping("llm.model_name", "response_model", to_str),
        Mapping("llm.invocation_parameters", "request_model", invocation_model),
    ),
)
