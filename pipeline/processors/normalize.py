"""normalize: find the LLM-call spans of a batch and read them into `LLMCall`s.

One pass over each span's attributes, one dict lookup per attribute (the compiled convention
tables); a span is an LLM call when it names a model and a provider, operation, token count
or an LLM marker. Everything later in the chain works on the `LLMCall`s.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from .._native import CALL_FIELDS, CallReader
from ..fields import FIELDS
from ..model import LLMCall, TraceBatch, any_value, service_name_of
from .conventions import (
    CHUNK_EVENTS,
    COST_ATTRIBUTE,
    COST_ATTRIBUTES,
    CURRENT_NAMES,
    LOOKUP,
    TTFT_ATTRIBUTE,
    anthropic,
    litellm,
    normalize_provider,
    openinference,
    openllmetry,
    semconv,
    vllm,
)
from .conventions import LLM_MARKERS as _MARKERS
from .conventions._table import to_bool, to_float, to_int, to_str
from .unreadable import find_unreadable

if TYPE_CHECKING:
    from llm_pipeline_native import CallReader as CallReaderType

RESPONSE_ID_KEY = "gen_ai.response.id"

_SPAN_KIND_SERVER = 2
_STATUS_ERROR = 2
_CLASS_REPR = re.compile(r"^<class '([\w.]+)'>$")

_MAX_TOKENS = 2**63 - 1  # an OTLP int64: larger counts (from strings) are not counts
TOKEN_FIELDS = (
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


def _exception_type(span: Any) -> str | None:
    """The `exception.type` of the span's first `exception` event that has one."""
    for ev in span.events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.type" and kv.value.string_value:
                    return str(kv.value.string_value)
    return None


# key -> (field, priority, convention, transform, fast): `fast` names the AnyValue member whose
# value the transform would return unchanged (a string for to_str, an int for to_int), so the
# common case skips both the transform and `any_value`.
_FAST = {
    to_str: "string_value",
    to_int: "int_value",
}
_TABLE: dict[str, tuple[str, int, str, Any, str]] = {
    key: (m.field, priority, conv, m.transform, _FAST.get(m.transform, ""))  # type: ignore[arg-type]
    for key, (m, priority, conv) in LOOKUP.items()
}
# Read for dedupe (same response seen by two instrumentations), not a convention field.
_TABLE[RESPONSE_ID_KEY] = ("response_id", 0, "", to_str, "string_value")
# A span is a model call only when one of these is present (see read_span).
_QUALIFYING = frozenset({"request_model", "response_model", "server_ttft_s", "server_duration_s"})
# What enrich may write: a span that has one keeps it (gen_ai.usage.cost is in no table).
_ENRICHED_KEYS = frozenset(
    {COST_ATTRIBUTE, *COST_ATTRIBUTES, TTFT_ATTRIBUTE, *CURRENT_NAMES.values()}
)
_CONVENTION_FIELDS = frozenset({"provider", "request_model", "input_tokens"})


class _Plan(NamedTuple):
    """How to read spans whose attribute keys are one given sequence."""

    # field -> its sources, highest priority first (attribute order among equals):
    # (attribute index, priority, convention, transform, fast member)
    reads: tuple[tuple[str, tuple[tuple[int, int, str, Any, str], ...]], ...]
    present: frozenset[str]  # the keys enrich must not write again (table or enrich keys)
    markers: tuple[tuple[int, frozenset[str]], ...]  # (attribute index, LLM marker values)


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
    reads = tuple((f, tuple(sorted(found, key=lambda s: -s[1]))) for f, found in sources.items())
    markers = tuple(
        (i, frozenset(m)) for i, key in enumerate(keys) if (m := _MARKERS.get(key)) is not None
    )
    present = frozenset(k for k in keys if k in _TABLE or k in _ENRICHED_KEYS)
    return _Plan(reads, present, markers)


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


