"""Agent, workflow and tool spans of real agent instrumentations through the sidecar's chain.

The spans come from the libraries themselves (tests/instrumentation/agent_runs.py, one
subprocess per library, against the fake LLM server): OpenLLMetry's Traceloop SDK decorators
with its openai instrumentation, and the OpenAI Agents SDK traced by OpenInference and by the
OTel contrib `opentelemetry-instrumentation-openai-agents-v2` (semconv GenAI spans).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.fakellm import FakeLLM
from tests.instrumentation import agent_runs
from tests.instrumentation.conftest import REQUIRE_ENV
from tests.processors._chain import Chain

AGENT = "gen_ai_invoke_agent_duration_seconds"
TOOL = "gen_ai_execute_tool_duration_seconds"
WORKFLOW = "gen_ai_workflow_duration_seconds"
TOOL_CALLS = "gen_ai_invoke_agent_tool_calls"


def _installed(setup: str) -> bool:
    for module in agent_runs.SETUPS[setup]:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except ModuleNotFoundError:
            return False
    return True


@pytest.fixture(scope="module")
def spans(
    fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], ExportTraceServiceRequest]:
    tmp = tmp_path_factory.mktemp("agent_runs")
    cache: dict[str, ExportTraceServiceRequest] = {}

    def get(setup: str) -> ExportTraceServiceRequest:
        if not _installed(setup):
            msg = f"{setup}: not installed: {agent_runs.SETUPS[setup]}"
            if os.environ.get(REQUIRE_ENV) == "1":
                pytest.fail(msg)
            pytest.skip(msg)
        if setup not in cache:
            raw = agent_runs.run(setup, fake_llm.base_url, Path(tmp) / f"{setup}.pb")
            cache[setup] = ExportTraceServiceRequest.FromString(raw)
        return cache[setup]

    return get


def test_openllmetry_workflow_agent_task_tool(
    spans: Callable[[str], ExportTraceServiceRequest],
) -> None:
    chain = Chain(tool_prices={agent_runs.TOOL: 0.002})
    batch = chain(spans("openllmetry"))
    # the chat call under the agent is the one model call; the decorator spans are not calls
    [call] = batch.calls
    assert (call.operation, call.request_model, call.counted) == ("chat", agent_runs.MODEL, True)
    [(wl, w)] = chain.series(WORKFLOW)
    assert wl == {
        "service_name": "agents-openllmetry",
        "gen_ai_workflow_name": "trip",
        "error_type": "",
    }
    [(al, a)] = chain.series(AGENT)
    assert al["gen_ai_agent_name"] == agent_runs.AGENT and al["error_type"] == ""
    [(tl, t)] = chain.series(TOOL)
    assert tl["gen_ai_tool_name"] == agent_runs.TOOL
    assert tl["gen_ai_agent_name"] == agent_runs.AGENT
    # the spans nest: the workflow lasts longer than the agent, the agent than its tool
    assert w.total > a.total > t.total > 0
    [(_, runs)] = chain.series(TOOL_CALLS)
    assert (runs.count, runs.total) == (1, 1)  # the tool sits under a task, not the agent
    assert chain.total("llm_pipeline_tool_cost_usd") == pytest.approx(0.002)
    assert chain.count("gen_ai_client_operation_duration_seconds") == 1


def test_openinference_openai_agents(spans: Callable[[str], ExportTraceServiceRequest]) -> None:
    chain = Chain()
    batch = chain(spans("openinference"))
    [call] = batch.calls  # the model call ("generation", LLM); agent and tool spans are not
    assert (call.operation, call.request_model, call.input_tokens) == ("chat", agent_runs.MODEL, 12)
    # the Agents SDK's trace ("Agent workflow", a root AGENT span naming no agent) is the
    # workflow; the agent span is the planner's
    [(wl, _)] = chain.series(WORKFLOW)
    assert wl["gen_ai_workflow_name"] == "Agent workflow"
    [(al, _)] = chain.series(AGENT)
    assert al["gen_ai_agent_name"] == agent_runs.AGENT
    [(tl, _)] = chain.series(TOOL)
    assert (tl["gen_ai_tool_name"], tl["gen_ai_agent_name"]) == (agent_runs.TOOL, agent_runs.AGENT)
    [(_, runs)] = chain.series(TOOL_CALLS)
    assert (runs.count, runs.total) == (1, 1)


def test_semconv_openai_agents(spans: Callable[[str], ExportTraceServiceRequest]) -> None:
    """The OTel contrib `opentelemetry-instrumentation-openai-agents-v2` (0.1.0): semconv GenAI
    spans `invoke_agent planner`, `execute_tool get_weather`, `chat gpt-4o-mini`, under a root
    SERVER span named after the SDK's trace ("Agent workflow", `gen_ai.operation.name`
    invoke_agent, no agent name). It stamps its default agent name ("OpenAI Agent") on the
    chat and tool spans and marks the SDK's task/turn spans `gen_ai.operation.name` "unknown"."""
    chain = Chain()
    batch = chain(spans("semconv"))
    # one model call, with the fake server's usage for the tool-call reply: prompt = words +
    # 3 per message ("Plan a trip." + "plan a trip" = 12), completion = 5
    [call] = batch.calls
    assert (call.operation, call.request_model, call.counted) == ("chat", agent_runs.MODEL, True)
    assert (call.input_tokens, call.output_tokens) == (12, 5)
    # the agent span (with gen_ai.request.model) is not a model call: usage and cost are the
    # chat call's only
    assert chain.count("gen_ai_client_operation_duration_seconds") == 1
    assert chain.total("gen_ai_client_tokens", gen_ai_token_type="input") == 12
    assert chain.total("gen_ai_client_tokens", gen_ai_token_type="output") == 5
    assert chain.count("gen_ai_client_token_usage") == 2  # input and output of one call
    # gpt-4o-mini at $0.15 / $0.60 per 1M tokens
    assert chain.total("gen_ai_client_cost_usd") == pytest.approx(12 * 0.15e-6 + 5 * 0.6e-6)
    [(al, a)] = chain.series(AGENT)
    assert al == {
        "service_name": "agents-semconv",
        "gen_ai_agent_name": agent_runs.AGENT,
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": agent_runs.MODEL,
        "error_type": "",
    }
    assert a.count == 1
    [(tl, t)] = chain.series(TOOL)
    # the tool span's own gen_ai.agent.name is the library's default, not the planner's
    assert tl == {
        "service_name": "agents-semconv",
        "gen_ai_tool_name": agent_runs.TOOL,
        "gen_ai_tool_type": "function",
        "gen_ai_agent_name": "OpenAI Agent",
        "error_type": "",
    }
    assert t.count == 1  # the fake's one tool call
    assert a.total > t.total > 0
    [(rl, runs)] = chain.series(TOOL_CALLS)
    assert rl["gen_ai_agent_name"] == agent_runs.AGENT
    assert (runs.count, runs.total) == (1, 1)
    # the root "Agent workflow" span names no agent: neither an agent run nor a workflow
    assert chain.series(WORKFLOW) == []
