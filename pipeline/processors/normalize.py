"""normalize: find the LLM-call spans of a batch and read them into `LLMCall`s.

One pass over each span's attributes, one dict lookup per attribute (the compiled convention
tables); a span is an LLM call when it names a model and a provider, operation, token count
or an LLM marker. Everything later in the chain works on the `LLMCall`s.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from .._native import KeyReader, span_values
from ..model import LLMCall, TraceBatch, any_value, service_name_of
from .conventions import COST_ATTRIBUTE, CURRENT_NAMES, LOOKUP, TTFT_ATTRIBUTE, normalize_provider
from .conventions import LLM_MARKERS as _MARKERS
from .conventions._table import to_int, to_str

RESPONSE_ID_KEY = "gen_ai.response.id"

_SPAN_KIND_SERVER = 2
_STATUS_ERROR = 2
_CLASS_REPR = re.compile(r"^<class '([\w.]+)'>$")

_MAX_TOKENS = 2**63 - 1  # an OTLP int64: larger counts (from strings) are not counts
_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)


def tidy_error_type(raw: str) -> str:
    """`<class 'openai.RateLimitError'>` and `openai.RateLimitError` -> `RateLimitError`."""
    s = raw.strip()
    m = _CLASS_REPR.match(s)
    if m:
        s = m.group(1)
    if "." in s and " " not in s:
        s = s.rsplit(".", 1)[1]
    return s[:128]


def _error_type(span: Any, status_code: int, fields: dict[str, Any]) -> str:
    raw = fields.get("error_type")
    if raw:
        return tidy_error_type(str(raw))
    if status_code != _STATUS_ERROR:
        return ""
    for ev in span.events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.type" and kv.value.string_value:
                    return tidy_error_type(kv.value.string_value)
    return "_OTHER"


# key -> (field, priority, convention, transform, fast): `fast` names the AnyValue member whose
# value the transform would return unchanged (a string for to_str, an int for to_int), so the
# common case skips both the transform and `any_value`.
_FAST = {
    to_str: "string_value",
    to_int: "int_value",
}
# The Python type of a fast member's values (what the native reader returns for it).
_FAST_TYPES: dict[str, type | None] = {"string_value": str, "int_value": int, "": None}
_TABLE: dict[str, tuple[str, int, str, Any, str]] = {
    key: (m.field, priority, conv, m.transform, _FAST.get(m.transform, ""))  # type: ignore[arg-type]
    for key, (m, priority, conv) in LOOKUP.items()
}
# Read for dedupe (same response seen by two instrumentations), not a convention field.
_TABLE[RESPONSE_ID_KEY] = ("response_id", 0, "", to_str, "string_value")
# A span is a model call only when one of these is present (see read_span).
_QUALIFYING = frozenset({"request_model", "response_model", "server_ttft_s", "server_duration_s"})
# What enrich may write: a span that has one keeps it (gen_ai.usage.cost is in no table).
_ENRICHED_KEYS = frozenset({COST_ATTRIBUTE, TTFT_ATTRIBUTE, *CURRENT_NAMES.values()})
_CONVENTION_FIELDS = frozenset({"provider", "request_model", "input_tokens"})


class _Plan(NamedTuple):
    """How to read spans whose attribute keys are one given sequence."""

    # field -> its sources, highest priority first (attribute order among equals):
    # (attribute index, position in `attrs`, priority, convention, transform, fast member)
    reads: tuple[tuple[str, tuple[tuple[int, int, int, str, Any, str], ...]], ...]
    present: frozenset[str]  # the keys enrich must not write again (table or enrich keys)
    # (attribute index, position in `attrs`, LLM marker values)
    markers: tuple[tuple[int, int, frozenset[str]], ...]
    attrs: tuple[int, ...]  # the attributes read, ascending (what the native reader decodes)


# Instrumentations write the same attribute keys in the same order span after span, so the
# table lookups and priority ordering are done once per key sequence, not per span.
# A flood of odd key sets must not grow memory: spans with many attributes are planned
# each time, and the cache starts over when full (at most ~5 MB of keys).
_PLANS: dict[tuple[str, ...], _Plan | None] = {}
_MAX_PLANS = 1024
_MAX_PLANNED_KEYS = 64


def _plan(keys: tuple[str, ...]) -> _Plan | None:
    sources: dict[str, list[tuple[int, int, str, Any, str]]] = {}
    for i, key in enumerate(keys):
        e = _TABLE.get(key)
        if e is not None:
            f, priority, conv, transform, fast = e
            sources.setdefault(f, []).append((i, priority, conv, transform, fast))
    if not any(f in _QUALIFYING for f in sources):
        return None
    marker_at = [(i, m) for i, key in enumerate(keys) if (m := _MARKERS.get(key)) is not None]
    attrs = tuple(
        sorted({i for found in sources.values() for i, *_ in found} | {i for i, _ in marker_at})
    )
    pos = {i: k for k, i in enumerate(attrs)}
    reads = tuple(
        (f, tuple((i, pos[i], *rest) for i, *rest in sorted(found, key=lambda s: -s[1])))
        for f, found in sources.items()
    )
    markers = tuple((i, pos[i], frozenset(m)) for i, m in marker_at)
    present = frozenset(k for k in keys if k in _TABLE or k in _ENRICHED_KEYS)
    return _Plan(reads, present, markers, attrs)


def _plan_of(keys: tuple[str, ...]) -> _Plan | None:
    try:
        return _PLANS[keys]
    except KeyError:
        plan = _plan(keys)
        if len(keys) <= _MAX_PLANNED_KEYS:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[keys] = plan
        return plan


def _apply(value: Any, transform: Any) -> Any:
    try:
        return value if transform is None else transform(value)
    except (ValueError, TypeError, ArithmeticError):  # "inf" tokens: as if absent
        return None


def _read(v: Any, transform: Any) -> Any:
    return _apply(any_value(v), transform)


# The span's fields normalize reads besides its attributes, in the native reader's order:
# (trace_id, span_id, parent_span_id, kind, start, end, status code, attribute values).
SpanHead = tuple[bytes, bytes, bytes, int, int, int, int, list[Any]]


def _head(span: Any) -> SpanHead:
    """The span's head read through upb (its attribute values are read by the plan)."""
    return (
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.status.code,
        [],
    )


