"""dedupe's response-id rule: what the processor remembers (`_Seen` tuples in a bounded LRU)
and flags equals the rule applied to every group (kept here as the oracle, on the calls
themselves, pairwise), across batches."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model import LLMCall
from pipeline.processors.dedupe import _PER_ID, Dedupe, DedupeConfig


def _can_be_one(a: LLMCall, b: LLMCall) -> bool:
    return (
        (a.scope or "-") != (b.scope or "-")
        and (a.trace_id == b.trace_id or a.service_name == b.service_name)
        and a.start_ns <= b.end_ns
        and b.start_ns <= a.end_ns
    )


def _reference(
    seen: OrderedDict[str, list[LLMCall]], calls: list[LLMCall], limit: int, per_id: int
) -> None:
    """Every id's counted calls, earlier batches' first, then this batch's innermost first:
    a call is dropped when it can be one call with a call kept before it."""
    groups: dict[str, list[LLMCall]] = {}
    for call in calls:
        if call.counted and call.response_id:
            groups.setdefault(call.response_id, []).append(call)
    for rid, members in groups.items():
        if rid in seen:
            seen.move_to_end(rid)
        else:
            seen[rid] = []
            if len(seen) > limit:
                seen.popitem(last=False)
        kept = seen.get(rid, [])
        for call in sorted(members, key=lambda c: (-c.start_ns, c.end_ns)):
            if any(_can_be_one(call, other) for other in kept):
                call.counted = False
            else:
                kept.append(call)
        del kept[:-per_id]


def _call(
    rid: str, scope: str, service: str, trace: int, start: int, end: int, counted: bool
) -> LLMCall:
    return LLMCall(
        span=None,
        service_name=service,
        convention="otel_genai",
        trace_id=bytes([trace]) * 16,
        span_id=b"s" * 8,
        parent_span_id=b"",
        start_ns=start,
        end_ns=end,
        scope=scope,
        response_id=rid,
        counted=counted,
    )


_calls = st.lists(
    st.tuples(
        st.sampled_from(["", "r1", "r2", "r3", "r4", "r5"]),
        st.sampled_from(["", "openai", "litellm"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 2),
        st.integers(0, 5),
        st.integers(0, 5),
        st.booleans(),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(_calls, max_size=5), limit=st.sampled_from([2, 100]))
def test_response_matching_equals_the_rule_applied_to_every_group(
    batches: list[list[tuple[str, str, str, int, int, int, bool]]], limit: int
) -> None:
    dedupe = Dedupe(DedupeConfig(max_entries=limit))
    seen: OrderedDict[str, list[LLMCall]] = OrderedDict()
    for batch in batches:
        fast = [_call(*c) for c in batch]
        slow = [_call(*c) for c in batch]
        dedupe._match_responses(fast)
        _reference(seen, slow, limit, _PER_ID)
        assert [c.counted for c in fast] == [c.counted for c in slow]
        assert list(dedupe._responses) == list(seen)
        for rid, kept in seen.items():
            assert [(s.scope, s.trace_id, s.start_ns) for s in dedupe._responses[rid]] == [
                (c.scope or "-", c.trace_id, c.start_ns) for c in kept
            ]
