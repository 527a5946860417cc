"""OpenTelemetry GenAI semantic conventions: current names and their deprecated predecessors.

Current names rank above deprecated ones, so a span carrying both (instrumentations in a
transition period often do) is read by its current names.
"""

from __future__ import annotations

from typing import Any

from ._table import Convention, Mapping, to_bool, to_float, to_int, to_str

# `gen_ai.operation.name` values as some libraries write them -> the semconv well-known value.
# LiteLLM (default mode) writes its call type there: `embedding`, `acompletion`, `aembedding`.
OPERATION_ALIASES: dict[str, str] = {
    "acompletion": "chat",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "atext_completion": "text_completion",
}


def to_operation(v: Any) -> str:
    s = to_str(v)
    return OPERATION_ALIASES.get(s, s)


CURRENT = Convention(
    name="otel_genai",
    priority=100,
    mappings=(
        Mapping("gen_ai.operation.name", "operation", to_operation),
        Mapping("gen_ai.provider.name", "provider", to_str),
        Mapping("gen_ai.request.model", "request_model", to_str),
        Mapping("gen_ai.response.model", "response_model", to_str),
        Mapping("gen_ai.usage.input_tokens", "input_tokens", to_int),
        Mapping("gen_ai.usage.output_tokens", "output_tokens", to_int),
        Mapping("gen_ai.usage.cache_read.input_tokens", "cache_read_tokens", to_int),
        # semantic-conventions-genai's name for what v1.41 called cache_creation
        Mapping("gen_ai.usage.cache_write.input_tokens", "cache_creation_tokens", to_int),
        Mapping("gen_ai.usage.reasoning.output_tokens", "reasoning_tokens", to_int),
        Mapping("gen_ai.response.time_to_first_chunk", "ttft_s", to_float),
        Mapping("gen_ai.request.stream", "streaming", to_bool),
        Mapping("error.type", "error_type", to_str),
    ),
    chunk_events=("gen_ai.choice.chunk",),
)

DEPRECATED = Convention(
    name="otel_genai_deprecated",
    priority=90,
    mappings=(
        Mapping("gen_ai.system", "provider", to_str),
        Mapping("gen_ai.usage.prompt_tokens", "input_tokens", to_int),
        Mapping("gen_ai.usage.completion_tokens", "output_tokens", to_int),
        # semantic-conventions v1.41's name, renamed cache_write in semantic-conventions-genai
        Mapping("gen_ai.usage.cache_creation.input_tokens", "cache_creation_tokens", to_int),
    ),
)

# The attribute each canonical field is written under by `enrich` when a span lacks it.
CURRENT_NAMES: dict[str, str] = {
    "operation": "gen_ai.operation.name",
    "provider": "gen_ai.provider.name",
    "request_model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cache_read_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_creation_tokens": "gen_ai.usage.cache_write.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
}
TTFT_ATTRIBUTE = "gen_ai.response.time_to_first_chunk"
COST_ATTRIBUTE = "gen_ai.usage.cost"  # USD; the project's own, kept in every mode
# The proposed cost attributes (semantic-conventions-genai PR #443), written with
# `metrics.semconv: development | both`: the amount, its ISO 4217 currency, and `local`
# (computed by the recorder, here the sidecar) or `provider` (received in the response).
COST_AMOUNT_ATTRIBUTE = "gen_ai.usage.cost.amount"
COST_CURRENCY_ATTRIBUTE = "gen_ai.usage.cost.currency"
COST_SOURCE_ATTRIBUTE = "gen_ai.usage.cost.source"
COST_ATTRIBUTES = (COST_AMOUNT_ATTRIBUTE, COST_CURRENCY_ATTRIBUTE, COST_SOURCE_ATTRIBUTE)

# Provider names as instrumentations write them -> `gen_ai.provider.name` well-known values.
PROVIDER_ALIASES: dict[str, str] = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "az.ai.openai": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure.ai.openai": "azure.ai.openai",
    "azure.ai.inference": "azure.ai.inference",
    "az.ai.inference": "azure.ai.inference",
    "anthropic": "anthropic",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "aws.bedrock": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "google": "gcp.gen_ai",
    "gemini": "gcp.gemini",
    "gcp.gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "gcp.vertex_ai": "gcp.vertex_ai",
    "gcp.gen_ai": "gcp.gen_ai",
    "cohere": "cohere",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "mistral_ai": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "x_ai": "x_ai",
    "x-ai": "x_ai",
    "perplexity": "perplexity",
    "watsonx": "ibm.watsonx.ai",
    "ibm.watsonx.ai": "ibm.watsonx.ai",
    "ollama": "ollama",
    "vllm": "vllm",
    "together_ai": "together_ai",
    "togetherai": "together_ai",
    "fireworks_ai": "fireworks_ai",
    "huggingface": "huggingface",
    "hugging_face": "huggingface",  # OpenLLMetry's GenAISystem.HUGGINGFACE
    "fireworks": "fireworks_ai",  # OpenLLMetry's GenAISystem.FIREWORKS
    "azure_ai": "azure.ai.inference",  # LiteLLM's provider for Azure AI Foundry
    "text-completion-openai": "openai",  # LiteLLM
    "hosted_vllm": "vllm",  # LiteLLM's provider for a self-hosted vLLM
}


def normalize_provider(name: str) -> str:
    key = name.strip().lower()
    return PROVIDER_ALIASES.get(key, key)
