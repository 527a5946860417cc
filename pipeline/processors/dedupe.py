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
   Two counted LLM calls with the same `gen_ai.response.id` written by different
   instrumentation scopes are one call: within a batch the innermost (latest start) is counted;
   across batches, the first one seen. Same-scope repeats are left alone (servers that reuse
   ids), and `match_response_ids: false` turns the rule off.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .._native import span_parents
from ..model import LLMCall, TraceBatch


@dataclass
class DedupeConfig:
    # Spans not yet arrived that have an LLM descendant, and response ids seen: at most this
    # many of each are remembered (about 100 bytes an entry).
    max_entries: int = 100_000
    match_response_ids: bool = True

    def validate(self) -> None:
        if self.max_entries < 1:
            raise ValueError("max_entries must be >= 1")


def _parents(batch: TraceBatch) -> dict[bytes, bytes | None]:
    """trace_id + span_id -> trace_id + parent_span_id (None for a root) of every span."""
    if span_parents is not None and batch.raw is not None and not batch.modified:
        try:
            return span_parents(batch.raw)  # from the received bytes: no span materialized
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
        # response id -> instrumentation scope of the counted call that had it.
        self._responses: OrderedDict[str, str] = OrderedDict()

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
        # response id -> its call, or a list of its calls when several have it (rare: one
        # list per id would cost more than the matching)
        groups: dict[str, LLMCall | list[LLMCall]] = {}
        for call in calls:
            if call.counted and (rid := call.response_id):
                group = groups.get(rid)
                if group is None:
                    groups[rid] = call
                elif isinstance(group, list):
                    group.append(call)
                else:
                    groups[rid] = [group, call]
        seen = self._responses
        limit = self.config.max_entries
        for rid, group in groups.items():
            first = seen.get(rid)
            if not isinstance(group, list):  # the one call with this id in the batch
                scope = group.scope or "-"
                if first is None:
                    seen[rid] = scope
                    if len(seen) > limit:
                        seen.popitem(last=False)
                else:
                    seen.move_to_end(rid)
                    if scope != first:
                        group.counted = False
                continue
            members = [(call, call.scope or "-") for call in group]
            if first is None:
                # Within the batch the innermost call (latest start, then earliest end) wins.
                keep: LLMCall | None
                keep, first = max(members, key=lambda m: (m[0].start_ns, -m[0].end_ns))
                seen[rid] = first
                if len(seen) > limit:
                    seen.popitem(last=False)
            else:
                seen.move_to_end(rid)
                keep = None
            for call, scope in members:
                if call is not keep and scope != first:
                    call.counted = False
