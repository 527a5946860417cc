"""agents: agent, workflow, tool and retrieval spans into the semantic-conventions-genai metrics.

The span roles come from the convention tables (`conventions/roles.py`). Per role:

- agent (`invoke_agent`, OpenLLMetry `agent`, OpenInference `AGENT`):
  `gen_ai.invoke_agent.duration` and `gen_ai.invoke_agent.tool_calls` (the tool spans under
  the agent span, not under a nested agent);
- tool: `gen_ai.execute_tool.duration`, and `llm_pipeline_tool_cost_usd` for a tool with a
  price in `tool_prices` (USD per call);
- workflow (`invoke_workflow`, OpenLLMetry `workflow`, an OpenInference root `CHAIN`):
  `gen_ai.workflow.duration`;
- retrieval (`retrieval`, OpenInference `RETRIEVER`): `gen_ai.retrieval.duration`.

Spans in these roles are not model calls even when they carry a model and token counts (an
`invoke_agent` span may sum its calls' usage): they are taken out of the batch's calls here,
before `dedupe`, `cost` and `metrics`, so the chat metrics never count them.

Tool calls per agent run: children end before their parents and are exported no later, so
spans are walked in end-time order and each passes its tool count up to its parent, across
batches through `pending` (bounded), until it reaches an agent span.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..aggregation import DURATION_BUCKETS, Aggregation
from ..model import TraceBatch, service_name_of
from .conventions import roles
from .conventions.roles import AGENT, CHAIN, NOT_A_CALL, RETRIEVAL, TOOL, WORKFLOW
from .normalize import tidy_error_type
from .plausible import MAX_DURATION_NS

# semantic-conventions-genai's advice for gen_ai.invoke_agent.duration and
# gen_ai.workflow.duration (gen_ai.execute_tool.duration uses the client duration buckets)
AGENT_BUCKETS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4, 204.8, 409.6)
WORKFLOW_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
CALL_COUNT_BUCKETS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
# gen_ai.operation.name values normalize keeps as calls that are not model calls
NOT_CALL_OPERATIONS = frozenset(
    {"invoke_agent", "create_agent", "invoke_workflow", "execute_tool", "retrieval"}
)
_STATUS_ERROR = 2
_KIND_INTERNAL = 1  # SPAN_KIND_INTERNAL; 0 is UNSPECIFIED
_NO_ATTRS: dict[str, str] = {}
MAX_PENDING = 50_000  # spans waiting for an agent ancestor (tool counts), oldest dropped
_PREFIXES = ("invoke_agent ", "execute_tool ", "invoke_workflow ")


def _strip(name: str) -> str:
    for p in _PREFIXES:
        if name.startswith(p):
            return name[len(p) :]
    return name


def error_type(span: Any, attrs: Mapping[str, str]) -> str:
    raw = attrs.get("error.type")
    if raw:
        return tidy_error_type(raw)
    if span.status.code != _STATUS_ERROR:
        return ""
    for ev in span.events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.type" and kv.value.string_value:
                    return tidy_error_type(kv.value.string_value)
    return "_OTHER"


class AgentMetrics:
    """The agents processor (see the module docstring)."""

    def __init__(
        self,
        agg: Aggregation,
        tool_prices: Mapping[str, float] | None = None,
        max_series: int = 2000,
    ) -> None:
        self.agg = agg
        self.tool_prices = dict(tool_prices or {})
        n = max_series
        h, c = agg.histogram, agg.counter
        keep = ("error_type",)
        self.agent_duration = h(
            "gen_ai_invoke_agent_duration_seconds",
            "Duration of an agent invocation (invoke_agent span).",
            (
                "service_name",
                "gen_ai_agent_name",
                "gen_ai_provider_name",
                "gen_ai_request_model",
                "error_type",
            ),
            AGENT_BUCKETS,
            n,
            keep,
        )
        self.tool_duration = h(
            "gen_ai_execute_tool_duration_seconds",
            "Duration of a tool execution (execute_tool span).",
            (
                "service_name",
                "gen_ai_tool_name",
                "gen_ai_tool_type",
                "gen_ai_agent_name",
                "error_type",
            ),
            DURATION_BUCKETS,
            n,
            keep,
        )
        self.workflow_duration = h(
            "gen_ai_workflow_duration_seconds",
            "Duration of a GenAI workflow (invoke_workflow span, or a root chain).",
            ("service_name", "gen_ai_workflow_name", "error_type"),
            WORKFLOW_BUCKETS,
            n,
            keep,
        )
        self.retrieval_duration = h(
            "gen_ai_retrieval_duration_seconds",
            "Duration of a retrieval operation (retrieval / RETRIEVER span).",
            ("service_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type"),
            DURATION_BUCKETS,
            n,
            keep,
        )
        self.tool_calls = h(
            "gen_ai_invoke_agent_tool_calls",
            "Tool calls made by one agent invocation (its own, not nested agents').",
            ("service_name", "gen_ai_agent_name"),
            CALL_COUNT_BUCKETS,
            n,
        )
        self.tool_cost = c(
            "llm_pipeline_tool_cost_usd",
            "Cost of paid tool calls in USD (tool_prices, per call).",
            ("service_name", "gen_ai_tool_name", "gen_ai_agent_name"),
            n,
        )
        self._pending: dict[tuple[bytes, bytes], int] = {}

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        now = time.time()
        rows: list[
            tuple[int, str, Any, dict[str, str], str]
        ] = []  # end, service, span, attrs, role
        keys = roles.KEYS
        for rs in batch.request.resource_spans:
            service = service_name_of(rs.resource)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    # Only INTERNAL (or unset) spans, or spans named as a role operation, can
                    # have a role: the model calls (CLIENT) and requests (SERVER) are not read,
                    # which keeps this ~1 us a span. The role and name attributes are strings
                    # (another type reads as "").
                    if span.kind > _KIND_INTERNAL and not span.name.startswith(roles.SPAN_NAMES):
                        attrs, role = _NO_ATTRS, ""
                    else:
                        attrs = {
                            kv.key: kv.value.string_value
                            for kv in span.attributes
                            if kv.key in keys
                        }
                        role = roles.role_of(attrs) if attrs else ""
                    rows.append((span.end_time_unix_nano, service, span, attrs, role))
        if not rows:
            return batch
        if not self._pending and not any(r[4] for r in rows):
            # no role here and no tool count waiting for an ancestor: only the calls to sift
            if batch.calls:
                batch.calls = [c for c in batch.calls if c.operation not in NOT_CALL_OPERATIONS]
            return batch
        rows.sort(key=lambda r: r[0])
        not_calls = {r[2].span_id for r in rows if r[4] in NOT_A_CALL}
        if batch.calls:
            batch.calls = [
                c
                for c in batch.calls
                if c.span_id not in not_calls and c.operation not in NOT_CALL_OPERATIONS
            ]
        # span id -> (role, name) of agent spans in this batch, for a tool's agent name
        agents = {r[2].span_id: self._agent_name(r[2], r[3]) for r in rows if r[4] == AGENT}
        parents = {r[2].span_id: r[2].parent_span_id for r in rows}
        with self.agg.lock:
            for _, service, span, attrs, role in rows:
                self._record(span, service, attrs, role, agents, parents, now)
        return batch

    def _agent_name(self, span: Any, attrs: Mapping[str, str]) -> str:
        return roles.name_of(attrs, "agent") or roles.name_of(attrs, "entity") or _strip(span.name)

    def _tool_agent(
        self, span: Any, agents: Mapping[bytes, str], parents: Mapping[bytes, bytes]
    ) -> str:
        """The name of the nearest agent span above this one in the batch, or ""."""
        pid = span.parent_span_id
        for _ in range(64):  # a cycle in hostile input must not hang the walk
            if not pid:
                return ""
            if pid in agents:
                return agents[pid]
            pid = parents.get(pid, b"")
        return ""

    def _record(
        self,
        span: Any,
        service: str,
        attrs: dict[str, str],
        role: str,
        agents: Mapping[bytes, str],
        parents: Mapping[bytes, bytes],
        now: float,
    ) -> None:
        tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
        if role == AGENT and not pid and roles.is_trace_wrapper(attrs):
            role = WORKFLOW
        pending = self._pending
        tools = pending.pop((tid, sid), 0)
        d_ns = span.end_time_unix_nano - span.start_time_unix_nano
        timed = 0 <= d_ns <= MAX_DURATION_NS
        d = d_ns / 1e9
        if role == AGENT:
            name = agents.get(sid) or self._agent_name(span, attrs)
            ex = (tid, sid, d, now)
            if timed:
                key = (
                    service,
                    name,
                    roles.name_of(attrs, "provider"),
                    roles.name_of(attrs, "model"),
                    error_type(span, attrs),
                )
                self.agent_duration.observe(key, d, ex)
            self.tool_calls.observe((service, name), tools, (tid, sid, tools, now))
            return  # a run's tools are its own: nothing passes to the parent
        if role == TOOL:
            name = (
                roles.name_of(attrs, "tool") or roles.name_of(attrs, "entity") or _strip(span.name)
            )
            agent = roles.name_of(attrs, "agent") or self._tool_agent(span, agents, parents)
            if timed:
                key = (
                    service,
                    name,
                    roles.name_of(attrs, "tool_type"),
                    agent,
                    error_type(span, attrs),
                )
                self.tool_duration.observe(key, d, (tid, sid, d, now))
            price = self.tool_prices.get(name)
            if price is not None:
                self.tool_cost.add((service, name, agent), price, (tid, sid, price, now))
            tools += 1
        elif role == WORKFLOW or (role == CHAIN and not pid):
            name = (
                (roles.name_of(attrs, "workflow") if role == WORKFLOW else "")
                or roles.name_of(attrs, "entity")
                or _strip(span.name)
            )
            if timed:
                wkey = (service, name, error_type(span, attrs))
                self.workflow_duration.observe(wkey, d, (tid, sid, d, now))
        elif role == RETRIEVAL and timed:
            rkey = (
                service,
                roles.name_of(attrs, "provider"),
                roles.name_of(attrs, "model"),
                error_type(span, attrs),
            )
            self.retrieval_duration.observe(rkey, d, (tid, sid, d, now))
        if tools and pid:
            k = (tid, pid)
            pending[k] = pending.get(k, 0) + tools
            if len(pending) > MAX_PENDING:
                del pending[next(iter(pending))]
