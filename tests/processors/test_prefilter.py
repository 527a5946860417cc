"""The redaction prefilter: wire ranges are the parsed items, and prefiltering never misses.

The property that matters: redacting with the prefilter (walk only the items a byte-level hint
falls in) gives exactly what walking every item gives, for any text.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from pipeline import _native
from pipeline.model import LogBatch, TraceBatch
from pipeline.processors._prefilter import Prefilter
from pipeline.processors._wire import ItemRange, item_ranges
from pipeline.processors.redact import BUILTIN_TYPES, RedactConfig, Redactor
from tests.helpers.otlp_build import add_attrs
from tests.processors.test_redact import (
    ANTHROPIC_KEY,
    AWS_KEY,
    GITHUB_PAT,
    GITHUB_TOKEN,
    GOOGLE_KEY,
    JWT,
    OPENAI_KEY,
)


def _trace_request(texts: list[str], nested: bool = True) -> ExportTraceServiceRequest:
    """Two resources, three scopes, spans carrying `texts` in every scanned place (but arrays
    and kvlists unless `nested`)."""
    req = ExportTraceServiceRequest()
    t = itertools.cycle(texts)
    for r in range(2):
        rs = req.resource_spans.add()
        add_attrs(rs.resource.attributes, {"service.name": f"svc{r}", "note": next(t)})
        for s in range(2 - r):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope{s}"
            for i in range(3):
                span = ss.spans.add()
                span.trace_id = bytes([r + 1]) * 16
                span.span_id = bytes([s + 1, i + 1]) * 4
                span.name = next(t) if i == 1 else "op"
                add_attrs(span.attributes, {"input.value": next(t), "n": i})
                if nested:
                    add_attrs(span.attributes, {"l": [next(t)]})
                ev = span.events.add()
                ev.name = "gen_ai.content.prompt"
                add_attrs(ev.attributes, {"gen_ai.prompt": next(t)})
                if i == 0:
                    link = span.links.add(trace_id=b"\x07" * 16, span_id=b"\x08" * 8)
                    add_attrs(link.attributes, {"link.note": next(t)})
                    if nested:
                        add_attrs(link.attributes, {"k": {"v": next(t)}})
                if i == 2:
                    span.status.message = next(t)
    return req


def test_item_ranges_are_the_parsed_spans_and_resources() -> None:
    req = _trace_request(["a", "b@c.de", "x" * 300, "é" * 2000])
    data = req.SerializeToString()
    ranges = [ItemRange._make(t) for t in item_ranges(data)]
    assert [r.start for r in ranges] == sorted(r.start for r in ranges)
    spans = [
        (r, s, i)
        for r, rs in enumerate(req.resource_spans)
        for s, ss in enumerate(rs.scope_spans)
        for i in range(len(ss.spans))
    ]
    assert [(r.resource, r.scope, r.item) for r in ranges if r.scope >= 0] == spans
    assert [r.resource for r in ranges if r.scope < 0] == [0, 1]
    for r in ranges:
        rs = req.resource_spans[r.resource]
        if r.scope < 0:
            assert resource_pb2.Resource.FromString(data[r.start : r.end]) == rs.resource
        else:
            got = trace_pb2.Span.FromString(data[r.start : r.end])
            assert got == rs.scope_spans[r.scope].spans[r.item]


def test_item_ranges_of_logs() -> None:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    sl = rl.scope_logs.add()
    for i in range(5):
        sl.log_records.add().body.string_value = f"line {i} " + "y" * (i * 100)
    data = req.SerializeToString()
    got = [r for r in map(ItemRange._make, item_ranges(data)) if r.scope >= 0]
    assert [r.item for r in got] == list(range(5))
    for r in got:
        assert logs_pb2.LogRecord.FromString(data[r.start : r.end]) == sl.log_records[r.item]


def test_clean_request_has_no_candidates_and_a_secret_has_exactly_its_span() -> None:
    pf = Prefilter(frozenset(BUILTIN_TYPES))
    req = _trace_request(["plain text", "model gpt-4o-2024-08-06", "v1.2.3 on 2025-01-31"])
    assert pf.items(req.SerializeToString()) == []
    span = req.resource_spans[1].scope_spans[0].spans[2]
    span.attributes[0].value.string_value = f"call me at +44 20 7946 0958, key {OPENAI_KEY}"
    got = pf.items(req.SerializeToString())
    assert [(r.resource, r.scope, r.item) for r in got] == [(1, 0, 2)]


FRAGMENTS = [
    OPENAI_KEY,
    ANTHROPIC_KEY,
    AWS_KEY,
    GOOGLE_KEY,
    GITHUB_TOKEN,
    GITHUB_PAT,
    f"Bearer {JWT}",
    "BEARER abcdef1234",
    "api_key=q1w2e3r4t5",
    '"apiKey": "Zz9yY8xX7w"',
    "X-API-KEY: sk-abc",
    "Authorization: Basic dXNlcjpwYXNzd29yZA==",
    "basic dTpw",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    'AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
    "postgres://admin:s3cr3t@db:5432/x",
    "redis://:hunter2@cache",
    "bob.smith@example.com",
    "a@b.co",
    "icon@2x.png",
    "+44 20 7946 0958",
    "+14155550123",
    "(415) 555-0123",
    "415.555.0123",
    "1-800-555-0199",
    "4111 1111 1111 1111",
    "378282246310005",
    "5555-5555-5555-4444",
    "2024-08-06",
    "20250929",
    "\\n",
    '"',
    "é",
    "日本",
    " ",
    "-",
    "@",
    ":",
    "/",
]

_text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(alphabet="aAkKsS0123456789 .-+()@:/_=\"'\\né", max_size=12),
    ),
    max_size=6,
).map("".join)


def _redact(
    batch: Any, thorough: bool, types: Any = None, items: bool = False
) -> tuple[bytes, dict[str, int]]:
    """Redact the batch: walking only what hints overlap (the default; whole items with
    `items`, as without the native helpers) or, `thorough`, every string."""
    counts: dict[str, int] = {}

    def on(kind: str, n: int) -> None:
        counts[kind] = counts.get(kind, 0) + n

    r = Redactor(RedactConfig(types=types) if types is not None else None, on_redact=on)
    if thorough:
        r._prefiltered = lambda b, find: None  # type: ignore[assignment,method-assign]
    elif items:
        r._prefilter.targets = lambda data: None  # type: ignore[method-assign]
    r(batch)
    return batch.request.SerializeToString(), counts


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(_text, min_size=1, max_size=8), types=st.sets(st.sampled_from(BUILTIN_TYPES)))
def test_prefiltered_redaction_equals_walking_everything(texts: list[str], types: set[str]) -> None:
    data = _trace_request(texts).SerializeToString()

    def batch() -> TraceBatch:
        return TraceBatch(ExportTraceServiceRequest.FromString(data), raw=data)

    for t in (types, None):  # the given subset of types, and the default (all)
        slow = _redact(batch(), True, t)
        assert _redact(batch(), False, t) == slow  # what hints overlap (native helpers)
        assert _redact(batch(), False, t, items=True) == slow  # the spans hints fall in


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(_text, min_size=1, max_size=6))
def test_prefiltered_log_redaction_equals_walking_everything(texts: list[str]) -> None:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    add_attrs(rl.resource.attributes, {"host": texts[0]})
    sl = rl.scope_logs.add()
    for i, text in enumerate(texts):
        rec = sl.log_records.add()
        rec.body.string_value = text
        add_attrs(rec.attributes, {"i": i, "msg": text[::-1]})
    data = req.SerializeToString()

    def batch() -> LogBatch:
        return LogBatch(ExportLogsServiceRequest.FromString(data), raw=data)

    assert _redact(batch(), False) == _redact(batch(), True)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(_text, min_size=1, max_size=8))
def test_redactions_recorded_as_byte_edits_give_the_redacted_request(texts: list[str]) -> None:
    if _native.patch is None:
        return  # no byte edits without the native helpers (tests/processors/test_native.py)
    data = _trace_request(texts, nested=False).SerializeToString()
    batch = TraceBatch(ExportTraceServiceRequest.FromString(data), raw=data)
    Redactor()(batch)
    if not batch.modified:
        assert batch.edits == []
        return
    expected = batch.request.SerializeToString()
    assert batch.edits  # every change was to a plain string
    out = _native.patch(data, list(reversed(batch.edits)))  # any order
    assert ExportTraceServiceRequest.FromString(out) == batch.request
    assert out == expected  # built by upb: the same bytes, nothing left of what was replaced
