"""Drive real instrumentation libraries with their real clients against the fake LLM server.

A *setup* (see `SETUPS`) instruments one or more libraries onto a TracerProvider that sends
every ended span to the SpanExporter you give it; a *scenario* (see `SCENARIOS`) makes real
client calls (openai SDK or litellm) to the fake server. The exporter is the caller's choice:
`InMemorySpanExporter` for the tests here (see `runner.py`), or an OTLP exporter pointed at a
running sidecar for end-to-end runs:

    with instrumented("openllmetry", OTLPSpanExporter(endpoint=...)) as session:
        run_scenario(session, "stream", base_url)

Instrumentors patch the same client classes, so run one setup per process (`runner.py` is the
subprocess entry point) or leave the `instrumented` block (which uninstruments) before the next.
Every request and its expected token counts are constants here, so tests assert exact values.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

# -- the requests and what the fake server answers (see tests/fakellm.py) -------------------

SYSTEM = "You are terse."
USER = "hello there world"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
PROMPT_TOKENS = 3 + 3 + 3 * 2  # words + 3 per message = 12
CACHED_TOKENS = 5
REASONING_TOKENS = 3
HEADERS = {
    "x-fake-cached-tokens": str(CACHED_TOKENS),
    "x-fake-reasoning-tokens": str(REASONING_TOKENS),
}
MAX_TOKENS = 6  # the non-streamed chat reply has 6 words
CHAT_OUTPUT_TOKENS = MAX_TOKENS + REASONING_TOKENS  # 9
STREAM_OUTPUT_TOKENS = 8 + REASONING_TOKENS  # default 8 words, one per chunk: 11
TOOL_OUTPUT_TOKENS = 5 + REASONING_TOKENS  # 8
FIRST_CHUNK_DELAY_S = 0.25
STREAM_HEADERS = {**HEADERS, "x-fake-first-chunk-delay": str(FIRST_CHUNK_DELAY_S)}
EMBED_INPUT = ["alpha beta", "gamma"]
EMBED_TOKENS = 3
MODEL = "gpt-4o-mini"  # a model LiteLLM has a price for, so it writes gen_ai.cost.*
RESPONSE_MODEL = "gpt-4o-mini-2024"  # the fake answers with "<model>-2024"
EMBED_MODEL = "text-embedding-3-small"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no cost-map download at import
    "LITELLM_LOG": "ERROR",
    # Without it LiteLLM writes its attributes onto an active parent span (the app's) instead
    # of its own litellm_request span, and drops them when that span has ended by the time its
    # logging thread runs.
    "USE_OTEL_LITELLM_REQUEST_SPAN": "true",
}
LATEST = {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}


# -- setups -----------------------------------------------------------------------------------


@dataclass
class Session:
    """An instrumented process: the provider, the client kind, and how to wait for spans."""

    setup: str
    client: str  # "openai" or "litellm"
    provider: TracerProvider
    counter: _EndCounter
    undo: list[Callable[[], None]] = field(default_factory=list)
    last_error: str = ""  # the exception type the client raised in an error scenario

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("tests.instrumentation.app")

    def settle(self, scope: str, before: int, expect: int, quiet_s: float) -> None:
        """Wait until `expect` more model-call spans of instrumentation `scope` ended since
        `before`, then no span at all for `quiet_s` (LiteLLM logs from a worker thread after
        the call returned, its raw_gen_ai_request child right after)."""
        deadline = time.monotonic() + 30.0
        last, last_change = self.counter.count, time.monotonic()
        while time.monotonic() < deadline:
            now, n = time.monotonic(), self.counter.count
            if n != last:
                last, last_change = n, now
            done = self.counter.by_scope.get(scope, 0) >= before + expect
            if done and now - last_change >= quiet_s:
                break
            time.sleep(0.01)
        self.provider.force_flush()


class _EndCounter(SpanProcessor):
    def __init__(self) -> None:
        self.count = 0
        self.by_scope: dict[str, int] = {}  # model-call spans per instrumentation scope
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        scope = span.instrumentation_scope.name if span.instrumentation_scope else ""
        with self._lock:
            self.count += 1
            if span.attributes and "gen_ai.request.model" in span.attributes:  # a call's span
                self.by_scope[scope] = self.by_scope.get(scope, 0) + 1


def _openai_v2(provider: TracerProvider) -> Callable[[], None]:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    inst = OpenAIInstrumentor()
    inst.instrument(tracer_provider=provider)
    return inst.uninstrument


def _openllmetry(provider: TracerProvider) -> Callable[[], None]:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    inst = OpenAIInstrumentor()
    inst.instrument(tracer_provider=provider)
    return inst.uninstrument


def _openinference(provider: TracerProvider) -> Callable[[], None]:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    inst = OpenAIInstrumentor()
    inst.instrument(tracer_provider=provider)
    return inst.uninstrument


def _litellm(provider: TracerProvider) -> Callable[[], None]:
    import litellm
    from litellm.integrations.opentelemetry import OpenTelemetry, OpenTelemetryConfig

    litellm.telemetry = False
    otel = OpenTelemetry(config=OpenTelemetryConfig(exporter="console"), tracer_provider=provider)
    litellm.callbacks = [otel]

    def undo() -> None:
        litellm.callbacks = []

    return undo


@dataclass(frozen=True)
class Setup:
    client: str
    instrument: tuple[Callable[[TracerProvider], Callable[[], None]], ...]
    env: dict[str, str] = field(default_factory=dict)


SETUPS: dict[str, Setup] = {
    "openai_v2": Setup("openai", (_openai_v2,)),
    "openai_v2_latest": Setup("openai", (_openai_v2,), LATEST),
    "openllmetry": Setup("openai", (_openllmetry,)),
    "openinference": Setup("openai", (_openinference,)),
    "litellm": Setup("litellm", (_litellm,), LITELLM_ENV),
    "litellm_latest": Setup("litellm", (_litellm,), {**LITELLM_ENV, **LATEST}),
    # Nesting: LiteLLM's own span plus OpenLLMetry's span of the openai call LiteLLM makes.
    "litellm+openllmetry": Setup("litellm", (_litellm, _openllmetry), LITELLM_ENV),
    # Two instrumentations of one openai client at once: two spans per call.
    "openllmetry+openinference": Setup("openai", (_openllmetry, _openinference)),
}


@contextmanager
def instrumented(setup: str, exporter: SpanExporter, service_name: str = "") -> Iterator[Session]:
    """Instrument `setup`'s libraries onto a provider that exports to `exporter`.

    Environment switches the setup needs (`Setup.env`) must be in `os.environ` before the
    libraries are imported; `runner.py` sets them for its subprocess.
    """
    spec = SETUPS[setup]
    for k, v in spec.env.items():
        os.environ.setdefault(k, v)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name or f"instr-{setup}"})
    )
    counter = _EndCounter()
    provider.add_span_processor(counter)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    session = Session(setup=setup, client=spec.client, provider=provider, counter=counter)
    try:
        for fn in spec.instrument:
            session.undo.append(fn(provider))
        yield session
    finally:
        for undo in reversed(session.undo):
            undo()
        provider.force_flush()
        provider.shutdown()


# -- scenarios --------------------------------------------------------------------------------


def _openai_client(base_url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=base_url, api_key="sk-fake", max_retries=0, timeout=10)


def _litellm_kwargs(base_url: str) -> dict[str, Any]:
    return {"api_base": base_url, "api_key": "sk-fake", "num_retries": 0, "max_retries": 0}


def _chat(session: Session, base_url: str) -> None:
    if session.client == "openai":
        _openai_client(base_url).chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, extra_headers=dict(HEADERS)
        )
    else:
        import litellm

        litellm.completion(
            model=f"openai/{MODEL}",
            messages=MESSAGES,
            max_tokens=MAX_TOKENS,
            extra_headers=dict(HEADERS),
            **_litellm_kwargs(base_url),
        )


def _stream(session: Session, base_url: str) -> None:
    if session.client == "openai":
        stream = _openai_client(base_url).chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=dict(STREAM_HEADERS),
        )
    else:
        import litellm

        stream = litellm.completion(
            model=f"openai/{MODEL}",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=dict(STREAM_HEADERS),
            **_litellm_kwargs(base_url),
        )
    for _ in stream:
        pass


def _tools(session: Session, base_url: str) -> None:
    if session.client == "openai":
        _openai_client(base_url).chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=TOOLS, extra_headers=dict(HEADERS)
        )
    else:
        import litellm

        litellm.completion(
            model=f"openai/{MODEL}",
            messages=MESSAGES,
            tools=TOOLS,
            extra_headers=dict(HEADERS),
            **_litellm_kwargs(base_url),
        )


def _embeddings(session: Session, base_url: str) -> None:
    if session.client == "openai":
        _openai_client(base_url).embeddings.create(model=EMBED_MODEL, input=EMBED_INPUT)
    else:
        import litellm

        litellm.embedding(
            model=f"openai/{EMBED_MODEL}", input=EMBED_INPUT, **_litellm_kwargs(base_url)
        )


def _error(model: str) -> Callable[[Session, str], None]:
    def run(session: Session, base_url: str) -> None:
        try:
            if session.client == "openai":
                _openai_client(base_url).chat.completions.create(model=model, messages=MESSAGES)
            else:
                import litellm

                litellm.completion(
                    model=f"openai/{model}", messages=MESSAGES, **_litellm_kwargs(base_url)
                )
        except Exception as exc:  # the error is the point; its type is checked on the span
            session.last_error = type(exc).__name__
        else:
            raise AssertionError(f"{model} did not fail")

    return run


def _agent(session: Session, base_url: str) -> None:
    """An app's own spans around two model calls: agent -> step -> chat, agent -> chat."""
    tracer = session.tracer
    with tracer.start_as_current_span("agent"):
        with tracer.start_as_current_span("step"):
            _chat(session, base_url)
        _chat(session, base_url)


SCENARIOS: dict[str, Callable[[Session, str], None]] = {
    "chat": _chat,
    "stream": _stream,
    "tools": _tools,
    "embeddings": _embeddings,
    "error_429": _error("fake-error-429"),
    "error_500": _error("fake-error-500"),
    "agent": _agent,
}


# litellm 1.106's completion(tools=...) imports its proxy's MCP code, which needs the `mcp`
# package (not a litellm dependency): the tool-call scenario runs on the openai client only.
SKIP = {"litellm": {"tools"}}


def scenarios_for(setup: str) -> list[str]:
    skip = SKIP.get(SETUPS[setup].client, set())
    return [s for s in SCENARIOS if s not in skip]


MODEL_CALLS = {"agent": 2}  # model calls a scenario makes; 1 if not listed


def run_scenario(session: Session, scenario: str, base_url: str) -> None:
    """Run one scenario and wait until its spans have ended and been exported."""
    before = session.counter.by_scope.get("litellm", 0)
    SCENARIOS[scenario](session, base_url)
    if session.client == "litellm":  # logged from a worker thread after the call returned
        session.settle("litellm", before, MODEL_CALLS.get(scenario, 1), quiet_s=0.1)
    else:
        session.provider.force_flush()