def _fields_from_message(kvs: list[Any], plan: _Plan) -> tuple[dict[str, Any], str, bool]:
    fields: dict[str, Any] = {}
    convention = ""
    best = -1
    for f, sources in plan.reads:
        for i, _, priority, conv, transform, fast in sources:
            v = kvs[i].value
            # "" / 0 may also mean another member is set: then the general path decides
            value = (fast and getattr(v, fast)) or _read(v, transform)
            if value is not None and value != "":
                fields[f] = value
                if priority > best and f in _CONVENTION_FIELDS:
                    best, convention = priority, conv
                break
    marked = any(kvs[i].value.string_value in values for i, _, values in plan.markers)
    return fields, convention, marked


def _fields_from_values(values: list[Any], plan: _Plan) -> tuple[dict[str, Any], str, bool]:
    """As `_fields_from_message`, over the values the native reader decoded."""
    fields: dict[str, Any] = {}
    convention = ""
    best = -1
    for f, sources in plan.reads:
        for _, k, priority, conv, transform, fast in sources:
            raw = values[k]
            value = raw if raw and type(raw) is _FAST_TYPES[fast] else _apply(raw, transform)
            if value is not None and value != "":
                fields[f] = value
                if priority > best and f in _CONVENTION_FIELDS:
                    best, convention = priority, conv
                break
    marked = any(
        type(v := values[k]) is str and v in marker_values for _, k, marker_values in plan.markers
    )
    return fields, convention, marked


def read_span(
    span: Any, service_name: str, scope: str = "", keys: tuple[str, ...] | None = None
) -> LLMCall | None:
    """An `LLMCall` for the span, or None when it is not a model call. `keys`: the span's
    attribute keys in order when the caller has them (read from the wire natively)."""
    kvs: list[Any] | None = None
    if keys is None:
        kvs = list(span.attributes)
        keys = tuple([kv.key for kv in kvs])
    plan = _plan_of(keys)
    if plan is None:
        return None
    if kvs is None:  # one list beats indexing upb's container per read
        kvs = list(span.attributes)
    fields, convention, marked = _fields_from_message(kvs, plan)
    return _call(span, _head(span), plan, fields, convention, marked, service_name, scope)


