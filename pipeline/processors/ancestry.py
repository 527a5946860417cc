"""ancestry: attribution's dimension values of a request's spans, inherited from ancestors.

A slot (a dimension, or the conversation id) has ordered sources, span or resource attribute
keys: its value on a span is the first source with a string, int or bool value (an int in
decimal, a bool as true/false; an empty string, a double, bytes, an array or a kvlist is no
value, so a label never shows a float's rounding or a list's repr). A span's key given twice:
the last counts. `SpanIndex.resolve` fills a span's missing values from its nearest ancestors
in the same request and names the first ancestor not in it while a value is still missing.

`Indexer.index` reads the received bytes with the native `DimensionReader` (native/src/dims.rs)
when built; `PySpanIndex` here is its twin and the reference (tests hold the two equal), and
reads the parsed request when there are no bytes (a request that came as JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .. import _native
from ..model import TraceBatch
from ._wire import py_item_ranges
from .rollup import agent_name

MAX_DEPTH = 256  # parent links followed at most: a cycle in bad data must end

Sources = Sequence[tuple[str, str]]  # per slot: (span | resource, attribute key), in order
Resolved = tuple[tuple[str, ...], bytes] | None


# A span of a followed trace: (trace id, span id, parent span id, name (roots and agent runs
# only), agent run name (None: not one), (start, end) in the received bytes (None without
# them), (resource, scope, span) index in the parsed request).
Node = tuple[
    bytes, bytes, bytes, str | None, str | None, tuple[int, int] | None, tuple[int, int, int]
]


class SpanIndex(Protocol):
    def resolve(self, wanted: list[tuple[bytes, bytes]]) -> list[Resolved]: ...

    def attribute(
        self, wanted: list[tuple[bytes, bytes]], weights: list[float], labelled: int
    ) -> tuple[list[Resolved], list[dict[str, float]]]: ...

    def attribute_calls(
        self, calls: list[Any], floor: float, labelled: int
    ) -> tuple[list[Resolved], list[dict[str, float]]]: ...

    def present(self, among: Any) -> list[tuple[bytes, bool]]: ...

    def nodes(self, among: Any) -> list[Node]: ...


def _value(v: Any) -> str | None:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value or None
    if kind == "int_value":
        return str(v.int_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    return None


class PySpanIndex:
    """The spans of a parsed traces request: each one's own slot values and parent."""

    def __init__(self, request: Any, slots: Sequence[Sources], raw: bytes | None = None) -> None:
        self._request = request
        self._ranges = (
            {(r, s, i): (a, b) for a, b, r, s, i in py_item_ranges(raw)}
            if raw is not None
            else None
        )
        span_keys = {k for s in slots for kind, k in s if kind == "span"}
        resource_keys = {k for s in slots for kind, k in s if kind == "resource"}
        self._n = len(slots)
        self._spans: dict[tuple[bytes, bytes], tuple[bytes, tuple[str | None, ...]]] = {}
        self._traces: dict[bytes, bool] = {}  # trace id -> its root span is here
        for rs in request.resource_spans:
            resource = {
                kv.key: _value(kv.value) for kv in rs.resource.attributes if kv.key in resource_keys
            }
            for ss in rs.scope_spans:
                for span in ss.spans:
                    own = {
                        kv.key: _value(kv.value) for kv in span.attributes if kv.key in span_keys
                    }
                    values = tuple(_first(sources, own, resource) for sources in slots)
                    tid, parent = span.trace_id, span.parent_span_id
                    self._spans[(tid, span.span_id)] = (parent, values)
                    self._traces[tid] = self._traces.get(tid, False) or not parent

    def resolve(self, wanted: list[tuple[bytes, bytes]]) -> list[Resolved]:
        """Per (trace id, span id): None when the span is not in the request, else (its values,
        "" where none, filled from its nearest ancestors; the id of the first ancestor not in
        the request while a value is missing, else b"")."""
        out: list[Resolved] = []
        spans = self._spans
        for tid, sid in wanted:
            got = spans.get((tid, sid))
            if got is None:
                out.append(None)
                continue
            parent, own = got
            values = list(own)
            gap, depth = b"", 0
            while parent and None in values and depth < MAX_DEPTH:
                node = spans.get((tid, parent))
                if node is None:
                    gap = parent
                    break
                parent, above = node
                for i, v in enumerate(above):
                    if values[i] is None and v is not None:
                        values[i] = v
                depth += 1
            out.append((tuple(v or "" for v in values), gap))
        return out

    def attribute(
        self, wanted: list[tuple[bytes, bytes]], weights: list[float], labelled: int
    ) -> tuple[list[Resolved], list[dict[str, float]]]:
        """`resolve`, and per slot below `labelled`: value -> the sum of `weights` (one per
        wanted span, in order) of the spans found with no ancestor awaited."""
        if len(weights) != len(wanted) or labelled > self._n:
            raise ValueError("a weight per span, labelled <= slots")
        out = self.resolve(wanted)
        # summed per combination of values first, then per value (the native order: equal
        # floats)
        combos: dict[tuple[str, ...], float] = {}
        for got, weight in zip(out, weights, strict=True):
            if got is not None and not got[1]:
                combos[got[0]] = combos.get(got[0], 0.0) + weight
        sums: list[dict[str, float]] = [{} for _ in range(labelled)]
        for values, weight in combos.items():
            for total, v in zip(sums, values, strict=False):
                total[v] = total.get(v, 0.0) + weight
        return out, sums

    def attribute_calls(
        self, calls: list[Any], floor: float, labelled: int
    ) -> tuple[list[Resolved], list[dict[str, float]]]:
        """`attribute` for `calls` (objects with `trace_id`, `span_id` and `cost_usd`): each
        weighs its cost (0 when None) plus `floor`."""
        wanted = [(c.trace_id, c.span_id) for c in calls]
        return self.attribute(wanted, [(c.cost_usd or 0.0) + floor for c in calls], labelled)

    def present(self, among: Any) -> list[tuple[bytes, bool]]:
        """Of the trace ids in `among`, those with spans here: (trace id, its root is here)."""
        return [(tid, root) for tid, root in self._traces.items() if tid in among]

    def nodes(self, among: Any) -> list[Node]:
        """The spans of the traces in `among`, in order (see `Node`)."""
        out: list[Node] = []
        ranges = self._ranges
        for r, rs in enumerate(self._request.resource_spans):
            for s, ss in enumerate(rs.scope_spans):
                for i, span in enumerate(ss.spans):
                    if span.trace_id not in among:
                        continue
                    name = span.name
                    agent = agent_name(span, name)
                    parent = span.parent_span_id
                    shown = name if agent is not None or not parent else None
                    at = (r, s, i)
                    wire = ranges[at] if ranges is not None else None
                    out.append((span.trace_id, span.span_id, parent, shown, agent, wire, at))
        return out


