"""The demo's agent runs (pipeline/demo/agentic.py) through the sidecar's processors: every
metric the Agents dashboard reads is fed, and agrees with what the demo says it sent."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from pipeline.demo import agentic
from tests.processors._chain import Chain


def test_agent_runs_feed_the_agent_metrics() -> None:
    exporter = InMemorySpanExporter()
    runs = agentic.AgentRuns(exporter, exporter, seed=3, schedule_delay_ms=50)
    for _ in range(120):
        runs.emit()
    runs.shutdown()
    stats = runs.stats
    spans = exporter.get_finished_spans()
    chain = Chain(tool_prices={"web_search": 0.01})
    # the two services' spans in separate requests, as their SDKs would send them
    for service in (agentic.AGENT_SERVICE, agentic.SERVER_SERVICE):
        mine = [s for s in spans if s.resource.attributes["service.name"] == service]
        chain(ExportTraceServiceRequest.FromString(encode_spans(mine).SerializeToString()))

    assert chain.count("gen_ai_invoke_agent_duration_seconds") == stats.runs == 120
    assert chain.count("gen_ai_workflow_duration_seconds") == stats.runs
    runs_tools = chain.series("gen_ai_invoke_agent_tool_calls", gen_ai_agent_name="planner")
    assert sum(s.total for _, s in runs_tools) == sum(stats.tool_calls.values())
    for tool, n in stats.tool_calls.items():
        assert chain.count("gen_ai_execute_tool_duration_seconds", gen_ai_tool_name=tool) == n
    assert (
        chain.count("gen_ai_execute_tool_duration_seconds", error_type="TimeoutError")
        == (stats.tool_errors)
        > 0
    )
    assert chain.total("llm_pipeline_tool_cost_usd") == pytest.approx(
        0.01 * stats.tool_calls["web_search"]
    )
    assert chain.count("gen_ai_retrieval_duration_seconds") > 0
    assert chain.count("llm_pipeline_evaluation_score") == stats.evaluations
    assert chain.total("llm_pipeline_rate_limited_calls") == stats.rate_limited > 0
    assert chain.count("llm_pipeline_rate_limit_retry_after_seconds") == stats.rate_limited
    assert chain.count("llm_pipeline_server_queue_time_seconds") == stats.server_spans
    assert chain.count("llm_pipeline_server_decode_tokens_per_second") == stats.server_spans
    gap = chain.series("llm_pipeline_client_server_ttft_gap_seconds")
    [(labels, s)] = gap
    assert labels["service_name"] == agentic.AGENT_SERVICE
    assert s.count == stats.server_spans
    assert 0.01 <= s.total / s.count <= 0.06  # the demo's network share of TTFT
    # the agent and workflow spans are not model calls: agent's model is priced once per call
    assert (
        chain.count(
            "gen_ai_client_operation_duration_seconds", gen_ai_operation_name="invoke_agent"
        )
        == 0
    )
