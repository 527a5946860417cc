"""The processor registry: config refuses an order that cannot work, naming what is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.aggregation import Aggregation
from pipeline.config import DEFAULT_PROCESSORS, Config, ConfigError, load
from pipeline.model import TraceBatch
from pipeline.processors.conventions import COST_ATTRIBUTE, TTFT_ATTRIBUTE
from pipeline.processors.fallback import FallbackDetector
from pipeline.processors.metrics import LLMMetrics, MetricsConfig
from pipeline.processors.redact import Redactor
from pipeline.processors.registry import REGISTRY, Wiring, build_chain
from pipeline.telemetry import Telemetry
from tests.instrumentation.otlp import Span, build_request, span_id

# Written out here, not read from the registry: (processor, what must run before it, required).
# required: it must be in the chain; else: only when both are in the chain.
REQUIREMENTS = {
    ("dedupe", "normalize", True),
    ("ttft", "normalize", True),
    ("cost", "normalize", True),
    ("fallback", "normalize", True),
    ("fallback", "dedupe", False),  # reads `counted`
    ("enrich", "normalize", True),
    ("enrich", "ttft", False),  # writes the TTFT derived from chunk events
    ("enrich", "cost", False),  # writes gen_ai.usage.cost
    ("metrics", "normalize", True),
    ("metrics", "dedupe", False),
    ("metrics", "ttft", False),
    ("metrics", "cost", False),
    # agent, tool, workflow and retrieval spans leave the calls before anything reads them
    ("agents", "normalize", True),
    ("dedupe", "agents", False),
    ("cost", "agents", False),
    ("fallback", "agents", False),
    ("enrich", "agents", False),
    ("metrics", "agents", False),
    ("serving", "normalize", True),
    ("serving", "dedupe", False),  # rate limits of counted calls
    ("serving", "ttft", False),  # the client side of the TTFT gap
    ("metrics", "attribution", False),  # reads the dimension labels
    ("attribution", "agents", False),  # an agent span is not a call to label
    ("attribution", "normalize", True),
    ("attribution", "dedupe", False),  # reads `counted`
    ("attribution", "cost", False),  # ranks values by cost, rolls it up
    ("attribution", "enrich", False),  # merges enrich's deferred additions before its own
}


def _check(processors: list[str]) -> None:
    cfg = Config()
    cfg.processors = processors
    cfg.validate()


def test_the_registry_holds_exactly_the_requirements_written_here() -> None:
    have = {(s.name, n, True) for s in REGISTRY.values() for n in s.needs} | {
        (s.name, n, False) for s in REGISTRY.values() for n in s.after
    }
    assert have == REQUIREMENTS


@pytest.mark.parametrize(
    "processors",
    [
        DEFAULT_PROCESSORS,
        [],
        ["redact"],
        ["normalize"],
        ["normalize", "metrics"],  # bench's sidecar-min
        ["redact", "normalize", "metrics"],  # redact reads spans, not calls: anywhere
        ["normalize", "ttft", "cost", "fallback", "redact", "enrich", "metrics"],  # compose's
        ["normalize", "cost", "ttft", "metrics", "enrich"],  # cost and ttft either way round
        ["normalize", "metrics", "fallback", "enrich"],
    ],
)
def test_orders_that_work_validate(processors: list[str]) -> None:
    _check(processors)


def test_the_default_chain_is_valid_and_in_registry_order() -> None:
    default = [
        *("normalize", "agents", "dedupe", "ttft", "cost"),
        *("fallback", "redact", "enrich", "serving", "attribution", "metrics"),
    ]
    assert list(REGISTRY) == DEFAULT_PROCESSORS == default  # as the README documents it
    _check(list(DEFAULT_PROCESSORS))


@pytest.mark.parametrize(("name", "need"), sorted((n, m) for n, m, req in REQUIREMENTS if req))
def test_a_required_processor_missing_is_refused(name: str, need: str) -> None:
    chain = [p for p in DEFAULT_PROCESSORS if p != need]
    first = next(p for p in chain if (p, need, True) in REQUIREMENTS)
    with pytest.raises(ConfigError, match=f"^processors: {first} needs {need} before it "):
        _check(chain)
    with pytest.raises(ConfigError, match=f"^processors: {name} needs {need} before it "):
        _check([name])


@pytest.mark.parametrize(("name", "need", "required"), sorted(REQUIREMENTS))
def test_a_requirement_after_its_processor_is_refused(name: str, need: str, required: bool) -> None:
    chain = [name, need] if need == "normalize" else ["normalize", name, need]
    with pytest.raises(ConfigError) as e:
        _check(chain)
    msg = str(e.value)
    assert msg.startswith(f"processors: {name} needs {need} before it")
    assert ("when both run" in msg) == (not required)
    _check(list(reversed(chain)) if need == "normalize" else ["normalize", need, name])


def test_metrics_before_normalize_is_refused_from_yaml(tmp_path: Path) -> None:
    # the order issue #20 names: it validated, then recorded nothing
    p = tmp_path / "c.yaml"
    p.write_text("processors: [metrics, normalize]\n")
    with pytest.raises(ConfigError, match=r"^processors: metrics needs normalize before it"):
        load(p)


# What goes wrong in each refused order, shown on real spans through the registry's processors.


def _run(processors: list[str], spans: list[Span]) -> tuple[LLMMetrics, TraceBatch, Any]:
    cfg = Config()
    metrics = LLMMetrics(Aggregation(), MetricsConfig())
    wiring = Wiring(cfg, Telemetry(Aggregation(), 100), metrics, Redactor(cfg.redact))
    steps = build_chain(processors, wiring)
    batch = TraceBatch(build_request(spans))
    for step in steps.values():
        batch = step(batch)
    _ = batch.request  # enrich's deferred additions merged into the spans the tests read
    return metrics, batch, steps.get("fallback")


CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 50,
}
# A wrapper span (1) around the client call (2), which streamed: chunk events, no TTFT attribute.
NESTED = [
    Span(1, attrs=CHAT, end_ms=500),
    Span(2, parent=1, attrs=CHAT, start_ms=10, end_ms=400, events=[("gen_ai.choice.chunk", 60)]),
]


def _total(family: Any) -> float:
    return float(sum(s.value for s in family.series.values()))


def _attrs(batch: TraceBatch, span: int) -> set[str]:
    spans = batch.request.resource_spans[0].scope_spans[0].spans
    return {kv.key for s in spans if s.span_id == span_id(span) for kv in s.attributes}


def test_metrics_before_normalize_records_nothing() -> None:
    assert _total(_run(["normalize", "metrics"], NESTED)[0].tokens) == 300  # both spans
    assert _run(["metrics", "normalize"], NESTED)[0].tokens.series == {}


def test_metrics_before_dedupe_counts_the_wrapper_too() -> None:
    assert _total(_run(["normalize", "dedupe", "metrics"], NESTED)[0].tokens) == 150
    assert _total(_run(["normalize", "metrics", "dedupe"], NESTED)[0].tokens) == 300


def test_metrics_before_ttft_misses_the_ttft_from_chunk_events() -> None:
    assert _run(["normalize", "ttft", "metrics"], NESTED)[0].ttft.series
    assert _run(["normalize", "metrics", "ttft"], NESTED)[0].ttft.series == {}


def test_metrics_before_cost_counts_no_cost() -> None:
    assert _total(_run(["normalize", "cost", "metrics"], NESTED)[0].cost) > 0
    assert _run(["normalize", "metrics", "cost"], NESTED)[0].cost.series == {}


def test_enrich_before_cost_or_ttft_writes_neither() -> None:
    batch = _run(["normalize", "ttft", "cost", "enrich"], NESTED)[1]
    assert {COST_ATTRIBUTE, TTFT_ATTRIBUTE} <= _attrs(batch, 2)
    batch = _run(["normalize", "enrich", "ttft", "cost"], NESTED)[1]
    assert not {COST_ATTRIBUTE, TTFT_ATTRIBUTE} & _attrs(batch, 2)


def test_fallback_before_dedupe_takes_a_wrapper_for_an_attempt() -> None:
    # Under span 9: a wrapper (1) around a failed raw call (2), then another provider (3). Only
    # counted calls are attempts (fallback's rule): with dedupe first the wrapper is not one and
    # the raw call has no sibling; with fallback first the wrapper and 3 make a fallback.
    failed = {**CHAT, "error.type": "429"}
    spans = [
        Span(1, parent=9, attrs=failed, status=2, end_ms=100),
        Span(2, parent=1, attrs=failed, status=2, start_ms=10, end_ms=90),
        Span(3, parent=9, attrs={**CHAT, "gen_ai.provider.name": "anthropic"}, start_ms=200),
    ]
    found = {}
    for order in (["normalize", "dedupe", "fallback"], ["normalize", "fallback", "dedupe"]):
        metrics, _, fallback = _run(order, spans)
        assert isinstance(fallback, FallbackDetector)
        fallback.flush(force=True)
        found[order[1]] = _total(metrics.fallbacks)
    assert found == {"dedupe": 0, "fallback": 1}