def _fields_from_message(kvs: list[Any], plan: _Plan) -> tuple[dict[str, Any], str, bool]:
    fields: dict[str, Any] = {}
    convention = ""
    best = -1
    for f, sources in plan.reads:
        for i, priority, conv, transform, fast in sources:
            v = kvs[i].value
            # "" / 0 may also mean another member is set: then the general path decides
            value = (fast and getattr(v, fast)) or _read(v, transform)
            if value is not None and value != "":
                fields[f] = value
                if priority > best and f in _CONVENTION_FIELDS:
                    best, convention = priority, conv
                break
    marked = any(kvs[i].value.string_value in values for i, values in plan.markers)
    return fields, convention, marked


_READ_FIELDS = (*FIELDS, "response_id")  # the fields the tables read, as CALL_FIELDS ends
assert CALL_FIELDS[-len(_READ_FIELDS) :] == _READ_FIELDS


def read_span(span: Any, service_name: str, scope: str = "") -> LLMCall | None:
    """An `LLMCall` for the span, or None when it is not a model call."""
    kvs = list(span.attributes)  # one list beats indexing upb's container per read
    plan = _plan_of(tuple([kv.key for kv in kvs]))
    if plan is None:
        return None
    fields, convention, marked = _fields_from_message(kvs, plan)
    status_code = span.status.code
    raw = (  # CALL_FIELDS, as the native reader returns them
        service_name,
        scope,
        convention,
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        status_code,
        _exception_type(span) if status_code == _STATUS_ERROR else None,
        marked,
        plan.present,
        None,  # chunk_ns: not read (the ttft processor walks the events)
        None,  # wire_span: not read from the bytes
        *[fields.get(f) for f in _READ_FIELDS],
    )
    return call_of(span, raw)


# call_of builds LLMCall positionally (keywords cost ~1 µs a call): its first fields, in order
# (those after them have defaults, set by later processors).
_LEADING_FIELDS = (
    "span", "service_name", "convention", "trace_id", "span_id", "parent_span_id", "start_ns",
    "end_ns", "scope", "operation", "provider", "request_model", "response_model",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
    "reasoning_tokens", "streaming", "ttft_s", "ttft_derived", "time_per_token_s", "error_type",
    "server_side", "server_ttft_s", "server_duration_s", "cost_usd", "response_id", "counted",
    "present", "chunk_ns", "wire_span",
)  # fmt: skip
_names = tuple(f.name for f in dataclasses.fields(LLMCall))
assert _names[: len(_LEADING_FIELDS)] == _LEADING_FIELDS, _names


