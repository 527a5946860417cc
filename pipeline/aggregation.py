"""Metric values, kept apart from any registry or exposition format.

The hot path updates plain Python state keyed by a tuple of label values (no `.labels()` call,
no locks per observation: callers hold `Aggregation.lock` once per batch). The Prometheus
exporter turns a snapshot of this state into metric families at scrape time.
"""

from __future__ import annotations

import math
import threading
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

OTHER = "__other__"
# Overflow series that keep some labels (token type, error type) are capped too: error types
# come from the spans, so unbounded; past this many, every label folds into __other__.
MAX_OVERFLOW_SERIES = 64

# Bucket boundaries: the GenAI semantic conventions' advice (semantic-conventions v1.41.1
# docs/gen-ai/gen-ai-metrics.md; the same in semantic-conventions-genai). The client's
# duration, time to first chunk and time per output chunk share one set; the server's time to
# first token and time per output token have their own.
# fmt: off
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
TTFT_BUCKETS = DURATION_BUCKETS  # gen_ai.client.operation.time_to_first_chunk
TIME_PER_CHUNK_BUCKETS = DURATION_BUCKETS  # gen_ai.client.operation.time_per_output_chunk
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
SERVER_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
TIME_PER_TOKEN_BUCKETS = (  # gen_ai.server.time_per_output_token
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)
# fmt: on


# (trace id, span id, value, unix time). A plain tuple: one is built per observation on the
# hot path (a class instance costs several times more), and the ids stay bytes until a scrape
# renders the few that are kept (one per bucket).
Exemplar = tuple[bytes, bytes, float, float]

# A counter family with an exemplar window keeps, per series, the exemplar of the largest
# amount added within the window (a new window starts with the first amount after it): the
# heaviest call of the last half minute, rather than whichever came last. A scrape sees one
# exemplar per series anyway; and a series updated once in a while no longer frees its previous
# exemplar (cold memory by then) on every update.
EXEMPLAR_WINDOW_S = 30.0


@dataclass(slots=True)
class HistogramSeries:
    counts: list[int]  # per bucket, not cumulative; the last is +Inf
    exemplars: list[Exemplar | None]
    total: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, bounds: tuple[float, ...], value: float, exemplar: Exemplar | None) -> None:
        """The one histogram update (`bounds`: the family's), for the family and for the
        series the metrics processor keeps at hand."""
        i = bisect_left(bounds, value)
        self.counts[i] += 1
        self.total += value
        if exemplar is not None:
            self.exemplars[i] = exemplar


# A counter series' numbers, unboxed: value, kept exemplar's amount, its time.
_CELLS = 3
_FRESH = (0.0, -math.inf, -math.inf)


class CounterSeries:
    """A counter's value and exemplar. The numbers live unboxed in `cells` from `at` on:
    the value, and with an exemplar window the kept exemplar's amount and time (beside the
    value, so the window's check reads no other object). A family with `block_labels` keeps
    the series that differ only in their last label in one array side by side: the input
    and output tokens of a label set are updated in one block of memory, not in six float
    objects scattered over the heap (cold by the time a label set comes round again)."""

    __slots__ = ("at", "cells", "exemplar")

    def __init__(self, cells: array[float] | None = None, at: int = 0) -> None:
        self.cells = array("d", _FRESH) if cells is None else cells
        self.at = at
        self.exemplar: Exemplar | None = None

    @property
    def value(self) -> float:
        return self.cells[self.at]

    @property
    def kept_amount(self) -> float:
        return self.cells[self.at + 1]

    @property
    def kept_at(self) -> float:
        return self.cells[self.at + 2]

    def offer(self, exemplar: Exemplar, window_s: float) -> None:
        """Keep `exemplar` if its amount is larger than the kept one's, or the window has
        passed since that was taken (see EXEMPLAR_WINDOW_S)."""
        amount, at = exemplar[2], exemplar[3]
        cells, i = self.cells, self.at
        if amount > cells[i + 1] or at - cells[i + 2] >= window_s:
            cells[i + 1], cells[i + 2] = amount, at
            self.exemplar = exemplar


