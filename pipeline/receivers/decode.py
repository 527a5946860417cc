"""Bytes to OTLP requests: protobuf or JSON, gzip, size limits, item validation.

Shared by the gRPC and HTTP receivers so both give the same answer to the same bad input.
OTLP/JSON differs from protobuf's canonical JSON mapping in one way that matters: trace and
span IDs are hex strings, not base64, so they are converted on the way in and out.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .._native import invalid_spans

SIGNALS = ("traces", "logs", "metrics")
REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
}
RESPONSE_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceResponse,
    "logs": ExportLogsServiceResponse,
    "metrics": ExportMetricsServiceResponse,
}
_ID_FIELDS = frozenset(("traceId", "spanId", "parentSpanId"))
_ID_LENGTHS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}
# Messages nested in one another, the top-level request included: upb (the protobuf runtime
# here) refuses a message more than 100 levels below the top (its default decode depth limit,
# kUpb_WireFormat_DefaultDepthLimit), so 101 in all; JSON objects are held to the same.
MAX_MESSAGE_DEPTH = 101


class DecodeError(ValueError):
    """Input the receiver refuses; `reason` is one of the rejected-items reasons."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_bytes: int = 16 * 1024 * 1024
    max_decompressed_bytes: int = 64 * 1024 * 1024


class Inflater:
    """gzip inflated as the body arrives, with a hard cap on the output (a bomb stops at
    `limit` bytes). Every member is read, as Go's reader does (`gzip(A) + gzip(B)` is A + B);
    anything after the last member that is not another member is refused."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.produced = 0
        self._members = 0
        self._d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._fed = 0  # bytes given to the current member

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        out: list[bytes] = []
        while data:
            d = self._d
            try:
                piece = d.decompress(data, self.limit - self.produced + 1)
            except zlib.error as e:
                if self._members and not self._fed:
                    raise DecodeError(
                        "invalid gzip body: trailing data after the last member"
                    ) from e
                raise DecodeError(f"invalid gzip body: {e}") from e
            self._fed += len(data) - len(d.unconsumed_tail) - len(d.unused_data)
            self.produced += len(piece)
            if self.produced > self.limit:
                raise DecodeError(f"decompressed body exceeds {self.limit} bytes", "too_large")
            out.append(piece)
            if d.eof:  # the member ended: what follows must be another one
                data = d.unused_data
                self._members += 1
                self._d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                self._fed = 0
            else:  # under the cap, so all input was taken (nothing left in unconsumed_tail)
                data = d.unconsumed_tail
        return b"".join(out)

    def finish(self) -> None:
        """The body ended: refuse a stream cut inside a member (or an empty one)."""
        if self._fed or not self._members:
            raise DecodeError("invalid gzip body: truncated")


def gunzip(body: bytes | bytearray | memoryview, limit: int) -> bytes:
    """Inflate a whole gzip body (every member) with a hard cap of `limit` output bytes."""
    inflater = Inflater(limit)
    out = inflater.feed(body)
    inflater.finish()
    return out


def _ids_hex_to_b64(node: Any, depth: int = 1) -> None:
    """Hex ids to base64 in place; `depth` counts JSON objects (messages), as protobuf's
    parser counts nested messages, so both encodings accept the same nesting."""
    if depth > MAX_MESSAGE_DEPTH:
        raise DecodeError("JSON nested too deeply")
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _ID_FIELDS and isinstance(v, str):
                if v == "":
                    continue
                try:
                    raw = bytes.fromhex(v)
                except ValueError as e:
                    raise DecodeError(f"{k}: not a hex string: {v[:40]!r}") from e
                node[k] = base64.b64encode(raw).decode()
            elif isinstance(v, dict):
                _ids_hex_to_b64(v, depth + 1)
            elif isinstance(v, list):
                _list_hex_to_b64(v, depth)


def _list_hex_to_b64(items: list[Any], depth: int) -> None:
    for v in items:
        if isinstance(v, dict):
            _ids_hex_to_b64(v, depth + 1)
        elif isinstance(v, list):  # no OTLP field is a list of lists
            raise DecodeError("invalid OTLP/JSON: an array directly inside an array")


def _ids_b64_to_hex(node: Any) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _ID_FIELDS and isinstance(v, str):
                node[k] = binascii.hexlify(base64.b64decode(v)).decode()
            elif isinstance(v, dict | list):
                _ids_b64_to_hex(v)
    elif isinstance(node, list):
        for v in node:
            _ids_b64_to_hex(v)


def parse_json(signal: str, body: bytes | bytearray) -> Message:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(f"body is not valid UTF-8: {e.reason} at byte {e.start}") from e
    try:
        data = json.loads(text)
    except RecursionError as e:
        raise DecodeError("JSON nested too deeply") from e
    except ValueError as e:
        raise DecodeError(f"invalid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DecodeError("the JSON body must be an object")
    _ids_hex_to_b64(data)
    msg = REQUEST_TYPES[signal]()
    try:
        json_format.ParseDict(
            data, msg, ignore_unknown_fields=True, max_recursion_depth=MAX_MESSAGE_DEPTH
        )
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as e:
        raise DecodeError(f"invalid OTLP/JSON {signal} request: {e}") from e
    return msg


def parse_protobuf(signal: str, body: bytes | bytearray | memoryview) -> Message:
    msg = REQUEST_TYPES[signal]()
    try:
        msg.ParseFromString(body)
    except (ProtoDecodeError, RecursionError, ValueError) as e:
        raise DecodeError(f"invalid OTLP/protobuf {signal} request: {e}") from e
    return msg


def to_json(msg: Message) -> str:
    """OTLP/JSON (hex IDs, integer enums), as the Collector's otlpjsonfile receiver reads it."""
    data = json_format.MessageToDict(msg, use_integers_for_enums=True)
    _ids_b64_to_hex(data)
    return json.dumps(data, separators=(",", ":"))


