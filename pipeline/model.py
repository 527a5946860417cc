"""The batch types the processors see: thin views over the OTLP protobufs.

A processor never copies spans out of the protobuf request; it reads them in place and records
what it derived for each LLM call in an `LLMCall`. Only `enrich` writes back into the spans, and
only into spans it changed, so the exporters can forward the request as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# Canonical fields a convention table maps attribute keys to (see processors/conventions).
FIELDS = (
    "operation",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "ttft_s",
    "streaming",
    "error_type",
    "server_ttft_s",
    "server_duration_s",
    "span_kind_hint",
    "cost_usd",
)


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
    # them (enrich records its additions there as a byte edit, see TraceBatch.edits).
    wire_span: tuple[int, int] | None = None
    # USD the provider's prompt cache saved: (input price - cache-read price) x cache reads.
    # Last: the native reader builds calls from positional fields.
    cache_savings_usd: float | None = None

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    @property
    def failed(self) -> bool:
        return bool(self.error_type)

    @property
    def trace_id_hex(self) -> str:
        return self.trace_id.hex()


@dataclass(slots=True)
class TraceBatch:
    """One OTLP trace request on its way through the processor chain."""

    request: ExportTraceServiceRequest
    calls: list[LLMCall] = field(default_factory=list)
    span_count: int = 0
    modified: bool = False  # some span was changed; exporters must re-serialize
    raw: bytes | None = None  # the received protobuf bytes, forwarded as-is when unmodified
    # Each change made to `request` as a byte edit of `raw` too: (start, end, bytes, append),
    # see the native `patch`; the exporters apply these instead of serializing the whole
    # request. None once a change was made that could not be recorded so.
    edits: list[tuple[int, int, bytes, bool]] | None = field(default_factory=list)
    # enrich's additions recorded in `edits` but not merged into `request`'s spans yet (a upb
    # merge per span cost ~a third of enrich): whatever reads `request` after the chain for
    # its content calls `settled` first (the exporters send the patched bytes instead).
    unmerged: list[tuple[LLMCall, bytes]] | None = None


def settled(batch: TraceBatch) -> ExportTraceServiceRequest:
    """The batch's request with every change made to it, enrich's deferred additions too."""
    if batch.unmerged:
        for call, added in batch.unmerged:
            call.span.MergeFromString(added)
        batch.unmerged = None
    return batch.request


@dataclass(slots=True)
class LogBatch:
    request: ExportLogsServiceRequest
    record_count: int = 0
    modified: bool = False
    raw: bytes | None = None


@dataclass(slots=True)
class MetricBatch:
    request: ExportMetricsServiceRequest
    point_count: int = 0
    raw: bytes | None = None


Batch = TraceBatch | LogBatch | MetricBatch


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
