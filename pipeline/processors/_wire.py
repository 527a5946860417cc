"""Where the spans (or log records) of a serialized OTLP request lie, from the wire format.

Traces and logs requests share one shape: request {1: resource_*} -> resource_* {1: resource,
2: scope_*} -> scope_* {2: items}. `item_ranges` reads just those three levels (tags and
lengths, nothing decoded) so a byte offset found by a regex over the whole request can be
mapped to the span or log record it lies in; the parsed message's i-th item is the i-th
occurrence on the wire. Only called on bytes the protobuf parser already accepted.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import _native


class ItemRange(NamedTuple):
    start: int
    end: int
    resource: int  # index of the resource_spans / resource_logs
    scope: int  # index of the scope_* within it; -1 for the resource itself
    item: int  # index of the span / log record within the scope; -1 for the resource


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _len_fields(data: bytes, pos: int, end: int) -> list[tuple[int, int, int]]:
    """(field number, start, end) of the length-delimited fields of the message data[pos:end]."""
    out: list[tuple[int, int, int]] = []
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _varint(data, pos)
        wire = tag & 7
        if wire == 2:
            n = data[pos]
            if n < 0x80:
                pos += 1
            else:
                n2 = data[pos + 1]
                if n2 < 0x80:  # spans are mostly 128 B - 16 KB: two bytes
                    n = (n & 0x7F) | (n2 << 7)
                    pos += 2
                else:
                    n, pos = _varint(data, pos)
            out.append((tag >> 3, pos, pos + n))
            pos += n
        elif wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("truncated message")
    return out


Range = tuple[int, int, int, int, int]  # an ItemRange's fields, as a plain tuple


def py_item_ranges(data: bytes) -> list[Range]:
    """The resources and items of a traces or logs request, in wire order (sorted by start),
    as plain tuples (`ItemRange._make` names one): a named tuple per span costs more than the
    walk itself. `item_ranges` is the native twin when it is built (5x faster)."""
    out: list[Range] = []
    r = 0
    for field, start, end in _len_fields(data, 0, len(data)):
        if field != 1:
            continue
        s = 0
        for f2, a, b in _len_fields(data, start, end):
            if f2 == 1:
                out.append((a, b, r, -1, -1))
            elif f2 == 2:
                i = 0
                for f3, c, d in _len_fields(data, a, b):
                    if f3 == 2:
                        out.append((c, d, r, s, i))
                        i += 1
                s += 1
        r += 1
    out.sort()  # a resource may follow its scopes on the wire
    return out


item_ranges = _native.item_ranges or py_item_ranges
