"""One consistent copy of the aggregation's series: what the scrape and the push both read.

Taken under the aggregation's lock (a copy of the numbers, nothing rendered), so the hot path
waits for a copy, not for an encoding; the Prometheus exposition and the OTLP push build their
formats from it outside the lock. Both read the same numbers the same way, which is what
makes scrape and push agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..aggregation import Aggregation, CounterFamily, Exemplar, HistogramFamily


@dataclass(frozen=True, slots=True)
class HistogramRow:
    key: tuple[str, ...]
    counts: list[int]  # per bucket, not cumulative; the last is +Inf
    exemplars: list[Exemplar | None]
    total: float
    count: int


@dataclass(frozen=True, slots=True)
class CounterRow:
    key: tuple[str, ...]
    value: float  # as exposed (rounded to the family's significant digits)
    exemplar: Exemplar | None


@dataclass(frozen=True, slots=True)
class FamilySnapshot:
    name: str  # the Prometheus name (without _total)
    documentation: str
    label_names: tuple[str, ...]
    bounds: tuple[float, ...] | None  # None: a counter
    histograms: list[HistogramRow]
    counters: list[CounterRow]
    overflowed: int

    @property
    def is_histogram(self) -> bool:
        return self.bounds is not None


@dataclass(frozen=True, slots=True)
class Snapshot:
    families: list[FamilySnapshot]
    time_unix_nano: int


def _copy(fam: HistogramFamily | CounterFamily) -> FamilySnapshot:
    if isinstance(fam, HistogramFamily):
        rows = [
            HistogramRow(k, list(s.counts), list(s.exemplars), s.total, s.count)
            for k, s in fam.series.items()
        ]
        return FamilySnapshot(
            fam.name, fam.documentation, fam.label_names, fam.bounds, rows, [], fam.overflowed
        )
    crows = [CounterRow(k, fam.exposed(s.value), s.exemplar) for k, s in fam.series.items()]
    return FamilySnapshot(
        fam.name, fam.documentation, fam.label_names, None, [], crows, fam.overflowed
    )


def take(agg: Aggregation) -> Snapshot:
    """Copy every family's series under the aggregation's lock."""
    with agg.lock:
        families = [_copy(f) for f in agg.families]
    return Snapshot(families, time.time_ns())
