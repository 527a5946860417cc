"""The demo's models (prices, token ranges, errors as the provider SDKs raise them), its three
services and their mixes, and the record of what was sent (`DemoStats`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DEFAULT_ENDPOINT = "http://127.0.0.1:4317"
SCOPE = "llm-otel-pipeline.demo"

# --------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model as an application calls it, with a latency and token-size profile."""

    key: str
    provider: str  # gen_ai.provider.name
    request_model: str
    response_model: str
    server_address: str
    operation: str = "chat"
    ttft_s: float = 0.4  # median time to first token
    tokens_per_s: float = 80.0  # output speed
    input_tokens: tuple[int, int] = (200, 4000)  # log-uniform range (uncached part)
    output_tokens: tuple[int, int] = (20, 800)
    cached_prefix: tuple[int, int] = (0, 0)  # prompt-cache prefix size range; (0, 0): no cache
    cache_writes: bool = False  # the provider reports cache_creation tokens (Anthropic)
    reasoning: bool = False  # output includes reasoning tokens
    id_prefix: str = "chatcmpl-"
    finish_stop: str = "stop"
    finish_length: str = "length"
    priced: bool = True  # genai-prices knows it; False feeds llm_pipeline_unpriced_spans_total


MODELS: dict[str, ModelSpec] = {
    m.key: m
    for m in (
        ModelSpec(
            "gpt-4o",
            "openai",
            "gpt-4o",
            "gpt-4o-2024-08-06",
            "api.openai.com",
            ttft_s=0.45,
            tokens_per_s=85.0,
            cached_prefix=(1024, 6144),
        ),
        ModelSpec(
            "gpt-4o-mini",
            "openai",
            "gpt-4o-mini",
            "gpt-4o-mini-2024-07-18",
            "api.openai.com",
            ttft_s=0.3,
            tokens_per_s=120.0,
            cached_prefix=(1024, 4096),
        ),
        ModelSpec(
            "o3-mini",
            "openai",
            "o3-mini",
            "o3-mini-2025-01-31",
            "api.openai.com",
            ttft_s=0.6,
            tokens_per_s=150.0,
            output_tokens=(300, 6000),
            reasoning=True,
        ),
        ModelSpec(
            "gpt-3.5-turbo-instruct",
            "openai",
            "gpt-3.5-turbo-instruct",
            "gpt-3.5-turbo-instruct",
            "api.openai.com",
            operation="text_completion",
            ttft_s=0.25,
            tokens_per_s=100.0,
            input_tokens=(20, 600),
            output_tokens=(10, 300),
            id_prefix="cmpl-",
        ),
        ModelSpec(
            "text-embedding-3-small",
            "openai",
            "text-embedding-3-small",
            "text-embedding-3-small",
            "api.openai.com",
            operation="embeddings",
            ttft_s=0.08,
            input_tokens=(8, 400),
            output_tokens=(0, 0),
            id_prefix="",
        ),
        ModelSpec(
            "claude-sonnet-4-5",
            "anthropic",
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "api.anthropic.com",
            ttft_s=0.7,
            tokens_per_s=60.0,
            cached_prefix=(2048, 12000),
            cache_writes=True,
            id_prefix="msg_01",
            finish_stop="end_turn",
            finish_length="max_tokens",
        ),
        ModelSpec(
            "claude-3-5-haiku",
            "anthropic",
            "claude-3-5-haiku-latest",
            "claude-3-5-haiku-20241022",
            "api.anthropic.com",
            ttft_s=0.4,
            tokens_per_s=100.0,
            cached_prefix=(2048, 6000),
            cache_writes=True,
            output_tokens=(20, 500),
            id_prefix="msg_01",
            finish_stop="end_turn",
            finish_length="max_tokens",
        ),
        ModelSpec(
            "nova-lite",
            "aws.bedrock",
            "amazon.nova-lite-v1:0",
            "amazon.nova-lite-v1:0",
            "bedrock-runtime.us-east-1.amazonaws.com",
            ttft_s=0.35,
            tokens_per_s=110.0,
            id_prefix="",
            finish_stop="end_turn",
            finish_length="max_tokens",
        ),
        ModelSpec(
            "gemini-2.0-flash",
            "gcp.gemini",
            "gemini-2.0-flash",
            "gemini-2.0-flash-001",
            "generativelanguage.googleapis.com",
            ttft_s=0.3,
            tokens_per_s=150.0,
            id_prefix="",
            finish_stop="STOP",
            finish_length="MAX_TOKENS",
        ),
        ModelSpec(
            "ft:acme-support-v2",
            "openai",
            "ft:acme-support-v2",
            "ft:acme-support-v2",
            "api.openai.com",
            ttft_s=0.35,
            tokens_per_s=110.0,
            output_tokens=(30, 400),
            priced=False,
        ),
    )
}