def count_items(signal: str, msg: Any) -> int:
    if signal == "traces":
        return sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)
    n = 0
    for rm in msg.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    n += len(getattr(m, kind).data_points)
    return n


def drop_invalid_spans(msg: Any, raw: bytes | None = None) -> tuple[int, str]:
    """Remove spans whose IDs are not 16/8 bytes; (how many, why) for partial_success.
    `raw`: the message's bytes, when the caller has them (checked natively, no span
    materialized, when every span is valid)."""
    if raw is not None and invalid_spans is not None:
        try:
            if not invalid_spans(raw):
                return 0, ""
        except ValueError:
            pass  # not the wire shape expected: the walk below decides
    rejected = 0
    reason = ""
    for rs in msg.resource_spans:
        for ss in rs.scope_spans:
            bad = [
                i
                for i, s in enumerate(ss.spans)
                if len(s.trace_id) != 16
                or len(s.span_id) != 8
                or len(s.parent_span_id) not in (0, 8)
                or s.trace_id == b"\0" * 16
            ]
            for i in reversed(bad):
                s = ss.spans[i]
                reason = (
                    f"span {s.name[:64]!r}: invalid trace_id/span_id length "
                    f"({len(s.trace_id)}/{len(s.span_id)} bytes, want 16/8 non-zero)"
                )
                del ss.spans[i]
            rejected += len(bad)
    return rejected, reason


def decode(
    signal: str,
    body: bytes,
    content_type: str,
    content_encoding: str = "",
    limits: Limits = Limits(),
) -> Message:
    """Parse a request body; raises DecodeError with a reason the sender can act on."""
    if len(body) > limits.max_request_bytes:
        raise DecodeError(
            f"request body of {len(body)} bytes exceeds {limits.max_request_bytes}", "too_large"
        )
    enc = content_encoding.strip().lower()
    if enc == "gzip":
        body = gunzip(body, limits.max_decompressed_bytes)
    elif enc not in ("", "identity"):
        raise DecodeError(
            f"unsupported Content-Encoding {content_encoding!r}", "unsupported_media_type"
        )
    return parse(signal, body, content_type)


def media_type(content_type: str) -> str:
    """ "protobuf", "json", or "" for a Content-Type the receivers do not take."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    return {"application/x-protobuf": "protobuf", "application/json": "json"}.get(ctype, "")


def unsupported_media_type(content_type: str) -> DecodeError:
    return DecodeError(
        f"unsupported Content-Type {content_type[:100]!r}; use application/x-protobuf or "
        "application/json",
        "unsupported_media_type",
    )


def parse(signal: str, body: bytes | bytearray, content_type: str) -> Message:
    """Parse an uncompressed body by its Content-Type."""
    kind = media_type(content_type)
    if kind == "protobuf":
        return parse_protobuf(signal, body)
    if kind == "json":
        return parse_json(signal, body)
    raise unsupported_media_type(content_type)
