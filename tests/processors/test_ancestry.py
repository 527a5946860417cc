"""ancestry: the dimension values of a request's spans, inherited through their ancestors; the
native DimensionReader equals its Python twin (PySpanIndex) on any request."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import _native
from pipeline.processors.ancestry import PySpanIndex, py_label_calls
from pipeline.processors.heavy import OTHER
from tests.helpers.otlp_build import set_value
from tests.instrumentation.otlp import Span, build_request, span_id, trace_id

SLOTS = [
    [("resource", "tenant.id"), ("span", "tenant.id")],
    [("span", "user.id"), ("span", "enduser.id")],
    [("span", "app.feature")],
]


def _native_index(raw: bytes, slots: list[list[tuple[str, str]]] = SLOTS) -> Any:
    if _native.DimensionReader is None:
        if os.environ.get("CI"):
            pytest.fail("llm_pipeline_native is not built, or without DimensionReader")
        pytest.skip("llm_pipeline_native is not built")
    return _native.DimensionReader(slots, agents=True).index(raw)


def _both(req: ExportTraceServiceRequest, wanted: list[tuple[bytes, bytes]]) -> Any:
    """What the twin resolves, having checked that the native reader agrees."""
    raw = req.SerializeToString()
    got = PySpanIndex(ExportTraceServiceRequest.FromString(raw), SLOTS).resolve(wanted)
    assert _native_index(raw).resolve(wanted) == got
    return got


def test_nearest_ancestor_wins_and_a_missing_one_is_named() -> None:
    req = build_request(
        [
            Span(span=1, name="root", attrs={"user.id": "root-user", "app.feature": "f1"}),
            Span(span=2, parent=1, name="mid", attrs={"user.id": "mid-user"}),
            Span(span=3, parent=2, name="call"),
            Span(span=5, parent=4, name="orphan", attrs={"enduser.id": "e"}),
            Span(span=6, trace=2, name="other trace", attrs={"user.id": "x"}),
        ]
    )
    kv = req.resource_spans[0].resource.attributes.add()
    kv.key, kv.value.string_value = "tenant.id", "acme"
    t = trace_id(1)
    got = _both(
        req,
        [(t, span_id(3)), (t, span_id(5)), (t, span_id(9)), (trace_id(2), span_id(1))],
    )
    assert got == [
        (("acme", "mid-user", "f1"), b""),
        (("acme", "e", ""), span_id(4)),  # feature missing: span 4 is awaited
        None,  # not in the request
        None,  # span ids belong to their trace
    ]


def test_a_cycle_in_bad_data_ends() -> None:
    req = build_request([Span(span=1, parent=2), Span(span=2, parent=1)])
    assert _both(req, [(trace_id(1), span_id(1))]) == [(("", "", ""), b"")]


def test_present_names_the_traces_here_and_whether_their_root_is() -> None:
    req = build_request([Span(span=2, parent=1), Span(span=1, trace=2), Span(span=3, trace=3)])
    raw = req.SerializeToString()
    among = {trace_id(1): 0, trace_id(2): 0, trace_id(9): 0}
    want = [(trace_id(1), False), (trace_id(2), True)]
    assert PySpanIndex(req, SLOTS).present(among) == want
    assert _native_index(raw).present(among) == want
    assert _native_index(raw).present({}) == []


def _add(attributes: Any, key: str, value: Any) -> None:
    kv = attributes.add()
    kv.key = key
    set_value(kv.value, value)


def test_nodes_name_roots_and_agent_runs_and_where_they_lie() -> None:
    req = build_request(
        [
            Span(span=1, name="POST /ask"),
            Span(span=2, parent=1, name="invoke_agent planner"),
            Span(span=3, parent=2, name="tool", attrs={"gen_ai.operation.name": "execute_tool"}),
            Span(span=4, parent=2, name="wf", attrs={"gen_ai.operation.name": "invoke_workflow"}),
            Span(span=5, parent=2, name="invoke_agent", attrs={"gen_ai.agent.name": "named"}),
            Span(span=6, trace=2, name="other trace"),
        ]
    )
    raw = req.SerializeToString()
    twin = PySpanIndex(ExportTraceServiceRequest.FromString(raw), SLOTS, raw)
    got = _native_index(raw).nodes({trace_id(1): None})
    assert got == twin.nodes({trace_id(1): None})
    assert [(n[1], n[2], n[3], n[4], n[6]) for n in got] == [
        (span_id(1), b"", "POST /ask", None, (0, 0, 0)),
        (span_id(2), span_id(1), "invoke_agent planner", "planner", (0, 0, 1)),
        (span_id(3), span_id(2), None, None, (0, 0, 2)),
        (span_id(4), span_id(2), "wf", "", (0, 0, 3)),
        (span_id(5), span_id(2), "invoke_agent", "named", (0, 0, 4)),
    ]
    start, end = got[1][5]
    assert raw[start:end] == req.resource_spans[0].scope_spans[0].spans[1].SerializeToString()


# Attribute values of every type, keys among the sources and not, given twice, on events too.
_KEYS = st.sampled_from(
    [
        "user.id",
        "enduser.id",
        "tenant.id",
        "app.feature",
        "gen_ai.operation.name",
        "gen_ai.agent.name",
        "other",
    ]
)
_NAMES = st.sampled_from(["s", "invoke_agent", "invoke_agent a b", "invoke_workflow", "x y"])
_VALUES = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["invoke_agent", "invoke_workflow", "chat"]),
    # a string and an int (or bool) with the same text: one value
    st.sampled_from(["7", "true"]),
    st.integers(6, 8),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.binary(max_size=3),
    st.lists(st.integers(0, 9), max_size=2),
)
_ATTRS = st.lists(st.tuples(_KEYS, _VALUES), max_size=4)
_SPAN = st.tuples(
    st.integers(1, 3),  # trace
    st.integers(1, 8),  # span
    st.integers(0, 8),  # parent (0: a root)
    _ATTRS,
    _ATTRS,  # an event's attributes: never read
    st.integers(0, 1),  # resource
    _NAMES,
)


@settings(max_examples=300, deadline=None)
@given(spans=st.lists(_SPAN, max_size=12), resources=st.lists(_ATTRS, min_size=2, max_size=2))
def test_the_native_reader_equals_its_twin(spans: list[Any], resources: list[Any]) -> None:
    req = ExportTraceServiceRequest()
    scopes = []
    for attrs in resources:
        rs = req.resource_spans.add()
        for k, v in attrs:
            _add(rs.resource.attributes, k, v)
        scopes.append(rs.scope_spans.add())
    for t, s, p, attrs, event_attrs, r, name in spans:
        span = scopes[r].spans.add()
        span.trace_id, span.span_id = trace_id(t), span_id(s)
        span.parent_span_id = span_id(p) if p else b""
        span.name = name
        for k, v in attrs:
            _add(span.attributes, k, v)
        ev = span.events.add()
        for k, v in event_attrs:
            _add(ev.attributes, k, v)
    wanted = [(trace_id(t), span_id(s)) for t in range(1, 4) for s in range(1, 9)]
    raw = req.SerializeToString()
    twin = PySpanIndex(ExportTraceServiceRequest.FromString(raw), SLOTS, raw)
    native = _native_index(raw)
    assert native.resolve(wanted) == twin.resolve(wanted)
    # fractions: sums in another order would differ in the last bits
    weights = [0.1 * i + 1e-9 for i in range(len(wanted))]
    assert native.attribute(wanted, weights, 2) == twin.attribute(wanted, weights, 2)
    # the same read from call objects: cost None weighs the floor alone
    costs = [None if i % 3 == 0 else 0.1 * i for i in range(len(wanted))]
    objs = [
        SimpleNamespace(trace_id=t, span_id=s, cost_usd=c)
        for (t, s), c in zip(wanted, costs, strict=True)
    ]
    floored = [(c or 0.0) + 1e-9 for c in costs]
    want = twin.attribute(wanted, floored, 2)
    assert native.attribute_calls(objs, 1e-9, 2) == twin.attribute_calls(objs, 1e-9, 2) == want
    among = {trace_id(t): None for t in (1, 3)}
    assert native.present(among) == twin.present(among)
    assert native.nodes(among) == twin.nodes(among)
    # labelling the calls: per value a label (some fold), the same on both sides
    results, _ = native.attribute(wanted, weights, 2)
    labels: list[dict[str, str]] = [{"": ""}, {"": ""}]
    for got in results:
        for slot, value in enumerate(got[0][:2] if got else ()):
            labels[slot][value] = OTHER if len(value) % 2 else value
    assert _native.label_calls is not None
    calls = [SimpleNamespace(dimensions=None) for _ in wanted]
    twin_calls = [SimpleNamespace(dimensions=None) for _ in wanted]
    done = _native.label_calls(calls, results, labels, OTHER)
    assert done == py_label_calls(twin_calls, results, labels, OTHER)
    assert [c.dimensions for c in calls] == [c.dimensions for c in twin_calls]


def test_labelling_holds_calls_awaiting_an_ancestor_and_counts_folds() -> None:
    results: list[Any] = [
        (("t1", "u1"), b""),
        None,  # not in the request: the labels of no value
        (("t1", "u2"), b"\x01" * 8),  # an ancestor awaited: held
        (("t2", "u2"), b""),
    ]
    labels = [{"": "", "t1": "t1", "t2": OTHER}, {"": "", "u1": "u1", "u2": OTHER}]
    for label_calls in filter(None, (_native.label_calls, py_label_calls)):
        calls = [SimpleNamespace(dimensions=None) for _ in results]
        held, folds = label_calls(calls, results, labels, OTHER)
        assert (held, folds) == ([2], [1, 1])
        got = [c.dimensions for c in calls]
        assert got == [("t1", "u1"), ("", ""), None, (OTHER, OTHER)]
