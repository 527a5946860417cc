"""OTLP/JSON of a request without json_format: a walk of a schema read from the descriptors.

What `decode.to_json` makes (json_format's `MessageToDict` with integer enums, ids rewritten to
hex, `json.dumps` with `(",", ":")`), byte for byte, in a third of its time: present fields in
field-number order under their camelCase names, 64-bit integers as strings, NaN and infinities
as "NaN" / "Infinity" / "-Infinity", bytes in base64 but trace and span ids in hex, strings
escaped as `json.dumps` escapes them (ASCII only).

`JsonEncoder` walks a parsed message; the native `JsonEncoder` (native/src/otlp_json.rs) walks
the serialized bytes with the same `schema()` and is what the file sink runs when it is built:
the tests hold the two and `to_json` equal.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring_ascii
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ..receivers.decode import _ID_FIELDS

_T = FieldDescriptor
_INT64 = {_T.TYPE_INT64, _T.TYPE_UINT64, _T.TYPE_FIXED64, _T.TYPE_SFIXED64, _T.TYPE_SINT64}
_INT32 = {_T.TYPE_INT32, _T.TYPE_UINT32, _T.TYPE_FIXED32, _T.TYPE_SFIXED32, _T.TYPE_SINT32}
_INT32.add(_T.TYPE_ENUM)  # integer enums (use_integers_for_enums)
_KNOWN = _INT64 | _INT32 | {_T.TYPE_DOUBLE, _T.TYPE_BOOL, _T.TYPE_STRING, _T.TYPE_BYTES}
_KNOWN.add(_T.TYPE_MESSAGE)

# (number, json name, descriptor type, repeated, has presence, message index or -1,
#  oneof index or -1, an id (bytes written as hex))
SchemaField = tuple[int, str, int, bool, bool, int, int, bool]


def schema(root: Descriptor) -> list[list[SchemaField]]:
    """Every message type reachable from `root` (index 0), its fields by number: the table
    both encoders walk. float (32-bit), maps and groups, which OTLP has none of, are refused."""
    order: list[Descriptor] = [root]
    index = {root.full_name: 0}
    out: list[list[SchemaField]] = []
    while len(out) < len(order):
        desc = order[len(out)]
        oneofs = {o.full_name: i for i, o in enumerate(desc.oneofs)}
        fields: list[SchemaField] = []
        for f in sorted(desc.fields, key=lambda f: f.number):
            if f.type not in _KNOWN or (f.message_type and f.message_type.GetOptions().map_entry):
                raise ValueError(f"{f.full_name}: a field type the OTLP/JSON walk does not know")
            sub = -1
            if f.type == _T.TYPE_MESSAGE:
                name = f.message_type.full_name
                if name not in index:
                    index[name] = len(order)
                    order.append(f.message_type)
                sub = index[name]
            oneof = f.containing_oneof
            fields.append(
                (
                    f.number,
                    f.json_name,
                    f.type,
                    f.is_repeated,
                    f.has_presence,
                    sub,
                    oneofs[oneof.full_name] if oneof is not None else -1,
                    f.type == _T.TYPE_BYTES and f.json_name in _ID_FIELDS,
                )
            )
        out.append(fields)
    return out


def _double(v: float) -> str:
    if math.isfinite(v):
        return repr(v)
    return '"NaN"' if math.isnan(v) else ('"Infinity"' if v > 0 else '"-Infinity"')


def _scalar(type_: int, is_id: bool) -> Callable[[Any], str]:
    if type_ == _T.TYPE_STRING:
        return encode_basestring_ascii
    if type_ == _T.TYPE_BYTES:
        if is_id:
            return lambda v: f'"{v.hex()}"'
        return lambda v: f'"{base64.b64encode(v).decode()}"'
    if type_ in _INT64:
        return lambda v: f'"{v}"'
    if type_ in _INT32:
        return str
    if type_ == _T.TYPE_BOOL:
        return lambda v: "true" if v else "false"
    return _double


class JsonEncoder:
    """OTLP/JSON of messages of one type (the Python twin of the native encoder)."""

    def __init__(self, root: Descriptor) -> None:
        self.schema = schema(root)
        # per field descriptor: '"name":' and how its value is written (None: a message)
        self._plan: dict[FieldDescriptor, tuple[str, bool, Callable[[Any], str] | None]] = {}
        self._add(root, set())

    def _add(self, desc: Descriptor, seen: set[str]) -> None:
        if desc.full_name in seen:
            return
        seen.add(desc.full_name)
        for f in desc.fields:
            is_id = f.type == _T.TYPE_BYTES and f.json_name in _ID_FIELDS
            write = None if f.type == _T.TYPE_MESSAGE else _scalar(f.type, is_id)
            self._plan[f] = (f'"{f.json_name}":', f.is_repeated, write)
            if f.message_type is not None:
                self._add(f.message_type, seen)

    def _message(self, msg: Message, out: list[str]) -> None:
        plan = self._plan
        sep = "{"
        for f, value in msg.ListFields():
            key, repeated, write = plan[f]
            out.append(sep + key)
            sep = ","
            if write is None:
                if repeated:
                    out.append("[")
                    for i, item in enumerate(value):
                        if i:
                            out.append(",")
                        self._message(item, out)
                    out.append("]")
                else:
                    self._message(value, out)
            elif repeated:
                out.append("[" + ",".join(map(write, value)) + "]")
            else:
                out.append(write(value))
        out.append("{}" if sep == "{" else "}")

    def encode(self, msg: Message) -> str:
        out: list[str] = []
        self._message(msg, out)
        return "".join(out)

    def chunks(self, msg: Message, depth: int = 3) -> Iterator[str]:
        """`encode(msg)` in pieces: each element of the repeated messages `depth` levels down
        (resource, scope, span) yielded apart, so a large request's JSON is never whole."""
        if depth == 0:
            yield self.encode(msg)
            return
        out: list[str] = []
        sep = "{"
        for f, value in msg.ListFields():
            key, repeated, write = self._plan[f]
            out.append(sep + key)
            sep = ","
            if write is None and repeated:
                out.append("[")
                yield "".join(out)
                out.clear()
                for i, item in enumerate(value):
                    if i:
                        yield ","
                    yield from self.chunks(item, depth - 1)
                out.append("]")
            elif write is None:
                self._message(value, out)
            elif repeated:
                out.append("[" + ",".join(map(write, value)) + "]")
            else:
                out.append(write(value))
        out.append("{}" if sep == "{" else "}")
        yield "".join(out)
