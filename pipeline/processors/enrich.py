"""enrich: write what the chain derived back into the LLM spans, never overwriting.

Adds `gen_ai.usage.cost` (USD), the current-convention names when the span used deprecated or
other conventions' names, and `gen_ai.response.time_to_first_chunk` when it came from events;
with `metrics.semconv: development | both` also the proposed `gen_ai.usage.cost.amount`,
`.currency` and `.source` (`make_enrich`).
Only spans it changes mark the batch modified, so unchanged requests are forwarded as received.

The added attributes are encoded as KeyValue wire bytes: building each KeyValue through upb cost
several times more (tests/processors/test_enrich.py holds the encoding equal to upb's). Where
every change to the request so far was recorded as a byte edit, they are appended to the span's
received bytes as one more edit and merged into the parsed span (protobuf appends a repeated
field's merged items) only when something reads the parsed request (`TraceBatch.request`); else
they are merged at once.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from ..model import LLMCall, TraceBatch, set_any_value
from .conventions import (
    COST_AMOUNT_ATTRIBUTE,
    COST_ATTRIBUTE,
    COST_CURRENCY_ATTRIBUTE,
    COST_SOURCE_ATTRIBUTE,
    CURRENT_NAMES,
    TTFT_ATTRIBUTE,
)

_DOUBLE = struct.Struct("<d")
_MAX_CACHED = 4096


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte, length, payload."""
    return bytes([tag]) + _varint(len(payload)) + payload


def _upb_kv(key: str, value: Any) -> bytes:
    kv = KeyValue(key=key)
    set_any_value(kv.value, value)
    data: bytes = kv.SerializeToString()
    return data


# Span.attributes (field 9) items: KeyValue {1: key, 2: AnyValue {1: string, 3: int, 4: double}}
_KEYS = (COST_ATTRIBUTE, COST_AMOUNT_ATTRIBUTE, TTFT_ATTRIBUTE, *CURRENT_NAMES.values())
# a double's attribute is the same size whatever the value: all but the 8 value bytes, ready
_DOUBLE_HEAD = {
    k: _field(0x4A, _field(0x0A, k.encode()) + b"\x12\x09\x21" + bytes(8))[:-8] for k in _KEYS
}
_KEY_FIELD = {k: _field(0x0A, k.encode()) for k in _KEYS}
_encoded: dict[tuple[str, Any], bytes] = {}  # (key, str value) -> the attribute's bytes


def register_keys(*keys: str) -> None:
    """Keys another processor writes numbers under: encoded by hand as these are."""
    for k in keys:
        _DOUBLE_HEAD[k] = _field(0x4A, _field(0x0A, k.encode()) + b"\x12\x09\x21" + bytes(8))[:-8]
        _KEY_FIELD[k] = _field(0x0A, k.encode())


def encode_attribute(key: str, value: Any) -> bytes:
    """The span attribute `key` = `value` as Span field-9 wire bytes (what upb writes)."""
    t = type(value)
    if t is float and key in _DOUBLE_HEAD:
        return _DOUBLE_HEAD[key] + _DOUBLE.pack(value)
    if t is int and 0 <= value < 2**63 and key in _KEY_FIELD:
        head = _KEY_FIELD[key]
        n = _varint(value)
        size = len(head) + 3 + len(n)  # key, value tag and length, int tag, varint
        if size < 0x80:  # one length byte (any key here with a token count)
            return b"".join(
                (b"\x4a", bytes((size,)), head, b"\x12", bytes((len(n) + 1,)), b"\x18", n)
            )
        return _field(0x4A, head + _field(0x12, b"\x18" + n))
    if t is str:
        cached = _encoded.get((key, value))
        if cached is None:
            if len(_encoded) >= _MAX_CACHED:  # model names come from the spans: bounded
                _encoded.clear()
            cached = _encoded[key, value] = _field(0x4A, _upb_kv(key, value))
        return cached
    return _field(0x4A, _upb_kv(key, value))  # anything else: upb encodes it


# `present` sets are shared by the spans of one key sequence: the current names each lacks are
# worked out once per set (bounded: key sequences come from the spans), the names (strings)
# apart from the token counts.
_TEXT_FIELDS = frozenset({"operation", "provider", "request_model", "response_model"})
_Names = tuple[tuple[str, str], ...]
_missing: dict[frozenset[str], tuple[_Names, _Names]] = {}
# (present set, the four names) -> the missing names' attributes, encoded: the same few
# models and providers call after call (bounded)
_texts: dict[tuple[Any, ...], bytes] = {}


