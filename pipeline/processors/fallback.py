"""fallback: fallbacks and retries, from traces alone.

The rule. Calls are related only when they are in the same trace, under the same parent span and
of the same operation (`chat`, `embeddings`, ...), and only counted client calls take part:
`counted=False` calls (a proxy span wrapping the raw call, set by dedupe) would show one attempt
twice, and server-side spans (vLLM) are not client attempts. Duplicate spans (same span ID, e.g.
a resent batch) count once. Within a group, calls are ordered by start time (then end time,
then span ID), and each consecutive pair (A, B) where A failed (`LLMCall.failed`) and B started
at or after A ended is:

- a retry when B has A's provider and request model, whether B succeeds or fails:
  `gen_ai_client_retries_total{service_name, gen_ai_provider_name, gen_ai_request_model}` +1;
- a fallback when B is another provider or request model and B succeeded:
  `gen_ai_client_fallbacks_total{service_name, from_provider, from_model, to_provider,
  to_model}` +1, `from_*` being A's and `to_*` B's;
- nothing when B is another provider or model and failed too (the chain goes on from B).

So fail -> retry fails -> another model succeeds is 1 retry and 1 fallback (from the retry's
model); A fails -> B fails -> C succeeds (three models) is 1 fallback, B -> C. Calls that overlap
in time are concurrent (fan-out), not reactions to each other's failure: such a pair counts
nothing. `service_name` is B's; the exemplar is B's trace and span ID.

Windows. The spans of one trace arrive over several batches, so per trace only small facts
(times, parent, provider, model, failed, span ID) are buffered. A trace's window opens when its
first call is seen and closes `window_s` later (`flush()`, called every second by the service)
or at shutdown (`flush(force=True)`); the decision is counted when it closes. Calls of a trace
arriving after its window closed open a new window and are not related to the earlier ones, so
`window_s` should exceed the exporters' batching delay (5 s by default in the OTel SDKs).
Memory is bounded: at most `max_traces` open windows (opening one more closes the oldest early,
counted in `llm_pipeline_fallback_forced_closes_total`) of at most `max_calls_per_trace` calls
(later calls are ignored, counted in `llm_pipeline_fallback_dropped_calls_total`), and at most
`max_buffered_calls` calls in all (beyond, the oldest windows close early, counted as forced
closes). A buffered call takes about 250 bytes, so the defaults bound the buffer at about
250 MB (typical: 2-3 calls a trace, ~30 MB at 50,000 traces).
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..model import TraceBatch
from .metrics import LLMMetrics


@dataclass
class FallbackConfig:
    window_s: float = 10.0
    max_traces: int = 50_000
    max_calls_per_trace: int = 256
    max_buffered_calls: int = 1_000_000

    def validate(self) -> None:
        if not (isinstance(self.window_s, int | float) and math.isfinite(self.window_s)):
            raise ValueError("window_s must be a finite number of seconds")
        if self.window_s <= 0:
            raise ValueError("window_s must be > 0")
        if self.max_traces < 1:
            raise ValueError("max_traces must be >= 1")
        if self.max_calls_per_trace < 2:
            raise ValueError("max_calls_per_trace must be >= 2")
        if self.max_buffered_calls < self.max_calls_per_trace:
            raise ValueError("max_buffered_calls must be >= max_calls_per_trace")


class _Fact(NamedTuple):
    """What is kept of one call while its trace's window is open (buffered as a plain tuple
    of these fields, which is cheaper to build per call; `decide` names them)."""

    start_ns: int
    end_ns: int
    span_id: bytes
    parent: bytes
    operation: str
    provider: str
    model: str
    failed: bool
    service: str


# A trace's open window: [opened (monotonic s), then each buffered call's _Fact fields]; a
# plain list, as most windows see one or two calls and a class instance per trace cost ~3%
# of the sidecar's processing time.
_Window = list[Any]


# (is_fallback, label values, exemplar trace id, exemplar span id)
Decision = tuple[bool, tuple[str, ...], bytes, bytes]


def decide(trace_id: bytes, calls: list[tuple[Any, ...]]) -> list[Decision]:
    """The retries and fallbacks among one trace's calls (the rule in the module docstring)."""
    if len(calls) < 2:
        return []
    groups: dict[tuple[bytes, str], dict[bytes, _Fact]] = {}
    for f in map(_Fact._make, calls):
        groups.setdefault((f.parent, f.operation), {}).setdefault(f.span_id, f)
    out: list[Decision] = []
    for group in groups.values():
        if len(group) < 2:
            continue
        ordered = sorted(group.values(), key=lambda f: (f.start_ns, f.end_ns, f.span_id))
        for a, b in itertools.pairwise(ordered):
            if not a.failed or b.start_ns < a.end_ns:
                continue
            if a.provider == b.provider and a.model == b.model:
                out.append((False, (b.service, b.provider, b.model), trace_id, b.span_id))
            elif not b.failed:
                labels = (b.service, a.provider, a.model, b.provider, b.model)
                out.append((True, labels, trace_id, b.span_id))
    return out