def call_of(span: Any, raw: tuple[Any, ...]) -> LLMCall | None:
    """The `LLMCall` of a span from its raw fields (`CALL_FIELDS`, read natively or by
    `read_span`), or None when it is not a model call: normalize's rules, in one place."""
    (
        service_name,
        scope,
        convention,
        trace_id,
        span_id,
        parent_span_id,
        kind,
        start_ns,
        end_ns,
        status_code,
        exception_type,
        marked,
        present,
        chunk_ns,
        wire_span,
        operation,
        provider,
        request_model,
        response_model,
        input_tokens,
        output_tokens,
        total_tokens,
        cache_read_tokens,
        cache_creation_tokens,
        reasoning_tokens,
        ttft_s,
        streaming,
        error_type,
        server_ttft_s,
        server_duration_s,
        span_kind_hint,
        cost_usd,
        response_id,
    ) = raw
    model = request_model or response_model
    if not model:
        # vLLM's v1 server span (`llm_request`) names no model, but its server-side latencies
        # say it is one model call. The model stays "" (not made up, so enrich writes none).
        if server_ttft_s is None and server_duration_s is None:
            return None
        model = ""
    if not (
        marked
        or provider is not None
        or operation is not None
        or input_tokens is not None
        or output_tokens is not None
        or cache_read_tokens is not None
        or cache_creation_tokens is not None
        or reasoning_tokens is not None
    ):
        return None

    # counts outside an int64 and negative ones are not counts; a negative latency or cost
    # is not one either: the call counts, the value does not
    t = _MAX_TOKENS
    if input_tokens is not None and not 0 <= input_tokens <= t:
        input_tokens = None
    if output_tokens is not None and not 0 <= output_tokens <= t:
        output_tokens = None
    if cache_read_tokens is not None and not 0 <= cache_read_tokens <= t:
        cache_read_tokens = None
    if cache_creation_tokens is not None and not 0 <= cache_creation_tokens <= t:
        cache_creation_tokens = None
    if reasoning_tokens is not None and not 0 <= reasoning_tokens <= t:
        reasoning_tokens = None
    if (
        output_tokens is None
        and input_tokens is not None
        and total_tokens is not None
        and input_tokens <= total_tokens <= t
    ):
        output_tokens = total_tokens - input_tokens
    if ttft_s is not None:
        if ttft_s >= 0:
            ttft_s, streaming = float(ttft_s), True
        else:
            ttft_s = None
    server_side = (
        server_ttft_s is not None
        or server_duration_s is not None
        or span_kind_hint == "server"
        or kind == _SPAN_KIND_SERVER
    )
    if server_side:
        if server_ttft_s is not None and server_ttft_s < 0:
            server_ttft_s = None
        if server_duration_s is not None and server_duration_s < 0:
            server_duration_s = None
        chunk_ns = None  # a server span's chunks are not a client's first chunk
    else:
        server_ttft_s = server_duration_s = None
    if error_type:
        error_type = tidy_error_type(str(error_type))
    elif status_code != _STATUS_ERROR:
        error_type = ""
    else:
        error_type = tidy_error_type(exception_type) if exception_type else "_OTHER"
    if cost_usd is not None:
        cost_usd = float(cost_usd) if cost_usd >= 0 else None
    return LLMCall(  # positionally, in LLMCall's field order (one call per model call)
        span,
        service_name,
        convention or "unknown",
        trace_id,
        span_id,
        parent_span_id,
        start_ns,
        end_ns,
        scope,
        str(operation or "chat"),
        normalize_provider(str(provider or "")) or "unknown",
        str(request_model or model),
        str(response_model or ""),
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_creation_tokens,
        reasoning_tokens,
        bool(streaming),
        ttft_s,
        False,  # ttft_derived
        None,  # time_per_token_s
        error_type,
        server_side,
        server_ttft_s,
        server_duration_s,
        cost_usd,
        str(response_id or ""),
        True,  # counted
        present,
        chunk_ns,
        wire_span,
    )


# Each transform of the tables the native reader can apply itself, described as data; any other
# (or a value these cannot take, such as a string `to_int` would parse) makes it hand the span
# back, and `read_span` reads it through the parser.
_NATIVE_TRANSFORMS: dict[Any, tuple[Any, ...]] = {
    to_str: ("str",),
    to_int: ("int",),
    to_float: ("float",),
    to_bool: ("bool",),
    semconv.to_operation: ("map", semconv.OPERATION_ALIASES, True),
    openllmetry.to_operation: ("map", openllmetry.REQUEST_TYPES, True),
    openinference.to_operation: ("map", openinference.SPAN_KINDS, False),
    vllm.vllm_provider: ("const", "vllm"),
    litellm.provider_prefix: ("prefix",),
}


def call_reader() -> CallReaderType | None:
    """The native reader over the tables, or None when the native helpers are not built."""
    if CallReader is None:
        return None
    table = [
        (key, f, priority, conv, _NATIVE_TRANSFORMS.get(transform, ("python",)))
        for key, (f, priority, conv, transform, _) in _TABLE.items()
    ]
    markers = [(key, sorted(values)) for key, values in _MARKERS.items()]
    presentable = sorted(set(_TABLE) | _ENRICHED_KEYS)
    chunk_events = sorted(CHUNK_EVENTS)
    return CallReader(table, markers, presentable, chunk_events)


