"""normalize's per-key-sequence plans: same reading as without them, bounded memory."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.model import TraceBatch
from pipeline.processors import normalize as norm
from tests.helpers.otlp_build import read_call as read
from tests.helpers.otlp_build import spans_request

BASE = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
}


def test_a_cached_plan_reads_each_span_values_not_the_first_span_values() -> None:
    a = read({**BASE, "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 3})
    b = read({**BASE, "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 0})
    assert a is not None and b is not None
    assert (a.input_tokens, a.output_tokens) == (10, 3)
    assert (b.input_tokens, b.output_tokens) == (7, 0)  # 0 is a count, not "absent"


def test_values_of_another_type_than_usual_take_the_general_path() -> None:
    # the same key sequence as above, so the cached plan's fast member misses
    call = read({**BASE, "gen_ai.usage.input_tokens": "12", "gen_ai.usage.output_tokens": 4.0})
    assert call is not None
    assert (call.input_tokens, call.output_tokens) == (12, 4)


def test_an_empty_higher_priority_value_falls_back_to_the_next_source() -> None:
    # current name empty, the deprecated name set: the deprecated one is read
    call = read({**BASE, "gen_ai.usage.input_tokens": "", "gen_ai.usage.prompt_tokens": 9})
    assert call is not None and call.input_tokens == 9
    # both set: the current name wins wherever it stands
    call = read({"gen_ai.usage.prompt_tokens": 9, **BASE, "gen_ai.usage.input_tokens": 5})
    assert call is not None and call.input_tokens == 5
    assert {"gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"} <= call.present


def test_a_flood_of_unique_key_sets_does_not_grow_the_plan_cache() -> None:
    for i in range(norm._MAX_PLANS + 50):
        call = read({**BASE, f"app.attr_{i}": i, "gen_ai.usage.input_tokens": i})
        assert call is not None and call.input_tokens == i
    assert len(norm._PLANS) <= norm._MAX_PLANS
    wide = {**BASE, **{f"app.k{i}": i for i in range(norm._MAX_PLANNED_KEYS + 1)}}
    before = len(norm._PLANS)
    call = read(wide)
    assert call is not None and call.request_model == "gpt-4o"
    assert len(norm._PLANS) == before  # too many keys to cache: planned, not kept


class _FailingReader:
    def __init__(self, error: type[Exception]) -> None:
        self.error = error
        self.calls = 0

    def read(self, data: bytes, scopes: list[tuple[str, str]]) -> list[object]:
        self.calls += 1
        raise self.error("cannot read")


def test_when_the_native_reader_fails_the_spans_are_read_from_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    req = spans_request(0, 3, model="m{i}")
    data = req.SerializeToString()
    for error in (ValueError, RuntimeError):
        reader = _FailingReader(error)
        monkeypatch.setattr(norm, "_CALL_READER", reader)
        batch = norm.normalize(TraceBatch(ExportTraceServiceRequest.FromString(data), raw=data))
        assert reader.calls == 1
        assert [c.request_model for c in batch.calls] == ["m0", "m1", "m2"]
        assert batch.span_count == 3
