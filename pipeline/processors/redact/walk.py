"""redact's walk of OTLP: which strings of a trace or log request are scanned, in place.

What is scanned (string values only, including strings nested in array and kvlist values):
resource attributes, span names, span attributes, span event and link attributes, span status
messages, log record bodies, event names and attributes; every span, not only LLM calls. That
covers prompts and completions in every convention (`gen_ai.input.messages` JSON, `gen_ai.prompt`
events, OpenLLMetry `gen_ai.prompt.N.content`, OpenInference
`llm.input_messages.N.message.content`, `input.value`, `output.value`). Numbers are never
scanned, nor the attributes naming the call (`gen_ai.request.model`, `gen_ai.provider.name`, ...,
see `_NOT_SCANNED`), so metrics are unaffected (`error.type` is scanned: a secret in it
would otherwise become a metric label). Not scanned yet: attribute keys, span event names,
scope names and attributes, trace_state and bytes values (spans are rewritten where the native
prefilter's targets point, and those name only the values above).

`drop_attributes` removes attributes by key (exact, or a glob such as `gen_ai.prompt.*`) from
every attribute list scanned; each removal counts as type `dropped`. Counts go to `on_redact(type,
count)` once per type per batch. The batch is marked modified when anything changed. Redacting
twice changes nothing more (markers are not matched again).

Only the spans and log records a prefilter hint falls in are walked (`_prefilter`, over the
request's bytes, in C; all of them when custom patterns or `drop_attributes` are configured).
A string replaced in place where the hints' offsets are those of the received bytes is
recorded as a byte edit too (`TraceBatch.record_edit`), so the request need not be serialized.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ...model import LogBatch, TraceBatch
from .._prefilter import Prefilter, Target
from .._wire import ItemRange
from .patterns import DROPPED, RedactConfig
from .scanner import Scanner

_B = TypeVar("_B", TraceBatch, LogBatch)
_R = TypeVar("_R")

# Attributes naming the model call (what the metrics are labelled by): never scanned, so
# redaction cannot change them. Token counts are numbers, never scanned anyway. (Not every key
# the convention tables read: `llm.invocation_parameters` is a JSON blob that may hold PII.)
_NOT_SCANNED = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.id",
        "llm.request.type",
        "llm.system",
        "llm.provider",
        "llm.model_name",
        "llm.request.model_name",
        "llm.response.model_name",
        "embedding.model_name",
        "openinference.span.kind",
    }
)

OnRedact = Callable[[str, int], None]


class Redactor:
    """Redacts a `TraceBatch` or `LogBatch` in place; see the package docstring for the rules."""

    def __init__(
        self, config: RedactConfig | None = None, on_redact: OnRedact | None = None
    ) -> None:
        self.config = cfg = config or RedactConfig()
        cfg.validate()
        self._on_redact = on_redact
        types = cfg.enabled_types()
        extras = cfg.compiled_extras()
        self.scanner = Scanner(types, extras)
        # bound once: the walk calls it for every string it scans
        self.redact_text: Callable[[str, dict[str, int]], str] = self.scanner.redact_text
        self._extras = bool(extras)
        exact = {k for k in cfg.drop_attributes if not any(c in k for c in "*?[")}
        globs = [k for k in cfg.drop_attributes if k not in exact]
        self._drop_exact = frozenset(exact)
        self._drop_glob = (
            re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        )
        self._dropping = bool(cfg.drop_attributes)
        self._prefilter = Prefilter(types)

    def _value(self, v: Any, counts: dict[str, int]) -> bool:
        """Redact an AnyValue in place; True when it changed."""
        s = v.string_value
        if s:
            r = self.redact_text(s, counts)
            if r != s:
                v.string_value = r
                return True
            return False
        kind = v.WhichOneof("value")
        changed = False
        if kind == "array_value":
            for x in v.array_value.values:
                changed |= self._value(x, counts)
        elif kind == "kvlist_value":
            for kv in v.kvlist_value.values:
                changed |= self._value(kv.value, counts)
        return changed

    def _attributes(self, attrs: Any, counts: dict[str, int]) -> bool:
        changed = False
        if self._dropping:
            drop = [i for i, kv in enumerate(attrs) if self._drops(kv.key)]
            for i in reversed(drop):
                del attrs[i]
            if drop:
                counts[DROPPED] = counts.get(DROPPED, 0) + len(drop)
                changed = True
        for kv in attrs:
            if kv.key not in _NOT_SCANNED:
                changed |= self._value(kv.value, counts)
        return changed

    def _drops(self, key: str) -> bool:
        if key in self._drop_exact:
            return True
        return self._drop_glob is not None and self._drop_glob.match(key) is not None

    def _string_field(self, msg: Any, name: str, counts: dict[str, int]) -> bool:
        s = getattr(msg, name)
        if not s:
            return False
        r = self.redact_text(s, counts)
        if r == s:
            return False
        setattr(msg, name, r)
        return True

    def _span(self, span: Any, counts: dict[str, int]) -> bool:
        changed = self._string_field(span, "name", counts)
        changed |= self._attributes(span.attributes, counts)
        for ev in span.events:
            changed |= self._attributes(ev.attributes, counts)
        for link in span.links:
            changed |= self._attributes(link.attributes, counts)
        if span.status.message:
            changed |= self._string_field(span.status, "message", counts)
        return changed

    def _record(self, rec: Any, counts: dict[str, int]) -> bool:
        changed = self._value(rec.body, counts)
        if rec.event_name:
            changed |= self._string_field(rec, "event_name", counts)
        return self._attributes(rec.attributes, counts) | changed

    def _prefiltered(self, batch: TraceBatch | LogBatch, find: Callable[[bytes], _R]) -> _R | None:
        """What the prefilter finds in the batch's bytes (the received ones while they hold,
        else the request serialized now), or None: walk everything (custom patterns and
        dropped keys are not prefiltered)."""
        if self._extras or self._dropping:
            return None
        data = batch.received
        if data is None:
            data = batch.request.SerializeToString()
        try:
            return find(data)
        except (ValueError, IndexError):  # not the wire shape expected: be thorough instead
            return None

    def _candidates(self, batch: TraceBatch | LogBatch) -> list[ItemRange] | None:
        """The items the prefilter says may hold a match, or None: walk everything."""
        return self._prefiltered(batch, self._prefilter.items)

    def _redact_targets(
        self, batch: TraceBatch, targets: list[Target], received: bool
    ) -> TraceBatch:
        """Redact only what a hint overlaps (`Prefilter.targets`): a hinted span's other
        attributes are not walked, nor turned into Python strings. A string replaced in place
        is recorded as a byte edit too (`TraceBatch.record_edit`) when the targets' offsets
        are those of the received bytes (`received`), else the batch is touched."""
        counts: dict[str, int] = {}
        resources = batch.request.resource_spans
        at: tuple[int, int, int] | None = None
        span: Any = None
        for r, s, i, kind, x, y, start, end in targets:
            if kind == 0:
                holder, name = resources[r].resource.attributes[x], "value"
            else:
                if at != (r, s, i):
                    span, at = resources[r].scope_spans[s].spans[i], (r, s, i)
                if kind == 1:
                    holder, name = span, "name"
                elif kind == 5:
                    holder, name = span.status, "message"
                elif kind == 2:
                    holder, name = span.attributes[x], "value"
                else:
                    holder = (span.events if kind == 3 else span.links)[x].attributes[y]
                    name = "value"
            if name == "value":
                if holder.key in _NOT_SCANNED:
                    continue
                if start < 0:  # an array, a kvlist, a value written twice: not in place
                    if self._value(holder.value, counts):
                        batch.touch()
                    continue
                holder, name = holder.value, "string_value"
            text = getattr(holder, name)
            if not text:
                continue
            new = self.redact_text(text, counts)
            if new != text:
                setattr(holder, name, new)
                if received and start >= 0:
                    batch.record_edit(start, end, new.encode())
                else:
                    batch.touch()
        self._report(counts)
        return batch

    def _targets(self, batch: TraceBatch | LogBatch) -> Iterator[tuple[Any, Any]]:
        """(resource, None) and (None, span or log record) for each thing to walk."""
        if isinstance(batch, TraceBatch):
            resources, scopes, items = batch.request.resource_spans, "scope_spans", "spans"
        else:
            resources, scopes, items = batch.request.resource_logs, "scope_logs", "log_records"
        candidates = self._candidates(batch)
        if candidates is None:
            for res in resources:
                yield res.resource, None
                for scope in getattr(res, scopes):
                    for item in getattr(scope, items):
                        yield None, item
            return
        for r in candidates:
            res = resources[r.resource]
            if r.scope < 0:
                yield res.resource, None
            else:
                yield None, getattr(getattr(res, scopes)[r.scope], items)[r.item]

    def _redact(self, batch: _B, redact_item: Callable[[Any, dict[str, int]], bool]) -> _B:
        counts: dict[str, int] = {}
        changed = False
        for resource, item in self._targets(batch):
            if item is None:
                changed |= self._attributes(resource.attributes, counts)
            else:
                changed |= redact_item(item, counts)
        if changed:
            batch.touch()  # changes made in place, not recorded as byte edits
        self._report(counts)
        return batch

    def redact_traces(self, batch: TraceBatch) -> TraceBatch:
        # the targets' offsets are those of the received bytes only while those hold
        received = batch.received is not None
        targets = self._prefiltered(batch, self._prefilter.targets)
        if targets is not None:
            return self._redact_targets(batch, targets, received)
        return self._redact(batch, self._span)

    def redact_logs(self, batch: LogBatch) -> LogBatch:
        return self._redact(batch, self._record)

    def _report(self, counts: dict[str, int]) -> None:
        if self._on_redact is not None:
            for kind, n in counts.items():
                if n:
                    self._on_redact(kind, n)

    def __call__(self, batch: Any) -> Any:
        if not self.config.enabled:
            return batch
        if isinstance(batch, TraceBatch):
            return self.redact_traces(batch)
        if isinstance(batch, LogBatch):
            return self.redact_logs(batch)
        return batch
