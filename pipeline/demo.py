"""demo: realistic LLM traffic through the real OpenTelemetry SDK.

`run_demo` sends what an instrumented LLM application sends: per `service.name` a
TracerProvider + BatchSpanProcessor + OTLPSpanExporter and a LoggerProvider +
BatchLogRecordProcessor + OTLPLogExporter (gRPC, or HTTP/protobuf for port 4318), with spans in
the current OTel GenAI semantic conventions (a share of them in the deprecated names), streamed
calls, prompt caching, reasoning tokens, errors, retries and fallbacks, and log records
correlated with the spans. It returns a `DemoStats` with what it sent, so tests can compare the
sidecar's metrics with it.

Every span carries explicit start/end timestamps laid out backwards from "now", so a request
that "took" 30 seconds costs ~0.2 ms of CPU to produce and the generator can drive benchmarks.
The traffic is drawn from a seeded `random.Random`, so a seed reproduces the mix (trace and span
ids come from the SDK and differ between runs).

The mix (`SERVICES`, `SCENARIOS`): every request is a `POST /...` SERVER span with the LLM
calls (CLIENT spans named "{operation} {model}") under it.

- chat-api (50%): chat on gpt-4o-mini / gpt-4o / claude-sonnet-4-5 / o3-mini (reasoning
  tokens), text_completion on gpt-3.5-turbo-instruct (3%), retries (5%), fallbacks
  (OpenAI -> Anthropic under a `chain llm-router` INTERNAL span, 4%), failed requests (5%).
- rag-worker (30%): embeddings (text-embedding-3-small) then chat on claude-sonnet-4-5
  (prompt caching: cache_read / cache_creation) / gemini-2.0-flash / Bedrock nova-lite;
  embedding-only ingests; retries; failures.
- support-bot (20%): an `invoke_agent support-agent` INTERNAL span with chat on the fine-tuned
  `ft:acme-support-v2` (no known price) or claude-3-5-haiku, often a tool call and a second
  chat; fallbacks (8%), retries, failures. Always records prompts (some with e-mail addresses
  and phone numbers for the redaction processor).

Per call: 40% of successful chats stream (TTFT as `gen_ai.response.time_to_first_chunk` or
only as `gen_ai.choice.chunk` events); 30% of plain OpenAI chat calls use the deprecated names
(`gen_ai.system`, `gen_ai.usage.prompt_tokens` / `completion_tokens`); errors are rate limits,
server errors and timeouts as the provider SDKs raise them (status ERROR, an `exception`
event, and in 35% of cases `error.type` = the HTTP status). One log record per LLM call, in
its span's context: INFO on success, WARN before a retry or fallback, ERROR when giving up.

    python -m pipeline.demo --endpoint http://127.0.0.1:4317 --rate 5 --duration 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry._logs import Logger, LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

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


_FIRST = ("jane", "omar", "li", "maria", "sam", "priya", "lukas", "ana", "kenji", "zoe")
_LAST = ("doe", "haddad", "wei", "garcia", "okafor", "sharma", "novak", "silva", "tanaka")
_DOMAINS = ("example.com", "mail.example.org", "acme-corp.io", "gmail.com")
_PROMPTS = (
    "Summarize the last three messages in this thread.",
    "Write a SQL query that returns the ten most recent orders per customer.",
    "Translate 'the invoice is overdue' into Portuguese and German.",
    "Explain the difference between a mutex and a semaphore in two sentences.",
    "Draft a polite reply declining the meeting on Friday.",
    "What is the capital of Australia, and why is it not Sydney?",
)
# (template, e-mail count, phone count); the completion may echo the address.
_PII_PROMPTS: tuple[tuple[str, int, int], ...] = (
    ("Please send the summary to {email} when it's ready.", 1, 0),
    ("Call me back on {phone}, my order still hasn't arrived.", 0, 1),
    ("My account email is {email} and my phone is {phone}; why was I charged twice?", 1, 1),
    ("Update my contact number to {phone}.", 0, 1),
)
_ANSWERS = (
    "Here is a concise summary of the discussion.",
    "Sure - the query below uses a window function to rank orders.",
    "Done. Let me know if you need any other changes.",
    "Canberra was chosen as a compromise between Sydney and Melbourne.",
)


def _email(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}@{rng.choice(_DOMAINS)}"


def _phone(rng: random.Random) -> str:
    area, line = rng.randint(201, 989), rng.randint(100, 9999)
    if rng.random() < 0.5:
        return f"+1 {area}-555-{line:04d}"
    return f"({area}) 555-{line:04d}"


@dataclass(slots=True)
class _Content:
    prompt: str
    answer: str
    prompt_emails: int = 0  # PII occurrences in the prompt
    prompt_phones: int = 0
    answer_emails: int = 0  # ... and in the completion
    email: str = ""


def _content(rng: random.Random) -> _Content:
    if rng.random() < PII_SHARE:
        template, n_email, n_phone = rng.choice(_PII_PROMPTS)
        email = _email(rng)
        prompt = template.format(email=email, phone=_phone(rng))
        c = _Content(prompt, rng.choice(_ANSWERS), n_email, n_phone, 0, email)
        if n_email and rng.random() < 0.5:
            c.answer = f"Done - I sent a confirmation to {email}."
            c.answer_emails = 1
        return c
    return _Content(rng.choice(_PROMPTS), rng.choice(_ANSWERS))


def _messages(system: str, user: str) -> str:
    return json.dumps(
        [
            {"role": "system", "parts": [{"type": "text", "content": system}]},
            {"role": "user", "parts": [{"type": "text", "content": user}]},
        ]
    )


def _output(answer: str, finish: str) -> str:
    return json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": answer}],
                "finish_reason": finish,
            }
        ]
    )


# --------------------------------------------------------------------------------------------
# One LLM call: planned first (so parents can be laid out in time), then emitted


@dataclass(slots=True)
class _Call:
    spec: ModelSpec
    duration_s: float
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    reasoning: int = 0
    max_tokens: int = 0
    temperature: float | None = None
    finish: str = ""
    error_kind: str = ""  # "" on success
    error_type_attr: str | None = None
    ttft_s: float | None = None  # set when streamed
    ttft_as_attribute: bool = False
    legacy: bool = False
    content: _Content | None = None


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    if hi <= lo:
        return lo
    return int(math.exp(rng.uniform(math.log(max(lo, 1)), math.log(hi))))


def _weighted(rng: random.Random, choices: Sequence[tuple[str, float]]) -> str:
    total = sum(w for _, w in choices)
    x = rng.random() * total
    for name, w in choices:
        x -= w
        if x < 0:
            return name
    return choices[-1][0]


def _legacy(rng: random.Random, spec: ModelSpec) -> bool:
    """Old instrumentations (deprecated names) only ever wrote plain OpenAI chat calls here."""
    return (
        spec.provider == "openai"
        and spec.operation == "chat"
        and not spec.reasoning
        and rng.random() < LEGACY_SHARE
    )


def _plan_call(
    rng: random.Random,
    spec: ModelSpec,
    profile: ServiceProfile,
    *,
    error_kind: str = "",
    stream: bool | None = None,
) -> _Call:
    if error_kind:
        if error_kind == "timeout":
            d = CLIENT_TIMEOUT_S + rng.uniform(0.0, 0.05)
        elif error_kind == "rate_limit":
            d = rng.uniform(0.04, 0.4)
        else:
            d = rng.uniform(0.3, 4.0)
        call = _Call(spec, d, error_kind=error_kind, legacy=_legacy(rng, spec))
        status = ERRORS[spec.provider][error_kind][1]
        if status is not None and rng.random() < ERROR_TYPE_ATTR_SHARE:
            call.error_type_attr = str(status)
        if rng.random() < profile.capture_content:
            call.content = _content(rng)
        return call
    uncached = _log_uniform(rng, *spec.input_tokens)
    call = _Call(spec, 0.0, input_tokens=uncached, legacy=_legacy(rng, spec))
    lo, hi = spec.cached_prefix
    if hi and not call.legacy:
        r = rng.random()
        prefix = rng.randint(lo, hi)
        if spec.cache_writes:
            if r < 0.6:
                call.cache_read = prefix
            elif r < 0.85:
                call.cache_creation = prefix
        elif r < 0.35:
            call.cache_read = prefix // 128 * 128  # OpenAI caches in 128-token increments
        call.input_tokens += call.cache_read + call.cache_creation
    if spec.operation == "embeddings":
        call.duration_s = spec.ttft_s * rng.uniform(0.5, 2.0) + call.input_tokens / 20000
        return call
    call.max_tokens = rng.choice((1024, 2048, 4096)) if not spec.reasoning else 16384
    out = _log_uniform(rng, *spec.output_tokens)
    if spec.reasoning:
        call.reasoning = int(out * rng.uniform(0.4, 0.85))
    if out >= call.max_tokens:
        out = call.max_tokens
        call.finish = spec.finish_length
    else:
        call.finish = spec.finish_stop
    call.output_tokens = out
    call.reasoning = min(call.reasoning, out)
    if not spec.reasoning:
        call.temperature = rng.choice((0.0, 0.2, 0.7, 1.0))
    # TTFT grows with the prompt; a reasoning model thinks before its first visible token.
    ttft = spec.ttft_s * rng.lognormvariate(0.0, 0.35) + call.input_tokens / 50000
    ttft += call.reasoning / spec.tokens_per_s
    gen = (out - call.reasoning) / (spec.tokens_per_s * rng.uniform(0.7, 1.3))
    call.duration_s = ttft + gen
    if stream is None:
        stream = spec.operation == "chat" and rng.random() < STREAM_SHARE
    if stream:
        call.ttft_s = ttft
        call.ttft_as_attribute = not call.legacy and rng.random() < TTFT_ATTR_SHARE
    if rng.random() < profile.capture_content:
        call.content = _content(rng)
    return call


def _response_id(rng: random.Random, spec: ModelSpec) -> str:
    return f"{spec.id_prefix}{rng.getrandbits(96):024x}"


_STACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/llm/client.py", line 88, in complete\n'
    "    response = self._client.chat.completions.create(**params)\n"
)


class _Emitter:
    """Emits the spans and log records of one request into `stats`."""

    __slots__ = ("logger", "profile", "rng", "stats", "tracer")

    def __init__(
        self,
        tracer: Tracer,
        logger: Logger | None,
        rng: random.Random,
        profile: ServiceProfile,
        stats: DemoStats,
    ) -> None:
        self.tracer = tracer
        self.logger = logger
        self.rng = rng
        self.profile = profile
        self.stats = stats

    def log(
        self,
        ctx: Context,
        t_ns: int,
        severity: SeverityNumber,
        body: str,
        attributes: dict[str, Any],
    ) -> None:
        if self.logger is None:
            return
        self.logger.emit(
            LogRecord(
                timestamp=t_ns,
                context=ctx,
                severity_text=severity.name,
                severity_number=severity,
                body=body,
                attributes=attributes,
            )
        )
        self.stats.log_records += 1
        self.stats.logs_by_severity[severity.name] += 1

    def span(
        self,
        name: str,
        ctx: Context | None,
        start_ns: int,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> Span:
        self.stats.spans += 1
        return self.tracer.start_span(
            name, context=ctx, kind=kind, attributes=attributes, start_time=start_ns
        )

    def llm(self, parent: Context, call: _Call, start_ns: int, next_action: str = "") -> int:
        """Emit one LLM span starting at `start_ns`; returns its end time.

        `next_action` says what the application does after a failed call ("retry",
        "fallback:<model>" or "" when it gives up), for the log record.
        """
        spec, stats, rng = call.spec, self.stats, self.rng
        end_ns = start_ns + int(call.duration_s * 1e9)
        attrs: dict[str, Any] = {
            "gen_ai.request.model": spec.request_model,
            "server.address": spec.server_address,
            "server.port": 443,
        }
        if call.legacy:
            attrs["gen_ai.system"] = spec.provider
        else:
            attrs["gen_ai.operation.name"] = spec.operation
            attrs["gen_ai.provider.name"] = spec.provider
        if call.max_tokens:
            attrs["gen_ai.request.max_tokens"] = call.max_tokens
        if call.temperature is not None:
            attrs["gen_ai.request.temperature"] = call.temperature
        if spec.operation == "embeddings":
            attrs["gen_ai.request.encoding_formats"] = ("float",)
        ok = not call.error_kind
        if ok:
            attrs["gen_ai.response.model"] = spec.response_model
            if spec.id_prefix:
                attrs["gen_ai.response.id"] = _response_id(rng, spec)
            if call.finish:
                attrs["gen_ai.response.finish_reasons"] = (call.finish,)
            if call.legacy:
                attrs["gen_ai.usage.prompt_tokens"] = call.input_tokens
                attrs["gen_ai.usage.completion_tokens"] = call.output_tokens
            else:
                attrs["gen_ai.usage.input_tokens"] = call.input_tokens
                if spec.operation != "embeddings":
                    attrs["gen_ai.usage.output_tokens"] = call.output_tokens
                else:
                    attrs["gen_ai.embeddings.dimension.count"] = 1536
                if call.cache_read or spec.cached_prefix[1]:
                    attrs["gen_ai.usage.cache_read.input_tokens"] = call.cache_read
                if spec.cache_writes:
                    attrs["gen_ai.usage.cache_creation.input_tokens"] = call.cache_creation
                if spec.reasoning:
                    attrs["gen_ai.usage.reasoning.output_tokens"] = call.reasoning
            if call.ttft_s is not None and call.ttft_as_attribute:
                attrs["gen_ai.response.time_to_first_chunk"] = round(call.ttft_s, 6)
        elif call.error_type_attr:
            attrs["error.type"] = call.error_type_attr
        c = call.content
        if c is not None and not call.legacy:
            attrs["gen_ai.input.messages"] = _messages(self.profile.system_prompt, c.prompt)
            if ok:
                attrs["gen_ai.output.messages"] = _output(c.answer, call.finish)
        span = self.span(
            f"{spec.operation} {spec.request_model}", parent, start_ns, SpanKind.CLIENT, attrs
        )
        stats.llm_spans += 1
        t = stats.token_counts(spec.request_model)
        key = (self.profile.name, spec.operation, spec.provider, spec.request_model)
        series = stats.tokens_by_series.get(key)
        if series is None:
            series = stats.tokens_by_series[key] = TokenCounts()
        for tc in (t, series):
            tc.calls += 1
            tc.input += call.input_tokens
            tc.output += call.output_tokens
            tc.cache_read += call.cache_read
            tc.cache_creation += call.cache_creation
            tc.reasoning += call.reasoning
        if call.legacy:
            stats.legacy_convention += 1
            stats.legacy_by_model[spec.request_model] += 1
        if c is not None:
            if call.legacy:
                span.add_event(
                    "gen_ai.content.prompt",
                    {"gen_ai.prompt": _messages(self.profile.system_prompt, c.prompt)},
                    timestamp=start_ns,
                )
                if ok:
                    span.add_event(
                        "gen_ai.content.completion",
                        {"gen_ai.completion": _output(c.answer, call.finish)},
                        timestamp=end_ns,
                    )
            # A failed call has no completion (which may echo the address).
            emails = c.prompt_emails + (c.answer_emails if ok else 0)
            if emails:
                stats.pii["email"] += emails
            if c.prompt_phones:
                stats.pii["phone"] += c.prompt_phones
        ctx = trace.set_span_in_context(span, parent)
        log_attrs: dict[str, Any] = {
            "gen_ai.provider.name": spec.provider,
            "gen_ai.request.model": spec.request_model,
            "duration_ms": round(call.duration_s * 1000, 1),
        }
        if ok:
            if not spec.priced:
                stats.unpriced += 1
            if call.ttft_s is not None:
                stats.streamed += 1
                stats.streamed_by_model[spec.request_model] += 1
                first_ns = start_ns + int(call.ttft_s * 1e9)
                if not call.ttft_as_attribute:
                    stats.ttft_from_events += 1
                span.add_event("gen_ai.choice.chunk", timestamp=first_ns)
                step = (end_ns - first_ns) // 4
                for i in (1, 2, 3):
                    span.add_event("gen_ai.choice.chunk", timestamp=first_ns + i * step)
            log_attrs["gen_ai.response.model"] = spec.response_model
            log_attrs["gen_ai.usage.input_tokens"] = call.input_tokens
            log_attrs["gen_ai.usage.output_tokens"] = call.output_tokens
            self.log(ctx, end_ns, SeverityNumber.INFO, "llm call completed", log_attrs)
        else:
            exc_type, status, message = ERRORS[spec.provider][call.error_kind]
            label = error_label(exc_type, call.error_type_attr)
            stats.errors[label] += 1
            stats.errors_by_model[spec.request_model] += 1
            exc_attrs = {
                "exception.type": exc_type,
                "exception.message": message,
                "exception.stacktrace": _STACK + f"{exc_type}: {message}\n",
            }
            span.add_event("exception", exc_attrs, timestamp=end_ns)
            span.set_status(Status(StatusCode.ERROR, message))
            log_attrs["error.type"] = label
            log_attrs["exception.type"] = exc_type
            if status is not None:
                log_attrs["http.response.status_code"] = status
            if next_action == "retry":
                self.log(ctx, end_ns, SeverityNumber.WARN, "llm call failed, retrying", log_attrs)
            elif next_action.startswith("fallback:"):
                log_attrs["fallback.model"] = next_action.split(":", 1)[1]
                self.log(
                    ctx, end_ns, SeverityNumber.WARN, "llm call failed, falling back", log_attrs
                )
            else:
                body = f"llm call failed: {message}"
                if self.logger is not None and c is not None and c.email and rng.random() < 0.5:
                    body += f" (customer {c.email})"
                    stats.pii_in_logs["email"] += 1
                self.log(ctx, end_ns, SeverityNumber.ERROR, body, log_attrs)
        span.end(end_time=end_ns)
        return end_ns


# --------------------------------------------------------------------------------------------
# Scenarios: each returns the LLM calls of a request with what separates them


@dataclass(slots=True)
class _Step:
    call: _Call | None  # None: a tool span lasting `gap_s`
    gap_s: float  # time before this step (a tool step: its duration)
    next_action: str = ""
    tool: str = ""


@dataclass(slots=True)
class _Plan:
    steps: list[_Step]
    wrapper: tuple[str, dict[str, Any]] | None = None  # INTERNAL parent of the LLM calls
    http_status: int = 200


def _error_kind(rng: random.Random, kinds: Sequence[tuple[str, float]] = ERROR_KINDS) -> str:
    return _weighted(rng, kinds)


def _chat_model(rng: random.Random, p: ServiceProfile) -> ModelSpec:
    return MODELS[_weighted(rng, p.chat_models)]


def _sc_chat(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    return _Plan([_Step(_plan_call(rng, _chat_model(rng, p), p), rng.uniform(0.002, 0.02))])


def _sc_completion(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    call = _plan_call(rng, MODELS["gpt-3.5-turbo-instruct"], p, stream=False)
    return _Plan([_Step(call, rng.uniform(0.002, 0.01))])


def _sc_rag(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    emb = _plan_call(rng, MODELS["text-embedding-3-small"], p)
    chat = _plan_call(rng, _chat_model(rng, p), p)
    return _Plan([_Step(emb, rng.uniform(0.001, 0.005)), _Step(chat, rng.uniform(0.02, 0.12))])


def _sc_ingest(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    spec = MODELS["text-embedding-3-small"]
    steps = [
        _Step(_plan_call(rng, spec, p), rng.uniform(0.005, 0.05)) for _ in range(rng.randint(1, 3))
    ]
    return _Plan(steps)


def _agent_wrapper(p: ServiceProfile, rng: random.Random) -> tuple[str, dict[str, Any]]:
    if p.name == "support-bot":
        return "invoke_agent support-agent", {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support-agent",
            "gen_ai.agent.id": "asst_support_v2",
            "gen_ai.conversation.id": f"conv_{rng.getrandbits(48):012x}",
        }
    return "chain llm-router", {"llm.router.strategy": "fallback"}


def _sc_agent(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    spec = _chat_model(rng, p)
    first = _plan_call(rng, spec, p)
    steps = [_Step(first, rng.uniform(0.002, 0.01))]
    if rng.random() < 0.5:  # the model asked for a tool; answer with its result
        first.finish = "tool_calls" if spec.provider == "openai" else "tool_use"
        steps.append(_Step(None, rng.uniform(0.02, 0.3), tool="lookup_order"))
        steps.append(_Step(_plan_call(rng, spec, p), rng.uniform(0.001, 0.005)))
    return _Plan(steps, wrapper=_agent_wrapper(p, rng))


def _sc_retry(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    spec = _chat_model(rng, p)
    failures = 1 if rng.random() < 0.8 else 2
    steps: list[_Step] = []
    gap = rng.uniform(0.002, 0.02)
    for _ in range(failures):
        kind = _error_kind(rng, (("rate_limit", 0.6), ("server", 0.4)))
        steps.append(_Step(_plan_call(rng, spec, p, error_kind=kind), gap, "retry"))
        gap = rng.uniform(1.0, 4.0) if kind == "rate_limit" else rng.uniform(0.3, 1.5)
        stats.retries += 1
        stats.retries_by[(p.name, spec.provider, spec.request_model)] += 1
    steps.append(_Step(_plan_call(rng, spec, p), gap))
    return _Plan(steps)


def _sc_fallback(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    a, b = (MODELS[k] for k in rng.choice(p.fallbacks))
    kind = _error_kind(rng)
    steps = [
        _Step(
            _plan_call(rng, a, p, error_kind=kind),
            rng.uniform(0.002, 0.01),
            f"fallback:{b.request_model}",
        ),
        _Step(_plan_call(rng, b, p), rng.uniform(0.005, 0.03)),
    ]
    stats.fallbacks += 1
    stats.fallback_pairs[(p.name, a.provider, a.request_model, b.provider, b.request_model)] += 1
    return _Plan(steps, wrapper=_agent_wrapper(p, rng))


def _sc_error(rng: random.Random, p: ServiceProfile, stats: DemoStats) -> _Plan:
    kind = _error_kind(rng)
    call = _plan_call(rng, _chat_model(rng, p), p, error_kind=kind)
    status = {"rate_limit": 429, "timeout": 504}.get(kind, 502)
    return _Plan([_Step(call, rng.uniform(0.002, 0.02))], http_status=status)


SCENARIOS: dict[str, Callable[[random.Random, ServiceProfile, DemoStats], _Plan]] = {
    "chat": _sc_chat,
    "completion": _sc_completion,
    "rag": _sc_rag,
    "ingest": _sc_ingest,
    "agent": _sc_agent,
    "retry": _sc_retry,
    "fallback": _sc_fallback,
    "error": _sc_error,
}


def _profile(service: ServiceProfile | str) -> ServiceProfile:
    if isinstance(service, ServiceProfile):
        return service
    try:
        return SERVICES[service]
    except KeyError:
        raise ValueError(f"unknown demo service {service!r}; known: {sorted(SERVICES)}") from None


def generate_request(
    tracer: Tracer,
    logger: Logger | None,
    rng: random.Random,
    *,
    service: ServiceProfile | str = "chat-api",
    stats: DemoStats | None = None,
    end_ns: int | None = None,
    scenario: str | None = None,
) -> DemoStats:
    """Emit the spans (and log records, when `logger` is given) of one request.

    The request ends at `end_ns` (default: now) and its spans are laid out backwards from
    there. `scenario` forces one of `SCENARIOS`; by default it is drawn from the service's
    mix. Updates and returns `stats` (a new `DemoStats` when None).
    """
    profile = _profile(service)
    if stats is None:
        stats = DemoStats()
    name = scenario or _weighted(rng, profile.scenarios)
    plan = SCENARIOS[name](rng, profile, stats)
    stats.requests += 1
    stats.requests_by_service[profile.name] += 1
    stats.scenarios[name] += 1

    head_ns = 500_000  # request parsing before the first child span
    tail_s = rng.uniform(0.001, 0.01)
    total_s = (
        head_ns / 1e9
        + tail_s
        + sum(s.gap_s + (s.call.duration_s if s.call is not None else 0.0) for s in plan.steps)
    )
    end = time.time_ns() if end_ns is None else end_ns
    start = end - int(total_s * 1e9)
    em = _Emitter(tracer, logger, rng, profile, stats)
    method_route = f"POST {profile.route}"
    http = em.span(
        method_route,
        None,
        start,
        SpanKind.SERVER,
        {
            "http.request.method": "POST",
            "http.route": profile.route,
            "url.path": profile.route,
            "url.scheme": "https",
            "server.address": f"{profile.name}.internal",
            "network.protocol.version": "1.1",
            "user_agent.original": "acme-web/4.2",
        },
    )
    ctx = trace.set_span_in_context(http)
    wrapper: Span | None = None
    if plan.wrapper is not None:
        wname, wattrs = plan.wrapper
        wrapper = em.span(wname, ctx, start + head_ns // 2, SpanKind.INTERNAL, wattrs)
        ctx = trace.set_span_in_context(wrapper, ctx)
    t = start + head_ns
    for step in plan.steps:
        gap_ns = int(step.gap_s * 1e9)
        if step.call is None:
            tool = em.span(
                f"execute_tool {step.tool}",
                ctx,
                t + gap_ns // 20,
                SpanKind.INTERNAL,
                {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": step.tool},
            )
            tool.end(end_time=t + gap_ns - gap_ns // 20)
            t += gap_ns
        else:
            t = em.llm(ctx, step.call, t + gap_ns, step.next_action)
    failed = plan.http_status >= 400
    if wrapper is not None:
        if failed:
            wrapper.set_status(Status(StatusCode.ERROR))
        wrapper.end(end_time=t + 200_000)
    http.set_attribute("http.response.status_code", plan.http_status)
    if plan.http_status >= 500:
        http.set_status(Status(StatusCode.ERROR))
    http.end(end_time=end)
    return stats


# --------------------------------------------------------------------------------------------
# Providers, exporters and the run loop


class _Borrowed(SpanExporter):
    """A caller's span exporter shared by several providers: never shut down by them."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export(spans)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _BorrowedLogs(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        return self.inner.export(batch)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def resolve_protocol(endpoint: str, protocol: str | None) -> str:
    """The OTLP protocol: `protocol` if given, else HTTP for port 4318 and gRPC otherwise."""
    if protocol is not None:
        p = protocol.strip().lower()
        if p in ("grpc",):
            return "grpc"
        if p in ("http/protobuf", "http", "http/proto"):
            return "http/protobuf"
        raise ValueError(f"unsupported OTLP protocol {protocol!r}: grpc or http/protobuf")
    return "http/protobuf" if urlsplit(endpoint).port == 4318 else "grpc"


