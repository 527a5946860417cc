"""attribution: who spent it. Dimension labels on each counted call; cost per request/agent run.

Each counted call gets `LLMCall.dimensions`, one label per configured dimension (see
`dimensions`), read from its span, its resource, else inherited from the nearest ancestor in
the same trace that has it (the app sets `user.id` on its request span, the LLM span lies
below): `ancestry` resolves that within the request. A call whose chain leaves the request
with a value still missing (its ancestors end later, so they usually come in a later batch) is
held: `metrics` skips it now (`counted` is cleared on the batch's copy) and it is recorded when
the ancestor awaited comes with the rest of the values, when the trace's root comes without it
(`llm_pipeline_attribution_given_up_total{reason="ancestor_missing"}`), or after `idle_s`
with what is known (`reason="idle"`).

With `attribution.requests`, `rollup.RequestTracker` follows every trace with counted calls
until its root span arrives: the request's cost and tokens, each agent run's, each
conversation's (the conversation id is inherited like a dimension, never a label).

Memory: at most `max_open_traces` traces with held calls and `20 * max_open_traces` held calls;
beyond, the oldest trace is given up (`reason="max_open_traces"`): its calls are recorded with
what is known.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import _native
from ..model import LLMCall, TraceBatch
from .ancestry import Indexer, SpanIndex, py_label_calls
from .dimensions import OTHER, AttributionConfig, DimensionConfig, Labeler
from .rollup import CONVERSATION_KEY, RequestMetrics, RequestTracker

if TYPE_CHECKING:
    from ..config import Config
    from .metrics import LLMMetrics
    from .redact import Redactor

_CALLS_PER_TRACE = 20  # the held-call budget: this many per open trace on average
_WEIGHT_FLOOR = 1e-9  # an unpriced call still ranks its value (by number of calls)
_label_calls = _native.label_calls or py_label_calls

Values = Sequence[str]  # per slot: a dimension's value ("": none found yet)


@dataclass(slots=True)
class _Held:
    last: float
    # (the call without its span, its values so far, the span id of the ancestor awaited)
    calls: list[tuple[LLMCall, list[str], bytes]] = field(default_factory=list)


class Attribution:
    """The attribution processor (a no-op with no dimensions and `requests: false`)."""

    def __init__(
        self,
        dimensions: Sequence[DimensionConfig],
        config: AttributionConfig,
        metrics: LLMMetrics,
        redactor: Redactor | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.labelers = [Labeler(d.name, config.top_k, redactor) for d in dimensions]
        # slot -> its sources in order, (kind, key); with requests, one more hidden slot (the
        # conversation id: inherited like a dimension, never a label)
        slots = [d.parsed_sources() for d in dimensions]
        if config.requests:
            slots.append([("span", CONVERSATION_KEY)])
        self._indexer = Indexer(slots, agents=config.requests)
        self.active = bool(slots)
        self.held: dict[bytes, _Held] = {}  # trace id -> its calls waiting for ancestors
        self._held_calls = 0
        self._max_held_calls = config.max_open_traces * _CALLS_PER_TRACE
        agg = metrics.agg
        self.folds = agg.counter(
            "llm_pipeline_dimension_folds",
            "Calls whose dimension value folded into __other__ (beyond the top-k by cost).",
            ("dimension",),
        )
        self.given_up = agg.counter(
            "llm_pipeline_attribution_given_up",
            "Calls recorded without waiting longer for their trace's ancestors, by reason "
            "(idle, max_open_traces, ancestor_missing).",
            ("reason",),
        )
        self._reported_folds = [0] * len(self.labelers)
        names = tuple(d.name for d in dimensions)
        self.requests = RequestMetrics(agg, names) if config.requests else None
        self.tracker = (
            RequestTracker(self.requests, config.idle_s, config.max_open_traces)
            if self.requests is not None
            else None
        )

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        if not self.active:
            return batch
        calls = [c for c in batch.calls if c.counted]
        tracker = self.tracker
        following = tracker is not None and (calls or tracker.traces)
        if not calls and not self.held and not following:
            return batch
        index = self._indexer.index(batch)
        if following:  # before any is held: the request counts them all
            tracker.add(batch, calls, index)  # type: ignore[union-attr]
        now, wall = time.monotonic(), time.time()
        if calls:
            self._attribute(index, calls, now, wall)
        if self.held:
            self._settle(index, now, wall)
        self._count_folds()
        return batch

    def _attribute(self, index: SpanIndex, calls: list[LLMCall], now: float, wall: float) -> None:
        """Label the calls whose values are known; hold the others. Each distinct value is
        ranked once with the batch's cost for it (the index sums it)."""
        results, sums = index.attribute_calls(calls, _WEIGHT_FLOOR, len(self.labelers))
        heavy = [lab.heavy for lab in self.labelers]
        before = [h.folds for h in heavy]
        labels = [lab.label_all(w) for lab, w in zip(self.labelers, sums, strict=True)]
        held, folded = _label_calls(calls, results, labels, OTHER)
        # a fold is counted per call: label_all counted one per value that folded here
        for h, n, was in zip(heavy, folded, before, strict=True):
            h.folds = was + n
        for i in held:
            call = calls[i]
            values, gap = results[i]  # type: ignore[misc]
            self._hold(call, list(values), gap, now)
            call.counted = False  # recorded when released
        if self.requests is not None:  # the conversation id: the last, unlabelled slot
            conversation = self.requests.conversation
            for call, got in zip(calls, results, strict=True):
                if got is None:
                    conversation(call, "", wall)
                elif not got[1]:
                    conversation(call, got[0][-1], wall)

    def _hold(self, call: LLMCall, values: list[str], gap: bytes, now: float) -> None:
        held = self.held.get(call.trace_id)
        if held is None:
            while self.held and (
                len(self.held) >= self.config.max_open_traces
                or self._held_calls >= self._max_held_calls
            ):
                self._give_up(next(iter(self.held)), time.time(), "max_open_traces")
            held = self.held[call.trace_id] = _Held(now)
        held.calls.append((call.detached(), values, gap))
        self._held_calls += 1

    def _settle(self, index: SpanIndex, now: float, wall: float) -> None:
        """Of the held traces with spans in this request: the calls whose ancestor awaited came
        (with the values still missing, or with another gap above), and those whose trace's
        root came without it (given up: the chain ends there, the gap will not fill)."""
        for tid, root in index.present(self.held):
            held = self.held[tid]
            held.last = now
            gaps = list({gap: None for _, _, gap in held.calls})
            above = dict(zip(gaps, index.resolve([(tid, g) for g in gaps]), strict=True))
            waiting: list[tuple[LLMCall, list[str], bytes]] = []
            for call, values, gap in held.calls:
                got = above[gap]
                if got is not None:
                    for i, v in enumerate(got[0]):
                        if not values[i]:
                            values[i] = v
                    gap = got[1] if "" in values else b""
                if gap:
                    waiting.append((call, values, gap))
                else:
                    self._record(call, values, wall, None)
            held.calls = waiting
            if not waiting:
                del self.held[tid]
            elif root:
                self._give_up(tid, wall, "ancestor_missing")

    def _record(self, call: LLMCall, values: Values, wall: float, reason: str | None) -> None:
        """A held call released: labelled and recorded now (`metrics` ran without it)."""
        self._held_calls -= 1
        self._label(call, values, wall)
        call.counted = True
        with self.metrics.agg.lock:
            self.metrics.record(call, wall)
            if reason is not None:
                self.given_up.add((reason,), 1)

    def _give_up(self, tid: bytes, wall: float, reason: str) -> None:
        """Record the trace's held calls with what is known."""
        held = self.held.pop(tid)
        for call, values, _ in held.calls:
            self._record(call, values, wall, reason)

    def _label(self, call: LLMCall, values: Values, wall: float) -> None:
        weight = (call.cost_usd or 0.0) + _WEIGHT_FLOOR
        call.dimensions = tuple(
            lab.label(v, weight) for lab, v in zip(self.labelers, values, strict=False)
        )
        if self.requests is not None:
            self.requests.conversation(call, values[-1], wall)

    def _count_folds(self) -> None:
        with self.metrics.agg.lock:
            for i, lab in enumerate(self.labelers):
                n = lab.heavy.folds
                if n != self._reported_folds[i]:
                    self.folds.add((lab.name,), n - self._reported_folds[i])
                    self._reported_folds[i] = n

    def flush(self, force: bool = False) -> None:
        """Give up on the traces idle for `idle_s` (all of them with `force`, at shutdown)."""
        if self.tracker is not None:
            self.tracker.flush(force)
        if not self.held:
            return
        limit = time.monotonic() - self.config.idle_s
        wall = time.time()
        for tid, held in list(self.held.items()):
            if force or held.last <= limit:
                self._give_up(tid, wall, "idle")
        self._count_folds()


def dimension_labels(config: Config) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """The dimension names and, per metric family choice, the names it carries (for
    `MetricsConfig`): none unless the attribution processor runs."""
    if "attribution" not in config.processors:
        return (), {}
    names = tuple(d.name for d in config.dimensions)
    by_metric: dict[str, tuple[str, ...]] = {}
    for d in config.dimensions:
        for m in d.metrics:
            by_metric[m] = (*by_metric.get(m, ()), d.name)
    return names, by_metric
