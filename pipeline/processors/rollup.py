"""rollup: cost per request, per agent run and per conversation (`attribution.requests`).

A request is one trace: when its root span arrives (or `attribution.idle_s` passes without it)
the cost and tokens of its counted calls are observed in `llm_pipeline_request_cost_usd` and
`llm_pipeline_request_tokens` {service_name, root_span_name}, with the trace as exemplar;
each agent run in it (an `invoke_agent` / `invoke_workflow` span) in
`llm_pipeline_agent_run_cost_usd` and `llm_pipeline_agent_run_llm_calls`
{service_name, gen_ai_agent_name}, over the calls beneath it. A root or agent span that arrives
after calls beneath it (they end first, so usually) gets `llm_pipeline.rollup.*` attributes
with the totals of the calls that arrived up to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..aggregation import TOKEN_BUCKETS, Aggregation
from ..model import LLMCall, TraceBatch, service_name_of
from .cost import COST_DIGITS
from .dimensions import INVALID, MAX_VALUE_LEN
from .enrich import encode_attribute, register_keys

if TYPE_CHECKING:
    from .ancestry import SpanIndex

CONVERSATION_KEY = "gen_ai.conversation.id"
AGENT_PREFIXES = ("invoke_agent", "invoke_workflow")
AGENT_NAME_KEY = "gen_ai.agent.name"
OPERATION_KEY = "gen_ai.operation.name"
UNKNOWN_ROOT = "__unknown__"
ROLLUP_PREFIX = "llm_pipeline.rollup."
ROLLUP_KEYS = tuple(
    ROLLUP_PREFIX + k for k in ("cost_usd", "input_tokens", "output_tokens", "llm_calls")
)
register_keys(*ROLLUP_KEYS)
# fmt: off
COST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)
CALL_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
# fmt: on
_MAX_CONVERSATIONS = 100_000  # ids remembered to count each conversation once
_NODES_PER_TRACE = 20  # the span budget: this many per open trace on average


@dataclass(slots=True)
class _Node:
    """A root or agent run span."""

    parent: bytes
    name: str
    service: str
    agent: str | None  # the agent's name, for an invoke_agent / invoke_workflow span


@dataclass(slots=True)
class _Trace:
    last: float
    nodes: dict[bytes, bytes] = field(default_factory=dict)  # span id -> parent span id
    agents: dict[bytes, _Node] = field(default_factory=dict)
    # counted calls so far: (span id, parent span id, cost, input tokens, output tokens)
    calls: list[tuple[bytes, bytes, float, int, int]] = field(default_factory=list)
    root: _Node | None = None
    root_id: bytes = b""
    service: str = ""  # the first call's, for a request whose root never came


def _label(value: str) -> str:
    return value if len(value) <= MAX_VALUE_LEN and value.isprintable() else INVALID


def agent_name(span: Any, name: str) -> str | None:
    """The agent's name when `span` is an agent or workflow run (by span name, as the GenAI
    conventions name them, or by `gen_ai.operation.name`), else None; not yet a label (the
    native reader, native/src/dims.rs, reads the same from the bytes)."""
    operation = named = ""
    for kv in span.attributes:
        if kv.key == OPERATION_KEY:
            operation = kv.value.string_value
        elif kv.key == AGENT_NAME_KEY:
            named = kv.value.string_value
    if name.startswith(AGENT_PREFIXES):
        agent: str | None = named or (name.split(" ", 1)[1] if " " in name else "")
    elif operation in AGENT_PREFIXES:
        agent = named
    else:
        agent = None
    return agent


@dataclass(slots=True)
class _SpanAt:
    """A span of the batch by its place: found in the parsed request only when merged."""

    batch: TraceBatch
    at: tuple[int, int, int]  # resource, scope, span index
    wire_span: tuple[int, int] | None

    @property
    def span(self) -> Any:
        r, s, i = self.at
        return self.batch.request.resource_spans[r].scope_spans[s].spans[i]


def write_rollup(batch: TraceBatch, span: _SpanAt, totals: tuple[float, int, int, int]) -> None:
    """The totals as `llm_pipeline.rollup.*` attributes of the span, appended as enrich's
    are (a byte edit of the received bytes when they are kept)."""
    cost, n_in, n_out, n_calls = totals
    batch.append_to_spans(
        span,
        b"".join(
            (
                encode_attribute(ROLLUP_KEYS[0], float(cost)),
                encode_attribute(ROLLUP_KEYS[1], n_in),
                encode_attribute(ROLLUP_KEYS[2], n_out),
                encode_attribute(ROLLUP_KEYS[3], n_calls),
            )
        ),
    )


def beneath(trace: _Trace, sid: bytes | None) -> tuple[float, int, int, int]:
    """(cost, input tokens, output tokens, calls) of the trace's calls below span `sid`
    (None: all of them), as far as the spans between are known."""
    cost, n_in, n_out, n = 0.0, 0, 0, 0
    nodes = trace.nodes
    for span_id, parent, c, i, o in trace.calls:
        if sid is not None:
            p, depth = parent, 0
            while p and p != sid and depth < 256:
                p = nodes.get(p, b"")
                depth += 1
            if p != sid or span_id == sid:
                continue
        cost, n_in, n_out, n = cost + c, n_in + i, n_out + o, n + 1
    return cost, n_in, n_out, n


class RequestMetrics:
    """The request, agent-run and conversation families, and the rollup attributes."""

    def __init__(self, agg: Aggregation, dimensions: tuple[str, ...]) -> None:
        self.agg = agg
        h, c = agg.histogram, agg.counter
        by_root = ("service_name", "root_span_name")
        by_agent = ("service_name", "gen_ai_agent_name")
        self.request_cost = h(
            "llm_pipeline_request_cost_usd",
            "Cost in USD of the counted LLM calls of one request (trace).",
            by_root,
            COST_BUCKETS,
        )
        self.request_tokens = h(
            "llm_pipeline_request_tokens",
            "Input plus output tokens of the counted LLM calls of one request (trace).",
            by_root,
            TOKEN_BUCKETS,
        )
        self.agent_cost = h(
            "llm_pipeline_agent_run_cost_usd",
            "Cost in USD of the LLM calls beneath one agent or workflow run.",
            by_agent,
            COST_BUCKETS,
        )
        self.agent_calls = h(
            "llm_pipeline_agent_run_llm_calls",
            "Counted LLM calls beneath one agent or workflow run.",
            by_agent,
            CALL_BUCKETS,
        )
        self.conversation_cost = c(
            "llm_pipeline_conversation_cost_usd",
            "Cost in USD of calls in a conversation (gen_ai.conversation.id), by dimension.",
            dimensions,
            digits=COST_DIGITS,
        )
        self.conversations = c(
            "llm_pipeline_conversations",
            "Conversations (distinct gen_ai.conversation.id) seen, by dimension.",
            dimensions,
        )
        self._seen: dict[str, None] = {}

    def conversation(self, call: LLMCall, conversation: str | None, wall: float) -> None:
        if not conversation:
            return
        dims = call.dimensions
        with self.agg.lock:
            if call.cost_usd is not None:
                ex = (call.trace_id, call.span_id, call.cost_usd, wall)
                self.conversation_cost.add(dims, call.cost_usd, ex)
            if conversation not in self._seen:
                if len(self._seen) >= _MAX_CONVERSATIONS:
                    del self._seen[next(iter(self._seen))]
                self._seen[conversation] = None
                self.conversations.add(dims, 1)

    def observe(self, tid: bytes, trace: _Trace, wall: float) -> None:
        """The trace is complete (root seen, or idle): its request and agent runs."""
        if not trace.calls:
            return
        root = trace.root
        first = trace.calls[0][0]
        if root is not None:
            key = (root.service, _label(root.name))
        else:
            key = (trace.service, UNKNOWN_ROOT)
        cost, n_in, n_out, _ = beneath(trace, None)
        sid = trace.root_id or first
        with self.agg.lock:
            self.request_cost.observe(key, cost, (tid, sid, cost, wall))
            self.request_tokens.observe(key, n_in + n_out, (tid, sid, n_in + n_out, wall))
            for span_id, node in trace.agents.items():
                if node.agent is None:
                    continue
                c, _, _, n = beneath(trace, span_id)
                akey = (node.service, node.agent)
                self.agent_cost.observe(akey, c, (tid, span_id, c, wall))
                self.agent_calls.observe(akey, n, (tid, span_id, n, wall))


class RequestTracker:
    """Follows every trace with counted calls until its root span arrives (or `idle_s` passes,
    or `max_open_traces` is exceeded: the oldest is given up), then observes the request and
    its agent runs. At most `max_open_traces` traces and `20 * max_open_traces` spans."""

    def __init__(self, metrics: RequestMetrics, idle_s: float, max_open_traces: int) -> None:
        self.metrics = metrics
        self.idle_s = idle_s
        self.max_open_traces = max_open_traces
        self._max_nodes = max_open_traces * _NODES_PER_TRACE
        self._node_count = 0
        self.traces: dict[bytes, _Trace] = {}
        self.given_up = metrics.agg.counter(
            "llm_pipeline_requests_given_up",
            "Requests (traces) observed before their root span arrived, by reason (idle, "
            "max_open_traces): root_span_name is __unknown__.",
            ("reason",),
        )

    def add(self, batch: TraceBatch, calls: list[LLMCall], index: SpanIndex) -> None:
        """The batch's counted calls and the spans of the traces followed; roll up onto the
        root and agent spans that came; observe the traces whose root came."""
        now = time.monotonic()
        traces = self.traces
        for call in calls:
            if call.trace_id not in traces:
                self._open(call.trace_id, now)
        if not traces:
            return
        arrivals: list[tuple[bytes, _Trace, bytes, _Node, _SpanAt]] = []
        services: dict[int, str] = {}
        for tid, sid, parent, name, agent, wire, at in index.nodes(traces):
            trace = traces[tid]
            trace.last = now
            if sid not in trace.nodes:
                self._node_count += 1
            trace.nodes[sid] = parent
            if agent is None and parent:
                continue
            service = services.get(at[0])
            if service is None:
                service = services[at[0]] = service_name_of(batch.resource(at[0]))
            node = _Node(parent, name or "", service, None if agent is None else _label(agent))
            if node.agent is not None:
                trace.agents[sid] = node
            if not parent:
                trace.root, trace.root_id = node, sid
            arrivals.append((tid, trace, sid, node, _SpanAt(batch, at, wire)))
        for call in calls:
            followed = traces.get(call.trace_id)
            if followed is None:  # given up (max_open_traces) while this batch's opened
                continue
            followed.service = followed.service or call.service_name
            followed.calls.append(
                (
                    call.span_id,
                    call.parent_span_id,
                    call.cost_usd or 0.0,
                    call.input_tokens or 0,
                    call.output_tokens or 0,
                )
            )
        for _, trace, sid, node, span in arrivals:  # once the batch's calls are in
            totals = beneath(trace, None if not node.parent else sid)
            if totals[3]:
                write_rollup(batch, span, totals)
        wall = time.time()
        for tid, _, _, node, _ in arrivals:  # a root came: the request is complete
            if not node.parent and tid in traces:
                self._close(tid, wall, None)

    def _open(self, tid: bytes, now: float) -> _Trace:
        traces = self.traces
        while traces and (
            len(traces) >= self.max_open_traces or self._node_count >= self._max_nodes
        ):
            self._close(next(iter(traces)), time.time(), "max_open_traces")
        trace = traces[tid] = _Trace(now)
        return trace

    def _close(self, tid: bytes, wall: float, reason: str | None) -> None:
        trace = self.traces.pop(tid)
        self._node_count -= len(trace.nodes)
        if reason is not None and trace.calls:
            with self.metrics.agg.lock:
                self.given_up.add((reason,), 1)
        self.metrics.observe(tid, trace, wall)

    def flush(self, force: bool = False) -> None:
        """Observe the traces idle for `idle_s` (all of them with `force`, at shutdown)."""
        limit = time.monotonic() - self.idle_s
        wall = time.time()
        for tid, trace in list(self.traces.items()):
            if force or trace.last <= limit:
                self._close(tid, wall, "idle")