def otlp_exporters(
    endpoint: str, protocol: str | None = None
) -> tuple[SpanExporter, LogRecordExporter]:
    """An OTLP span exporter and log exporter for `endpoint` (see `resolve_protocol`)."""
    if resolve_protocol(endpoint, protocol) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as GrpcLogExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        insecure = not endpoint.startswith("https://")
        return (
            GrpcSpanExporter(endpoint=endpoint, insecure=insecure),
            GrpcLogExporter(endpoint=endpoint, insecure=insecure),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    base = endpoint.rstrip("/")
    if "://" not in base:
        base = "http://" + base
    return (
        HttpSpanExporter(endpoint=f"{base}/v1/traces"),
        HttpLogExporter(endpoint=f"{base}/v1/logs"),
    )


def make_resource(profile: ServiceProfile) -> Resource:
    return Resource.create(
        {
            "service.name": profile.name,
            "service.version": profile.version,
            "service.namespace": "acme",
            "deployment.environment.name": "demo",
        }
    )


@dataclass(slots=True)
class _Service:
    profile: ServiceProfile
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider | None
    tracer: Tracer
    logger: Logger | None


def _providers(
    profile: ServiceProfile,
    span_exporter: SpanExporter,
    log_exporter: LogRecordExporter | None,
    schedule_delay_ms: float,
) -> _Service:
    resource = make_resource(profile)
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(
        BatchSpanProcessor(
            span_exporter,
            max_queue_size=16384,
            schedule_delay_millis=schedule_delay_ms,
            max_export_batch_size=512,
        )
    )
    lp: LoggerProvider | None = None
    logger: Logger | None = None
    if log_exporter is not None:
        lp = LoggerProvider(resource=resource)
        lp.add_log_record_processor(
            BatchLogRecordProcessor(
                log_exporter,
                schedule_delay_millis=schedule_delay_ms,
                max_export_batch_size=512,
                max_queue_size=16384,
            )
        )
        logger = lp.get_logger(f"{profile.name.replace('-', '_')}.llm", profile.version)
    tracer = tp.get_tracer(SCOPE, profile.version)
    return _Service(profile, tp, lp, tracer, logger)


def _shutdown(services: Sequence[_Service]) -> None:
    # Flush every provider before shutting any down: exporters may be shared.
    for s in services:
        s.tracer_provider.force_flush(10_000)
        if s.logger_provider is not None:
            s.logger_provider.force_flush(10_000)
    for s in services:
        s.tracer_provider.shutdown()
        if s.logger_provider is not None:
            s.logger_provider.shutdown()


def _pick(rng: random.Random, services: Sequence[_Service]) -> _Service:
    if len(services) == 1:
        return services[0]
    total = sum(s.profile.weight for s in services)
    x = rng.random() * total
    for s in services:
        x -= s.profile.weight
        if x < 0:
            return s
    return services[-1]


@contextlib.contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(
    endpoint: str = DEFAULT_ENDPOINT,
    rate: float = 5.0,
    duration: float = 30.0,
    protocol: str | None = None,
    seed: int | None = None,
    services: Sequence[ServiceProfile | str] | None = None,
    *,
    span_exporter: SpanExporter | None = None,
    log_exporter: LogRecordExporter | None = None,
    logs: bool = True,
    stop: threading.Event | None = None,
    schedule_delay_ms: float = 1000.0,
) -> DemoStats:
    """Send `rate` LLM requests a second for `duration` seconds; return what was sent.

    `duration` <= 0 runs until KeyboardInterrupt, SIGTERM or `stop` is set. The providers are
    flushed and shut down before returning. `span_exporter` / `log_exporter` replace the OTLP
    exporters (the caller keeps ownership: they are not shut down); `logs=False` sends no logs.
    `services` picks service profiles (names from `SERVICES` or `ServiceProfile`s).
    """
    if not rate > 0 or math.isnan(rate):
        raise ValueError("rate must be > 0")
    profiles = [_profile(s) for s in (services if services is not None else SERVICES.values())]
    if not profiles:
        raise ValueError("no services")
    rng = random.Random(seed)
    stop = stop or threading.Event()
    made: list[_Service] = []
    for p in profiles:
        if span_exporter is None:
            sx, lx = otlp_exporters(endpoint, protocol)
            made.append(_providers(p, sx, lx if logs else None, schedule_delay_ms))
        else:
            borrowed = _BorrowedLogs(log_exporter) if logs and log_exporter is not None else None
            made.append(_providers(p, _Borrowed(span_exporter), borrowed, schedule_delay_ms))
    stats = DemoStats()
    total = math.ceil(rate * duration - 1e-9) if duration > 0 else -1
    wall0, cpu0 = time.monotonic(), time.process_time()
    try:
        with _stop_on_sigterm(stop):
            sent = 0
            while not stop.is_set() and sent != total:
                due = int((time.monotonic() - wall0) * rate) + 1
                if total >= 0:
                    due = min(due, total)
                while sent < due:
                    s = _pick(rng, made)
                    generate_request(s.tracer, s.logger, rng, service=s.profile, stats=stats)
                    sent += 1
                if sent == total:
                    break
                stop.wait(max(0.0, min(wall0 + sent / rate - time.monotonic(), 0.5)))
    except KeyboardInterrupt:
        pass
    finally:
        _shutdown(made)
        stats.wall_s = time.monotonic() - wall0
        stats.cpu_s = time.process_time() - cpu0
    return stats


def emit(
    tracer_provider: TracerProvider,
    logger_provider: LoggerProvider | None,
    n: int,
    *,
    seed: int | None = None,
    service: ServiceProfile | str = "chat-api",
    stats: DemoStats | None = None,
) -> DemoStats:
    """Emit `n` requests of `service`'s mix, as fast as possible, through the given providers.

    For benchmarks: wire the providers to any exporter; nothing is flushed or shut down here.
    """
    profile = _profile(service)
    rng = random.Random(seed)
    tracer = tracer_provider.get_tracer(SCOPE, profile.version)
    logger = (
        logger_provider.get_logger(f"{profile.name.replace('-', '_')}.llm", profile.version)
        if logger_provider is not None
        else None
    )
    stats = stats if stats is not None else DemoStats()
    for _ in range(n):
        generate_request(tracer, logger, rng, service=profile, stats=stats)
    return stats


def emit_into(
    span_exporter: SpanExporter,
    log_exporter: LogRecordExporter | None,
    n: int,
    *,
    seed: int | None = None,
    services: Sequence[ServiceProfile | str] | None = None,
) -> DemoStats:
    """`n` requests over all `services` into the given exporters, as fast as possible.

    One TracerProvider/LoggerProvider pair per service around the caller's exporters, flushed
    and shut down before returning (the exporters themselves are left open).
    """
    profiles = [_profile(s) for s in (services if services is not None else SERVICES.values())]
    rng = random.Random(seed)
    made = [
        _providers(
            p,
            _Borrowed(span_exporter),
            _BorrowedLogs(log_exporter) if log_exporter is not None else None,
            1000.0,
        )
        for p in profiles
    ]
    stats = DemoStats()
    wall0, cpu0 = time.monotonic(), time.process_time()
    try:
        for _ in range(n):
            s = _pick(rng, made)
            generate_request(s.tracer, s.logger, rng, service=s.profile, stats=stats)
    finally:
        _shutdown(made)
        stats.wall_s = time.monotonic() - wall0
        stats.cpu_s = time.process_time() - cpu0
    return stats


def summary(stats: DemoStats) -> str:
    lines = [
        f"requests={stats.requests} spans={stats.spans} llm_spans={stats.llm_spans} "
        f"logs={stats.log_records} streamed={stats.streamed} retries={stats.retries} "
        f"fallbacks={stats.fallbacks} legacy={stats.legacy_convention} "
        f"unpriced={stats.unpriced}",
        f"errors={dict(stats.errors)}",
        f"cpu={stats.cpu_s:.3f}s ({stats.cpu_per_request_ms:.2f} ms/request) "
        f"wall={stats.wall_s:.1f}s",
    ]
    for model, t in sorted(stats.tokens.items()):
        lines.append(
            f"  {model}: calls={t.calls} input={t.input} output={t.output} "
            f"cache_read={t.cache_read} cache_creation={t.cache_creation} "
            f"reasoning={t.reasoning}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="llm-pipeline demo", description="Send realistic LLM traffic over OTLP."
    )
    ap.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    ap.add_argument("--protocol", choices=("grpc", "http/protobuf"), default=None)
    ap.add_argument("--rate", type=float, default=5.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds; <= 0: until stopped")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--services", default=None, help=f"comma-separated subset of {','.join(SERVICES)}"
    )
    ap.add_argument("--no-logs", action="store_true")
    args = ap.parse_args(argv)
    services = args.services.split(",") if args.services else None
    stats = run_demo(
        args.endpoint,
        rate=args.rate,
        duration=args.duration,
        protocol=args.protocol,
        seed=args.seed,
        services=services,
        logs=not args.no_logs,
    )
    print(summary(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
