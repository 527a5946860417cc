"""Bad input, in process: the decoders and the processor chain never crash and never hang.

Hypothesis throws random, truncated and mutated bytes at the OTLP protobuf and JSON decoders
(every outcome is a message or a `DecodeError`), nests AnyValues deeper than any parser
should follow, and feeds `Service.accept` well-formed requests whose GenAI attributes carry
values of every type and absurd size; the derived metrics must stay finite.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from pipeline.config import Config
from pipeline.exporters.prometheus import AggregationCollector, render
from pipeline.processors.conventions import CHUNK_EVENTS, LOOKUP
from pipeline.receivers.decode import (
    DecodeError,
    Inflater,
    Limits,
    decode,
    gunzip,
    parse_json,
    parse_protobuf,
    to_json,
)
from pipeline.service import Service
from tests.helpers.metrics import samples, value
from tests.helpers.otlp_build import set_value

# FUZZ_SCALE=20 (with --timeout=0) for a long local run; the default keeps the suite quick.
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=int(100 * SCALE),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SIGNALS = st.sampled_from(["traces", "logs", "metrics"])
TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(1, 9))


def _decodes_or_refuses(signal: str, body: bytes, ctype: str) -> Any:
    """The decoder's answer: a message, or None for a DecodeError; anything else fails."""
    try:
        return decode(signal, body, ctype)
    except DecodeError as e:
        assert e.reason in ("malformed", "too_large", "unsupported_media_type")
        assert str(e)
        return None


# -- AnyValue strategies ---------------------------------------------------------------------