def _missing_names(present: frozenset[str]) -> tuple[_Names, _Names]:
    names = _missing.get(present)
    if names is None:
        if len(_missing) >= _MAX_CACHED:
            _missing.clear()
        lacking = [(field, key) for field, key in CURRENT_NAMES.items() if key not in present]
        names = _missing[present] = (
            tuple(n for n in lacking if n[0] in _TEXT_FIELDS),
            tuple(n for n in lacking if n[0] not in _TEXT_FIELDS),
        )
    return names


def _encoded_names(call: LLMCall, names: _Names) -> bytes:
    key = (call.present, call.operation, call.provider, call.request_model, call.response_model)
    data = _texts.get(key)
    if data is None:
        parts = []
        for field, attribute in names:
            value = getattr(call, field)
            if value is None or value == "" or (field == "provider" and value == "unknown"):
                continue
            parts.append(encode_attribute(attribute, value))
        if len(_texts) >= _MAX_CACHED:
            _texts.clear()
        data = _texts[key] = b"".join(parts)
    return data


_COST_HEAD = _DOUBLE_HEAD[COST_ATTRIBUTE]
_TTFT_HEAD = _DOUBLE_HEAD[TTFT_ATTRIBUTE]
_AMOUNT_HEAD = _DOUBLE_HEAD[COST_AMOUNT_ATTRIBUTE]
_pack_double = _DOUBLE.pack
# The cost is in USD and was computed on the client side (by the sidecar from genai-prices or
# the overrides, else by the instrumentation): never a provider-billed figure.
_CURRENCY = encode_attribute(COST_CURRENCY_ATTRIBUTE, "USD")
_SOURCE = encode_attribute(COST_SOURCE_ATTRIBUTE, "local")


def _cost_attributes(cost: float, present: frozenset[str]) -> bytes:
    """`gen_ai.usage.cost.amount|currency|source`, unless the span states an amount itself
    (then its currency and source describe that amount: none is added)."""
    if COST_AMOUNT_ATTRIBUTE in present:
        return b""
    added = _AMOUNT_HEAD + _pack_double(float(cost))
    if COST_CURRENCY_ATTRIBUTE not in present:
        added += _CURRENCY
    if COST_SOURCE_ATTRIBUTE not in present:
        added += _SOURCE
    return added


def enrich_call(call: LLMCall, cost_attributes: bool = False) -> bytes:
    """The attributes to add to the call's span, as wire bytes (b"": none). The keys written
    here are distinct and enrich runs once per batch (config.validate), so one call never
    writes a key twice. `cost_attributes`: the proposed `gen_ai.usage.cost.*` too."""
    present = call.present
    added = b""
    # the two doubles inline: encode_attribute's bytes (tests/processors/test_enrich.py)
    if (cost := call.cost_usd) is not None:
        if COST_ATTRIBUTE not in present:
            added = _COST_HEAD + _pack_double(float(cost))
        if cost_attributes:
            added += _cost_attributes(cost, present)
    if call.ttft_derived and (ttft := call.ttft_s) is not None and TTFT_ATTRIBUTE not in present:
        added += _TTFT_HEAD + _pack_double(float(ttft))
    names = _missing.get(present)
    texts, numbers = names if names is not None else _missing_names(present)
    if texts:
        added += _encoded_names(call, texts)
    for field, key in numbers:
        value = getattr(call, field)
        if value is not None and value != "":
            added += encode_attribute(key, value)
    return added


def enrich(batch: TraceBatch, cost_attributes: bool = False) -> TraceBatch:
    # The additions are byte edits appended to the spans' received bytes while every change so
    # far was one, so the exporters need not serialize the request again (`append_to_spans`).
    for call in batch.calls:
        added = enrich_call(call, cost_attributes)
        if added:
            batch.append_to_spans(call, added)
    return batch


def make_enrich(semconv: str = "v1.41") -> Callable[[TraceBatch], TraceBatch]:
    """enrich for a `metrics.semconv` mode: the proposed cost attributes outside v1.41."""
    if semconv == "v1.41":
        return enrich
    return lambda batch: enrich(batch, True)