class FallbackDetector:
    """Buffers call facts per trace (`__call__`), counts retries/fallbacks as windows close."""

    def __init__(
        self,
        config: FallbackConfig | None = None,
        metrics: LLMMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_decision: Callable[[Decision], None] | None = None,
        on_overflow: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config or FallbackConfig()
        self.config.validate()
        self.metrics = metrics
        self._clock = clock
        self._on_decision = on_decision
        # (forced closes, dropped calls) of a batch that had any: llm_pipeline_fallback_*_total
        self._on_overflow = on_overflow
        self._lock = threading.Lock()
        self._windows: OrderedDict[bytes, _Window] = OrderedDict()  # trace id -> window
        self._buffered = 0  # calls in all open windows
        self.forced_closes = 0  # windows closed early: max_traces or max_buffered_calls reached
        self.dropped_calls = 0  # calls ignored because their trace had max_calls_per_trace

    def __len__(self) -> int:
        """Open windows (traces buffered)."""
        return len(self._windows)

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        intern = sys.intern
        facts = [
            (
                c.trace_id,
                (  # the _Fact fields
                    c.start_ns,
                    c.end_ns,
                    c.span_id,
                    c.parent_span_id,
                    intern(c.operation),
                    intern(c.provider),
                    intern(c.request_model),
                    c.failed,
                    intern(c.service_name),
                ),
            )
            for c in batch.calls
            if c.counted and not c.server_side and c.trace_id
        ]
        if not facts:
            return batch
        cfg = self.config
        closed: list[tuple[bytes, _Window]] = []
        now = self._clock()
        with self._lock:
            before = (self.forced_closes, self.dropped_calls)
            windows = self._windows
            for trace_id, fact in facts:
                w = windows.get(trace_id)
                if w is None:
                    if len(windows) >= cfg.max_traces:
                        closed.append(self._pop_oldest())
                    windows[trace_id] = [now, fact]
                elif len(w) > cfg.max_calls_per_trace:  # the opening time, then the calls
                    self.dropped_calls += 1
                    continue
                else:
                    w.append(fact)
                self._buffered += 1
                while self._buffered > cfg.max_buffered_calls:
                    closed.append(self._pop_oldest())
            forced, dropped = self.forced_closes - before[0], self.dropped_calls - before[1]
        if (forced or dropped) and self._on_overflow is not None:
            self._on_overflow(forced, dropped)
        if closed:
            self._count(closed)
        return batch

    def _pop_oldest(self) -> tuple[bytes, _Window]:
        """Close the oldest window early (the caller holds the lock)."""
        trace_id, w = self._windows.popitem(last=False)
        self._buffered -= len(w) - 1
        self.forced_closes += 1
        return trace_id, w

    def flush(self, now: float | None = None, force: bool = False) -> int:
        """Close the windows open for `window_s` or longer (all with `force`); how many closed."""
        if now is None:
            now = self._clock()
        closed: list[tuple[bytes, _Window]] = []
        with self._lock:
            windows = self._windows
            if force:
                closed = list(windows.items())
                windows.clear()
                self._buffered = 0
            else:
                horizon = now - self.config.window_s
                while windows:
                    trace_id, w = next(iter(windows.items()))
                    if w[0] > horizon:
                        break
                    windows.popitem(last=False)
                    self._buffered -= len(w) - 1
                    closed.append((trace_id, w))
        if closed:
            self._count(closed)
        return len(closed)

    def _count(self, closed: list[tuple[bytes, _Window]]) -> None:
        decisions = [d for trace_id, w in closed if len(w) > 2 for d in decide(trace_id, w[1:])]
        if not decisions:
            return
        if self._on_decision is not None:
            for d in decisions:
                self._on_decision(d)
        m = self.metrics
        if m is None:
            return
        now = time.time()
        with m.agg.lock:
            for is_fallback, labels, trace_id, span_id in decisions:
                family = m.fallbacks if is_fallback else m.retries
                family.add(labels, 1, (trace_id, span_id, 1.0, now))
