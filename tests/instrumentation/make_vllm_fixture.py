"""Writes tests/testdata/conventions/vllm.json: vLLM server spans as vLLM's source writes them.

vLLM needs torch and a GPU, so it cannot run here; this builds, with the OTel SDK, the span
vLLM's tracing code builds (names and shape from vllm-project/vllm: `vllm/tracing.py`
`SpanAttributes`; v1 `OutputProcessor.do_tracing` in `vllm/v1/engine/output_processor.py`;
v0 `LLMEngine.create_trace_span` in `vllm/engine/llm_engine.py`): one span named `llm_request`,
kind SERVER, started at the request's arrival and ended when it finished, in the caller's trace
when the request carried a `traceparent`.

    python -m tests.instrumentation.make_vllm_fixture

Scenarios (resource attribute `test.scenario`):
- `v1`: the current engine: latencies and token counts, no model name.
- `v0`: the v0 engine: the same plus `gen_ai.response.model` and `gen_ai.request.best_of`.
- `behind_client`: an OpenAI client span (opentelemetry-instrumentation-openai-v2, default
  mode) -> an HTTP client span (non-LLM) -> vLLM's `llm_request`, one trace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.receivers.decode import to_json

OUT = Path(__file__).resolve().parents[1] / "testdata" / "conventions" / "vllm.json"
T0 = 1_700_000_000_000_000_000  # ns
MS = 1_000_000

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
PROMPT_TOKENS = 12
COMPLETION_TOKENS = 9
TTFT_S = 0.183
E2E_S = 0.912


def vllm_attributes(request_id: str) -> dict[str, Any]:
    """`do_tracing`'s attribute dict (v1), with the values of one request."""
    queued, prefill, decode = 0.004, 0.179, 0.729
    return {
        "gen_ai.latency.time_to_first_token": TTFT_S,
        "gen_ai.latency.e2e": E2E_S,
        "gen_ai.latency.time_in_queue": queued,
        "gen_ai.usage.prompt_tokens": PROMPT_TOKENS,
        "gen_ai.usage.completion_tokens": COMPLETION_TOKENS,
        "gen_ai.latency.time_in_model_prefill": prefill,
        "gen_ai.latency.time_in_model_decode": decode,
        "gen_ai.latency.time_in_model_inference": prefill + decode,
        "gen_ai.request.id": request_id,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.7,
        "gen_ai.request.n": 1,
    }


def build() -> dict[str, Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    merged = ExportTraceServiceRequest()

    def scenario(name: str, body: Any) -> None:
        exporter = InMemorySpanExporter()
        providers: dict[str, TracerProvider] = {}

        def provider_for(service: str) -> TracerProvider:
            if service not in providers:
                p = TracerProvider(resource=Resource.create({"service.name": service}))
                p.add_span_processor(SimpleSpanProcessor(exporter))
                providers[service] = p
            return providers[service]

        body(provider_for)
        req = encode_spans(exporter.get_finished_spans())
        for rs in req.resource_spans:
            for k, v in (("test.scenario", name), ("test.library", "vllm (from source)")):
                rs.resource.attributes.append(KeyValue(key=k))
                rs.resource.attributes[-1].value.string_value = v
            merged.resource_spans.append(rs)

    def server_span(provider_for: Any, attributes: dict[str, Any], context: Any) -> None:
        tracer = provider_for("vllm").get_tracer("vllm.llm_engine")
        span = tracer.start_span(
            "llm_request",
            kind=trace.SpanKind.SERVER,
            context=context,
            start_time=T0 + 10 * MS,
            attributes=attributes,
        )
        span.end(end_time=T0 + 10 * MS + int(E2E_S * 1000) * MS)

    def v1(provider_for: Any) -> None:
        server_span(provider_for, vllm_attributes("cmpl-v1-0"), None)

    def v0(provider_for: Any) -> None:
        attributes = {
            "gen_ai.response.model": MODEL,
            **vllm_attributes("cmpl-v0-0"),
            "gen_ai.request.best_of": 1,
        }
        server_span(provider_for, attributes, None)

    def behind_client(provider_for: Any) -> None:
        client = provider_for("app").get_tracer("opentelemetry.instrumentation.openai_v2")
        http = provider_for("app").get_tracer("opentelemetry.instrumentation.httpx")
        chat = client.start_span(
            f"chat {MODEL}",
            kind=trace.SpanKind.CLIENT,
            start_time=T0,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": MODEL,
                "gen_ai.system": "openai",
                "server.address": "vllm.internal",
                "server.port": 8000,
            },
        )
        ctx = trace.set_span_in_context(chat)
        post = http.start_span(
            "POST", kind=trace.SpanKind.CLIENT, context=ctx, start_time=T0 + 2 * MS
        )
        # vLLM's span: a child of the HTTP span, from the traceparent it received.
        server_span(
            provider_for, vllm_attributes("chatcmpl-behind-0"), trace.set_span_in_context(post)
        )
        post.end(end_time=T0 + 930 * MS)
        chat.set_attribute("gen_ai.response.model", MODEL)
        chat.set_attribute("gen_ai.response.id", "chatcmpl-behind-0")
        chat.set_attribute("gen_ai.usage.input_tokens", PROMPT_TOKENS)
        chat.set_attribute("gen_ai.usage.output_tokens", COMPLETION_TOKENS)
        chat.end(end_time=T0 + 935 * MS)

    scenario("v1", v1)
    scenario("v0", v0)
    scenario("behind_client", behind_client)
    data: dict[str, Any] = json.loads(to_json(merged))
    return data


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")
