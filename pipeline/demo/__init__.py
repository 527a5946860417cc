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

The modules: `profiles` (models, services, `DemoStats`), `content` (prompt and answer text),
`scenarios` (one request's plan), `emission` (its spans and log records), `runner` (providers,
exporters, the paced loop). It needs the `[demo]` extra (the OpenTelemetry SDK and exporters).

    llm-pipeline demo --endpoint http://127.0.0.1:4317 --rate 5 --duration 30
"""

from .emission import generate_request
from .profiles import (
    DEFAULT_ENDPOINT,
    MODELS,
    SERVICES,
    DemoStats,
    ModelSpec,
    ServiceProfile,
    TokenCounts,
    error_label,
)
from .runner import (
    emit,
    emit_into,
    make_resource,
    otlp_exporters,
    resolve_protocol,
    run_demo,
    summary,
)
from .scenarios import SCENARIOS

__all__ = [
    "DEFAULT_ENDPOINT",
    "MODELS",
    "SCENARIOS",
    "SERVICES",
    "DemoStats",
    "ModelSpec",
    "ServiceProfile",
    "TokenCounts",
    "emit",
    "emit_into",
    "error_label",
    "generate_request",
    "make_resource",
    "otlp_exporters",
    "resolve_protocol",
    "run_demo",
    "summary",
]
