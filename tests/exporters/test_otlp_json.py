"""The OTLP/JSON encoders: native == Python twin == json_format (`decode.to_json`), byte for byte.

Requests are generated from the descriptors (every field of every message reachable from the
three request types, each oneof member, unicode, empty values, extreme integers, NaN and the
infinities), then their wire form is varied as other encoders may write it (fields out of
order, unknown fields, repeated numbers unpacked): the native walk reads the bytes, so it must
render what upb parses from them.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pipeline import _native
from pipeline.exporters import file as file_mod
from pipeline.exporters.file import FileSink
from pipeline.exporters.otlp_json import JsonEncoder
from pipeline.receivers.decode import REQUEST_TYPES, to_json

_T = FieldDescriptor
_STRINGS = [
    "",
    "a",
    "gen_ai.usage",
    'quote " back \\ slash',
    "\n\t\r\b\f\x00\x1f\x7f",
    "é ü ß",
    "日本語",
    "emoji 😀 𝄞",
    "\u2028\u2029",
    "x" * 300,
]
_DOUBLES = [
    0.0,
    -0.0,
    1.0,
    -1.5,
    0.1,
    1e-5,
    1e-4,
    123456789012345678.0,
    1e16,
    9999999999999998.0,
    1e300,
    -2.5e-300,
    5e-324,
    math.pi,
    math.nan,
    math.inf,
    -math.inf,
]
_INTS = {
    _T.TYPE_INT64: [0, 1, -1, 2**63 - 1, -(2**63)],
    _T.TYPE_SFIXED64: [0, -1, 2**63 - 1, -(2**63)],
    _T.TYPE_SINT64: [0, -1, 2**63 - 1, -(2**63)],
    _T.TYPE_UINT64: [0, 1, 2**64 - 1, 2**53 + 1],
    _T.TYPE_FIXED64: [0, 1, 2**64 - 1, 1_700_000_000_123_456_789],
    _T.TYPE_INT32: [0, 1, -1, 2**31 - 1, -(2**31)],
    _T.TYPE_SFIXED32: [0, -1, 2**31 - 1, -(2**31)],
    _T.TYPE_SINT32: [0, -1, 2**31 - 1, -(2**31)],
    _T.TYPE_UINT32: [0, 1, 2**32 - 1],
    _T.TYPE_FIXED32: [0, 1, 2**32 - 1, 0x101],
}


def _value(rng: random.Random, f: FieldDescriptor) -> Any:
    if f.type == _T.TYPE_STRING:
        return rng.choice(_STRINGS)
    if f.type == _T.TYPE_BYTES:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 5, 8, 16, 33])))
    if f.type == _T.TYPE_DOUBLE:
        return rng.choice(_DOUBLES) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6)
    if f.type == _T.TYPE_BOOL:
        return rng.random() < 0.5
    if f.type == _T.TYPE_ENUM:
        return rng.choice([v.number for v in f.enum_type.values] + [77])  # 77: an unknown one
    return rng.choice(_INTS[f.type])


def fill(rng: random.Random, msg: Message, depth: int = 0) -> None:
    """Random content for `msg`: each field set or not, one member per oneof."""
    desc: Descriptor = msg.DESCRIPTOR
    chosen = {o.name: rng.choice(o.fields) for o in desc.oneofs}
    for f in desc.fields:
        oneof = f.containing_oneof
        if oneof is not None and chosen[oneof.name] is not f:
            continue
        if rng.random() < 0.3 or (f.type == _T.TYPE_MESSAGE and depth > 5):
            continue
        if f.type == _T.TYPE_MESSAGE:
            if f.is_repeated:
                for _ in range(rng.choice([1, 2, 3] if depth < 3 else [0, 1, 2])):
                    fill(rng, getattr(msg, f.name).add(), depth + 1)
            else:
                getattr(msg, f.name).SetInParent()
                fill(rng, getattr(msg, f.name), depth + 1)
        elif f.is_repeated:
            getattr(msg, f.name).extend(_value(rng, f) for _ in range(rng.choice([1, 2, 4])))
        else:
            setattr(msg, f.name, _value(rng, f))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """(number, wire type, payload with its length prefix for LEN) of each field."""
    out, pos = [], 0
    while pos < len(data):
        tag, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            tag |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        number, wire = tag >> 3, tag & 7
        body_start = pos
        if wire == 0:
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            n, shift = 0, 0
            while True:
                b = data[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            body_start = pos
            pos += n
        out.append((number, wire, data[body_start:pos]))
    return out


def vary(rng: random.Random, desc: Descriptor, data: bytes) -> bytes:
    """`data` as another encoder may write it: fields shuffled (a repeated field's elements
    kept in order), unknown fields added, packed numbers written one by one."""
    by_number = {f.number: f for f in desc.fields}
    parts: list[tuple[int, bytes]] = []
    for number, wire, body in _fields(data):
        f = by_number.get(number)
        if f is not None and f.type == _T.TYPE_MESSAGE:
            body = vary(rng, f.message_type, body)
        if (
            f is not None
            and wire == 2
            and f.is_repeated
            and f.type not in (_T.TYPE_MESSAGE, _T.TYPE_STRING, _T.TYPE_BYTES)
            and rng.random() < 0.5
        ):
            size = {
                _T.TYPE_DOUBLE: 8,
                _T.TYPE_FIXED64: 8,
                _T.TYPE_SFIXED64: 8,
                _T.TYPE_FIXED32: 4,
                _T.TYPE_SFIXED32: 4,
            }.get(f.type)
            if size is not None:  # unpacked: one tag per element
                fixed_wire = 1 if size == 8 else 5
                for i in range(0, len(body), size):
                    parts.append((number, _varint(number << 3 | fixed_wire) + body[i : i + size]))
                continue
            pos = 0
            while pos < len(body):
                end = pos
                while body[end] & 0x80:
                    end += 1
                parts.append((number, _varint(number << 3) + body[pos : end + 1]))
                pos = end + 1
            continue
        tag = _varint(number << 3 | wire)
        parts.append((number, tag + (_varint(len(body)) + body if wire == 2 else body)))
    if rng.random() < 0.3:
        parts.append((1000, _varint(1000 << 3 | 2) + b"\x03abc"))  # unknown to the schema
        parts.append((999, _varint(999 << 3) + b"\x05"))
    # shuffle, each field number's occurrences kept in their order
    order = sorted({n for n, _ in parts})
    rng.shuffle(order)
    rank = {n: i for i, n in enumerate(order)}
    parts.sort(key=lambda p: rank[p[0]])
    return b"".join(p for _, p in parts)


def _requests(n: int) -> list[tuple[str, Message]]:
    rng = random.Random(20)
    out = []
    for i in range(n):
        signal = ("traces", "logs", "metrics")[i % 3]
        msg = REQUEST_TYPES[signal]()
        fill(rng, msg)
        out.append((signal, msg))
    return out


_PY = {s: JsonEncoder(t.DESCRIPTOR) for s, t in REQUEST_TYPES.items()}


def test_the_python_twin_writes_what_json_format_does() -> None:
    for signal, msg in _requests(150):
        want = to_json(msg)
        assert _PY[signal].encode(msg) == want
        assert "".join(_PY[signal].chunks(msg)) == want


def test_the_generated_requests_cover_every_field_and_the_hard_values() -> None:
    text = "".join(to_json(m) for _, m in _requests(150))
    for needle in (
        '"NaN"',
        '"Infinity"',
        '"-Infinity"',
        "-0.0",
        "e+300",
        "\\ud83d\\ude00",
        '"-9223372036854775808"',
        '"18446744073709551615"',
        '"arrayValue"',
        '"kvlistValue"',
        '"bytesValue"',
        '"exponentialHistogram"',
        '"summary"',
        '"asInt"',
        '"asDouble"',
        '"parentSpanId"',
    ):
        assert needle in text, needle


native = pytest.mark.skipif(_native.JsonEncoder is None, reason="native helpers not built")


@native
def test_native_writes_what_json_format_does_from_varied_wire_forms() -> None:
    assert _native.JsonEncoder is not None
    enc = {s: _native.JsonEncoder(e.schema) for s, e in _PY.items()}
    rng = random.Random(7)
    for signal, msg in _requests(150):
        data = msg.SerializeToString()
        assert enc[signal].encode(data).decode() == to_json(msg)
        varied = vary(rng, msg.DESCRIPTOR, data)
        parsed = REQUEST_TYPES[signal]()
        parsed.ParseFromString(varied)
        assert enc[signal].encode(varied).decode() == to_json(parsed) == _PY[signal].encode(parsed)
        pieces: list[bytes] = []
        n = enc[signal].write(data, pieces.append, 256, b"\n")
        assert b"".join(pieces) == to_json(msg).encode() + b"\n"
        assert n == sum(map(len, pieces))


@native
def test_native_refuses_what_upb_would_merge_and_what_is_not_a_request() -> None:
    assert _native.JsonEncoder is not None
    enc = _native.JsonEncoder(_PY["traces"].schema)
    span = b"\x0a\x10" + bytes(range(1, 17)) + b"\x2a\x01a"  # trace_id, name "a"
    twice = b"\x2a\x01a\x2a\x01b"  # name written twice: upb keeps the last
    for data in (
        b"\xff\xff\xff",
        b"\x0a\x05\x12\x03\x1a\x01",
        b"\x0a"
        + bytes([len(twice) + 4])
        + b"\x12"
        + bytes([len(twice) + 2])
        + b"\x12"
        + bytes([len(twice)])
        + twice,
        b"\x0a\x06\x12\x04\x12\x02\x2a\xff",
    ):
        with pytest.raises(ValueError):
            enc.encode(data)
    ok = b"\x0a" + bytes([len(span) + 4]) + b"\x12" + bytes([len(span) + 2]) + b"\x12"
    ok += bytes([len(span)]) + span
    assert enc.encode(ok).decode() == to_json(_parse("traces", ok))


def _parse(signal: str, data: bytes) -> Message:
    msg = REQUEST_TYPES[signal]()
    msg.ParseFromString(data)
    return msg


@pytest.mark.parametrize("use_native", [True, False])
def test_the_file_sink_writes_to_json_whichever_encoder_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_native: bool
) -> None:
    if use_native and _native.JsonEncoder is None:
        pytest.skip("native helpers not built")
    if not use_native:
        monkeypatch.setattr(file_mod, "_NATIVE", {})
    sink = FileSink(str(tmp_path), "traces", 1 << 30, 2)
    want = []
    for signal, msg in _requests(30):
        if signal == "traces":
            sink(msg.SerializeToString())
            want.append(to_json(msg))
    # a name written twice: upb keeps the last, the native walk refuses it, Python writes it
    span = b"\x0a\x10" + bytes(range(1, 17)) + b"\x2a\x01a\x2a\x01b"
    scope = b"\x12" + bytes([len(span)]) + span
    data = b"\x0a" + bytes([len(scope) + 2]) + b"\x12" + bytes([len(scope)]) + scope
    sink(data)
    want.append(to_json(_parse("traces", data)))
    assert '"name":"b"' in want[-1]
    assert (tmp_path / "traces.jsonl").read_text() == "".join(w + "\n" for w in want)
