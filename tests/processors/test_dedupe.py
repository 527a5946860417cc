"""dedupe's response-id rule: the single-call fast path and the general path together equal
the rule applied to every group alike (kept here as the oracle), across batches."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model import LLMCall
from pipeline.processors.dedupe import Dedupe, DedupeConfig


def _reference(seen: OrderedDict[str, str], calls: list[LLMCall], limit: int) -> None:
    groups: dict[str, list[tuple[LLMCall, str]]] = {}
    for call in calls:
        if call.counted and call.response_id:
            groups.setdefault(call.response_id, []).append((call, call.scope or "-"))
    for rid, members in groups.items():
        first = seen.get(rid)
        keep: LLMCall | None
        if first is None:
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


def _call(rid: str, scope: str, start: int, end: int, counted: bool) -> LLMCall:
    return LLMCall(
        span=None,
        service_name="s",
        convention="otel_genai",
        trace_id=b"t" * 16,
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
        st.integers(0, 5),
        st.integers(0, 5),
        st.booleans(),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(_calls, max_size=5), limit=st.sampled_from([2, 100]))
def test_response_matching_equals_the_rule_applied_to_every_group(
    batches: list[list[tuple[str, str, int, int, bool]]], limit: int
) -> None:
    dedupe = Dedupe(DedupeConfig(max_entries=limit))
    seen: OrderedDict[str, str] = OrderedDict()
    for batch in batches:
        fast = [_call(*c) for c in batch]
        slow = [_call(*c) for c in batch]
        dedupe._match_responses(fast)
        _reference(seen, slow, limit)
        assert [c.counted for c in fast] == [c.counted for c in slow]
        assert list(dedupe._responses.items()) == list(seen.items())
