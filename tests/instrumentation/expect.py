"""Assertion helpers for the instrumentation tests."""

from __future__ import annotations

from typing import Any

from pipeline.model import LLMCall
from tests.instrumentation import scenarios as sc
from tests.instrumentation.otlp import attrs

TTFT_BOUND_S = 1.0  # the fake waits FIRST_CHUNK_DELAY_S; TTFT must fall in between


def fields(call: LLMCall, names: list[str]) -> dict[str, Any]:
    return {n: getattr(call, n) for n in names}


def expect(call: LLMCall, **want: Any) -> None:
    got = fields(call, list(want))
    assert got == want, f"{call.span.name}: got {got}, want {want}"


def only(calls: list[LLMCall]) -> LLMCall:
    assert len(calls) == 1, [c.span.name for c in calls]
    return calls[0]


def expect_ttft(call: LLMCall) -> None:
    assert call.streaming is True
    assert call.ttft_s is not None, call.span.name
    assert sc.FIRST_CHUNK_DELAY_S < call.ttft_s < sc.FIRST_CHUNK_DELAY_S + TTFT_BOUND_S


def keys(call: LLMCall) -> set[str]:
    return set(attrs(call.span))


def counted_sum(calls: list[LLMCall], field: str) -> int:
    return sum(getattr(c, field) or 0 for c in calls if c.counted)
