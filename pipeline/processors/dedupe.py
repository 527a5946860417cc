"""dedupe: count the tokens and cost of one model call once, however many spans describe it.

Frameworks and proxies nest spans (agent -> chain -> client call; proxy request -> raw request),
and two instrumentations can see the same call. Two rules set `LLMCall.counted = False`:

1. Nesting. An LLM-call span is counted unless an LLM-call span below it in the same trace (a
   descendant, possibly through non-LLM spans) is counted: the innermost call is the one
   nearest the provider's bill. Server spans (vLLM) are LLM calls like any other, so a client
   span above a vLLM server span is not counted and the server span is. Spans usually arrive
   children first (the SDK exports a span when it ends), but a child and its ancestors may come
   in different batches, so every span of every batch feeds a bounded LRU of the
   (trace_id, span_id) of spans not seen yet that have an LLM descendant: when such a span
   arrives, it is not counted if it is an LLM call, and the flag moves on to its parent.
   Within a batch the order of spans does not matter (no sort, so a skewed clock between
   services cannot break it). Limits: an LLM ancestor that arrived in an earlier batch than its
   LLM descendant was already counted and stays counted (metrics cannot be taken back; rare, as
   a parent ends after its children); past `max_entries` pending ancestors the oldest is
   forgotten, and is counted if it is an LLM call when it arrives.
2. The same response seen twice. LiteLLM writes its span after the call returned, so an
   instrumented openai client beneath it is not its descendant (another trace, or a sibling).
   Two counted LLM calls with the same `gen_ai.response.id` are one call when they can be:
   written by different instrumentation scopes (same-scope repeats are different calls), with
   overlapping times (both spans cover the one HTTP exchange), and either in the same trace or
   from the same service. Servers reuse ids (Ollama's OpenAI-compatible API draws
   `chatcmpl-<n>` from 999 values), so an id alone says little: two calls in different
   services and traces are never merged (a look-alike must not cost a call; at worst a
   double-instrumented call across services without a common trace counts twice). The same
   service is enough without the same trace because LiteLLM's span starts a trace of its own
   (tests/instrumentation/test_nesting.py: one process, two traces, LiteLLM's span covering
   the client's). Within a batch the innermost call (latest start) is counted; across batches,
   the first one seen. `match_response_ids: false` turns the rule off. Limit: the service is
   its `service.name`, which replicas share (`LLMCall` carries no resource identity).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from .._native import span_parents
from ..model import LLMCall, TraceBatch


@dataclass
class DedupeConfig:
    # Spans not yet arrived that have an LLM descendant, and response ids seen: at most this
    # many of each are remembered (about 100 bytes an entry; a reused id keeps its last
    # `_PER_ID` counted calls).
    max_entries: int = 100_000
    match_response_ids: bool = True

    def validate(self) -> None:
        if self.max_entries < 1:
            raise ValueError("max_entries must be >= 1")


_PER_ID = 8


class _Seen(NamedTuple):
    """What decides whether two calls with one response id can be the same call."""

    scope: str
    service: str
    trace_id: bytes
    start_ns: int
    end_ns: int


def _seen(call: LLMCall) -> _Seen:
    return _Seen(call.scope or "-", call.service_name, call.trace_id, call.start_ns, call.end_ns)


def _same_call(a: _Seen, b: _Seen) -> bool:
    return (
        a.scope != b.scope
        and (a.trace_id == b.trace_id or a.service == b.service)
        and a.start_ns <= b.end_ns
        and b.start_ns <= a.end_ns
    )


def _parents(batch: TraceBatch) -> dict[bytes, bytes | None]:
    """trace_id + span_id -> trace_id + parent_span_id (None for a root) of every span."""
    data = batch.received
    if span_parents is not None and data is not None:
        try:
            return span_parents(data)  # from the received bytes: no span materialized
        except ValueError:
            pass  # not the wire shape expected: the parsed message decides
    parents: dict[bytes, bytes | None] = {}
    for rs in batch.request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                tid = span.trace_id
                psid = span.parent_span_id
                parents[tid + span.span_id] = tid + psid if psid else None
    return parents


class Dedupe:
    """The dedupe processor: `batch -> batch`, keeping state across batches."""

    def __init__(self, config: DedupeConfig | None = None) -> None:
        self.config = config or DedupeConfig()
        self.config.validate()
        # trace_id + span_id of spans not yet seen that have an LLM-call descendant.
        self._pending: OrderedDict[bytes, None] = OrderedDict()
        # response id -> the counted calls that had it (the last `_PER_ID`).
        self._responses: OrderedDict[str, list[_Seen]] = OrderedDict()

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        calls = batch.calls
        pending = self._pending
        if not calls and not pending:
            return batch
        call_keys = [c.trace_id + c.span_id for c in calls]
        parents = _parents(batch)  # every span of the batch -> its parent
        earlier: list[bytes] = []  # spans of this batch flagged by an earlier batch
        if pending:
            earlier = [key for key in parents if key in pending]
            for key in earlier:
                del pending[key]

        flagged = set(earlier)  # spans of this batch with an LLM-call descendant
        for key in (*call_keys, *earlier):
            p = parents.get(key)
            while p is not None:
                if p in parents:  # in this batch
                    if p in flagged:
                        break  # its own ancestors are (or will be) walked from it
                    flagged.add(p)
                    p = parents[p]
                else:  # not arrived yet: remember it
                    self._remember(p)
                    break

        if flagged:
            for call, key in zip(calls, call_keys, strict=True):
                if key in flagged:
                    call.counted = False
        if self.config.match_response_ids:
            self._match_responses(calls)
        return batch

    def _remember(self, key: bytes) -> None:
        pending = self._pending
        if key in pending:
            pending.move_to_end(key)
            return
        pending[key] = None
        if len(pending) > self.config.max_entries:
            pending.popitem(last=False)

    def _match_responses(self, calls: list[LLMCall]) -> None:
        groups: dict[str, list[LLMCall]] = {}
        for call in calls:
            if call.counted and (rid := call.response_id):
                group = groups.get(rid)
                if group is None:
                    groups[rid] = [call]
                else:
                    group.append(call)
        seen = self._responses
        limit = self.config.max_entries
        for rid, group in groups.items():
            kept = seen.get(rid)
            if kept is None:
                kept = seen[rid] = []
                if len(seen) > limit:
                    seen.popitem(last=False)
            else:
                seen.move_to_end(rid)
            if len(group) > 1:  # innermost first (latest start, then earliest end): counted
                group.sort(key=lambda c: (-c.start_ns, c.end_ns))
            for call in group:
                mine = _seen(call)
                if kept and any(_same_call(mine, other) for other in kept):
                    call.counted = False
                else:
                    kept.append(mine)
            if len(kept) > _PER_ID:
                del kept[:-_PER_ID]
