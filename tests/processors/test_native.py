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
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as Span_pb
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline import _native, demo
from pipeline.model import TraceBatch
from pipeline.processors import normalize as normalize_module
from pipeline.processors._prefilter import Prefilter
from pipeline.processors._wire import py_item_ranges
from pipeline.processors.conventions import CHUNK_EVENTS
from pipeline.processors.conventions._table import to_bool, to_float, to_int
from pipeline.processors.redact import BUILTIN_TYPES
from pipeline.processors.ttft import ttft
from pipeline.receivers.decode import drop_invalid_spans
from tests.helpers.otlp_build import set_value
from tests.processors.test_prefilter import _text, _trace_request

if _native.CallReader is None:
    if os.environ.get("CI"):
        pytest.fail(
            _native.call_reader_off or "llm_pipeline_native is not built (setup.sh builds it)"
        )
    pytest.skip(
        _native.call_reader_off or "llm_pipeline_native is not built", allow_module_level=True
    )
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


def _demo_requests() -> list[bytes]:
    exporter = InMemorySpanExporter()
    demo.emit_into(exporter, None, 60, seed=11)
    spans = list(exporter.get_finished_spans())
    return [encode_spans(spans[i : i + 50]).SerializeToString() for i in range(0, len(spans), 50)]


def _calls(data: bytes, reader: Any) -> list[dict[str, Any]]:
    """normalize's and ttft's calls with this native reader (None: all read through upb);
    `wire_span` (where the span lies, for enrich) is left out. `chunk_ns` is compared: the
    reader's chunk times equal those the ttft processor reads from the parsed events."""
    saved = normalize_module._CALL_READER
    normalize_module._CALL_READER = reader
    try:
        batch = normalize_module.normalize(
            TraceBatch(ExportTraceServiceRequest.FromString(data), raw=data)
        )
    finally:
        normalize_module._CALL_READER = saved
    batch = ttft(batch)
    out = []
    for call in batch.calls:
        d = {
            f.name: getattr(call, f.name)
            for f in dataclasses.fields(call)
            if f.name not in ("span", "wire_span")
        }
        d["span"] = call.span.SerializeToString()
        out.append(d)
    return out


def _scopes(data: bytes) -> list[tuple[str, str]]:
    req = ExportTraceServiceRequest.FromString(data)
    return [("s", "x") for rs in req.resource_spans for _ in rs.scope_spans]


def test_the_call_reader_equals_read_span_on_the_demo() -> None:
    requests = _demo_requests()
    assert len(requests) >= 3
    seen = native_read = 0
    reader = normalize_module.call_reader()
    for data in requests:
        calls = _calls(data, reader)
        assert calls == _calls(data, None)
        seen += len(calls)
        native_read += sum(args is not None for _, _, args in reader.read(data, _scopes(data)))
    assert seen >= 40  # the demo's traffic is about half LLM calls
    assert native_read >= seen * 0.8  # most read natively, not handed back (errors are)


# -- CallReader on any attributes: the same calls as read_span ------------------------------

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
# What the tables' transforms treat specially: aliases, prefixes, numbers in strings, JSON.
_telling = st.sampled_from(
    [
        "chat",
        "LLM",
        "EMBEDDING",
        "completion",
        "acompletion",
        "",
        " OpenAI ",
        "azure_ai",
        "openai/gpt-4o",
        "/x",
        "12",
        "1e3",
        "-4",
        "inf",
        "true",
        "server",
        '{"model": "gpt-4o-mini"}',
        "<class 'openai.RateLimitError'>",
        "llm",
        "gpt-4o",
    ]
)
_KEYS = sorted(
    {*normalize_module._TABLE, *normalize_module._MARKERS, "app.other", "gen_ai.usage.cost"}
)
_numbers = st.one_of(st.integers(-5, 2**63 - 1), st.floats(-1e3, 1e20), st.floats())
_TYPED = {  # values of the type each transform expects, most of the time
    to_int: _numbers,
    to_float: _numbers,
    to_bool: st.one_of(st.booleans(), st.integers(0, 1)),
}


def _typed(key: str) -> st.SearchStrategy[Any]:
    entry = normalize_module._TABLE.get(key)
    markers = normalize_module._MARKERS.get(key)
    if markers:
        return st.sampled_from(sorted(markers))
    return _TYPED.get(entry[3] if entry else None, _telling)


_key = st.sampled_from(_KEYS)
# Spans of well-typed values (read natively) and spans of any values (mostly handed back).
_attributes = st.one_of(
    st.lists(_key.flatmap(lambda key: st.tuples(st.just(key), _typed(key))), max_size=10),
    st.lists(st.tuples(_key, st.one_of(_value, _telling)), max_size=10),
)
_span = st.tuples(
    _attributes,
    st.integers(0, 3),  # kind
    st.integers(-1, 3),  # status code, unknown ones too
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    # exception events' types: none, a string, a class repr, an empty string, a number
    st.lists(st.sampled_from(["openai.APIError", "<class 'x.RateLimitError'>", "", 5]), max_size=2),
    # streamed-chunk events (and others) at any time, before the start too
    st.lists(
        st.tuples(
            st.sampled_from([*sorted(CHUNK_EVENTS), "other"]),
            st.integers(0, 2**64 - 1) | st.integers(0, 100),
        ),
        max_size=3,
    ),
)