@dataclass
class _Family:
    name: str
    documentation: str
    label_names: tuple[str, ...]
    max_series: int
    # Labels whose values survive folding into the overflow series.
    keep_on_overflow: tuple[str, ...] = ()
    overflowed: int = 0
    _keep_idx: tuple[int, ...] = field(init=False, default=())
    _overflow_series: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._keep_idx = tuple(
            i for i, n in enumerate(self.label_names) if n in self.keep_on_overflow
        )

    def _overflow_key(
        self, key: tuple[str, ...], series: dict[tuple[str, ...], Any]
    ) -> tuple[str, ...]:
        self.overflowed += 1
        keep = self._keep_idx
        folded = tuple(v if i in keep else OTHER for i, v in enumerate(key))
        if folded in series:
            return folded
        if keep and self._overflow_series >= MAX_OVERFLOW_SERIES:
            return (OTHER,) * len(key)
        self._overflow_series += 1
        return folded


@dataclass
class HistogramFamily(_Family):
    bounds: tuple[float, ...] = ()
    series: dict[tuple[str, ...], HistogramSeries] = field(default_factory=dict)

    def observe(self, key: tuple[str, ...], value: float, exemplar: Exemplar | None = None) -> None:
        s = self.series.get(key)
        if s is None:
            if len(self.series) >= self.max_series:
                key = self._overflow_key(key, self.series)
                s = self.series.get(key)
            if s is None:
                n = len(self.bounds) + 1
                s = self.series[key] = HistogramSeries([0] * n, [None] * n)
        s.observe(self.bounds, value, exemplar)


@dataclass
class CounterFamily(_Family):
    series: dict[tuple[str, ...], CounterSeries] = field(default_factory=dict)
    # Significant digits the exposition keeps (None: all): a sum of float amounts (USD)
    # carries the arithmetic's last-bit noise, which is not part of the value.
    digits: int | None = None
    # None: each add's exemplar replaces the last; else the window (CounterSeries.offer)
    exemplar_window_s: float | None = None
    # Last-label values whose series share their prefix's block of cells (CounterSeries)
    block_labels: tuple[str, ...] = ()
    _blocks: dict[tuple[str, ...], array[float]] = field(default_factory=dict)

    def exposed(self, value: float) -> float:
        """The value as exposed: rounded to `digits` significant digits when set."""
        return value if self.digits is None else float(f"{value:.{self.digits}g}")

    def add(self, key: tuple[str, ...], amount: float, exemplar: Exemplar | None = None) -> None:
        s = self.series.get(key)
        if s is None:
            if len(self.series) >= self.max_series:
                key = self._overflow_key(key, self.series)
                s = self.series.get(key)
            if s is None:
                s = self.series[key] = self._new_series(key)
        self.update(s, amount, exemplar)

    def _new_series(self, key: tuple[str, ...]) -> CounterSeries:
        """A series for a new key: in its prefix's block when its last label is one of
        `block_labels` (the block is made with the first of them), else on its own."""
        if key and key[-1] in self.block_labels:
            prefix = key[:-1]
            cells = self._blocks.get(prefix)
            if cells is None:
                cells = self._blocks[prefix] = array("d", _FRESH * len(self.block_labels))
            return CounterSeries(cells, self.block_offset(key[-1]))
        return CounterSeries()

    def block_offset(self, label: str) -> int:
        """Where the series with last label `label` starts in its prefix's block."""
        return _CELLS * self.block_labels.index(label)

    def update(self, s: CounterSeries, amount: float, exemplar: Exemplar | None) -> None:
        """The one counter update (with the family's exemplar rule), for the family and for
        the series the metrics processor keeps at hand."""
        s.cells[s.at] += amount
        if exemplar is not None:
            if self.exemplar_window_s is None:
                s.exemplar = exemplar
            else:
                s.offer(exemplar, self.exemplar_window_s)


class Aggregation:
    """All metric families of one sidecar, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.families: list[HistogramFamily | CounterFamily] = []

    def histogram(
        self,
        name: str,
        documentation: str,
        label_names: tuple[str, ...],
        bounds: tuple[float, ...],
        max_series: int = 2000,
        keep_on_overflow: tuple[str, ...] = (),
    ) -> HistogramFamily:
        fam = HistogramFamily(
            name, documentation, label_names, max_series, keep_on_overflow, bounds=bounds
        )
        self.families.append(fam)
        return fam

    def counter(
        self,
        name: str,
        documentation: str,
        label_names: tuple[str, ...],
        max_series: int = 2000,
        keep_on_overflow: tuple[str, ...] = (),
        digits: int | None = None,
        exemplar_window_s: float | None = None,
        block_labels: tuple[str, ...] = (),
    ) -> CounterFamily:
        fam = CounterFamily(
            name,
            documentation,
            label_names,
            max_series,
            keep_on_overflow,
            digits=digits,
            exemplar_window_s=exemplar_window_s,
            block_labels=block_labels,
        )
        self.families.append(fam)
        return fam