def _call(
    span: Any,
    head: SpanHead,
    plan: _Plan,
    fields: dict[str, Any],
    convention: str,
    marked: bool,
    service_name: str,
    scope: str,
) -> LLMCall | None:
    model = fields.get("request_model") or fields.get("response_model")
    if not model:
        # vLLM's v1 server span (`llm_request`) names no model, but its server-side latencies
        # say it is one model call. The model stays "" (not made up, so enrich writes none).
        if "server_ttft_s" not in fields and "server_duration_s" not in fields:
            return None
        model = ""
    if not (
        marked
        or "provider" in fields
        or "operation" in fields
        or any(f in fields for f in _TOKEN_FIELDS)
    ):
        return None

    trace_id, span_id, parent_span_id, kind, start_ns, end_ns, status_code, _ = head
    call = LLMCall(
        span=span,
        service_name=service_name,
        convention=convention or "unknown",
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        start_ns=start_ns,
        end_ns=end_ns,
        scope=scope,
        operation=str(fields.get("operation") or "chat"),
        provider=normalize_provider(str(fields.get("provider") or "")) or "unknown",
        request_model=str(fields.get("request_model") or model),
        response_model=str(fields.get("response_model") or ""),
        present=plan.present,
        response_id=str(fields.get("response_id", "")),
    )
    for f in _TOKEN_FIELDS:
        v = fields.get(f)
        if v is not None and 0 <= v <= _MAX_TOKENS:
            setattr(call, f, v)
    total = fields.get("total_tokens")
    if total is not None and not 0 <= total <= _MAX_TOKENS:
        total = None
    if (
        call.output_tokens is None
        and total is not None
        and call.input_tokens is not None
        and total >= call.input_tokens
    ):
        call.output_tokens = total - call.input_tokens
    call.streaming = bool(fields.get("streaming", False))
    ttft = fields.get("ttft_s")
    if ttft is not None and ttft >= 0:
        call.ttft_s = float(ttft)
        call.streaming = True
    call.error_type = _error_type(span, status_code, fields)
    server_ttft = fields.get("server_ttft_s")
    server_duration = fields.get("server_duration_s")
    if (
        server_ttft is not None
        or server_duration is not None
        or (fields.get("span_kind_hint") == "server" or kind == _SPAN_KIND_SERVER)
    ):
        call.server_side = True
        # a negative latency is not one (as ttft above): the call counts, the value does not
        call.server_ttft_s = server_ttft if server_ttft is not None and server_ttft >= 0 else None
        call.server_duration_s = (
            server_duration if server_duration is not None and server_duration >= 0 else None
        )
    cost = fields.get("cost_usd")
    if cost is not None and cost >= 0:
        call.cost_usd = float(cost)
    return call


# Walking every span's attributes through upb only to learn their keys costs more than the
# rest of normalize; the native reader gets them from the received bytes (interned strings),
# and the LLM spans' values too, so upb materializes nothing of a span but the LLM ones.
_KEY_READER = KeyReader() if KeyReader is not None else None
_SPAN_VALUES = span_values


def _wire_keys(batch: TraceBatch) -> list[tuple[str, ...]] | None:
    """Each span's attribute keys from the received bytes, or None: read them from the spans."""
    if _KEY_READER is None or batch.raw is None or batch.modified:
        return None
    try:
        return _KEY_READER.span_keys(batch.raw)
    # ValueError: not the wire shape expected; RuntimeError: in use by another thread (a
    # finalizer switched threads mid-call). Either way the parsed message decides.
    except (ValueError, RuntimeError):
        return None


def _read_wire(
    batch: TraceBatch,
    scopes: list[tuple[str, Any]],
    wire_keys: list[tuple[str, ...]],
) -> None:
    """normalize with the span keys (and the LLM spans' values) read from the wire."""
    found: list[tuple[int, _Plan, int, int]] = []  # (span index, plan, scope, index in scope)
    g = 0
    for si, (_, ss) in enumerate(scopes):
        for j in range(len(ss.spans)):
            plan = _plan_of(wire_keys[g])
            if plan is not None:
                found.append((g, plan, si, j))
            g += 1
    if not found:
        return
    heads: list[SpanHead | None] | None = None
    if _SPAN_VALUES is not None:
        try:
            heads = _SPAN_VALUES(batch.raw or b"", [(g, plan.attrs) for g, plan, _, _ in found])
        except ValueError:
            heads = None
    calls = batch.calls
    for n, (_, plan, si, j) in enumerate(found):
        service, ss = scopes[si]
        span = ss.spans[j]
        head = heads[n] if heads is not None else None
        if head is None:  # a value the native reader leaves to the parser
            fields, convention, marked = _fields_from_message(list(span.attributes), plan)
            head = _head(span)
        else:
            fields, convention, marked = _fields_from_values(head[7], plan)
        call = _call(span, head, plan, fields, convention, marked, service, ss.scope.name)
        if call is not None:
            calls.append(call)


def normalize(batch: TraceBatch) -> TraceBatch:
    scopes = [
        (service_name_of(rs.resource), ss)
        for rs in batch.request.resource_spans
        for ss in rs.scope_spans
    ]
    count = sum(len(ss.spans) for _, ss in scopes)
    wire_keys = _wire_keys(batch)
    if wire_keys is not None and len(wire_keys) == count:
        _read_wire(batch, scopes, wire_keys)
    else:  # (a count mismatch cannot happen for bytes the parser accepted; be safe anyway)
        calls = batch.calls
        for service, ss in scopes:
            scope = ss.scope.name
            for span in ss.spans:
                call = read_span(span, service, scope)
                if call is not None:
                    calls.append(call)
    batch.span_count = count
    return batch
