"""The batch types the processors see: thin views over the OTLP protobufs.

A processor never copies spans out of the protobuf request; it reads them in place and records
what it derived for each LLM call in an `LLMCall`. Only `enrich` writes back into the spans, and
only into spans it changed, so the exporters can forward the request as it is.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields
from typing import Any, Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from . import _native


@dataclass(slots=True)
class LLMCall:
    """What the processors derived from one span that is a model call."""

    span: Any  # opentelemetry.proto.trace.v1.Span (upb message, edited in place by enrich)
    service_name: str
    convention: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    start_ns: int
    end_ns: int
    scope: str = ""  # the instrumentation scope's name
    operation: str = ""
    provider: str = ""
    request_model: str = ""
    response_model: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None
    streaming: bool = False
    ttft_s: float | None = None
    ttft_derived: bool = False  # TTFT came from span events, not an attribute
    # (end - first chunk) / (output tokens - 1): the call's average time per output token
    # after the first (llm_pipeline_time_per_output_token_seconds, not a semconv metric)
    time_per_token_s: float | None = None
    error_type: str = ""
    server_side: bool = False  # a server span (vLLM): feeds gen_ai_server_* metrics
    server_ttft_s: float | None = None
    server_duration_s: float | None = None
    cost_usd: float | None = None
    response_id: str = ""  # gen_ai.response.id, for dedupe
    counted: bool = True  # False when a nested LLM span already counted this call
    # The keys on the span that enrich could write (tables' and enrich's own), so enrich never
    # writes one again (shared by the spans of one key sequence: never mutated).
    present: frozenset[str] = frozenset()
    # The times of the streamed-chunk events at or after the start, ascending (empty: none),
    # when normalize read the events from the wire; None: not read (the ttft processor walks
    # the events). TTFT comes from the first, time per output chunk from the intervals.
    chunk_ns: tuple[int, ...] | None = None
    # Where the span's message content lies in the received bytes, when normalize read it from
    # them (enrich records its additions there as a byte edit, see TraceBatch.append_to_spans).
    wire_span: tuple[int, int] | None = None
    # One label per configured attribution dimension, in config order (processors/attribution)
    dimensions: tuple[str, ...] = ()
    # USD the provider's prompt cache saved: (input price - cache-read price) x cache reads.
    # Last: the native reader builds calls from positional fields.
    cache_savings_usd: float | None = None

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    def detached(self) -> LLMCall:
        """A copy without its span, to keep beyond its batch (the span would keep the whole
        request alive). Positional: dataclasses.replace costs ~4x as much."""
        copy = LLMCall(*_call_fields(self))
        copy.span = None
        return copy

    @property
    def failed(self) -> bool:
        return bool(self.error_type)


_call_fields = operator.attrgetter(*(f.name for f in fields(LLMCall)))


Edit = tuple[int, int, bytes, bool]  # (start, end, bytes, append) in the received bytes


class _Received:
    """A request as parsed and, when it came as protobuf, as received. The received bytes
    describe the request until it is changed: then `encode` serializes the request."""

    __slots__ = ("_modified", "_raw", "_request")

    def __init__(self, request: Any, raw: bytes | None = None) -> None:
        self._request = request
        self._raw = raw
        self._modified = False

    @property
    def request(self) -> Any:
        return self._request

    @property
    def received(self) -> bytes | None:
        """The bytes as received while they still describe the request: None once something
        changed it (their offsets no longer hold), or when it was not received as bytes."""
        return self._raw if not self._modified else None

    @property
    def as_received(self) -> bytes | None:
        """The bytes as received, whatever changed since (the calls' `wire_span` offsets index
        them): for reading what arrived, never for sending (that is `encode`)."""
        return self._raw

    @property
    def modified(self) -> bool:
        """Some item was changed: the exporters do not forward the received bytes as they are."""
        return self._modified

    def touch(self) -> None:
        """The parsed request is about to be changed in place, and the change is not recorded
        as a byte edit: from now on it is what the exporters serialize."""
        self._modified = True

    def encode(self) -> bytes:
        """Protobuf for every exporter: the received bytes while unchanged."""
        if self._raw is not None and not self._modified:
            return self._raw
        return bytes(self.request.SerializeToString())


class SpanRef(Protocol):
    """A span of a batch: where it lies in the received bytes (None: unknown), and the
    parsed span."""

    @property
    def wire_span(self) -> tuple[int, int] | None: ...

    @property
    def span(self) -> Any: ...


class TraceBatch(_Received):
    """One OTLP trace request on its way through the processor chain.

    A change to the parsed request is either recorded as a byte edit of the received bytes
    (`record_edit`, `append_to_spans`: the exporters then patch those bytes instead of
    serializing the request) or announced by `touch` (the request is serialized)."""

    __slots__ = ("_edits", "_unmerged", "calls", "span_count")

    def __init__(
        self,
        request: ExportTraceServiceRequest,
        calls: list[LLMCall] | None = None,
        span_count: int = 0,
        raw: bytes | None = None,
    ) -> None:
        super().__init__(request, raw)
        self.calls: list[LLMCall] = [] if calls is None else calls
        self.span_count = span_count
        # Each change as a byte edit of `_raw` (see the native `patch`); None once a change
        # was made that could not be recorded so, or when there are no received bytes.
        self._edits: list[Edit] | None = [] if raw is not None else None
        # Additions recorded in `_edits` but not merged into the parsed spans yet (a upb merge
        # per span cost ~a third of enrich): merged when something reads `request`.
        self._unmerged: list[tuple[SpanRef, bytes]] = []

    @property
    def request(self) -> ExportTraceServiceRequest:
        """The parsed request with every change made to it, deferred additions merged."""
        if self._unmerged:
            self._merge()
        return self._request  # type: ignore[no-any-return]

    def resource(self, i: int) -> Any:
        """The i-th resource, without merging the deferred additions (they are to spans)."""
        return self._request.resource_spans[i].resource

    def _merge(self) -> None:
        unmerged, self._unmerged = self._unmerged, []
        for call, added in unmerged:
            call.span.MergeFromString(added)

    @property
    def patchable(self) -> bool:
        """Changes can still be recorded as edits at offsets of the received bytes."""
        return self._edits is not None

    @property
    def edits(self) -> list[Edit] | None:
        """A copy of the byte edits recorded so far (None: not patchable)."""
        return None if self._edits is None else list(self._edits)

    def touch(self) -> None:
        self._modified = True
        self._edits = None
        if self._unmerged:  # the request is what the exporters send: it needs them now
            self._merge()

    def record_edit(self, start: int, end: int, data: bytes, append: bool = False) -> None:
        """The parsed request was changed in place, the same change being `data` written over
        (or, `append`, after) the received bytes [start, end). The offsets are those of the
        received bytes (read from `received` before any change), or the batch is touched:
        an edit after a change that was not recorded would land on stale offsets."""
        if self._edits is None:
            self.touch()
            return
        self._modified = True
        self._edits.append((start, end, data, append))

    def append_to_spans(self, call: SpanRef, added: bytes) -> None:
        """Add `added` (encoded Span fields) to the call's span (or another span's: anything
        with its `wire_span` and `span`): as a byte edit appended to the span's received bytes,
        merged into the parsed span only when `request` is read; or, when that cannot be
        recorded, merged now."""
        if self._edits is not None and call.wire_span is not None:
            self._modified = True
            self._edits.append((*call.wire_span, added, True))
            self._unmerged.append((call, added))
        else:
            self.touch()
            call.span.MergeFromString(added)

    def encode(self) -> bytes:
        """What the exporters send: the received bytes, patched with the recorded edits, or
        the request serialized (deferred additions merged first)."""
        if self._raw is not None and self._edits and _native.patch is not None:
            try:
                return _native.patch(self._raw, self._edits)
            except ValueError:  # an edit the wire walk does not place: serialize instead
                pass
        return super().encode()


class LogBatch(_Received):
    __slots__ = ()

    def __init__(self, request: ExportLogsServiceRequest, raw: bytes | None = None) -> None:
        super().__init__(request, raw)

    @property
    def request(self) -> ExportLogsServiceRequest:
        return self._request  # type: ignore[no-any-return]


class MetricBatch(_Received):
    __slots__ = ()

    def __init__(self, request: ExportMetricsServiceRequest, raw: bytes | None = None) -> None:
        super().__init__(request, raw)

    @property
    def request(self) -> ExportMetricsServiceRequest:
        return self._request  # type: ignore[no-any-return]


def any_value(v: Any) -> Any:
    """The Python value of an OTLP AnyValue (scalars; arrays as lists; kvlists as dicts)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value
    return None


def set_any_value(v: Any, value: Any) -> None:
    """Write a Python scalar into an OTLP AnyValue."""
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    else:
        v.string_value = str(value)


def service_name_of(resource: Any) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return str(any_value(kv.value))
    return "unknown_service"
