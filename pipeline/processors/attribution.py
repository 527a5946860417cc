"""attribution: who spent it. Dimension labels on each counted call; cost per request/agent run.

Each counted call gets `LLMCall.dimensions`, one label per configured dimension (see
`dimensions`), read from its span, its resource, else inherited from the nearest ancestor in
the same trace that has it (the app sets `user.id` on its request span, the LLM span lies
below). A call whose ancestors have not arrived yet (they end later, so they usually come in a
later batch) is held: `metrics` skips it now (`counted` is cleared on the batch's copy) and it
is recorded when the chain is known up to the root or a node with every value, or after
`idle_s` with what is known (`llm_pipeline_attribution_given_up_total{reason="idle"}`).

With `attribution.requests`, every trace with counted calls is followed until its root span
arrives (or `idle_s` passes): the request's cost and tokens, each agent run's (`invoke_agent` /
`invoke_workflow` spans) cost and calls, and each conversation's cost (`rollup.RequestMetrics`).
A root or agent span that arrives after its calls gets the rolled-up totals as attributes.

Memory: at most `max_open_traces` traces and `20 * max_open_traces` remembered spans; beyond,
the oldest trace is given up (`reason="max_open_traces"`): its calls are recorded with what is
known.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model import LLMCall, TraceBatch, any_value, service_name_of
from .dimensions import OTHER, AttributionConfig, DimensionConfig, Labeler
from .rollup import CONVERSATION_KEY, RequestMetrics, agent_name, write_rollup

if TYPE_CHECKING:
    from ..config import Config
    from .metrics import LLMMetrics
    from .redact import Redactor

_MAX_DEPTH = 256  # parent links followed at most (a cycle in bad data must end)
_NODES_PER_TRACE = 20  # the span budget: this many per open trace on average
_WEIGHT_FLOOR = 1e-9  # an unpriced call still ranks its value (by number of calls)

Values = list[str | None]  # per slot: a dimension's value (None: not found yet)


@dataclass(slots=True)
class _Node:
    parent: bytes
    values: tuple[str | None, ...] | None  # None: not read yet (`span` and `resource` say how)
    name: str
    service: str
    agent: str | None  # the agent's name, for an invoke_agent / invoke_workflow span
    # Until `values` is read: the span and its resource's values. Read only when a chain
    # walks through the node, or at the batch's end if its trace stays open (most traces
    # close in the batch their root comes in, and most spans are on no chain walked).
    span: Any = None
    resource: dict[str, Any] | None = None


@dataclass(slots=True)
class _Trace:
    last: float
    nodes: dict[bytes, _Node] = field(default_factory=dict)
    held: list[tuple[LLMCall, Values]] = field(default_factory=list)
    # counted calls so far: (span id, parent span id, cost, input tokens, output tokens)
    calls: list[tuple[bytes, bytes, float, int, int]] = field(default_factory=list)
    root: _Node | None = None
    root_id: bytes = b""
    service: str = ""  # the first call's, for a request whose root never came


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
        self._slots = slots
        self._n = len(slots)
        self._span_keys = sorted({k for s in slots for kind, k in s if kind == "span"})
        self._span_keys_b = [k.encode() for k in self._span_keys]
        self._resource_keys = {k for s in slots for kind, k in s if kind == "resource"}
        self.active = bool(slots)
        self.traces: dict[bytes, _Trace] = {}
        self._node_count = 0
        self._max_nodes = config.max_open_traces * _NODES_PER_TRACE
        agg = metrics.agg
        self.folds = agg.counter(
            "llm_pipeline_dimension_folds",
            "Calls whose dimension value folded into __other__ (beyond the top-k by cost).",
            ("dimension",),
        )
        self.given_up = agg.counter(
            "llm_pipeline_attribution_given_up",
            "Calls recorded without waiting longer for their trace's ancestors or root, by "
            "reason (idle, max_open_traces, ancestor_missing).",
            ("reason",),
        )
        self._reported_folds = [0] * len(self.labelers)
        # this batch's root and agent spans (trace, span id, node, span): rolled up once the
        # batch's calls are added
        self._arrivals: list[tuple[_Trace, bytes, _Node, Any]] = []
        self._unread: list[tuple[bytes, _Node]] = []  # this batch's nodes (trace id, node)
        self._touched: list[bytes] = []  # the traces this batch touched
        self._bare: dict[int, tuple[str | None, ...]] = {}  # id(resource values) -> own values
        self._keys: list[str] = []  # this batch's span-source keys
        names = tuple(d.name for d in dimensions)
        self.requests = RequestMetrics(agg, names) if config.requests else None

    # -- reading values ---------------------------------------------------------------------

    def _own(self, span_attrs: dict[str, Any], resource: dict[str, Any]) -> tuple[str | None, ...]:
        out: list[str | None] = []
        for sources in self._slots:
            value = None
            for kind, key in sources:
                v = (span_attrs if kind == "span" else resource).get(key)
                if v is not None and v != "":
                    value = v if isinstance(v, str) else str(v)
                    break
            out.append(value)
        return tuple(out)

    def _span_attrs(self, span: Any, keys: Sequence[str]) -> dict[str, Any]:
        if not keys:
            return {}
        wanted = set(keys)
        return {kv.key: any_value(kv.value) for kv in span.attributes if kv.key in wanted}

    def _call_attrs(
        self, call: LLMCall, raw: bytes, found: list[tuple[str, bytes]]
    ) -> dict[str, Any]:
        """The call's span-source attributes, read from the received bytes where each is a
        plain string or int attribute of the span itself (upb otherwise)."""
        start, end = call.wire_span  # type: ignore[misc]
        out: dict[str, Any] = {}
        for key, b in found:
            pos = raw.find(b, start, end)
            if pos < 0:
                continue
            value = wire_attribute(raw, pos, len(b))
            if value is None:  # not the simple shape: the parsed span decides
                return self._span_attrs(call.span, [k for k, _ in found])
            out[key] = value
        return out

    def _resource_values(self, rs: Any) -> dict[str, Any]:
        if not self._resource_keys:
            return {}
        keys = self._resource_keys
        return {kv.key: any_value(kv.value) for kv in rs.resource.attributes if kv.key in keys}

    # -- the chain --------------------------------------------------------------------------

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        if not self.active:
            return batch
        calls = [c for c in batch.calls if c.counted]
        if not calls and not self.traces:
            return batch
        now = time.monotonic()
        raw = batch.as_received  # values a processor changed are checked on their own
        # span-source keys anywhere in the request's bytes (a C search): none, no span reads
        found = [
            (k, b)
            for k, b in zip(self._span_keys, self._span_keys_b, strict=True)
            if raw is None or b in raw
        ]
        keys = [k for k, _ in found]
        resources = [self._resource_values(rs) for rs in batch.request.resource_spans] or [{}]
        # several resources with different values: which one each call's span is under
        res_of = None if all(r == resources[0] for r in resources) else _resource_index(batch)
        trace_ids: set[bytes] = set()  # besides those open already
        pending: list[tuple[LLMCall, Values]] = []
        for call in calls:
            attrs = {}
            if keys:
                if raw is None or call.wire_span is None:
                    attrs = self._span_attrs(call.span, keys)
                else:
                    attrs = self._call_attrs(call, raw, found)
            ri = res_of.get(call.span_id, 0) if res_of is not None else 0
            values = list(self._own(attrs, resources[ri]))
            pending.append((call, values))
            if (call.parent_span_id and None in values) or self.requests is not None:
                trace_ids.add(call.trace_id)
        self._keys = keys
        if trace_ids or self.traces:
            self._scan(batch, trace_ids, keys, resources, now)
        wall = time.time()
        ready: list[tuple[LLMCall, Values]] = []
        for call, values in pending:
            trace = self.traces.get(call.trace_id)
            if trace is not None and self.requests is not None:
                trace.service = trace.service or call.service_name
                trace.calls.append(
                    (
                        call.span_id,
                        call.parent_span_id,
                        call.cost_usd or 0.0,
                        call.input_tokens or 0,
                        call.output_tokens or 0,
                    )
                )
            if not self._resolve(values, call.parent_span_id, trace):
                if trace is None:  # its span was not in the request it came in: wait for it
                    trace = self._open(call.trace_id, now)
                trace.held.append((dataclasses.replace(call, span=None), values))
                call.counted = False  # recorded when released
            else:
                ready.append((call, values))
        self._label_all(ready, wall)
        if self._arrivals:
            assert self.requests is not None
            for trace, sid, node, span in self._arrivals:
                self.requests.arrived(trace, sid, node, span, batch, write_rollup)
            self._arrivals.clear()
        self._settle(now, wall)
        traces = self.traces
        for tid, node in self._unread:  # of traces still open: read before the batch goes
            if node.values is None and tid in traces:
                self._read(node)
        self._unread.clear()
        self._bare.clear()
        return batch

    def _scan(
        self,
        batch: TraceBatch,
        trace_ids: set[bytes],
        keys: Sequence[str],
        resources: list[dict[str, Any]],
        now: float,
    ) -> None:
        """Remember the spans of the traces followed (`trace_ids`)."""
        traces = self.traces
        agents = self.requests is not None
        for ri, rs in enumerate(batch.request.resource_spans):
            service = ""
            for ss in rs.scope_spans:
                for span in ss.spans:
                    tid = span.trace_id
                    trace = traces.get(tid)
                    if trace is None:
                        if tid not in trace_ids:
                            continue
                        trace = self._open(tid, now)
                    if trace.last != now:
                        trace.last = now
                        self._touched.append(tid)
                    if not service:
                        service = service_name_of(rs.resource)
                    name = span.name
                    node = _Node(
                        span.parent_span_id,
                        None,
                        name,
                        service,
                        agent_name(span, name) if agents else None,
                        span,
                        resources[ri],
                    )
                    self._unread.append((tid, node))
                    sid = span.span_id
                    if sid not in trace.nodes:
                        self._node_count += 1
                    trace.nodes[sid] = node
                    if not node.parent:
                        trace.root, trace.root_id = node, sid
                    if agents and (node.agent is not None or not node.parent):
                        self._arrivals.append((trace, sid, node, span))

    def _open(self, tid: bytes, now: float) -> _Trace:
        traces = self.traces
        while traces and (
            len(traces) >= self.config.max_open_traces or self._node_count >= self._max_nodes
        ):
            oldest = next(iter(traces))
            self._close(oldest, time.time(), "max_open_traces")
        trace = traces[tid] = _Trace(now)
        self._touched.append(tid)
        return trace

    def _read(self, node: _Node) -> tuple[str | None, ...]:
        keys, resource = self._keys, node.resource or {}
        attrs = self._span_attrs(node.span, keys) if keys else {}
        if attrs:
            values = self._own(attrs, resource)
        else:  # most spans: their resource's values, worked out once per batch
            values = self._bare.get(id(resource))  # type: ignore[assignment]
            if values is None:
                values = self._bare[id(resource)] = self._own(attrs, resource)
        node.values = values
        node.span = node.resource = None
        return values

    def _resolve(self, values: Values, parent: bytes, trace: _Trace | None) -> bool:
        """Fill `values`' gaps from the nearest ancestors that have them: False while an
        ancestor in the way has not arrived."""
        depth = 0
        while parent and None in values and depth < _MAX_DEPTH:
            node = trace.nodes.get(parent) if trace is not None else None
            if node is None:
                return False
            own = node.values if node.values is not None else self._read(node)
            for i, v in enumerate(own):
                if values[i] is None and v is not None:
                    values[i] = v
            parent = node.parent
            depth += 1
        return True

    def _label_all(self, ready: list[tuple[LLMCall, Values]], wall: float) -> None:
        """`_label` for a batch's calls: each distinct value ranked once with the batch's
        cost for it (the same calls share a few values), then each call labelled."""
        n = len(self.labelers)
        weights: list[dict[str, float]] = [{} for _ in range(n)]
        calls: list[dict[str, int]] = [{} for _ in range(n)]
        for call, values in ready:
            weight = (call.cost_usd or 0.0) + _WEIGHT_FLOOR
            for i in range(n):
                w, c = weights[i], calls[i]
                v = values[i] or ""
                w[v] = w.get(v, 0.0) + weight
                c[v] = c.get(v, 0) + 1
        labels: list[dict[str, str]] = []
        for i, lab in enumerate(self.labelers):
            folds = lab.heavy.folds
            labels.append(got := {v: lab.label(v, w) for v, w in weights[i].items()})
            if lab.heavy.folds != folds:  # folds count calls: one per folded value so far
                lab.heavy.folds += sum(calls[i][v] - 1 for v, g in got.items() if g == OTHER)
        for call, values in ready:
            call.dimensions = tuple(labels[i][values[i] or ""] for i in range(n))
            if self.requests is not None:
                self.requests.conversation(call, values[-1], wall)

    def _label(self, call: LLMCall, values: Values, wall: float) -> None:
        weight = (call.cost_usd or 0.0) + _WEIGHT_FLOOR
        call.dimensions = tuple(
            lab.label(v or "", weight) for lab, v in zip(self.labelers, values, strict=False)
        )
        if self.requests is not None:
            self.requests.conversation(call, values[-1], wall)

    def _release(self, trace: _Trace, wall: float, reason: str | None) -> None:
        """Record the trace's held calls whose ancestors are known now; with a `reason`, the
        others too, with what is known (counted as given up for that reason)."""
        held, trace.held = trace.held, []
        metrics = self.metrics
        for call, values in held:
            resolved = self._resolve(values, call.parent_span_id, trace)
            if not resolved and reason is None:
                trace.held.append((call, values))
                continue
            self._label(call, values, wall)
            call.counted = True
            with metrics.agg.lock:
                metrics.record(call, wall)
                if not resolved and reason is not None:
                    self.given_up.add((reason,), 1)

    def _close(self, tid: bytes, wall: float, reason: str) -> None:
        trace = self.traces.pop(tid)
        self._node_count -= len(trace.nodes)
        self._release(trace, wall, reason)
        if self.requests is not None:
            self.requests.observe(tid, trace, wall)

    def _settle(self, now: float, wall: float) -> None:
        """Release what this batch completed: held calls whose ancestors came, traces whose
        root came; count new folds."""
        touched, self._touched = self._touched, []
        for tid in touched:
            trace = self.traces.get(tid)
            if trace is None:
                continue
            if trace.root is not None:  # the chain ends there: a gap will not fill
                self._close(tid, wall, "ancestor_missing")
            elif trace.held:
                self._release(trace, wall, None)
        self._count_folds()

    def _count_folds(self) -> None:
        with self.metrics.agg.lock:
            for i, lab in enumerate(self.labelers):
                n = lab.heavy.folds
                if n != self._reported_folds[i]:
                    self.folds.add((lab.name,), n - self._reported_folds[i])
                    self._reported_folds[i] = n

    def flush(self, force: bool = False) -> None:
        """Give up on the traces idle for `idle_s` (all of them with `force`, at shutdown)."""
        if not self.traces:
            return
        limit = time.monotonic() - self.config.idle_s
        wall = time.time()
        for tid, trace in list(self.traces.items()):
            if force or trace.last <= limit:
                self._close(tid, wall, "idle")
        self._count_folds()


def wire_attribute(raw: bytes, pos: int, n: int) -> str | None:
    """The value of the span attribute whose key (`n` bytes) starts at `pos` in `raw`, when it
    is a Span.attributes KeyValue (field 9, short key and length) with a string or int value;
    None otherwise (nested in an event or link, another value type, or not a key at all)."""
    if n >= 0x80 or pos < 4 or raw[pos - 1] != n or raw[pos - 2] != 0x0A:
        return None
    kv_len = raw[pos - 3]
    if kv_len >= 0x80 or raw[pos - 4] != 0x4A:  # Span field 9, a one-byte length
        return None
    p = pos + n
    kv_end = pos - 2 + kv_len
    if p + 3 > kv_end or raw[p] != 0x12:
        return None
    av_len, kind = raw[p + 1], raw[p + 2]
    if av_len >= 0x80 or p + 2 + av_len != kv_end:
        return None
    if kind == 0x0A:  # string_value
        s_len = raw[p + 3]
        if s_len >= 0x80 or p + 4 + s_len != kv_end:
            return None
        try:
            return raw[p + 4 : kv_end].decode()
        except UnicodeDecodeError:
            return None
    if kind == 0x18:  # int_value, a varint
        value, shift = 0, 0
        for byte in raw[p + 3 : kv_end]:
            value |= (byte & 0x7F) << shift
            shift += 7
        return str(value if value < 2**63 else value - 2**64)
    return None


def _resource_index(batch: TraceBatch) -> dict[bytes, int]:
    """span id -> the index of the resource it is under."""
    return {
        span.span_id: ri
        for ri, rs in enumerate(batch.request.resource_spans)
        for ss in rs.scope_spans
        for span in ss.spans
    }


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
