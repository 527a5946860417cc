"""The native helpers (native/, `llm-pipeline-native`) equal their Python twins.

Each native helper is an accelerator for a Python function that stays the reference: the same
item ranges, the same prefilter hits, the same span attribute keys as upb parses, and the same
`LLMCall`s from normalize with the wire-read keys as without. CI builds the helpers (a
missing build fails there); elsewhere these tests skip without them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline import _native, demo
from pipeline.model import TraceBatch, any_value
from pipeline.processors import normalize as normalize_module
from pipeline.processors._prefilter import Prefilter
from pipeline.processors._wire import py_item_ranges
from pipeline.processors.redact import BUILTIN_TYPES
from pipeline.receivers.decode import drop_invalid_spans
from tests.helpers.otlp_build import set_value
from tests.processors.test_prefilter import _text, _trace_request

if _native.KeyReader is None:
    if os.environ.get("CI"):
        pytest.fail("llm_pipeline_native is not built (scripts/setup.sh builds it with cargo)")
    pytest.skip("llm_pipeline_native is not built", allow_module_level=True)
import llm_pipeline_native as native


def _outcome(f: Any, data: bytes) -> Any:
    try:
        return f(data)
    except (ValueError, IndexError):
        return "error"


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(_text, min_size=1, max_size=6), cut=st.integers(0, 400))
def test_item_ranges_equal_python(texts: list[str], cut: int) -> None:
    data = _trace_request(texts).SerializeToString()
    assert native.item_ranges(data) == py_item_ranges(data)
    broken = data[: len(data) - cut]  # truncated: both refuse it or both read the same
    assert _outcome(native.item_ranges, broken) == _outcome(py_item_ranges, broken)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_item_ranges_of_random_bytes_fail_alike(data: bytes) -> None:
    assert _outcome(native.item_ranges, data) == _outcome(py_item_ranges, data)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(_text, min_size=1, max_size=6),
    junk=st.binary(max_size=64),
    types=st.sets(st.sampled_from(BUILTIN_TYPES)),
)
def test_prefilter_hits_equal_python_re(texts: list[str], junk: bytes, types: set[str]) -> None:
    pf = Prefilter(frozenset(types or BUILTIN_TYPES))
    assert pf._scanner is not None
    for data in (_trace_request(texts).SerializeToString(), junk + "".join(texts).encode()):
        assert pf.hits(data) == pf.py_hits(data)


def test_prefilter_finds_each_fragment_natively() -> None:
    from tests.processors.test_prefilter import FRAGMENTS

    pf = Prefilter(frozenset(BUILTIN_TYPES))
    for fragment in FRAGMENTS:
        data = f"x {fragment} y".encode()
        assert pf.hits(data) == pf.py_hits(data), fragment
    assert pf.hits(b"+44 20 7946 0958") != []  # the scan does find things


def _keys_request(spans: list[list[str]]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(2):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc{r}"
        for s in range(2):
            ss = rs.scope_spans.add()
            for keys in spans[r * 2 + s :: 4]:
                span = ss.spans.add(name="x")
                for i, key in enumerate(keys):
                    kv = span.attributes.add(key=key)
                    kv.value.int_value = i
    return req


def _parsed_keys(req: ExportTraceServiceRequest) -> list[tuple[str, ...]]:
    return [
        tuple(kv.key for kv in span.attributes)
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(st.lists(st.text(max_size=20), max_size=12), max_size=12))
def test_span_keys_equal_the_parsed_keys(spans: list[list[str]]) -> None:
    data = _keys_request(spans).SerializeToString()
    reader = native.KeyReader()
    assert reader.span_keys(data) == _parsed_keys(ExportTraceServiceRequest.FromString(data))


def test_span_keys_follow_the_parser_on_odd_wire() -> None:
    # A KeyValue whose key field comes twice (the parser keeps the last), one with no key,
    # and an unknown field in the span: built by hand, as no encoder writes them.
    def ld(field: int, payload: bytes) -> bytes:
        return bytes([field << 3 | 2, len(payload)]) + payload

    kv_twice = ld(1, b"first") + ld(1, b"gen_ai.system") + ld(2, ld(1, b"openai"))
    kv_nokey = ld(2, ld(1, b"v"))
    span = ld(5, b"s") + ld(9, kv_twice) + ld(9, kv_nokey) + ld(99 & 0x0F, b"?")
    data = ld(1, ld(2, ld(2, span)))
    parsed = ExportTraceServiceRequest.FromString(data)
    assert native.KeyReader().span_keys(data) == _parsed_keys(parsed) == [("gen_ai.system", "")]


def test_key_reader_is_bounded() -> None:
    reader = native.KeyReader(max_keys=10)
    data = _keys_request([[f"k{i}" for i in range(25)]]).SerializeToString()
    assert reader.span_keys(data) == [tuple(f"k{i}" for i in range(25))]
    assert len(reader) <= 10


def _demo_requests() -> list[bytes]:
    exporter = InMemorySpanExporter()
    demo.emit_into(exporter, None, 60, seed=11)
    spans = list(exporter.get_finished_spans())
    return [encode_spans(spans[i : i + 50]).SerializeToString() for i in range(0, len(spans), 50)]


def _calls(data: bytes, reader: Any) -> list[dict[str, Any]]:
    saved = normalize_module._KEY_READER
    normalize_module._KEY_READER = reader
    try:
        batch = normalize_module.normalize(
            TraceBatch(ExportTraceServiceRequest.FromString(data), raw=data)
        )
    finally:
        normalize_module._KEY_READER = saved
    out = []
    for call in batch.calls:
        d = {f.name: getattr(call, f.name) for f in dataclasses.fields(call) if f.name != "span"}
        d["span"] = call.span.SerializeToString()
        out.append(d)
    return out


def test_normalize_with_wire_keys_equals_without() -> None:
    requests = _demo_requests()
    assert len(requests) >= 3
    seen = 0
    for data in requests:
        wire = _calls(data, native.KeyReader())
        assert wire == _calls(data, None)
        seen += len(wire)
    assert seen >= 40  # the demo's traffic is about half LLM calls


# -- span_values: the LLM spans' fields and attribute values, read from the wire ------------

_scalar = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
_value = st.one_of(
    st.none(),  # unset
    _scalar,
    st.lists(st.one_of(_scalar, st.none()), max_size=3),  # an array of scalars
    st.just({"k": "v"}),  # a kvlist: left to the parser
    st.just(b"\x00\x01"),  # bytes: left to the parser
    st.just([[1]]),  # an array in an array: left to the parser
)


def _parsed_head(span: Any, attrs: tuple[int, ...]) -> Any:
    values = []
    for i in attrs:
        v = span.attributes[i].value
        kind = v.WhichOneof("value")
        if kind in ("kvlist_value", "bytes_value") or (
            kind == "array_value"
            and any(x.WhichOneof("value") in _COMPLEX for x in v.array_value.values)
        ):
            return None
        values.append(any_value(v))
    return (
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.status.code,
        values,
    )


_COMPLEX = ("kvlist_value", "bytes_value", "array_value")


@settings(max_examples=200, deadline=None)
@given(
    spans=st.lists(
        st.tuples(
            st.lists(_value, max_size=8),
            st.binary(max_size=16),
            st.integers(0, 2**31 - 1),  # kind: an open enum
            st.integers(0, 2**64 - 1),
            st.integers(-5, 5),  # status code, unknown values too
        ),
        min_size=1,
        max_size=8,
    ),
    pick=st.randoms(use_true_random=False),
)
def test_span_values_equal_the_parser(spans: list[Any], pick: Any) -> None:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for values, tid, kind, start, code in spans:
        span = ss.spans.add(trace_id=tid, span_id=tid[:8], kind=kind, start_time_unix_nano=start)
        span.status.code = code
        for i, value in enumerate(values):
            set_value(span.attributes.add(key=f"k{i}").value, value)
    data = req.SerializeToString()
    parsed = ExportTraceServiceRequest.FromString(data).resource_spans[0].scope_spans[0].spans
    wanted = []
    for g, span in enumerate(parsed):
        if pick.random() < 0.7:
            n = len(span.attributes)
            wanted.append((g, tuple(sorted(pick.sample(range(n), pick.randint(0, n))))))
    got = native.span_values(data, wanted)
    expected = [_parsed_head(parsed[g], attrs) for g, attrs in wanted]
    assert repr(got) == repr(expected)  # repr: NaN equals NaN, -0.0 differs from 0.0


def test_span_values_follow_the_parser_on_odd_wire() -> None:
    def ld(field: int, payload: bytes) -> bytes:
        return _varint(field << 3 | 2) + _varint(len(payload)) + payload

    def vi(field: int, value: int) -> bytes:
        return _varint(field << 3) + _varint(value)

    two_members = ld(1, b"m") + ld(2, ld(1, b"text") + vi(3, 7))  # the last member set wins
    value_twice = ld(1, b"t") + ld(2, ld(1, b"a")) + ld(2, vi(3, 1))  # merged by the parser
    wrong_type = ld(1, b"w") + ld(2, ld(3, b"x"))  # int_value length-delimited: unknown
    span = (
        ld(1, b"T" * 16)
        + ld(1, b"t" * 16)  # trace_id twice: the last one
        + vi(7, 5)  # start_time_unix_nano as a varint: an unknown field to the parser
        + vi(6, 2**40 + 3)  # kind beyond int32: its low 32 bits
        + ld(9, two_members)
        + ld(9, wrong_type)
        + ld(15, vi(3, 2))
        + ld(15, ld(2, b"msg"))  # status twice: merged, the code stays
        + ld(9, value_twice)
    )
    data = ld(1, ld(2, ld(2, span)))
    parsed = ExportTraceServiceRequest.FromString(data).resource_spans[0].scope_spans[0].spans
    assert native.span_values(data, [(0, (0, 1))]) == [_parsed_head(parsed[0], (0, 1))]
    assert native.span_values(data, [(0, (0, 1))])[0][3] == 3
    assert native.span_values(data, [(0, (2,))]) == [None]  # the repeated value message
    with pytest.raises(ValueError):
        native.span_values(data, [(0, (3,))])  # no fourth attribute
    with pytest.raises(ValueError):
        native.span_values(data, [(1, ())])  # no second span


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_normalize_reads_values_the_native_reader_leaves_to_the_parser() -> None:
    # A model named by an array (to_str takes its first item) and a kvlist-valued attribute
    # the plan reads: the first span's values come from the wire, the second's from upb.
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i, model in enumerate((["gpt-4o", "x"], {"name": "gpt-4o"})):
        span = ss.spans.add(name="chat", trace_id=bytes([i + 1]) * 16, span_id=b"\1" * 8)
        span.attributes.add(key="gen_ai.provider.name").value.string_value = "openai"
        set_value(span.attributes.add(key="gen_ai.request.model").value, model)
        span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 12 + i
    data = req.SerializeToString()
    wire = _calls(data, native.KeyReader())
    assert wire == _calls(data, None)
    assert [c["request_model"] for c in wire] == ["gpt-4o", "{'name': 'gpt-4o'}"]
    assert [c["input_tokens"] for c in wire] == [12, 13]


# -- invalid_spans and span_parents: the ids of every span, read from the wire ---------------

_ids = st.tuples(
    st.sampled_from([b"", b"\0" * 16, b"\1" * 15]) | st.binary(min_size=16, max_size=16),
    st.binary(max_size=9),
    st.sampled_from([b""]) | st.binary(min_size=7, max_size=9),
)


def _ids_request(spans: list[tuple[bytes, bytes, bytes]]) -> bytes:
    req = ExportTraceServiceRequest()
    for n, (tid, sid, psid) in enumerate(spans):
        if n % 3 == 0:  # a few spans per resource
            ss = req.resource_spans.add().scope_spans.add()
        ss.spans.add(trace_id=tid, span_id=sid, parent_span_id=psid, name=f"s{n}")
    return req.SerializeToString()


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(_ids, max_size=10))
def test_invalid_spans_equal_the_receivers_check(spans: list[tuple[bytes, bytes, bytes]]) -> None:
    data = _ids_request(spans)
    msg = ExportTraceServiceRequest.FromString(data)
    names = [s.name for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]
    rejected, _ = drop_invalid_spans(msg)  # the Python walk, which removes them
    kept = {s.name for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans}
    bad = native.invalid_spans(data)
    assert len(bad) == rejected
    assert [names[i] for i in bad] == [n for n in names if n not in kept]


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(_ids, max_size=10))
def test_span_parents_equal_the_parsed_ids(spans: list[tuple[bytes, bytes, bytes]]) -> None:
    data = _ids_request(spans)
    msg = ExportTraceServiceRequest.FromString(data)
    expected: dict[bytes, bytes | None] = {}
    for rs in msg.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                expected[s.trace_id + s.span_id] = (
                    s.trace_id + s.parent_span_id if s.parent_span_id else None
                )
    got = native.span_parents(data)
    assert got == expected
    assert list(got) == list(expected)  # the same order: later duplicates overwrite