# Walking every span's attributes through upb only to learn their keys costs more than the rest
# of normalize: the native reader reads the received bytes and returns the raw fields of each
# span that may be a model call, so upb materializes nothing of a span but those ones' messages.
_CALL_READER = call_reader()


def _read_native(
    batch: TraceBatch, scopes: list[tuple[str, Any]], read: set[tuple[int, int]]
) -> bool:
    """normalize through the native reader; False when it cannot read the request. `read`
    gets the (scope index, span index) of each model call."""
    data = batch.received
    if _CALL_READER is None or data is None:
        return False
    try:
        found = _CALL_READER.read(data, [(service, ss.scope.name) for service, ss in scopes])
    # ValueError: not the wire shape expected; RuntimeError: in use by another thread (a
    # finalizer switched threads mid-call). Either way the parsed message decides.
    except (ValueError, RuntimeError):
        return False
    calls = batch.calls
    for si, j, raw in found:
        service, ss = scopes[si]
        span = ss.spans[j]
        call = read_span(span, service, ss.scope.name) if raw is None else call_of(span, raw)
        if call is not None:
            calls.append(call)
            read.add((si, j))
    return True


def normalize(batch: TraceBatch, unreadable: dict[str, int] | None = None) -> TraceBatch:
    """Read the batch's model calls into `batch.calls`. With `unreadable`, also count there, by
    scope, the spans that look like model calls but from which none could be read."""
    scopes = [
        (sys.intern(service_name_of(rs.resource)), ss)  # (fallback buffers it per call)
        for rs in batch.request.resource_spans
        for ss in rs.scope_spans
    ]
    read: set[tuple[int, int]] = set()
    if not _read_native(batch, scopes, read):
        calls = batch.calls
        for si, (service, ss) in enumerate(scopes):
            scope = ss.scope.name
            for j, span in enumerate(ss.spans):
                call = read_span(span, service, scope)
                if call is not None:
                    calls.append(call)
                    read.add((si, j))
    batch.span_count = sum(len(ss.spans) for _, ss in scopes)
    _cache_in_input(batch.calls, scopes)
    if unreadable is not None and batch.span_count > len(read):
        find_unreadable(batch, scopes, read, unreadable)
    return batch


_log = structlog.get_logger("pipeline.normalize")
_MAX_LOGGED_SCOPES = 1000


class Normalize:
    """The normalize processor: reports each batch's unreadable LLM-looking spans by scope
    (`on_unreadable(scope, n)`) and logs each scope the first time."""

    def __init__(self, on_unreadable: Callable[[str, int], None] | None = None) -> None:
        self._on_unreadable = on_unreadable
        self._logged: set[str] = set()

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        found: dict[str, int] = {}
        normalize(batch, found)
        for scope, n in found.items():
            if self._on_unreadable is not None:
                self._on_unreadable(scope, n)
            if scope not in self._logged and len(self._logged) < _MAX_LOGGED_SCOPES:
                self._logged.add(scope)
                _log.warning(
                    "spans look like LLM calls but no call could be read from them: an"
                    " instrumentation whose attribute names this sidecar does not know?",
                    scope=scope,
                    spans=n,
                )
        return batch


def _cache_in_input(calls: list[LLMCall], scopes: list[tuple[str, Any]]) -> None:
    """Input tokens include the cached ones (semconv), whoever wrote them (conventions/
    anthropic.py): add them where the writer left them out."""
    excluding = {
        (service, ss.scope.name)
        for service, ss in scopes
        if anthropic.excludes_cache(ss.scope.name, ss.scope.version)
    }
    for call in calls:
        cr, cw, inp = call.cache_read_tokens, call.cache_creation_tokens, call.input_tokens
        if (cr or cw) and inp is not None:
            excl = (call.service_name, call.scope) in excluding
            call.input_tokens = min(
                _MAX_TOKENS, anthropic.input_with_cache(inp, cr or 0, cw or 0, excl)
            )