# (exception.type, HTTP status or None, message) per provider and error kind.
ERRORS: dict[str, dict[str, tuple[str, int | None, str]]] = {
    "openai": {
        "rate_limit": (
            "openai.RateLimitError",
            429,
            "Error code: 429 - Rate limit reached for requests per min (RPM). "
            "Please try again in 1.2s.",
        ),
        "timeout": ("openai.APITimeoutError", None, "Request timed out."),
        "server": (
            "openai.InternalServerError",
            500,
            "Error code: 500 - The server had an error while processing your request.",
        ),
    },
    "anthropic": {
        "rate_limit": (
            "anthropic.RateLimitError",
            429,
            "Error code: 429 - rate_limit_error: Number of request tokens has exceeded your "
            "per-minute rate limit",
        ),
        "timeout": ("anthropic.APITimeoutError", None, "Request timed out or interrupted."),
        "server": ("anthropic.InternalServerError", 529, "Error code: 529 - Overloaded"),
    },
    "aws.bedrock": {
        "rate_limit": (
            "botocore.errorfactory.ThrottlingException",
            429,
            "An error occurred (ThrottlingException) when calling the Converse operation: "
            "Too many requests, please wait before trying again.",
        ),
        "timeout": (
            "botocore.exceptions.ReadTimeoutError",
            None,
            'Read timeout on endpoint URL: "https://bedrock-runtime.us-east-1.amazonaws.com"',
        ),
        "server": (
            "botocore.errorfactory.InternalServerException",
            500,
            "An error occurred (InternalServerException) when calling the Converse operation",
        ),
    },
    "gcp.gemini": {
        "rate_limit": (
            "google.genai.errors.ClientError",
            429,
            "429 RESOURCE_EXHAUSTED. Resource has been exhausted (e.g. check quota).",
        ),
        "timeout": ("httpx.ReadTimeout", None, "The read operation timed out"),
        "server": (
            "google.genai.errors.ServerError",
            503,
            "503 UNAVAILABLE. The model is overloaded. Please try again later.",
        ),
    },
}
ERROR_KINDS: tuple[tuple[str, float], ...] = (
    ("rate_limit", 0.5),
    ("server", 0.3),
    ("timeout", 0.2),
)
CLIENT_TIMEOUT_S = 30.0
ERROR_TYPE_ATTR_SHARE = 0.35  # failed spans that also carry `error.type` (the HTTP status code)
LEGACY_SHARE = 0.3  # OpenAI chat calls written in the deprecated names
STREAM_SHARE = 0.4  # successful chat calls that stream
TTFT_ATTR_SHARE = 0.5  # streamed calls that report TTFT as an attribute (else chunk events)
PII_SHARE = 0.25  # captured user prompts that contain an e-mail address or phone number


def error_label(exception_type: str, error_type_attr: str | None) -> str:
    """The `error_type` label the sidecar derives: `error.type`, else the tidied exception."""
    if error_type_attr:
        return error_type_attr
    return exception_type.rsplit(".", 1)[-1]


# --------------------------------------------------------------------------------------------
# Services


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    """One application: its resource, its share of requests and its scenario mix."""

    name: str
    version: str
    weight: float
    route: str
    scenarios: tuple[tuple[str, float], ...]  # names from SCENARIOS
    chat_models: tuple[tuple[str, float], ...]  # MODELS keys
    fallbacks: tuple[tuple[str, str], ...] = ()  # (failing model, fallback model)
    capture_content: float = 0.0  # share of calls that record prompts and completions
    system_prompt: str = "You are a helpful assistant."


