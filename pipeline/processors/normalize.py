"""normalize: find the LLM-call spans of a batch and read them into `LLMCall`s.

One pass over each span's attributes, one dict lookup per attribute (the compiled convention
tables); a span is an LLM call when it names a model and a provider, operation, token count
or an LLM marker. Everything later in the chain works on the `LLMCall`s.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import LLMCall, TraceBatch, any_value, service_name_of
from .conventions import LLM_MARKERS, LOOKUP, normalize_provider

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


def _error_type(span: Any, fields: dict[str, Any]) -> str:
    raw = fields.get("error_type")
    if raw:
        return tidy_error_type(str(raw))
    if span.status.code != _STATUS_ERROR:
        return ""
    for ev in span.events:
        if ev.name == "exception":
            for kv in ev.attributes:
                if kv.key == "exception.type" and kv.value.string_value:
                    return tidy_error_type(kv.value.string_value)
    return "_OTHER"


def read_span(span: Any, service_name: str) -> LLMCall | None:
    """An `LLMCall` for the span, or None when it is not a model call."""
    fields: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    present: set[str] = set()
    convention = ""
    best = -1
    marked = False
    for kv in span.attributes:
        key = kv.key
        entry = LOOKUP.get(key)
        if entry is None:
            markers = LLM_MARKERS.get(key)
            if markers is not None and kv.value.string_value in markers:
                marked = True
            continue
        mapping, priority, conv = entry
        present.add(key)
        value = any_value(kv.value)
        if mapping.transform is not None:
            try:
                value = mapping.transform(value)
            except (ValueError, TypeError, ArithmeticError):  # "inf" tokens: as if absent
                value = None
        if value is None or value == "":
            continue
        f = mapping.field
        if ranks.get(f, -1) < priority:
            fields[f] = value
            ranks[f] = priority
        if priority > best and f in ("provider", "request_model", "input_tokens"):
            best, convention = priority, conv

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

    call = LLMCall(
        span=span,
        service_name=service_name,
        convention=convention or "unknown",
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        operation=str(fields.get("operation") or "chat"),
        provider=normalize_provider(str(fields.get("provider") or "")) or "unknown",
        request_model=str(fields.get("request_model") or model),
        response_model=str(fields.get("response_model") or ""),
        present=present,
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
    call.error_type = _error_type(span, fields)
    server_ttft = fields.get("server_ttft_s")
    server_duration = fields.get("server_duration_s")
    if (
        server_ttft is not None
        or server_duration is not None
        or (fields.get("span_kind_hint") == "server" or span.kind == _SPAN_KIND_SERVER)
    ):
        call.server_side = True
        call.server_ttft_s = server_ttft
        call.server_duration_s = server_duration
    cost = fields.get("cost_usd")
    if cost is not None and cost >= 0:
        call.cost_usd = float(cost)
    return call


def normalize(batch: TraceBatch) -> TraceBatch:
    calls = batch.calls
    count = 0
    for rs in batch.request.resource_spans:
        service = service_name_of(rs.resource)
        for ss in rs.scope_spans:
            for span in ss.spans:
                count += 1
                call = read_span(span, service)
                if call is not None:
                    calls.append(call)
    batch.span_count = count
    return batch
