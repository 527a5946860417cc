"""vLLM's server spans (`--otlp-traces-endpoint`): one `llm_request` span of kind SERVER per
request, started at the request's arrival, child of the caller's span when the request carried
a `traceparent` header.

vLLM needs torch and a GPU, so it is not installed here; the names are from its source
(vllm-project/vllm `vllm/tracing.py` `SpanAttributes`, and `do_tracing` in
`vllm/v1/engine/output_processor.py`; v0: `LLMEngine.create_trace_span`):

- `gen_ai.latency.time_to_first_token` and `gen_ai.latency.e2e` (seconds, server-side:
  arrival -> first token / finish) -> `server_ttft_s` / `server_duration_s`;
  `gen_ai.latency.time_in_queue`, `.time_in_model_prefill|decode|inference` (not read).
- `gen_ai.usage.prompt_tokens` / `gen_ai.usage.completion_tokens` (deprecated OTel names,
  read by `semconv.py`), `gen_ai.request.id|temperature|top_p|max_tokens|n`.
- v0's `LLMEngine.create_trace_span` wrote `gen_ai.response.model`; the v1 engine's
  `do_tracing` writes no model name (normalize accepts a server span without one).

No provider attribute either: `gen_ai.latency.time_in_queue`, which vLLM writes on every
request span, stands for provider `vllm` at the lowest priority, so an explicit `gen_ai.system`
or `gen_ai.provider.name` wins.
"""

from __future__ import annotations

from typing import Any

from ._table import Convention, Mapping, to_float


def vllm_provider(_: Any) -> str:
    return "vllm"


VLLM = Convention(
    name="vllm",
    priority=75,
    mappings=(
        Mapping("gen_ai.latency.time_to_first_token", "server_ttft_s", to_float),
        Mapping("gen_ai.latency.e2e", "server_duration_s", to_float),
    ),
)

VLLM_FALLBACK = Convention(
    name="vllm",
    priority=5,
    mappings=(Mapping("gen_ai.latency.time_in_queue", "provider", vllm_provider),),
)