def _request(scopes: list[list[Any]]) -> bytes:
    req = ExportTraceServiceRequest()
    for n, spans in enumerate(scopes):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc{n}"
        ss = rs.scope_spans.add()
        ss.scope.name = f"scope{n}"
        rs.scope_spans.add()  # an empty one: flat scope indices count it
        for i, (attrs, kind, code, start, end, exc, *more) in enumerate(spans):
            chunks = more[0] if more else []
            span = ss.spans.add(
                trace_id=bytes([n + 1]) * 16,
                span_id=(i + 1).to_bytes(8, "big"),
                kind=kind,
                start_time_unix_nano=start,
                end_time_unix_nano=end,
            )
            span.status.code = code
            span.events.add(name="gen_ai.content.prompt")
            for name, t in chunks:
                span.events.add(name=name, time_unix_nano=t)
            for exc_type in exc:
                ev = span.events.add(name="exception")
                ev.attributes.add(key="exception.message").value.string_value = "boom"
                set_value(ev.attributes.add(key="exception.type").value, exc_type)
            for key, value in attrs:
                set_value(span.attributes.add(key=key).value, value)
    return req.SerializeToString()


@settings(max_examples=400, deadline=None)
@given(scopes=st.lists(st.lists(_span, max_size=5), min_size=1, max_size=3))
def test_the_call_reader_equals_read_span(scopes: list[list[Any]]) -> None:
    data = _request(scopes)
    assert _calls(data, normalize_module.call_reader()) == _calls(data, None)


def test_the_call_reader_hands_back_what_only_python_reads() -> None:
    base = [("gen_ai.provider.name", "openai"), ("gen_ai.request.model", "gpt-4o")]
    spans = [
        ([*base, ("gen_ai.usage.input_tokens", "12")], 0),  # to_int parses the string
        ([("gen_ai.provider.name", "openai"), ("gen_ai.request.model", 7)], 0),  # str(7)
        ([*base, ("gen_ai.usage.input_tokens", {"k": "v"})], 0),  # a kvlist
        (base, 2),  # an error status without error.type: the events say it (read natively)
        ([*base, ("gen_ai.usage.input_tokens", 5)], 0),  # read natively
    ]
    data = _request([[(attrs, 1, code, 10, 20, ["openai.APIError"]) for attrs, code in spans]])
    got = normalize_module.call_reader().read(data, _scopes(data))
    assert [(s, j, args is None) for s, j, args in got] == [
        (0, 0, True),
        (0, 1, True),
        (0, 2, True),
        (0, 3, False),
        (0, 4, False),
    ]
    calls = _calls(data, normalize_module.call_reader())
    assert calls == _calls(data, None)
    assert [c["input_tokens"] for c in calls] == [12, None, None, None, 5]
    assert [c["request_model"] for c in calls] == ["gpt-4o", "7", "gpt-4o", "gpt-4o", "gpt-4o"]
    assert [c["error_type"] for c in calls] == ["", "", "", "APIError", ""]


def test_the_call_reader_is_bounded() -> None:
    reader = normalize_module.call_reader()
    attrs = [("gen_ai.request.model", "m"), ("gen_ai.provider.name", "p")]
    scopes = [[([*attrs, (f"k{n}.{i}", 1)], 0, 0, 1, 2, []) for i in range(500)] for n in range(12)]
    data = _request(scopes)
    assert len(reader.read(data, _scopes(data))) == 6000
    keys, plans = reader.sizes()
    assert keys <= 4096 and plans <= 1024


def test_the_call_reader_refuses_a_scope_count_that_does_not_match() -> None:
    data = _request([[([("gen_ai.request.model", "m")], 0, 0, 1, 2, [])]])
    with pytest.raises(ValueError):
        normalize_module.call_reader().read(data, [])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field on the wire: tag, length, payload."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def test_the_call_reader_follows_the_parser_on_odd_wire() -> None:
    def vi(field: int, value: int) -> bytes:
        return _varint(field << 3) + _varint(value)

    def kv(key: bytes, value: bytes) -> bytes:
        return _ld(9, _ld(1, key) + _ld(2, value))

    model = _ld(1, b"x") + _ld(1, b"gen_ai.request.model") + _ld(2, _ld(1, b"a") + _ld(1, b"gpt"))
    span = (
        _ld(1, b"T" * 16)
        + _ld(1, b"t" * 16)  # trace_id twice: the last one
        + _ld(2, b"s" * 8)
        + vi(7, 5)  # start_time_unix_nano as a varint: an unknown field to the parser
        + vi(6, 2**40 + 2)  # kind beyond int32: its low 32 bits (2: a server span)
        + _ld(9, model)  # the key and the string twice: the last of each
        + kv(b"gen_ai.provider.name", _ld(3, b"x"))  # int_value length-delimited: unknown
        + kv(b"gen_ai.system", _ld(1, b"openai"))
        + _ld(9, _ld(2, _ld(1, b"chat")) + _ld(1, b"gen_ai.operation.name"))  # value, then key
        # key, value, key: the last key (the reader's one-key shortcut must not take the first)
        + _ld(9, _ld(1, b"zz") + _ld(2, _ld(1, b"m1")) + _ld(1, b"gen_ai.response.model"))
        + _ld(15, vi(3, 1))
        + _ld(15, _ld(2, b"msg"))  # status twice: merged, the code stays
    )
    data = _ld(1, _ld(2, _ld(2, span)))
    calls = _calls(data, normalize_module.call_reader())
    assert calls == _calls(data, None)
    assert [
        (c["request_model"], c["provider"], c["server_side"], c["operation"], c["response_model"])
        for c in calls
    ] == [("gpt", "openai", True, "chat", "m1")]
    assert calls[0]["trace_id"] == b"t" * 16


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


