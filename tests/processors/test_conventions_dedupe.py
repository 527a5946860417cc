"""dedupe: one model call is counted once however its spans nest or arrive (rules in dedupe.py)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model import TraceBatch
from pipeline.processors.dedupe import Dedupe, DedupeConfig
from pipeline.processors.normalize import normalize
from tests.instrumentation.otlp import Span, build_request, llm, span_id, trace_id


def run(dedupe: Dedupe, spans: list[Span]) -> dict[int, bool]:
    """span number -> counted, for the LLM calls of one batch."""
    batch = TraceBatch(request=build_request(spans))
    normalize(batch)
    dedupe(batch)
    return {int.from_bytes(c.span_id, "big"): c.counted for c in batch.calls}


def test_the_innermost_call_is_counted_through_non_llm_spans() -> None:
    # agent (app) -> llm wrapper (framework) -> chain (app) -> http (app) -> client call
    spans = [
        Span(1, name="agent"),
        llm(2, parent=1, name="framework llm"),
        Span(3, parent=2, name="chain"),
        Span(4, parent=3, name="POST"),
        llm(5, parent=4, name="client chat"),
    ]
    assert run(Dedupe(), spans) == {2: False, 5: True}


def test_siblings_and_unrelated_traces_are_all_counted() -> None:
    spans = [
        Span(1, name="agent"),
        llm(2, parent=1),
        llm(3, parent=1),
        # another trace reusing the same span ids: no leakage across traces
        Span(1, trace=2, name="agent"),
        llm(2, parent=1, trace=2),
    ]
    batch = TraceBatch(request=build_request(spans))
    normalize(batch)
    Dedupe()(batch)
    assert [c.counted for c in batch.calls] == [True, True, True]


def test_a_long_chain_counts_only_the_innermost() -> None:
    spans = [llm(1)] + [llm(n, parent=n - 1) for n in range(2, 60)]
    random.Random(7).shuffle(spans)  # order within a batch does not matter
    result = run(Dedupe(), spans)
    assert [n for n, c in result.items() if c] == [59]


@pytest.mark.parametrize("order", ["children_first", "parents_first"])
def test_order_within_a_batch_does_not_matter(order: str) -> None:
    spans = [llm(3, parent=2), Span(2, parent=1), llm(1)]
    if order == "parents_first":
        spans.reverse()
    assert run(Dedupe(), spans) == {1: False, 3: True}


def test_ancestors_arriving_in_later_batches_are_not_counted() -> None:
    d = Dedupe()
    assert run(d, [llm(4, parent=3)]) == {4: True}
    assert list(d._pending) == [trace_id(1) + span_id(3)]
    assert run(d, [Span(3, parent=2, name="chain")]) == {}  # non-LLM: passes the flag up
    assert run(d, [llm(2, parent=1, name="framework llm")]) == {2: False}
    assert run(d, [Span(1, name="agent")]) == {}
    assert not d._pending  # arrived spans are forgotten


def test_an_llm_call_flagged_earlier_flags_its_own_parent_in_the_same_batch() -> None:
    d = Dedupe()
    run(d, [llm(3, parent=2)])
    assert run(d, [llm(2, parent=1), llm(1)]) == {1: False, 2: False}


def test_a_parent_that_arrived_before_its_child_stays_counted() -> None:
    # Documented limit: metrics of an earlier batch cannot be taken back.
    d = Dedupe()
    assert run(d, [llm(1)]) == {1: True}
    assert run(d, [llm(2, parent=1)]) == {2: True}


def test_the_pending_set_is_bounded() -> None:
    d = Dedupe(DedupeConfig(max_entries=2))
    for parent in (10, 11, 12):
        run(d, [llm(parent + 100, parent=parent)])
    assert len(d._pending) == 2
    # 10 was evicted (oldest): it is counted when it arrives; 12 is not.
    assert run(d, [llm(10), llm(12)]) == {10: True, 12: False}


def test_a_server_span_below_a_client_span_is_the_one_counted() -> None:
    vllm = Span(
        3,
        parent=2,
        name="llm_request",
        kind=2,
        attrs={
            "gen_ai.latency.time_to_first_token": 0.1,
            "gen_ai.latency.e2e": 0.5,
            "gen_ai.usage.prompt_tokens": 10,
            "gen_ai.usage.completion_tokens": 5,
        },
    )
    assert run(Dedupe(), [llm(1, kind=3), Span(2, parent=1, name="POST"), vllm]) == {
        1: False,
        3: True,
    }


def rid(n: int, scope: str, **kw: object) -> Span:
    return llm(n, scope=scope, attrs={"gen_ai.response.id": "chatcmpl-1"}, **kw)  # type: ignore[arg-type]


def test_one_response_seen_by_two_instrumentations_is_counted_once() -> None:
    # LiteLLM's span (own trace, starts first) and the openai client's span (another trace).
    spans = [
        rid(1, "litellm", trace=1, start_ms=0, end_ms=100),
        rid(2, "opentelemetry.instrumentation.openai.v1", trace=2, start_ms=10, end_ms=90),
    ]
    assert run(Dedupe(), spans) == {1: False, 2: True}


def test_the_same_response_id_from_one_scope_is_not_merged() -> None:
    spans = [rid(1, "s", trace=1), rid(2, "s", trace=2)]
    assert run(Dedupe(), spans) == {1: True, 2: True}


def test_across_batches_the_first_response_seen_wins() -> None:
    d = Dedupe()
    assert run(d, [rid(1, "litellm", trace=1)]) == {1: True}
    assert run(d, [rid(2, "openai", trace=2, start_ms=10)]) == {2: False}
    assert run(d, [rid(3, "litellm", trace=3)]) == {3: True}  # same scope as the first


def test_a_reused_id_in_other_traces_and_services_is_another_call() -> None:
    # Two services call one Ollama server at once through two instrumentations; it hands
    # both calls the same id. Nothing ties them together: both are counted.
    spans = [
        rid(1, "litellm", trace=1, service="billing", start_ms=0, end_ms=100),
        rid(2, "openai", trace=2, service="search", start_ms=10, end_ms=90),
    ]
    assert run(Dedupe(), spans) == {1: True, 2: True}


def test_a_reused_id_in_one_service_at_other_times_is_another_call() -> None:
    spans = [
        rid(1, "litellm", trace=1, start_ms=0, end_ms=100),
        rid(2, "openai", trace=2, start_ms=200, end_ms=300),
        rid(3, "litellm", trace=1, start_ms=400, end_ms=500),  # same trace, later
        rid(4, "openai", trace=1, start_ms=600, end_ms=700),
    ]
    assert run(Dedupe(), spans) == {1: True, 2: True, 3: True, 4: True}


def test_one_trace_across_services_is_matched_when_times_overlap() -> None:
    # An app's client span and a proxy's span in one trace, not nested (the proxy does not
    # parent its span on the incoming request): one call.
    spans = [
        rid(1, "openai", trace=1, service="app", start_ms=0, end_ms=100),
        rid(2, "litellm", trace=1, service="proxy", start_ms=10, end_ms=95),
    ]
    assert run(Dedupe(), spans) == {1: False, 2: True}


def test_across_batches_a_reused_id_is_another_call_unless_it_can_be_the_same() -> None:
    d = Dedupe()
    assert run(d, [rid(1, "litellm", trace=1, start_ms=0, end_ms=100)]) == {1: True}
    # later in the same service: another call
    assert run(d, [rid(2, "openai", trace=2, start_ms=500, end_ms=600)]) == {2: True}
    # another service at the same time as the first: another call
    assert run(d, [rid(3, "openai", trace=3, service="b", start_ms=0, end_ms=100)]) == {3: True}
    # the first call's twin (same service, overlapping): not counted again
    assert run(d, [rid(4, "openai", trace=4, start_ms=10, end_ms=90)]) == {4: False}


def test_ollama_ids_lose_no_call_across_services_and_traces() -> None:
    # 2,000 calls, two services each instrumented twice (litellm on some calls, the openai
    # client on others), ids drawn from Ollama's 999: every call is counted. Calls of one
    # service do not overlap in time (one worker each); the two services overlap freely.
    rng = random.Random(15)
    d = Dedupe()
    n = 0
    for _ in range(20):
        batch = []
        for service, offset in (("a", 0), ("b", 37)):
            for _ in range(50):
                n += 1
                start = n * 100 + offset
                batch.append(
                    Span(
                        n,
                        trace=n,
                        service=service,
                        scope=rng.choice(["litellm", "opentelemetry.instrumentation.openai.v1"]),
                        name="chat",
                        start_ms=start,
                        end_ms=start + 90,
                        attrs={
                            **llm(n).attrs,
                            "gen_ai.response.id": f"chatcmpl-{rng.randrange(1, 1000)}",
                        },
                    )
                )
        result = run(d, batch)
        assert len(result) == 100 and all(result.values())
    assert len(d._responses) <= 999


def test_response_matching_can_be_turned_off() -> None:
    d = Dedupe(DedupeConfig(match_response_ids=False))
    spans = [rid(1, "litellm", trace=1), rid(2, "openai", trace=2)]
    assert run(d, spans) == {1: True, 2: True}


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        Dedupe(DedupeConfig(max_entries=0))


def test_a_batch_without_llm_spans_is_cheap_and_untouched() -> None:
    d = Dedupe()
    batch = TraceBatch(request=build_request([Span(1), Span(2, parent=1)]))
    normalize(batch)
    assert d(batch) is batch and not batch.calls and not d._pending


# -- property: arrival children-first across batches, any order within one ------------------


@st.composite
def forests(draw: st.DrawFn) -> tuple[list[Span], list[list[int]]]:
    """A random trace (parent index < child index), some spans LLM calls, cut into batches so
    that no span comes in an earlier batch than any of its descendants."""
    n = draw(st.integers(1, 40))
    parents = [0] + [draw(st.integers(1, i)) for i in range(1, n)]  # span i+1's parent number
    is_llm = [draw(st.booleans()) for _ in range(n)]
    spans = [
        llm(i + 1, parent=parents[i]) if is_llm[i] else Span(i + 1, parent=parents[i])
        for i in range(n)
    ]
    # batch index: a span's batch >= each child's batch (children first)
    batch_of = [0] * n
    for i in reversed(range(n)):
        child_max = max((batch_of[j] for j in range(n) if parents[j] == i + 1), default=0)
        batch_of[i] = child_max + draw(st.integers(0, 1))
    batches: list[list[int]] = [[] for _ in range(max(batch_of) + 1)]
    for i in range(n):
        batches[batch_of[i]].append(i)
    for b in batches:
        b[:] = draw(st.permutations(b))
    return spans, batches


@given(forests())
@settings(max_examples=200, deadline=None)
def test_counted_calls_are_exactly_those_without_an_llm_descendant(
    case: tuple[list[Span], list[list[int]]],
) -> None:
    spans, batches = case
    children: dict[int, list[int]] = {}
    for s in spans:
        children.setdefault(s.parent, []).append(s.span)
    is_llm = {s.span: "gen_ai.request.model" in s.attrs for s in spans}

    def has_llm_descendant(n: int) -> bool:
        return any(is_llm[c] or has_llm_descendant(c) for c in children.get(n, []))

    expected = {s.span: not has_llm_descendant(s.span) for s in spans if is_llm[s.span]}
    d = Dedupe()
    got: dict[int, bool] = {}
    for b in batches:
        if b:
            got.update(run(d, [spans[i] for i in b]))
    assert got == expected
    assert not d._pending  # every flagged ancestor arrived
