"""The processor registry: the one list of processors, how each is built, what it needs first.

`config` validates `processors:` against it (names, and an order that can work) and the service
builds the trace chain from it. A processor reads what earlier ones set on the `LLMCall`s:

- `normalize` finds the calls (`TraceBatch.calls`); every stage that reads calls needs it first.
- `dedupe` sets `counted`: `fallback` and `metrics` read it, so it must run before them when it
  runs at all (without it every call counts).
- `ttft` sets `ttft_s` from chunk events, `ttft_derived`, `chunk_ns` and `time_per_token_s`:
  `enrich` and `metrics` read them.
- `cost` sets `cost_usd`: `enrich` and `metrics` read it.
- `redact` reads spans, not calls, and may run anywhere.
- `agents` takes agent, workflow, tool and retrieval spans out of the calls (they are not model
  calls), so it runs before every stage that reads calls: `dedupe`, `cost`, `fallback`,
  `enrich`, `metrics` (an agent span must not be priced, enriched or counted as a call).
- `serving` reads `counted` and `ttft_s` (the client side of the TTFT gap).
- `attribution` sets each call's `dimensions` (and may hold a call back, clearing `counted`):
  `metrics` reads them. It reads `counted` and `cost_usd`, and writes rollup attributes onto
  root and agent spans after merging enrich's deferred additions, so it runs after enrich (and after agents, which takes non-calls out).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..model import LLMCall, TraceBatch
from .agents import AgentMetrics
from .attribution import Attribution
from .cost import CostConfig, CostProcessor
from .dedupe import Dedupe
from .enrich import make_enrich
from .fallback import FallbackDetector
from .normalize import Normalize
from .serving import ServingMetrics
from .ttft import ttft

if TYPE_CHECKING:
    from ..config import Config
    from ..telemetry import Telemetry
    from .metrics import LLMMetrics
    from .redact import Redactor

Step = Callable[[TraceBatch], TraceBatch]


@dataclass(frozen=True, slots=True)
class Wiring:
    """What the service hands the factories."""

    config: Config
    telemetry: Telemetry
    llm_metrics: LLMMetrics  # shared by `metrics` and `fallback`
    redactor: Redactor  # shared with the log chain
    # (processor, error, items): a failure that cost those items their derived data
    on_failure: Callable[[str, Exception, int], None] = lambda name, error, items: None


@dataclass(frozen=True, slots=True)
class ProcessorSpec:
    name: str
    build: Callable[[Wiring], Step]
    # processor -> what this one reads from it. `needs`: it must be in the chain, before this
    # one; `after`: when it is in the chain, it must be before this one.
    needs: Mapping[str, str] = field(default_factory=dict)
    after: Mapping[str, str] = field(default_factory=dict)


def _normalize(w: Wiring) -> Step:
    tel = w.telemetry
    return Normalize(lambda scope, n: tel.inc(tel.unreadable, (scope,), n))


def _cost(w: Wiring) -> Step:
    tel = w.telemetry

    def unpriced(call: LLMCall) -> None:
        tel.inc(tel.unpriced, (call.provider, call.request_model))

    def unpriceable(call: LLMCall, error: Exception) -> None:
        w.on_failure("cost", error, 1)

    return CostProcessor(
        CostConfig(dict(w.config.price_overrides)), on_unpriced=unpriced, on_error=unpriceable
    )


def _agents(w: Wiring) -> Step:
    agg, n = w.llm_metrics.agg, w.config.metrics.max_series
    return AgentMetrics(agg, w.config.tool_prices, n)


def _serving(w: Wiring) -> Step:
    return ServingMetrics(w.llm_metrics.agg, w.config.metrics.max_series)


def _attribution(w: Wiring) -> Step:
    cfg = w.config
    return Attribution(cfg.dimensions, cfg.attribution, w.llm_metrics, w.redactor)


CALLS = {"normalize": "the LLM calls"}
NOT_CALLS = {"agents": "which spans are not model calls"}
COUNTED = {"dedupe": "which calls count"}
TTFT = {"ttft": "the time to first chunk"}
COST = {"cost": "the calls' cost"}


def _fallback(w: Wiring) -> FallbackDetector:
    tel = w.telemetry

    def overflow(forced: int, dropped: int) -> None:
        tel.inc(tel.fallback_forced_closes, (), forced)
        tel.inc(tel.fallback_dropped_calls, (), dropped)

    return FallbackDetector(w.config.fallback, w.llm_metrics, on_overflow=overflow)


# In the default order, which satisfies every requirement.
REGISTRY: dict[str, ProcessorSpec] = {
    s.name: s
    for s in (
        ProcessorSpec("normalize", _normalize),
        ProcessorSpec("agents", _agents, needs=CALLS),
        ProcessorSpec("dedupe", lambda w: Dedupe(w.config.dedupe), needs=CALLS, after=NOT_CALLS),
        ProcessorSpec("ttft", lambda w: ttft, needs=CALLS),
        ProcessorSpec("cost", _cost, needs=CALLS, after=NOT_CALLS),
        ProcessorSpec(
            "fallback",
            _fallback,
            needs=CALLS,
            after={**NOT_CALLS, **COUNTED},
        ),
        ProcessorSpec("redact", lambda w: w.redactor),
        ProcessorSpec(
            "enrich",
            lambda w: make_enrich(w.config.metrics.semconv),
            needs=CALLS,
            after={**NOT_CALLS, **TTFT, **COST},
        ),
        ProcessorSpec("serving", _serving, needs=CALLS, after={**COUNTED, **TTFT}),
        ProcessorSpec(
            "attribution",
            _attribution,
            needs=CALLS,
            after={
                **NOT_CALLS,
                **COUNTED,
                **COST,
                "enrich": "its deferred additions, merged first",
            },
        ),
        ProcessorSpec(
            "metrics",
            lambda w: w.llm_metrics,
            needs=CALLS,
            after={
                **NOT_CALLS,
                **COUNTED,
                **TTFT,
                **COST,
                "attribution": "the calls' dimension labels",
            },
        ),
    )
}
NAMES = tuple(REGISTRY)


def order_problem(names: Sequence[str]) -> str | None:
    """Why a chain of these (known, distinct) processors in this order cannot work, or None."""
    position = {name: i for i, name in enumerate(names)}
    for i, name in enumerate(names):
        spec = REGISTRY[name]
        for need, reads in spec.needs.items():
            if position.get(need, len(names)) > i:
                return f"{name} needs {need} before it (for {reads})"
        for need, reads in spec.after.items():
            if position.get(need, -1) > i:
                return f"{name} needs {need} before it when both run (for {reads})"
    return None


def build_chain(names: Sequence[str], wiring: Wiring) -> dict[str, Step]:
    """The chain's steps by name, in the order given."""
    return {name: REGISTRY[name].build(wiring) for name in names}
