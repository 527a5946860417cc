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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..aggregation import TOKEN_BUCKETS, Aggregation
from ..model import LLMCall, TraceBatch
from .cost import COST_DIGITS
from .dimensions import INVALID, MAX_VALUE_LEN
from .enrich import encode_attribute

if TYPE_CHECKING:
    from .attribution import _Node, _Trace

CONVERSATION_KEY = "gen_ai.conversation.id"
AGENT_PREFIXES = ("invoke_agent", "invoke_workflow")
AGENT_NAME_KEY = "gen_ai.agent.name"
OPERATION_KEY = "gen_ai.operation.name"
UNKNOWN_ROOT = "__unknown__"
ROLLUP_PREFIX = "llm_pipeline.rollup."
# fmt: off
COST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)
CALL_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
# fmt: on
_MAX_CONVERSATIONS = 100_000  # ids remembered to count each conversation once


def _label(value: str) -> str:
    return value if len(value) <= MAX_VALUE_LEN and value.isprintable() else INVALID


def agent_name(span: Any, name: str) -> str | None:
    """The agent's name when `span` is an agent or workflow run (by span name, as the GenAI
    conventions name them, or by `gen_ai.operation.name`), else None."""
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
    return None if agent is None else _label(agent)


def write_attributes(batch: TraceBatch, span: Any, attributes: dict[str, Any]) -> None:
    """Add attributes to a span of the batch, as enrich does for a span it has no byte
    position of: merged into the parsed span (after enrich's deferred additions), and the
    request re-serialized on export."""
    data = b"".join(encode_attribute(k, v) for k, v in attributes.items())
    batch.touch()  # merges enrich's deferred additions; the request is re-serialized
    span.MergeFromString(data)


def write_rollup(batch: TraceBatch, span: Any, totals: tuple[float, int, int, int]) -> None:
    cost, n_in, n_out, n_calls = totals
    write_attributes(
        batch,
        span,
        {
            ROLLUP_PREFIX + "cost_usd": float(cost),
            ROLLUP_PREFIX + "input_tokens": n_in,
            ROLLUP_PREFIX + "output_tokens": n_out,
            ROLLUP_PREFIX + "llm_calls": n_calls,
        },
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
                node = nodes.get(p)
                p = node.parent if node is not None else b""
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

    def arrived(
        self,
        trace: _Trace,
        sid: bytes,
        node: _Node,
        span: Any,
        batch: TraceBatch,
        write: Callable[[TraceBatch, Any, tuple[float, int, int, int]], None],
    ) -> None:
        """A root or agent span arrived: roll up what is beneath it onto it."""
        totals = beneath(trace, None if not node.parent else sid)
        if totals[3]:
            write(batch, span, totals)

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
            for span_id, node in trace.nodes.items():
                if node.agent is None:
                    continue
                c, _, _, n = beneath(trace, span_id)
                akey = (node.service, node.agent)
                self.agent_cost.observe(akey, c, (tid, span_id, c, wall))
                self.agent_calls.observe(akey, n, (tid, span_id, n, wall))
