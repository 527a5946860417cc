"""agents: agent, workflow, tool and retrieval spans of each convention into the
semantic-conventions-genai metrics, read from real OTLP requests through the chain."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.processors.agents import AGENT_BUCKETS, WORKFLOW_BUCKETS
from tests.instrumentation.otlp import Span, build_request, llm
from tests.processors._chain import Chain

AGENT = "gen_ai_invoke_agent_duration_seconds"
TOOL = "gen_ai_execute_tool_duration_seconds"
WORKFLOW = "gen_ai_workflow_duration_seconds"
TOOL_CALLS = "gen_ai_invoke_agent_tool_calls"
RETRIEVAL = "gen_ai_retrieval_duration_seconds"


def semconv_agent(span: int, parent: int = 0, name: str = "support", **kw: Any) -> Span:
    # semconv allows an invoke_agent span to carry the model and the run's summed usage
    a = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": name,
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m",
        "gen_ai.usage.input_tokens": 20,
        "gen_ai.usage.output_tokens": 10,
    }
    return Span(span, parent, name=f"invoke_agent {name}", attrs=a, **kw)


def semconv_tool(span: int, parent: int, tool: str = "web_search", **kw: Any) -> Span:
    a = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
    a.update(kw.pop("attrs", {}))
    return Span(span, parent, name=f"execute_tool {tool}", attrs=a, **kw)


def test_semconv_agent_run_tools_cost_and_no_double_count() -> None:
    chain = Chain(tool_prices={"web_search": 0.01})
    spans = [
        semconv_agent(1, start_ms=0, end_ms=3000),
        llm(2, 1, start_ms=10, end_ms=400),
        semconv_tool(3, 1, start_ms=400, end_ms=700, attrs={"gen_ai.tool.type": "function"}),
        semconv_tool(4, 1, tool="lookup_order", start_ms=700, end_ms=800, status=2),
        llm(5, 1, start_ms=800, end_ms=2900),
    ]
    batch = chain(build_request(spans, "bot"))
    # the agent span is not a model call: only the two chats count, 2 x (10 in, 5 out)
    assert sorted(c.span_id[-1] for c in batch.calls) == [2, 5]
    assert chain.total("gen_ai_client_tokens", gen_ai_token_type="input") == 20
    assert chain.count("gen_ai_client_operation_duration_seconds") == 2
    assert (
        chain.count(
            "gen_ai_client_operation_duration_seconds", gen_ai_operation_name="invoke_agent"
        )
        == 0
    )

    [(labels, s)] = chain.series(AGENT)
    assert labels == {
        "service_name": "bot",
        "gen_ai_agent_name": "support",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "m",
        "error_type": "",
    }
    assert s.total == pytest.approx(3.0)
    assert s.counts[AGENT_BUCKETS.index(3.2)] == 1
    assert s.exemplars[AGENT_BUCKETS.index(3.2)][:2] == (
        spans[0] and batch.request.resource_spans[0].scope_spans[0].spans[0].trace_id,
        (1).to_bytes(8, "big"),
    )

    [(ws, w)] = chain.series(TOOL, gen_ai_tool_name="web_search")
    assert ws["gen_ai_agent_name"] == "support" and ws["gen_ai_tool_type"] == "function"
    assert w.total == pytest.approx(0.3)
    [(ls, _)] = chain.series(TOOL, gen_ai_tool_name="lookup_order")
    assert ls["error_type"] == "_OTHER"

    [(_, runs)] = chain.series(TOOL_CALLS, gen_ai_agent_name="support")
    assert runs.count == 1 and runs.total == 2
    [(cl, cost)] = chain.series("llm_pipeline_tool_cost_usd")
    assert cl == {
        "service_name": "bot",
        "gen_ai_tool_name": "web_search",
        "gen_ai_agent_name": "support",
    }
    assert cost.value == pytest.approx(0.01)


def test_tool_calls_across_batches_and_nested_agents() -> None:
    chain = Chain()
    # a planner agent calls a sub-agent; each runs its own tools. The tools (children end
    # first) arrive in an earlier batch than their agents, one through an untyped step span.
    first = [
        semconv_tool(3, 2, start_ms=10, end_ms=20),
        semconv_tool(4, 9, start_ms=30, end_ms=40),
        Span(9, 1, name="plan step", start_ms=25, end_ms=45),
        semconv_tool(5, 1, start_ms=50, end_ms=60),
    ]
    second = [
        semconv_agent(2, 1, name="researcher", start_ms=5, end_ms=22),
        semconv_agent(1, name="planner", start_ms=0, end_ms=100),
    ]
    chain(build_request(first))
    chain(build_request(second))
    [(_, inner)] = chain.series(TOOL_CALLS, gen_ai_agent_name="researcher")
    [(_, outer)] = chain.series(TOOL_CALLS, gen_ai_agent_name="planner")
    assert (inner.count, inner.total) == (1, 1)
    assert (outer.count, outer.total) == (1, 2)  # its own two, not the researcher's
    assert chain.agents._pending == {}


def test_openllmetry_kinds() -> None:
    chain = Chain()
    tl = "traceloop.span.kind"
    spans = [
        Span(
            1,
            name="trip.workflow",
            attrs={
                tl: "workflow",
                "traceloop.entity.name": "trip",
                "traceloop.workflow.name": "trip",
            },
            end_ms=8000,
        ),
        Span(
            2,
            1,
            name="planner.agent",
            attrs={
                tl: "agent",
                "traceloop.entity.name": "planner",
                "traceloop.workflow.name": "trip",
            },
            start_ms=10,
            end_ms=7000,
        ),
        Span(
            3,
            2,
            name="pick.task",
            attrs={tl: "task", "traceloop.entity.name": "pick"},
            start_ms=20,
            end_ms=600,
        ),
        Span(
            4,
            3,
            name="flights.tool",
            attrs={tl: "tool", "traceloop.entity.name": "flights"},
            start_ms=30,
            end_ms=500,
        ),
    ]
    chain(build_request(spans))
    [(wl, w)] = chain.series(WORKFLOW)
    assert wl["gen_ai_workflow_name"] == "trip" and w.total == pytest.approx(8.0)
    assert w.counts[WORKFLOW_BUCKETS.index(10.0)] == 1
    [(al, _)] = chain.series(AGENT)
    assert al["gen_ai_agent_name"] == "planner"
    [(tl_, t)] = chain.series(TOOL)
    assert tl_["gen_ai_tool_name"] == "flights" and tl_["gen_ai_agent_name"] == "planner"
    assert t.total == pytest.approx(0.47)
    [(_, runs)] = chain.series(TOOL_CALLS)
    assert runs.total == 1  # through the task span


def test_openinference_kinds_and_retrieval_apart_from_chat() -> None:
    chain = Chain(semconv="both")
    k = "openinference.span.kind"
    spans = [
        Span(1, name="Agent workflow", attrs={k: "CHAIN"}, end_ms=2500),
        Span(
            2,
            1,
            name="Assistant",
            attrs={k: "AGENT", "graph.node.name": "Assistant"},
            start_ms=5,
            end_ms=2400,
        ),
        Span(
            3,
            2,
            name="get_weather",
            attrs={k: "TOOL", "tool.name": "get_weather"},
            start_ms=10,
            end_ms=90,
        ),
        Span(4, 2, name="step", attrs={k: "CHAIN"}, start_ms=100, end_ms=900),
        # a retriever that names an embedding model: not a model call, its own duration
        Span(
            5,
            4,
            name="retrieve",
            attrs={
                k: "RETRIEVER",
                "embedding.model_name": "text-embedding-3-small",
                "llm.provider": "openai",
            },
            start_ms=110,
            end_ms=300,
        ),
        Span(
            6,
            4,
            name="embed",
            attrs={
                k: "EMBEDDING",
                "embedding.model_name": "text-embedding-3-small",
                "llm.token_count.prompt": 8,
            },
            start_ms=120,
            end_ms=200,
        ),
        llm(7, 2, start_ms=1000, end_ms=2000),
    ]
    batch = chain(build_request(spans))
    assert sorted((c.span_id[-1], c.operation) for c in batch.calls) == [
        (6, "embeddings"),
        (7, "chat"),
    ]
    [(wl, _)] = chain.series(WORKFLOW)
    assert wl["gen_ai_workflow_name"] == "Agent workflow"  # the root chain only
    [(al, _)] = chain.series(AGENT)
    assert al["gen_ai_agent_name"] == "Assistant"
    [(tl_, _)] = chain.series(TOOL)
    assert tl_["gen_ai_agent_name"] == "Assistant"
    [(rl, r)] = chain.series(RETRIEVAL)
    assert rl["gen_ai_request_model"] == "text-embedding-3-small" and r.total == pytest.approx(0.19)
    # embeddings: their own families in the development names, and never a chat duration
    assert chain.count("gen_ai_client_inference_duration_seconds") == 1
    assert (
        chain.count("gen_ai_client_inference_duration_seconds", gen_ai_operation_name="embeddings")
        == 0
    )
    assert chain.count("gen_ai_client_embeddings_duration_seconds") == 1
    assert chain.total("gen_ai_client_embeddings_operation_input_tokens") == 8
    # v1.41's one duration family tells them apart by operation; retrieval is not in it
    assert (
        chain.count("gen_ai_client_operation_duration_seconds", gen_ai_operation_name="chat") == 1
    )
    assert (
        chain.count("gen_ai_client_operation_duration_seconds", gen_ai_operation_name="embeddings")
        == 1
    )
    assert chain.count("gen_ai_client_operation_duration_seconds") == 2


def test_semconv_workflow_and_create_agent() -> None:
    chain = Chain()
    spans = [
        Span(
            1,
            name="invoke_workflow triage",
            attrs={"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "triage"},
            end_ms=65_000,
            status=2,
        ),
        Span(
            2,
            1,
            name="create_agent helper",
            attrs={
                "gen_ai.operation.name": "create_agent",
                "gen_ai.agent.name": "helper",
                "gen_ai.request.model": "m",
                "gen_ai.provider.name": "openai",
            },
            end_ms=50,
        ),
    ]
    batch = chain(build_request(spans))
    assert batch.calls == []
    [(wl, w)] = chain.series(WORKFLOW)
    assert wl == {"service_name": "svc", "gen_ai_workflow_name": "triage", "error_type": "_OTHER"}
    assert w.counts[WORKFLOW_BUCKETS.index(120.0)] == 1
    assert chain.count(AGENT) == 0


def test_hostile_spans_do_not_break_it() -> None:
    chain = Chain()
    spans = [
        semconv_agent(1, 1, start_ms=100, end_ms=0),  # its own parent, ends before it starts
        semconv_tool(2, 2, start_ms=0, end_ms=10),  # a cycle
        Span(3, attrs={"gen_ai.operation.name": 7, "traceloop.span.kind": ""}),
    ]
    chain(build_request(spans))
    assert chain.count(AGENT) == 0  # no duration for a negative one
    assert chain.count(TOOL_CALLS) == 1


def test_a_remote_agent_client_span_is_read_by_its_name() -> None:
    # a remote agent's invoke_agent span is CLIENT: read because of its semconv name
    chain = Chain()
    agent = semconv_agent(1, end_ms=1500, kind=3)
    chat_client = llm(2, 1, kind=3, attrs={"gen_ai.operation.name": "chat"})
    batch = chain(build_request([agent, chat_client]))
    assert [c.span_id[-1] for c in batch.calls] == [2]
    [(labels, _)] = chain.series(AGENT)
    assert labels["gen_ai_agent_name"] == "support"
