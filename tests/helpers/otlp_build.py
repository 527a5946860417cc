"""Builders of real OTLP messages shared by the tests."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.model import LLMCall
from pipeline.processors.normalize import read_span
from tests.instrumentation.otlp import Span, build_request

T0 = 1_700_000_000 * 10**9


def set_value(v: Any, x: Any) -> None:
    """Write a Python value into an OTLP AnyValue (lists and dicts nest, empty ones included;
    None leaves it unset, as `any_value` reads an unset one)."""
    if x is None:
        return
    if isinstance(x, bool):
        v.bool_value = x
    elif isinstance(x, int):
        v.int_value = x
    elif isinstance(x, float):
        v.double_value = x
    elif isinstance(x, bytes):
        v.bytes_value = x
    elif isinstance(x, str):
        v.string_value = x
    elif isinstance(x, list):
        v.array_value.SetInParent()
        for item in x:
            set_value(v.array_value.values.add(), item)
    elif isinstance(x, dict):
        v.kvlist_value.SetInParent()
        for k, item in x.items():
            kv = v.kvlist_value.values.add()
            kv.key = k
            set_value(kv.value, item)
    else:
        raise TypeError(x)


def add_attrs(attrs: Any, values: dict[str, Any]) -> None:
    for k, v in values.items():
        kv = attrs.add()
        kv.key = k
        set_value(kv.value, v)


def spans_request(
    first: int,
    n: int,
    model: str = "gpt-4o",
    pad: int = 0,
    attrs: dict[str, Any] | None = None,
    service: str = "rel",
) -> ExportTraceServiceRequest:
    """n LLM spans with span IDs first..first+n-1 (so every one is countable).

    `model` and string `attrs` may use {i}, the span's number.
    """
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    for i in range(first, first + n):
        s = ss.spans.add()
        s.name = "chat"
        s.trace_id = (i + 1).to_bytes(16, "big")
        s.span_id = (i + 1).to_bytes(8, "big")
        s.start_time_unix_nano, s.end_time_unix_nano = T0, T0 + 10**9
        a = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model.format(i=i),
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 5,
            **(attrs or {}),
        }
        if pad:
            a["gen_ai.input.messages"] = "p" * pad
        for k, v in a.items():
            kv = s.attributes.add()
            kv.key = k
            if isinstance(v, int):
                kv.value.int_value = v
            else:
                kv.value.string_value = v.format(i=i)
    return req


def read_call(attrs: dict[str, Any], **span: Any) -> LLMCall | None:
    """What normalize reads from one span with these attributes (`span`: more `Span` fields)."""
    req = build_request([Span(1, attrs=attrs, **span)])
    return read_span(req.resource_spans[0].scope_spans[0].spans[0], "svc")