SERVICES: dict[str, ServiceProfile] = {
    p.name: p
    for p in (
        ServiceProfile(
            "chat-api",
            "1.14.2",
            0.5,
            "/v1/chat",
            scenarios=(
                ("chat", 0.83),
                ("completion", 0.03),
                ("retry", 0.05),
                ("fallback", 0.04),
                ("error", 0.05),
            ),
            chat_models=(
                ("gpt-4o-mini", 0.4),
                ("gpt-4o", 0.3),
                ("claude-sonnet-4-5", 0.2),
                ("o3-mini", 0.1),
            ),
            fallbacks=(("gpt-4o", "claude-sonnet-4-5"), ("gpt-4o-mini", "claude-3-5-haiku")),
            capture_content=0.5,
            system_prompt="You are Acme's assistant. Answer concisely.",
        ),
        ServiceProfile(
            "rag-worker",
            "0.9.0",
            0.3,
            "/v1/answer",
            scenarios=(("rag", 0.7), ("ingest", 0.2), ("retry", 0.05), ("error", 0.05)),
            chat_models=(("claude-sonnet-4-5", 0.5), ("gemini-2.0-flash", 0.3), ("nova-lite", 0.2)),
            capture_content=0.2,
            system_prompt="Answer only from the provided documents. Cite document ids.",
        ),
        ServiceProfile(
            "support-bot",
            "2.3.1",
            0.2,
            "/v1/support/messages",
            scenarios=(("agent", 0.84), ("fallback", 0.08), ("retry", 0.04), ("error", 0.04)),
            chat_models=(("ft:acme-support-v2", 0.6), ("claude-3-5-haiku", 0.4)),
            fallbacks=(
                ("ft:acme-support-v2", "claude-3-5-haiku"),
                ("claude-3-5-haiku", "gpt-4o-mini"),
            ),
            capture_content=1.0,
            system_prompt="You are Acme support. Be kind; never promise refunds.",
        ),
    )
}

# --------------------------------------------------------------------------------------------
# What was sent


@dataclass(slots=True)
class TokenCounts:
    calls: int = 0  # LLM spans, failed ones included
    input: int = 0  # includes cache_read and cache_creation (semconv)
    output: int = 0  # includes reasoning
    cache_read: int = 0
    cache_creation: int = 0
    reasoning: int = 0


@dataclass(slots=True)
class DemoStats:
    """What the demo sent. Keys are request models unless stated otherwise."""

    requests: int = 0
    spans: int = 0  # all spans: HTTP server, agent/router and LLM spans
    llm_spans: int = 0
    log_records: int = 0
    logs_by_severity: Counter[str] = field(default_factory=Counter)
    requests_by_service: Counter[str] = field(default_factory=Counter)
    scenarios: Counter[str] = field(default_factory=Counter)
    tokens: dict[str, TokenCounts] = field(default_factory=dict)
    # (service, operation, provider, request model) -> tokens: the sidecar's label set.
    tokens_by_series: dict[tuple[str, str, str, str], TokenCounts] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)  # error_type label -> failed calls
    errors_by_model: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    # (service, from provider, from model, to provider, to model) -> count
    fallback_pairs: Counter[tuple[str, str, str, str, str]] = field(default_factory=Counter)
    retries: int = 0
    retries_by: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # svc, prov, model
    streamed: int = 0
    streamed_by_model: Counter[str] = field(default_factory=Counter)
    ttft_from_events: int = 0  # streamed calls whose TTFT is only in chunk events
    legacy_convention: int = 0  # LLM spans in the deprecated attribute names
    legacy_by_model: Counter[str] = field(default_factory=Counter)
    unpriced: int = 0  # LLM spans with tokens for a model genai-prices does not know
    pii: Counter[str] = field(default_factory=Counter)  # "email"/"phone" written into spans
    pii_in_logs: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # process CPU time during the run (export threads included)

    def token_counts(self, model: str) -> TokenCounts:
        t = self.tokens.get(model)
        if t is None:
            t = self.tokens[model] = TokenCounts()
        return t

    @property
    def llm_calls(self) -> int:
        return self.llm_spans

    @property
    def cpu_per_request_ms(self) -> float:
        return 1000.0 * self.cpu_s / self.requests if self.requests else 0.0


# --------------------------------------------------------------------------------------------
# Content
