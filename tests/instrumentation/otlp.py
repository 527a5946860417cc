"""Helpers shared by the convention and instrumentation tests: OTLP requests in, `LLMCall`s out.

- `run_chain(request)`: the LLM part of the sidecar's chain that reads spans
  (normalize -> dedupe -> ttft) over one `TraceBatch`.
- `load_fixture(name)`: a recorded OTLP/JSON request from tests/testdata/conventions.
- `by_scenario(request)`: split a recorded request by its resources' `test.scenario`.
- `Span` / `build_request`: hand-made spans for rule tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.model import LLMCall, TraceBatch, any_value, set_any_value
from pipeline.processors.dedupe import Dedupe, DedupeConfig
from pipeline.processors.normalize import normalize
from pipeline.processors.ttft import ttft
from pipeline.receivers.decode import parse_json

FIXTURES = Path(__file__).resolve().parents[1] / "testdata" / "conventions"


def run_chain(
    request: ExportTraceServiceRequest | bytes, dedupe: Dedupe | None = None
) -> TraceBatch:
    if isinstance(request, bytes):
        request = ExportTraceServiceRequest.FromString(request)
    batch = TraceBatch(request=request)
    normalize(batch)
    (dedupe or Dedupe(DedupeConfig()))(batch)
    ttft(batch)
    return batch


def load_fixture(name: str) -> ExportTraceServiceRequest:
    msg = parse_json("traces", (FIXTURES / name).read_bytes())
    assert isinstance(msg, ExportTraceServiceRequest)
    return msg


def resource_attr(rs: Any, key: str) -> Any:
    for kv in rs.resource.attributes:
        if kv.key == key:
            return any_value(kv.value)
    return None


def by_scenario(request: ExportTraceServiceRequest) -> dict[str, ExportTraceServiceRequest]:
    out: dict[str, ExportTraceServiceRequest] = {}
    for rs in request.resource_spans:
        name = str(resource_attr(rs, "test.scenario"))
        out.setdefault(name, ExportTraceServiceRequest()).resource_spans.append(rs)
    return out


def attrs(span: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in span.attributes}


def counted(calls: list[LLMCall]) -> list[LLMCall]:
    return [c for c in calls if c.counted]


# -- hand-made spans ------------------------------------------------------------------------


@dataclass
class Span:
    """A span to build: ids are small ints (made into 16/8-byte ids), times in ms."""

    span: int
    parent: int = 0
    trace: int = 1
    name: str = "span"
    attrs: dict[str, Any] = field(default_factory=dict)
    start_ms: int = 0
    end_ms: int = 100
    kind: int = 1  # INTERNAL; 2 SERVER, 3 CLIENT
    status: int = 0  # 2 ERROR
    events: list[tuple[str, int]] = field(default_factory=list)  # (name, ms)
    scope: str = "test"
    service: str = ""  # the resource's service.name; "" for build_request's `service`


T0_NS = 1_700_000_000_000_000_000


def trace_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def span_id(n: int) -> bytes:
    return n.to_bytes(8, "big")


def build_request(spans: list[Span], service: str = "svc") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    resources: dict[str, Any] = {}
    scopes: dict[tuple[str, str], Any] = {}
    for s in spans:
        svc = s.service or service
        rs = resources.get(svc)
        if rs is None:
            rs = resources[svc] = req.resource_spans.add()
            kv = rs.resource.attributes.add()
            kv.key = "service.name"
            kv.value.string_value = svc
        ss = scopes.get((svc, s.scope))
        if ss is None:
            ss = scopes[(svc, s.scope)] = rs.scope_spans.add()
            ss.scope.name = s.scope
        sp = ss.spans.add()
        sp.trace_id = trace_id(s.trace)
        sp.span_id = span_id(s.span)
        if s.parent:
            sp.parent_span_id = span_id(s.parent)
        sp.name = s.name
        sp.kind = s.kind  # type: ignore[assignment]
        sp.start_time_unix_nano = T0_NS + s.start_ms * 1_000_000
        sp.end_time_unix_nano = T0_NS + s.end_ms * 1_000_000
        sp.status.code = s.status  # type: ignore[assignment]
        for k, v in s.attrs.items():
            a = sp.attributes.add()
            a.key = k
            if isinstance(v, list):
                for item in v:
                    set_any_value(a.value.array_value.values.add(), item)
            else:
                set_any_value(a.value, v)
        for name, ms in s.events:
            ev = sp.events.add()
            ev.name = name
            ev.time_unix_nano = T0_NS + ms * 1_000_000
    return req


def llm(span: int, parent: int = 0, **kw: Any) -> Span:
    """An OTel-semconv chat span of model `m` with 10 input and 5 output tokens."""
    a = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
    }
    a.update(kw.pop("attrs", {}))
    return Span(span=span, parent=parent, name=kw.pop("name", f"chat {span}"), attrs=a, **kw)
