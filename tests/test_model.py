"""TraceBatch keeps the received bytes, the byte edits and the parsed request in step: what
`encode` returns is always the parsed request as the chain left it, patched or serialized."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import _native
from pipeline.model import LogBatch, TraceBatch
from pipeline.processors.enrich import encode_attribute
from pipeline.processors.normalize import normalize
from tests.instrumentation.otlp import Span, attrs, build_request

NAME = "chat secret-model-name"
native = pytest.mark.skipif(
    _native.patch is None or _native.CallReader is None, reason="native helpers not built"
)


def _llm_span(i: int) -> Span:
    return Span(
        i + 1,
        name=NAME,
        attrs={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": f"gpt-{i}",
            "gen_ai.usage.input_tokens": 10 + i,
            "gen_ai.usage.output_tokens": 3,
        },
    )


def _received(n: int = 2) -> tuple[bytes, TraceBatch]:
    data = build_request([_llm_span(i) for i in range(n)]).SerializeToString()
    batch = normalize(TraceBatch(ExportTraceServiceRequest.FromString(data), raw=data))
    assert len(batch.calls) == n
    return data, batch


def _spans(request: ExportTraceServiceRequest) -> list[object]:
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _rename_first(batch: TraceBatch, data: bytes, new: str) -> None:
    """What redact does: a string changed in place and recorded at its received offsets."""
    start = data.index(NAME.encode())
    batch.calls[0].span.name = new
    batch.record_edit(start, start + len(NAME), new.encode())


def _decoded(out: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(out)


def test_an_unchanged_batch_forwards_the_received_bytes() -> None:
    data, batch = _received()
    assert batch.received is data and not batch.modified and batch.patchable
    assert batch.encode() is data


@native
def test_recorded_edits_patch_the_received_bytes() -> None:
    data, batch = _received()
    _rename_first(batch, data, "chat [REDACTED]")
    assert batch.modified and batch.patchable and batch.received is None
    out = batch.encode()
    assert _decoded(out) == batch.request
    assert b"secret-model-name" in out  # the second span's name is left as it was
    assert out.count(b"secret-model-name") == 1


@native
def test_an_edit_recorded_after_touch_is_not_patched_onto_stale_offsets() -> None:
    data, batch = _received()
    # an in-place change the batch cannot record: the second span loses an attribute
    second = batch.calls[1].span
    batch.touch()
    del second.attributes[0]
    assert not batch.patchable and batch.edits is None
    _rename_first(batch, data, "x")  # offsets of bytes that no longer describe the request
    out = batch.encode()
    assert out != data
    assert _decoded(out) == batch.request  # re-serialized: both changes are in it
    assert [s.name for s in _spans(_decoded(out))] == ["x", NAME]  # type: ignore[attr-defined]
    assert len(_spans(_decoded(out))[1].attributes) == 4  # type: ignore[attr-defined]


@native
def test_additions_are_merged_into_the_parsed_spans_only_when_read() -> None:
    _, batch = _received()
    call = batch.calls[0]
    before = len(call.span.attributes)
    batch.append_to_spans(call, encode_attribute("gen_ai.usage.cost", 0.25))
    assert batch.patchable and batch.modified
    assert len(call.span.attributes) == before  # deferred: nothing read the request yet
    out = batch.encode()  # patched: the parsed spans are still not needed
    assert len(call.span.attributes) == before
    assert attrs(_spans(_decoded(out))[0])["gen_ai.usage.cost"] == 0.25
    assert _decoded(out) == batch.request  # reading `request` merged the addition
    assert attrs(call.span)["gen_ai.usage.cost"] == 0.25
    assert len(call.span.attributes) == before + 1  # merged once, not on every read
    _ = batch.request
    assert len(call.span.attributes) == before + 1


@native
def test_touch_merges_the_deferred_additions_and_encode_serializes() -> None:
    _, batch = _received()
    call = batch.calls[0]
    batch.append_to_spans(call, encode_attribute("gen_ai.usage.cost", 0.5))
    batch.touch()
    assert attrs(call.span)["gen_ai.usage.cost"] == 0.5  # merged at once
    batch.calls[1].span.name = "renamed in place"
    out = batch.encode()
    assert _decoded(out) == batch.request
    names = [s.name for s in _spans(_decoded(out))]  # type: ignore[attr-defined]
    assert names == [NAME, "renamed in place"]
    assert attrs(_spans(_decoded(out))[0])["gen_ai.usage.cost"] == 0.5


def test_without_received_bytes_additions_are_merged_now() -> None:
    request = build_request([_llm_span(0)])
    batch = normalize(TraceBatch(request))
    call = batch.calls[0]
    assert batch.received is None and not batch.patchable
    batch.append_to_spans(call, encode_attribute("gen_ai.usage.cost", 1.5))
    assert attrs(call.span)["gen_ai.usage.cost"] == 1.5
    assert batch.modified
    assert _decoded(batch.encode()) == request


def test_a_touched_log_batch_is_serialized() -> None:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "a"
    data = request.SerializeToString()
    batch = LogBatch(ExportLogsServiceRequest.FromString(data), raw=data)
    assert batch.encode() is data
    batch.touch()
    batch.request.resource_logs[0].scope_logs[0].log_records[0].body.string_value = "b"
    assert batch.received is None
    assert ExportLogsServiceRequest.FromString(batch.encode()) == batch.request
    assert batch.encode() != data


def test_a_detached_call_keeps_every_field_but_its_span() -> None:
    from dataclasses import fields

    from pipeline.model import LLMCall

    # a distinct value in every field, so a field the copy dropped or shifted shows
    values = {f.name: (f.name, i) for i, f in enumerate(fields(LLMCall))}
    call = LLMCall(**values)  # type: ignore[arg-type]
    copy = call.detached()
    assert copy is not call and copy.span is None and call.span == ("span", 0)
    for f in fields(LLMCall)[1:]:
        assert getattr(copy, f.name) == values[f.name], f.name