def _first(
    sources: Sources, own: dict[str, str | None], resource: dict[str, str | None]
) -> str | None:
    for kind, key in sources:
        v = (own if kind == "span" else resource).get(key)
        if v is not None:
            return v
    return None


def py_label_calls(
    calls: Sequence[Any],
    results: Sequence[Resolved],
    labels: Sequence[dict[str, str]],
    other: str,
) -> tuple[list[int], list[int]]:
    """Set each call's `dimensions` from its `resolve` result and `labels` (per labelled slot,
    value -> label): a call not in the request gets each slot's label of "", a call with an
    ancestor awaited is left alone (its index is returned: the caller holds it). Per slot: the
    calls whose label is `other`. The twin of the native `label_calls`."""
    if len(calls) != len(results):
        raise ValueError("a result per call")
    held: list[int] = []
    folds = [0] * len(labels)
    label = dict.__getitem__
    memo: dict[tuple[str, ...], tuple[str, ...]] = {}  # the calls of a combination share it
    unknown = tuple(lab[""] for lab in labels)
    for i, (call, got) in enumerate(zip(calls, results, strict=True)):
        if got is None:
            dims = unknown
        else:
            values, gap = got
            if gap:
                held.append(i)
                continue
            dims = memo.get(values) or memo.setdefault(values, tuple(map(label, labels, values)))
        call.dimensions = dims
        for slot, got_label in enumerate(dims):
            if got_label == other:
                folds[slot] += 1
    return held, folds


class Indexer:
    """A request's `SpanIndex` for the slots: native over the received bytes when it can."""

    def __init__(self, slots: Sequence[Sources], agents: bool = False) -> None:
        self.slots = [list(s) for s in slots]
        reader = _native.DimensionReader
        self._native = reader(self.slots, agents) if reader is not None else None

    def index(self, batch: TraceBatch) -> SpanIndex:
        raw = batch.as_received
        if self._native is not None and raw is not None:
            try:
                return self._native.index(raw)
            except ValueError:  # something the walk does not read: the parser's view
                pass
        return PySpanIndex(batch.request, self.slots)  # no bytes: no byte positions
