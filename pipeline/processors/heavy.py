"""heavy: which values of one attribution dimension keep their own series (space-saving).

A dimension such as `user` may see millions of distinct values; a Prometheus series each would
not do. `HeavyHitters` keeps a space-saving sketch (Metwally et al., 2005) of `capacity`
monitored values weighted by cost: any value whose true weight exceeds total/capacity is
monitored, each with an over-estimate `count` and a guaranteed lower bound (the weight added
since it was last monitored). At most `k` values are *kept* (labelled with their own value); the
rest fold into `__other__`.

A value is admitted to the kept set while it has room, or later when its guaranteed weight
exceeds the estimated weight of the smallest kept value, which then gives up its place (its
series stays, frozen: exposed series are never removed). A flood of one-off values never
passes that test once the kept values have real weight, so admissions, and with them new
series, stay few; memory is `capacity` entries whatever the number of distinct values.

`PyHeavyHitters` is the reference; `HeavyHitters` is the native twin when it is built
(native/src/heavy.rs: the same steps on unboxed floats), held equal by the tests. Ties are
broken by value (the smallest kept value by (count, value); `top` by (-count, value)), so the
two agree whatever order their sets and maps iterate in.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping

from .. import _native

OTHER = "__other__"


class PyHeavyHitters:
    """Space-saving top-k of one dimension's values by weight (cost)."""

    def __init__(self, k: int = 100, capacity: int | None = None) -> None:
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.capacity = max(capacity or 10 * k, k + 1)  # room beyond the kept values
        # value -> [count, own]: count over-estimates the value's weight by at most the count
        # it took over (count - own); own, the weight added since, is a guaranteed lower bound
        # (kept apart, not count - error: a float difference would admit equal weights)
        self.counts: dict[str, list[float]] = {}
        # (count when pushed, value), one entry per monitored value not kept: a lower bound of
        # its current count, so a popped entry whose count is current is the true minimum.
        # Kept values stay out of it (a popped kept value's entry is dropped): a kept value is
        # never evicted, so its count stays known, and a kept value that gives up its place
        # is filed again.
        self._heap: list[tuple[float, str]] = []
        # the kept values, each mapped to itself: the str object its labels share, so a label
        # set's comparisons downstream (metrics' series lookups) are identity checks
        self.kept: dict[str, str] = {}
        self.folds = 0
        # The smallest kept value's count when last worked out: kept values are never evicted
        # from the sketch and their counts only grow, so a guaranteed weight at or below it
        # cannot displace any kept value and the O(k) search is skipped.
        self._bar = 0.0

    def _evict_min(self) -> float:
        """Drop the monitored value with the smallest count; that count."""
        heap, counts = self._heap, self.counts
        while True:
            pushed, value = heapq.heappop(heap)
            entry = counts.get(value)
            if entry is None or value in self.kept:  # a stale entry
                continue
            current = entry[0]
            if current == pushed:
                del counts[value]
                return current
            heapq.heappush(heap, (current, value))  # grew since pushed: re-file it

    def add(self, value: str, weight: float) -> str:
        """Count `weight` for `value`; the label it gets: itself when kept, else `__other__`."""
        entry = self.counts.get(value)
        if entry is not None:
            entry[0] += weight
            entry[1] += weight
        else:
            floor = self._evict_min() if len(self.counts) >= self.capacity else 0.0
            entry = self.counts[value] = [floor + weight, weight]
            heapq.heappush(self._heap, (entry[0], value))
        kept = self.kept
        if (canonical := kept.get(value)) is not None:
            return canonical
        if len(kept) < self.k:
            kept[value] = value
            return value
        guaranteed = entry[1]
        if guaranteed > self._bar:
            counts = self.counts
            weakest = min(kept, key=lambda v: (counts[v][0], v))
            self._bar = counts[weakest][0]
            if guaranteed > self._bar:
                del kept[weakest]
                heapq.heappush(self._heap, (counts[weakest][0], weakest))
                kept[value] = value
                self._bar = 0.0  # the new minimum is worked out when next needed
                return value
        self.folds += 1
        return OTHER

    def label_all(
        self, weights: Mapping[str, float], checked: Mapping[str, str], check: Callable[[str], str]
    ) -> dict[str, str]:
        """Per value of `weights` (value -> weight): its label. "" -> ""; a value whose verdict
        (`checked`, else `check(value)`) is not "" -> the verdict, uncounted; else `add`."""
        kept = self.kept
        out = {"": ""}
        for value, weight in weights.items():
            if not value:
                continue
            if value not in kept:  # kept values were checked when admitted
                verdict = checked.get(value)
                if verdict is None:
                    verdict = check(value)
                if verdict:
                    out[value] = verdict
                    continue
            out[value] = self.add(value, weight)
        return out

    def top(self, n: int | None = None) -> list[tuple[str, float]]:
        """The monitored values by estimated weight, largest first (ties by value)."""
        ranked = sorted(((v, c[0]) for v, c in self.counts.items()), key=lambda x: (-x[1], x[0]))
        return ranked[:n] if n is not None else ranked


HeavyHitters: type[PyHeavyHitters] = _native.HeavyHitters or PyHeavyHitters  # type: ignore[assignment]