NASTY_STRINGS = st.sampled_from(
    [
        "inf",
        "-inf",
        "Infinity",
        "nan",
        "NaN",
        "1e400",
        "-1e400",
        "1e308",
        "-5",
        "-0",
        "2e18",
        "9223372036854775808",
        "4611686018427387904",
        "0x10",
        "",
        "  7 ",
        "1_000",
        "\u0000",
        "\ud7ff\ue000",
        "<class 'openai.RateLimitError'>",
        "a" * 300,
    ]
)
SCALARS = st.one_of(
    st.text(max_size=40),
    NASTY_STRINGS,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([2**62, -(2**62), 2**63 - 1, -(2**63), 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=16),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
KEYS = st.one_of(
    st.sampled_from(sorted(LOOKUP)),
    st.sampled_from(["gen_ai.input.messages", "service.name", "error.type", "x"]),
    st.text(max_size=20),
)


U64 = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def genai_spans(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(st.one_of(U64, st.just(1_700_000_000 * 10**9)))
    return {
        "attrs": draw(st.lists(st.tuples(KEYS, VALUES), max_size=12)),
        "kind": draw(st.one_of(st.integers(0, 5), st.integers(-(2**31), 2**31 - 1))),
        "status": draw(st.one_of(st.integers(0, 2), st.integers(-(2**31), 2**31 - 1))),
        "start": start,
        "end": draw(st.one_of(U64, st.integers(0, 10**10).map(lambda d: (start + d) % 2**64))),
        "events": draw(
            st.lists(
                st.tuples(
                    st.sampled_from([*sorted(CHUNK_EVENTS), "exception", "other"]),
                    U64,
                    st.lists(st.tuples(KEYS, VALUES), max_size=3),
                ),
                max_size=4,
            )
        ),
        "ids": draw(
            st.one_of(
                st.just((TRACE_ID, SPAN_ID, b"")),
                st.tuples(st.binary(max_size=17), st.binary(max_size=9), st.binary(max_size=9)),
            )
        ),
    }


def build_request(spans: list[dict[str, Any]], service: Any = "fuzz") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key = "service.name"
    set_value(kv.value, service)
    ss = rs.scope_spans.add()
    for i, d in enumerate(spans):
        s = ss.spans.add()
        s.name = f"span {i}"
        s.trace_id, s.span_id, s.parent_span_id = d["ids"]
        s.kind = d["kind"]
        s.status.code = d["status"]
        s.start_time_unix_nano = d["start"]
        s.end_time_unix_nano = d["end"]
        for k, x in d["attrs"]:
            a = s.attributes.add()
            a.key = k
            set_value(a.value, x)
        for name, t, attrs in d["events"]:
            ev = s.events.add()
            ev.name = name
            ev.time_unix_nano = t
            for k, x in attrs:
                a = ev.attributes.add()
                a.key = k
                set_value(a.value, x)
    return req


def llm_span(**attrs: Any) -> ExportTraceServiceRequest:
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
    }
    d = {
        "attrs": list({**base, **attrs}.items()),
        "kind": 3,
        "status": 0,
        "start": 1_700_000_000 * 10**9,
        "end": 1_700_000_001 * 10**9,
        "events": [],
        "ids": (TRACE_ID, SPAN_ID, b""),
    }
    return build_request([d])


# -- the decoders ----------------------------------------------------------------------------


@FUZZ
@given(signal=SIGNALS, body=st.binary(max_size=2048))
def test_random_bytes_never_crash_the_protobuf_decoder(signal: str, body: bytes) -> None:
    msg = _decodes_or_refuses(signal, body, "application/x-protobuf")
    if msg is not None:
        to_json(msg)  # whatever parses can be written out again


@FUZZ
@given(signal=SIGNALS, body=st.binary(max_size=2048))
def test_random_bytes_never_crash_the_json_decoder(signal: str, body: bytes) -> None:
    _decodes_or_refuses(signal, body, "application/json")


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        NASTY_STRINGS,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "resourceLogs",
                    "scopeLogs",
                    "logRecords",
                    "attributes",
                    "traceId",
                    "spanId",
                    "parentSpanId",
                    "key",
                    "value",
                    "stringValue",
                    "intValue",
                    "doubleValue",
                    "kvlistValue",
                    "arrayValue",
                    "values",
                    "kind",
                    "status",
                    "code",
                    "startTimeUnixNano",
                    "endTimeUnixNano",
                    "body",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)


@FUZZ
@given(signal=SIGNALS, doc=JSON_VALUES)
def test_otlp_shaped_json_of_wrong_types_is_refused_cleanly(signal: str, doc: Any) -> None:
    body = json.dumps(doc).encode()
    msg = _decodes_or_refuses(signal, body, "application/json")
    if msg is not None:
        to_json(msg)


@FUZZ
@given(spans=st.lists(genai_spans(), min_size=1, max_size=3), data=st.data())
def test_truncated_and_mutated_protobuf_is_refused_or_parsed(
    spans: list[dict[str, Any]], data: st.DataObject
) -> None:
    raw = build_request(spans).SerializeToString()
    cut = data.draw(st.integers(0, len(raw)))
    _decodes_or_refuses("traces", raw[:cut], "application/x-protobuf")
    flips = data.draw(st.lists(st.tuples(st.integers(0, max(0, len(raw) - 1)), U64), max_size=4))
    mutated = bytearray(raw)
    for pos, x in flips:
        if mutated:
            mutated[pos] ^= (x % 255) + 1
    _decodes_or_refuses("traces", bytes(mutated), "application/x-protobuf")


@FUZZ
@given(spans=st.lists(genai_spans(), min_size=1, max_size=3), data=st.data())
def test_truncated_and_mutated_json_is_refused_or_parsed(
    spans: list[dict[str, Any]], data: st.DataObject
) -> None:
    text = to_json(build_request(spans)).encode()
    cut = data.draw(st.integers(0, len(text)))
    _decodes_or_refuses("traces", text[:cut], "application/json")
    pos = data.draw(st.integers(0, len(text) - 1))
    junk = data.draw(st.binary(min_size=1, max_size=4))
    _decodes_or_refuses("traces", text[:pos] + junk + text[pos + 1 :], "application/json")


def test_json_roundtrip_keeps_hex_ids() -> None:
    req = llm_span()
    back = parse_json("traces", to_json(req).encode())
    assert back == req
    assert '"traceId":"0102030405060708090a0b0c0d0e0f10"' in to_json(req)


def _nested_json_anyvalue(depth: int) -> bytes:
    inner = (
        '{"kvlistValue":{"values":[{"key":"k","value":' * depth
        + '{"stringValue":"leaf"}'
        + "}]}}" * depth
    )
    return (
        '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
        + TRACE_ID.hex()
        + '","spanId":"'
        + SPAN_ID.hex()
        + '","attributes":[{"key":"deep","value":'
        + inner
        + "}]}]}]}]}"
    ).encode()


def test_deeply_nested_json_is_refused_quickly() -> None:
    ok = parse_json("traces", _nested_json_anyvalue(5))
    assert ok.resource_spans[0].scope_spans[0].spans[0].attributes[0].key == "deep"
    for depth in (40, 1000, 100_000):
        t0 = time.monotonic()
        with pytest.raises(DecodeError, match="JSON nested too deeply"):
            parse_json("traces", _nested_json_anyvalue(depth))
        assert time.monotonic() - t0 < 2.0
    with pytest.raises(DecodeError, match="JSON nested too deeply"):
        parse_json("traces", b"[" * 1_000_000 + b"]" * 1_000_000)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _nested_protobuf_anyvalue(depth: int) -> bytes:
    """A span attribute whose AnyValue is `depth` kvlists deep, built as raw wire bytes."""
    # Inside out: AnyValue{kvlist_value(6): KeyValueList{values(1): KeyValue{key(1), value(2)}}}
    # Each level's three length prefixes depend on what is inside, so build the sizes first.
    leaf = _field(1, b"leaf")  # AnyValue.string_value
    key = _field(1, b"k")
    sizes = [len(leaf)]
    for _ in range(depth):
        kv = len(key) + _len_field(2, sizes[-1])
        sizes.append(_len_field(6, _len_field(1, kv)))
    opens = []
    for i in range(depth, 0, -1):  # outermost first
        value_len = sizes[i - 1]
        kv_len = len(key) + _len_field(2, value_len)
        kvlist_len = _len_field(1, kv_len)
        opens.append(
            _varint(6 << 3 | 2)
            + _varint(kvlist_len)
            + _varint(1 << 3 | 2)
            + _varint(kv_len)
            + key
            + _varint(2 << 3 | 2)
            + _varint(value_len)
        )
    value = b"".join(opens) + leaf
    assert len(value) == sizes[-1]
    attr = _field(1, b"deep") + _field(2, value)
    span = _field(1, TRACE_ID) + _field(2, SPAN_ID) + _field(9, attr)
    return _field(1, _field(2, _field(2, span)))  # request{resource_spans{scope_spans{span}}}


def _len_field(num: int, n: int) -> int:
    """Size of a length-delimited field holding n bytes."""
    return len(_varint(num << 3 | 2)) + len(_varint(n)) + n


def test_deeply_nested_protobuf_is_refused_quickly() -> None:
    msg = parse_protobuf("traces", _nested_protobuf_anyvalue(10))
    v = msg.resource_spans[0].scope_spans[0].spans[0].attributes[0].value
    for _ in range(10):
        v = v.kvlist_value.values[0].value
    assert v.string_value == "leaf"
    for depth in (200, 50_000):
        body = _nested_protobuf_anyvalue(depth)
        t0 = time.monotonic()
        with pytest.raises(DecodeError, match="invalid OTLP/protobuf"):
            parse_protobuf("traces", body)
        assert time.monotonic() - t0 < 2.0


def test_what_the_parser_accepts_the_chain_processes(tmp_path: Path) -> None:
    """The deepest nesting protobuf accepts still goes through the chain and out as JSON."""
    svc = _service(tmp_path)
    depth = 1
    while True:  # find the parser's own limit
        try:
            msg = parse_protobuf("traces", _nested_protobuf_anyvalue(depth + 1))
        except DecodeError:
            break
        depth += 1
    assert depth > 20
    msg = parse_protobuf("traces", _nested_protobuf_anyvalue(depth))
    assert svc.accept("traces", msg, None, "http").rejected == 0
    svc.shutdown()


def test_invalid_utf8_is_refused() -> None:
    req = llm_span()
    raw = req.SerializeToString().replace(b"gpt-4o", b"gpt-\xff\xfe")
    with pytest.raises(DecodeError, match="invalid OTLP/protobuf"):
        parse_protobuf("traces", raw)
    with pytest.raises(DecodeError, match="not valid UTF-8"):
        parse_json(
            "traces", to_json(req).replace("gpt-4o", "gpt-\udcff").encode(errors="surrogateescape")
        )
    # A lone surrogate escaped in JSON is valid JSON but not valid Unicode for protobuf.
    body = to_json(req).replace("gpt-4o", "gpt-\\ud800").encode()
    msg = _decodes_or_refuses("traces", body, "application/json")
    if msg is not None:
        to_json(msg)


def gzip_bomb(mib: int) -> bytes:
    """gzip of `mib` MiB of zeros, built without ever holding or compressing them all."""
    chunk = b"\0" * (1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    body = first + again * (mib - 1) + c.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
    return header + body + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)


def test_gzip_bomb_helper_is_a_real_gzip_stream() -> None:
    assert gzip.decompress(gzip_bomb(8)) == b"\0" * (8 << 20)


def test_gzip_bomb_stops_at_the_limit_without_inflating_it() -> None:
    bomb = gzip_bomb(1024)  # 1 GiB of zeros in about 1 MiB
    assert len(bomb) < 2 << 20
    t0 = time.monotonic()
    with pytest.raises(DecodeError) as e:
        decode("traces", bomb, "application/x-protobuf", "gzip", Limits(16 << 20, 8 << 20))
    assert e.value.reason == "too_large"
    assert "exceeds 8388608" in str(e.value)
    assert time.monotonic() - t0 < 1.0


@FUZZ
@given(body=st.binary(max_size=512), limit=st.integers(1, 4096))
def test_gunzip_of_random_bytes_refuses_or_respects_the_limit(body: bytes, limit: int) -> None:
    for candidate in (body, gzip.compress(body)):
        try:
            out = gunzip(candidate, limit)
        except DecodeError:
            continue
        assert len(out) <= limit


def test_truncated_and_trailing_gzip() -> None:
    good = gzip.compress(llm_span().SerializeToString())
    with pytest.raises(DecodeError, match="truncated"):
        gunzip(good[:-9], 1 << 20)
    assert gunzip(good, 1 << 20) == llm_span().SerializeToString()
    for junk in (b"garbage", b"\0\0", b"\0" * 512):  # Go's reader refuses these too
        with pytest.raises(DecodeError, match="trailing data after the last member") as e:
            gunzip(good + junk, 1 << 20)
        assert e.value.reason == "malformed"
    with pytest.raises(DecodeError, match="truncated"):  # the start of a member, cut
        gunzip(good + b"\x1f", 1 << 20)
    with pytest.raises(DecodeError, match="truncated"):
        gunzip(b"", 1 << 20)


def test_every_gzip_member_is_read() -> None:
    """gzip(A) + gzip(B) is A + B, as Go's reader and `gzip -d` have it (it was A alone)."""
    raw = llm_span().SerializeToString()
    two = gzip.compress(raw[:40]) + gzip.compress(b"") + gzip.compress(raw[40:])
    assert gunzip(two, 1 << 20) == raw
    msg = decode("traces", two, "application/x-protobuf", "gzip")
    assert msg == llm_span()
    # the cap is on the whole output, across members
    with pytest.raises(DecodeError, match="exceeds 100 bytes") as e:
        gunzip(gzip.compress(b"a" * 60) + gzip.compress(b"b" * 60), 100)
    assert e.value.reason == "too_large"


@FUZZ
@given(
    parts=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    limit=st.integers(1, 1500),
)
def test_inflating_in_pieces_is_inflating_whole(
    parts: list[bytes], cuts: list[int], limit: int
) -> None:
    """The receiver inflates a body as it arrives: any split gives gunzip's answer."""
    body = b"".join(gzip.compress(p) for p in parts)

    def outcome(pieces: list[bytes]) -> bytes | str:
        inflater = Inflater(limit)
        try:
            out = b"".join(inflater.feed(p) for p in pieces)
            inflater.finish()
        except DecodeError as e:
            return e.reason
        return out

    bounds = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    whole = outcome([body])
    assert outcome(pieces) == whole
    assert whole == (b"".join(parts) if sum(map(len, parts)) <= limit else "too_large")


def _nested_array(arrays: int, kvlists: int = 0) -> ExportTraceServiceRequest:
    """A span attribute nested `kvlists` kvlist levels, then `arrays` array levels, deep."""
    req = llm_span()
    attr = req.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    attr.key = "deep"
    v = attr.value
    for _ in range(kvlists):
        kv = v.kvlist_value.values.add()
        kv.key = "k"
        v = kv.value
    for _ in range(arrays):
        v = v.array_value.values.add()
    v.string_value = "leaf"
    return req


def _deepest(build: Any, parse: Any) -> int:
    n = 1
    while parse(build(n + 1)):
        n += 1
    return n


def _accepts(parser: Any, body: bytes) -> bool:
    try:
        parser("traces", body)
    except DecodeError as e:
        assert "nested too deeply" in str(e) or "invalid OTLP" in str(e) or "array" in str(e)
        return False
    return True


def test_json_and_protobuf_accept_the_same_nesting() -> None:
    """Both stop where upb stops: 101 messages deep, the request included (the request,
    resource spans, scope spans, span, key-value, then the AnyValue chain). JSON used to stop
    at 18 array levels to protobuf's 47."""

    def pb(arrays: int, kvlists: int = 0) -> bool:
        return _accepts(parse_protobuf, _nested_array(arrays, kvlists).SerializeToString())

    def js(arrays: int, kvlists: int = 0) -> bool:
        return _accepts(parse_json, to_json(_nested_array(arrays, kvlists)).encode())

    # request, resource_spans, scope_spans, span, key-value, AnyValue, then 2 per array
    # level (ArrayValue, AnyValue) and 3 per kvlist level (KeyValueList, KeyValue, AnyValue)
    assert _deepest(lambda n: n, pb) == _deepest(lambda n: n, js) == 47  # 6 + 2*47 = 100
    assert pb(46, 1) and js(46, 1)  # 6 + 92 + 3 = 101 messages
    assert not pb(47, 1) and not js(47, 1)  # 102
    assert _deepest(lambda n: n, lambda n: pb(0, n)) == 31
    assert _deepest(lambda n: n, lambda n: js(0, n)) == 31
    with pytest.raises(DecodeError, match="an array directly inside an array"):
        parse_json("traces", b'{"resourceSpans": [[{}]]}')


# -- the processor chain ---------------------------------------------------------------------


def _service(tmp_path: Path, max_series: int = 2000) -> Service:
    cfg = Config()
    cfg.file.directory = str(tmp_path / "out")
    cfg.metrics.max_series = max_series
    cfg.queue.shutdown_timeout_s = 2.0
    svc = Service(cfg)
    svc.start()
    return svc


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = _service(tmp_path_factory.mktemp("fuzz"))
    yield svc
    svc.shutdown()


def _exposition(svc: Service) -> str:
    assert svc.wait_processed()  # the chain runs after the sender's answer
    body, _ = render(AggregationCollector(svc.agg, svc.telemetry), "application/openmetrics-text")
    return body.decode()


def _all_finite(text: str) -> None:
    for s in samples(text):
        assert math.isfinite(s.value), s
        if s.exemplar is not None:
            assert math.isfinite(s.exemplar.value), s


@settings(
    max_examples=int(150 * SCALE),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spans=st.lists(genai_spans(), min_size=1, max_size=4), service_name=VALUES)
@example(
    spans=[
        {
            "attrs": [
                ("gen_ai.request.model", "gpt-4o"),
                ("gen_ai.usage.input_tokens", "inf"),
                ("gen_ai.usage.output_tokens", "1e400"),
                ("gen_ai.response.time_to_first_chunk", float("nan")),
            ],
            "kind": 99,
            "status": 42,
            "start": 2,
            "end": 1,
            "events": [],
            "ids": (TRACE_ID, SPAN_ID, b""),
        }
    ],
    service_name="x",
)
def test_accept_never_raises_on_well_formed_requests(
    service: Service, spans: list[dict[str, Any]], service_name: Any
) -> None:
    req = build_request(spans, service_name)
    raw = req.SerializeToString()
    # What the receivers hand over is what the parser made of the wire bytes.
    msg = parse_protobuf("traces", raw)
    n = len(spans)
    result = service.accept("traces", msg, raw, "grpc")
    assert 0 <= result.rejected <= n
    _all_finite(_exposition(service))


@FUZZ
@given(
    records=st.lists(
        st.tuples(VALUES, st.lists(st.tuples(KEYS, VALUES), max_size=4)), min_size=1, max_size=4
    )
)
def test_accept_never_raises_on_well_formed_logs(
    service: Service, records: list[tuple[Any, list[tuple[str, Any]]]]
) -> None:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for body, attrs in records:
        lr = sl.log_records.add()
        set_value(lr.body, body)
        lr.severity_number = 99  # an unknown enum value
        for k, x in attrs:
            a = lr.attributes.add()
            a.key = k
            set_value(a.value, x)
    assert service.accept("logs", req, req.SerializeToString(), "http").rejected == 0


# -- absurd values, exactly ------------------------------------------------------------------


def _tokens(text: str, model: str, token_type: str) -> float:
    return value(
        text, "gen_ai_client_tokens_total", gen_ai_request_model=model, gen_ai_token_type=token_type
    )


def test_negative_token_counts_are_ignored(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    svc.accept(
        "traces",
        llm_span(
            **{
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": -5,
                "gen_ai.usage.output_tokens": 7,
            }
        ),
        None,
        "grpc",
    )
    text = _exposition(svc)
    assert _tokens(text, "gpt-4o", "input") == 0
    assert _tokens(text, "gpt-4o", "output") == 7
    assert value(text, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == 0
    svc.shutdown()


def test_huge_token_counts_stay_finite(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    for _ in range(3):
        svc.accept(
            "traces",
            llm_span(**{"gen_ai.usage.input_tokens": 2**62, "gen_ai.usage.output_tokens": 2**62}),
            None,
            "grpc",
        )
    text = _exposition(svc)
    assert _tokens(text, "gpt-4o", "input") == pytest.approx(3 * 2**62)
    cost = value(text, "gen_ai_client_cost_usd_total", gen_ai_request_model="gpt-4o")
    assert math.isfinite(cost) and cost > 1e12  # priced, absurdly, but a number
    _all_finite(text)
    svc.shutdown()


@pytest.mark.parametrize("bad", ["inf", "-inf", "1e400", "nan", "1e308", "9" * 400])
def test_unparseable_or_out_of_range_token_strings_are_ignored(tmp_path: Path, bad: str) -> None:
    svc = _service(tmp_path)
    svc.accept(
        "traces",
        llm_span(**{"gen_ai.usage.input_tokens": bad, "gen_ai.usage.output_tokens": "12"}),
        None,
        "grpc",
    )
    text = _exposition(svc)
    assert _tokens(text, "gpt-4o", "input") == 0  # beyond int64: not a token count
    assert _tokens(text, "gpt-4o", "output") == 12
    _all_finite(text)
    svc.shutdown()


def test_nan_ttft_end_before_start_and_unknown_enums(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    req = llm_span(
        **{"gen_ai.response.time_to_first_chunk": float("nan"), "gen_ai.usage.output_tokens": 10}
    )
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.kind = 99
    span.status.code = 42
    span.start_time_unix_nano, span.end_time_unix_nano = 2 * 10**18, 10**18  # ends first
    raw = req.SerializeToString()
    msg = parse_protobuf("traces", raw)
    assert svc.accept("traces", msg, raw, "grpc").rejected == 0
    text = _exposition(svc)
    dur = "gen_ai_client_operation_duration_seconds"
    assert value(text, f"{dur}_count", gen_ai_request_model="gpt-4o") == 1
    assert value(text, f"{dur}_sum", gen_ai_request_model="gpt-4o") == 0  # clamped, not negative
    ttft = "gen_ai_client_operation_time_to_first_chunk_seconds_count"
    assert value(text, ttft) == 0  # NaN is no measurement
    # Status code 42 is not ERROR (2): no error_type was invented.
    assert value(text, f"{dur}_count", error_type="") == 1
    # The JSON encoding of the same request round-trips the unknown enum values.
    again = parse_json("traces", to_json(msg).encode())
    assert again.resource_spans[0].scope_spans[0].spans[0].kind == 99
    svc.shutdown()


def test_huge_attribute_values_are_processed_in_bounded_time(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    big = "x" * (8 << 20)
    tricky = ("a@" * (1 << 20)) + ("1-" * (1 << 20))  # many partial email/phone candidates
    req = llm_span(
        **{
            "gen_ai.input.messages": big,
            "gen_ai.output.messages": tricky,
            "gen_ai.request.model": "m" * 100_000,
        }
    )
    t0 = time.monotonic()
    assert svc.accept("traces", req, None, "http").rejected == 0
    assert time.monotonic() - t0 < 20
    svc.shutdown()


def test_raw_bytes_are_not_trusted_when_spans_were_dropped(tmp_path: Path) -> None:
    """A request with invalid span IDs is forwarded without them (never the raw bytes)."""
    svc = _service(tmp_path)
    req = llm_span()
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id, bad.span_id = b"\x01", b"\x02"
    raw = req.SerializeToString()
    result = svc.accept("traces", parse_protobuf("traces", raw), raw, "grpc")
    assert result.rejected == 1 and "invalid trace_id/span_id" in result.message
    svc.shutdown()
    out = (tmp_path / "out" / "traces.jsonl").read_text().splitlines()
    assert len(out) == 1
    forwarded = parse_json("traces", out[0].encode())
    assert len(forwarded.resource_spans[0].scope_spans[0].spans) == 1


def test_anyvalue_setter_covers_every_kind() -> None:
    v = AnyValue()
    set_value(v, {"a": [1, 2.5, True, b"\x00", "s", {"b": -1}]})
    items = v.kvlist_value.values[0].value.array_value.values
    kinds = [x.WhichOneof("value") for x in items]
    assert kinds == [
        "int_value",
        "double_value",
        "bool_value",
        "bytes_value",
        "string_value",
        "kvlist_value",
    ]
