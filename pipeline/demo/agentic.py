"""Agent runs for the demo: agents with tools, evaluations, a self-hosted vLLM and rate limits.

Beside the request mix of `SERVICES`, `run_demo(agents=True)` (the CLI's default) sends agent
runs from two more services, through the same exporters:

- `trip-agent`: a `POST /v1/trips` SERVER span, then an `invoke_workflow trip-planner` with an
  `invoke_agent planner` under it. The planner makes a streamed chat call to a self-hosted
  Llama behind vLLM, calls tools (`web_search`, priced in the compose config, and
  `lookup_booking`, which sometimes fails), runs a `retrieval` with its embeddings call, and
  answers with a chat call on gpt-4o-mini. Each answer is judged by `gen_ai.evaluation.result`
  events (relevance with a score and a pass/fail label, and sometimes faithfulness). One chat
  call in eight is rate limited first (status 429, `error.type` `RateLimitError`, a
  `Retry-After` header attribute) and retried.
- `vllm`: the model server's `llm_request` SERVER span for each Llama call, child of the
  client span, with vLLM's latency attributes (queue, prefill, decode, TTFT, e2e).

It draws from its own seeded `random.Random`, so the main mix (and its tests) are unchanged.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

AGENT_SERVICE = "trip-agent"
SERVER_SERVICE = "vllm"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
ANSWER_MODEL = "gpt-4o-mini"
TOOLS = ("web_search", "lookup_booking")


@dataclass(slots=True)
class AgentStats:
    runs: int = 0
    tool_calls: dict[str, int] = field(default_factory=dict)
    tool_errors: int = 0
    evaluations: int = 0
    rate_limited: int = 0
    server_spans: int = 0


def _provider(name: str, exporter: SpanExporter, delay_ms: float) -> TracerProvider:
    resource = Resource.create(
        {"service.name": name, "service.namespace": "acme", "deployment.environment.name": "demo"}
    )
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay_ms))
    return tp


class AgentRuns:
    """Emits agent runs through two providers around the given exporters."""

    def __init__(
        self,
        agent_exporter: SpanExporter,
        server_exporter: SpanExporter,
        seed: int | None = None,
        schedule_delay_ms: float = 1000.0,
    ) -> None:
        self.rng = random.Random(None if seed is None else seed + 1)
        self.providers = [
            _provider(AGENT_SERVICE, agent_exporter, schedule_delay_ms),
            _provider(SERVER_SERVICE, server_exporter, schedule_delay_ms),
        ]
        self.tracer: Tracer = self.providers[0].get_tracer("trip_agent", "0.3.0")
        self.server: Tracer = self.providers[1].get_tracer("vllm.tracing", "0.8.5")
        self.stats = AgentStats()

    def shutdown(self) -> None:
        for tp in self.providers:
            tp.force_flush(10_000)
        for tp in self.providers:
            tp.shutdown()

    # -- one run ------------------------------------------------------------------------------

    def emit(self, end_ns: int | None = None) -> None:
        """One agent run, laid out backwards from `end_ns` (default now) like the main mix."""
        end = time.time_ns() if end_ns is None else end_ns
        steps = self._plan()
        total_ns = sum(d for _, d in steps) + 4_000_000
        t = end - total_ns
        http = self.tracer.start_span(
            "POST /v1/trips",
            kind=SpanKind.SERVER,
            start_time=t,
            attributes={"http.request.method": "POST", "http.route": "/v1/trips"},
        )
        ctx = trace.set_span_in_context(http)
        wf = self._internal(
            "invoke_workflow trip-planner",
            ctx,
            t + 500_000,
            {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "trip-planner"},
        )
        wctx = trace.set_span_in_context(wf, ctx)
        agent = self._internal(
            "invoke_agent planner",
            wctx,
            t + 1_000_000,
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "planner",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": ANSWER_MODEL,
            },
        )
        actx = trace.set_span_in_context(agent, wctx)
        t += 2_000_000
        for kind, d in steps:
            if kind == "llama":
                self._llama(actx, t, d)
            elif kind == "retrieval":
                self._retrieval(actx, t, d)
            elif kind == "answer":
                t = self._answer(actx, t, d)
                continue
            else:
                self._tool(actx, kind, t, d)
            t += d
        agent.end(end_time=t + 500_000)
        wf.end(end_time=t + 1_000_000)
        http.set_attribute("http.response.status_code", 200)
        http.end(end_time=end)
        self.stats.runs += 1

    def _plan(self) -> list[tuple[str, int]]:
        rng = self.rng
        ms = 1_000_000
        steps = [("llama", int(rng.uniform(300, 1500) * ms))]
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            steps.append((rng.choice(TOOLS), int(rng.lognormvariate(-1.5, 0.8) * 1000 * ms)))
        if rng.random() < 0.6:
            steps.append(("retrieval", int(rng.uniform(40, 250) * ms)))
        steps.append(("answer", int(rng.uniform(600, 3000) * ms)))
        return steps

    def _internal(self, name: str, ctx: Context, t: int, attrs: dict[str, Any]) -> Span:
        return self.tracer.start_span(
            name, context=ctx, kind=SpanKind.INTERNAL, start_time=t, attributes=attrs
        )

    def _tool(self, ctx: Context, tool: str, t: int, d: int) -> None:
        span = self._internal(
            f"execute_tool {tool}",
            ctx,
            t,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.id": f"call_{self.rng.getrandbits(40):010x}",
            },
        )
        self.stats.tool_calls[tool] = self.stats.tool_calls.get(tool, 0) + 1
        if tool == "lookup_booking" and self.rng.random() < 0.15:
            span.set_attribute("error.type", "TimeoutError")
            span.set_status(Status(StatusCode.ERROR, "booking service timed out"))
            self.stats.tool_errors += 1
        span.end(end_time=t + d)

    def _retrieval(self, ctx: Context, t: int, d: int) -> None:
        span = self._internal(
            "retrieval trips-index",
            ctx,
            t,
            {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.data_source.id": "trips-index",
            },
        )
        rctx = trace.set_span_in_context(span, ctx)
        n = self.rng.randint(8, 40)
        emb = self.tracer.start_span(
            "embeddings text-embedding-3-small",
            context=rctx,
            kind=SpanKind.CLIENT,
            start_time=t + d // 10,
            attributes={
                "gen_ai.operation.name": "embeddings",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.response.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": n,
            },
        )
        emb.end(end_time=t + d // 2)
        span.end(end_time=t + d)

    def _llama(self, ctx: Context, t: int, d: int) -> None:
        """A streamed call to the self-hosted model, and vLLM's server span under it."""
        rng = self.rng
        out, n_in = rng.randint(40, 400), rng.randint(300, 1200)
        queue = rng.uniform(0.002, 0.08) * (8 if rng.random() < 0.1 else 1)
        prefill = rng.uniform(0.02, 0.15)
        server_ttft = queue + prefill
        network = rng.uniform(0.01, 0.06)  # client TTFT - server TTFT
        d_s = max(d / 1e9, server_ttft + network + 0.05)
        decode = d_s - network - server_ttft
        span = self.tracer.start_span(
            f"chat {LLAMA}",
            context=ctx,
            kind=SpanKind.CLIENT,
            start_time=t,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "vllm",
                "gen_ai.request.model": LLAMA,
                "gen_ai.response.model": LLAMA,
                "gen_ai.request.stream": True,
                "gen_ai.response.time_to_first_chunk": round(server_ttft + network, 6),
                "gen_ai.usage.input_tokens": n_in,
                "gen_ai.usage.output_tokens": out,
                "server.address": "vllm.internal",
                "server.port": 8000,
            },
        )
        sctx = trace.set_span_in_context(span, ctx)
        s0 = t + int(network / 2 * 1e9)
        server = self.server.start_span(
            "llm_request",
            context=sctx,
            kind=SpanKind.SERVER,
            start_time=s0,
            attributes={
                "gen_ai.response.model": LLAMA,
                "gen_ai.request.id": f"chatcmpl-{rng.getrandbits(64):016x}",
                "gen_ai.usage.prompt_tokens": n_in,
                "gen_ai.usage.completion_tokens": out,
                "gen_ai.latency.time_in_queue": round(queue, 6),
                "gen_ai.latency.time_in_model_prefill": round(prefill, 6),
                "gen_ai.latency.time_in_model_decode": round(decode, 6),
                "gen_ai.latency.time_in_model_inference": round(prefill + decode, 6),
                "gen_ai.latency.time_to_first_token": round(server_ttft, 6),
                "gen_ai.latency.e2e": round(server_ttft + decode, 6),
            },
        )
        server.end(end_time=s0 + int((server_ttft + decode) * 1e9))
        self.stats.server_spans += 1
        first = t + int((server_ttft + network) * 1e9)
        step = int(decode * 1e9) // 4
        for i in range(4):  # streamed chunks: TTFT and time per output chunk
            span.add_event("gen_ai.choice.chunk", timestamp=first + i * step)
        span.end(end_time=t + int(d_s * 1e9))

    def _answer(self, ctx: Context, t: int, d: int) -> int:
        """The final chat call (after a rate-limited try, sometimes), judged by evaluations."""
        rng = self.rng
        if rng.random() < 0.125:
            failed = self.tracer.start_span(
                f"chat {ANSWER_MODEL}",
                context=ctx,
                kind=SpanKind.CLIENT,
                start_time=t,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": ANSWER_MODEL,
                    "error.type": "RateLimitError",
                    "http.response.status_code": 429,
                    "http.response.header.retry-after": (str(rng.choice((1, 2, 5, 20))),),
                },
            )
            failed.set_status(Status(StatusCode.ERROR, "Rate limit reached for requests"))
            failed.end(end_time=t + 80_000_000)
            self.stats.rate_limited += 1
            t += 100_000_000
        span = self.tracer.start_span(
            f"chat {ANSWER_MODEL}",
            context=ctx,
            kind=SpanKind.CLIENT,
            start_time=t,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": ANSWER_MODEL,
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.usage.input_tokens": rng.randint(800, 3000),
                "gen_ai.usage.output_tokens": rng.randint(80, 400),
            },
        )
        end = t + d
        relevance = min(1.0, max(0.0, rng.gauss(0.78, 0.15)))
        span.add_event(
            "gen_ai.evaluation.result",
            {
                "gen_ai.evaluation.name": "relevance",
                "gen_ai.evaluation.score.value": round(relevance, 3),
                "gen_ai.evaluation.score.label": "pass" if relevance >= 0.5 else "fail",
            },
            timestamp=end,
        )
        self.stats.evaluations += 1
        if rng.random() < 0.5:
            faithful = rng.random() < 0.9
            span.add_event(
                "gen_ai.evaluation.result",
                {
                    "gen_ai.evaluation.name": "faithfulness",
                    "gen_ai.evaluation.score.value": 1.0 if faithful else 0.0,
                    "gen_ai.evaluation.score.label": "faithful" if faithful else "unfaithful",
                },
                timestamp=end,
            )
            self.stats.evaluations += 1
        span.end(end_time=end)
        return end