# -- patch: the byte edits redact and enrich record equal the parsed request they changed ---


def _chain_bytes(data: bytes) -> tuple[bytes, TraceBatch]:
    """The default chain over a request; what the exporters send (patched when recorded)."""
    from pipeline.config import Config
    from pipeline.service import Service

    cfg = Config()
    cfg.exporters.traces.protocol = "grpc"
    cfg.exporters.traces.endpoint = "127.0.0.1:9"  # never started: nothing is sent
    svc = Service(cfg)
    try:
        batch = TraceBatch(ExportTraceServiceRequest.FromString(data), raw=data)
        for step in svc.trace_chain:
            batch = step(batch)
        out = batch.encode()
    finally:
        svc._stop.set()
    return out, batch


def test_patched_requests_are_the_changed_requests_on_the_demo() -> None:
    patched = 0
    for data in _demo_requests():
        out, batch = _chain_bytes(data)
        request = batch.request  # enrich's additions merged into the parsed spans
        expected = request.SerializeToString()
        assert ExportTraceServiceRequest.FromString(out) == request
        # no stale bytes left behind: the same size as serializing the changed request
        assert len(out) == len(expected)
        patched += bool(batch.edits) and out != expected  # appended, not re-encoded
    assert patched >= 3


def test_a_patch_that_fails_falls_back_to_the_settled_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline._native as native_module

    def refuse(raw: bytes, edits: object) -> bytes:
        raise ValueError("an edit the wire walk does not place")

    # a request whose enrich additions were sent as byte edits (and so left unmerged)
    data = next(d for d in _demo_requests() if _chain_bytes(d)[1].edits)
    monkeypatch.setattr(native_module, "patch", refuse)
    out, batch = _chain_bytes(data)
    # serializing merged the deferred additions first (reading `request` merges nothing more)
    assert out == batch.request.SerializeToString()
    assert b"gen_ai.usage.cost" in out


def test_a_value_written_twice_is_not_patched() -> None:
    # The name twice on the wire (the parser keeps the last): replacing the last one in place
    # would leave the first one's bytes in the request; the request is serialized instead.
    secret = b"GET /users/jane@example.com"
    span = _ld(1, b"t" * 16) + _ld(2, b"s" * 8) + _ld(5, secret) + _ld(5, secret)
    data = _ld(1, _ld(2, _ld(2, span)))
    out, batch = _chain_bytes(data)
    assert batch.edits is None
    assert b"jane@example.com" not in out
    assert (
        ExportTraceServiceRequest.FromString(out)
        .resource_spans[0]
        .scope_spans[0]
        .spans[0]
        .name.endswith("[REDACTED:email]")
    )


def test_patch_refuses_an_edit_that_is_not_a_fie_ld() -> None:
    data = _request([[([("gen_ai.request.model", "m")], 0, 0, 1, 2, [])]])
    with pytest.raises(ValueError):
        native.patch(data, [(1, 3, b"x", False)])  # inside a tag and a length
    with pytest.raises(ValueError):
        native.patch(data, [(0, len(data) + 1, b"x", False)])
    assert native.patch(data, []) == data


def test_patch_rewrites_lengths_that_need_more_bytes() -> None:
    # A span of ~100 bytes (one length byte) grows past 127 (two), and a value shrinks.
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(name="x" * 60)
    span.attributes.add(key="k").value.string_value = "v" * 20
    data = req.SerializeToString()
    parsed = ExportTraceServiceRequest.FromString(data)
    target = parsed.resource_spans[0].scope_spans[0].spans[0]
    added = b"".join(
        Span_pb(attributes=[KeyValue(key=f"a{i}", value=AnyValue(int_value=i))]).SerializeToString()
        for i in range(12)
    )
    start = data.index(b"x" * 60)
    span_start = start - 2  # the name's tag and length
    value_at = data.index(b"v" * 20)
    edits = [
        (span_start, len(data), added, True),
        (value_at, value_at + 20, b"w", False),
    ]
    target.MergeFromString(added)
    target.attributes[0].value.string_value = "w"
    out = native.patch(data, edits)
    assert ExportTraceServiceRequest.FromString(out) == parsed
    assert len(out) == len(parsed.SerializeToString())
