"""enrich: adds cost and current-convention names to LLM spans, never overwrites, and leaves
spans it did not change (and so their batch) as received."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span as Span_pb

from pipeline.model import TraceBatch, any_value, set_any_value
from pipeline.processors import enrich as enrich_module
from pipeline.processors.enrich import make_enrich
from pipeline.processors.normalize import normalize
from tests.instrumentation.otlp import Span, build_request


def _enriched(
    *spans: Span, cost: float | None = None, semconv: str = "v1.41"
) -> tuple[TraceBatch, list[dict[str, Any]]]:
    batch = normalize(TraceBatch(build_request(list(spans))))
    for call in batch.calls:
        call.cost_usd = cost
    batch = make_enrich(semconv)(batch)
    out = [
        [(kv.key, any_value(kv.value)) for kv in s.attributes]
        for rs in batch.request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    return batch, [dict(a) | {"#": len(a)} for a in out]


def test_deprecated_names_get_the_current_ones_and_the_cost() -> None:
    batch, [a] = _enriched(
        Span(
            1,
            attrs={
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.prompt_tokens": 12,
                "gen_ai.usage.completion_tokens": 3,
            },
        ),
        cost=0.0125,
    )
    assert batch.modified
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == 12
    assert a["gen_ai.usage.output_tokens"] == 3
    assert a["gen_ai.usage.cost"] == pytest.approx(0.0125)
    assert a["gen_ai.usage.prompt_tokens"] == 12  # the original names stay
    assert a["gen_ai.operation.name"] == "chat"  # the default operation is written too


def test_present_keys_are_never_written_again() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-3-5-sonnet",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.usage.cost": 0.5,
    }
    # the span's own cost stays, even when the chain derived another one
    batch, [a] = _enriched(Span(1, attrs=attrs), cost=0.25)
    assert a["gen_ai.usage.cost"] == 0.5
    assert a["#"] == len(attrs)  # nothing added: no key twice
    assert not batch.modified  # so the request is forwarded as received


def test_each_span_gets_its_own_values() -> None:
    base = {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
    _, [a, b] = _enriched(
        Span(1, attrs={**base, "gen_ai.usage.prompt_tokens": 5}),
        Span(2, attrs={**base, "gen_ai.usage.prompt_tokens": 9}),
    )
    assert (a["gen_ai.usage.input_tokens"], b["gen_ai.usage.input_tokens"]) == (5, 9)
    assert "gen_ai.usage.cost" not in a  # no cost derived: none written


def test_cache_creation_gets_its_current_name_cache_write() -> None:
    attrs = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 900,
        "gen_ai.usage.cache_creation.input_tokens": 700,  # semantic-conventions v1.41's name
    }
    _, [a] = _enriched(Span(1, attrs=attrs))
    assert a["gen_ai.usage.cache_write.input_tokens"] == 700
    _, [b] = _enriched(Span(1, attrs={**attrs, "gen_ai.usage.cache_write.input_tokens": 5}))
    assert b["gen_ai.usage.cache_write.input_tokens"] == 5  # present: not written again
    assert b["#"] == len(attrs) + 2  # the span's five and the operation name


@pytest.mark.parametrize("semconv", ["development", "both"])
def test_cost_attributes_behind_the_switch(semconv: str) -> None:
    attrs = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}
    _, [a] = _enriched(Span(1, attrs=attrs), cost=0.00036, semconv=semconv)
    assert repr(a["gen_ai.usage.cost"]) == repr(a["gen_ai.usage.cost.amount"]) == "0.00036"
    assert a["gen_ai.usage.cost.currency"] == "USD"
    assert a["gen_ai.usage.cost.source"] == "local"
    # a span stating its own amount keeps it, with no currency or source of ours beside it
    own = {**attrs, "gen_ai.usage.cost.amount": 0.5}
    _, [b] = _enriched(Span(1, attrs=own), cost=0.25, semconv=semconv)
    assert b["gen_ai.usage.cost.amount"] == 0.5
    assert "gen_ai.usage.cost.currency" not in b and "gen_ai.usage.cost.source" not in b
    assert b["gen_ai.usage.cost"] == 0.25


def test_no_cost_attributes_by_default() -> None:
    attrs = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}
    _, [a] = _enriched(Span(1, attrs=attrs), cost=0.00036)
    assert a["gen_ai.usage.cost"] == 0.00036
    assert not [k for k in a if k.startswith("gen_ai.usage.cost.")]


# -- the attributes' wire bytes equal upb's ----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(enrich_module._KEYS) | st.text(max_size=20),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=30),
        st.booleans(),
    ),
)
def test_encoded_attributes_equal_upb(key: str, value: Any) -> None:
    span = Span_pb()
    set_any_value(span.attributes.add(key=key).value, value)
    expected = span.SerializeToString()
    assert enrich_module.encode_attribute(key, value) == expected
    assert enrich_module.encode_attribute(key, value) == expected  # cached strings too
