"""OTLP/gRPC receiver: TraceService, LogsService and MetricsService Export.

Handlers take the raw request bytes (no generated deserializer), so a malformed message is
answered INVALID_ARGUMENT with the parser's reason and the unmodified bytes can be forwarded
as they came.

Two transports answer the same way (`_answer` decides): the native one (`GrpcServer` from
native/src/grpc.rs: HTTP/2 in Rust, one Python call per request) when it is built and TLS is
off, grpcio otherwise (`_grpcio`). A grpcio server costs ~0.85 ms of CPU per 58 KB request
before our code runs; the native one ~0.4 ms (bench/README).

Both are bounded under hostile clients (issue 21): streams per connection, open connections,
a deadline for a request to arrive whole, an idle-connection timeout, the bearer token checked
before the body is read, and request bytes in flight counted once gunzipped. Every refusal is
counted (`llm_pipeline_rejected_items_total{reason}`) and logged, at most once per reason
every 10 s (`_common.refuse`).
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import structlog
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo

from .. import _native
from ..config import ReceiversConfig
from ..exporters.queue import QueueFull
from ..service import Service
from ._common import export_response, refuse, refuse_connections
from .decode import DecodeError, count_items, parse_protobuf

log = structlog.get_logger("pipeline.receivers")

_SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
}


def _retry_metadata(delay_s: int, message: str) -> tuple[tuple[str, str | bytes], ...]:
    """The retry hint three ways: RetryInfo as the OTel SDK reads it (its own trailer) and as
    the Collector reads it (google.rpc.Status details), and a plain retry-after."""
    info = RetryInfo()
    info.retry_delay.seconds = delay_s
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=message)
    status.details.add().Pack(info)
    return (
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
        ("grpc-status-details-bin", status.SerializeToString()),
        ("retry-after", str(delay_s)),
    )


# gRPC status codes by number (the native transport speaks numbers).
_CODES = {c.value[0]: c for c in grpc.StatusCode}
_OK, _INVALID_ARGUMENT, _DEADLINE_EXCEEDED, _RESOURCE_EXHAUSTED = 0, 3, 4, 8
_UNIMPLEMENTED, _INTERNAL, _UNAVAILABLE, _UNAUTHENTICATED = 12, 13, 14, 16
_PATHS = {f"/{name}/Export": signal for signal, name in _SERVICES.items()}
BUSY_TEXT = "receiver busy; retry after 1s"

_MEMORY = "memory limit reached; retry after 1s"
# (status code, message, response bytes, trailing metadata)
Answer = tuple[int, str, bytes, tuple[tuple[str, str | bytes], ...]]


class Refusals:
    """The gRPC receiver's refusals: counted in llm_pipeline_rejected_items_total and logged
    at most once per reason every 10 s, through `_common.refuse` like the HTTP receiver's."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def __call__(self, signal: str, reason: str, detail: str, items: int = 0) -> None:
        refuse(self.service, "grpc", signal, reason, detail, items)

    def note(self, reason: str, detail: str, count: int = 1) -> None:
        """Connections refused or closed by the transport (no items are counted)."""
        refuse_connections("grpc", reason, detail, count)


def _busy(refuse: Refusals, signal: str) -> Answer:
    refuse(signal, "receiver_busy", BUSY_TEXT)
    return _UNAVAILABLE, BUSY_TEXT, b"", _retry_metadata(1, BUSY_TEXT)


def _answer(service: Service, refuse: Refusals, signal: str, raw: bytes) -> Answer:
    """What to answer an Export call carrying `raw` (the request message's bytes, gunzipped;
    the caller has checked the bearer token)."""
    if not service.memory.ok():  # above the soft memory limit: refused before parsing
        refuse(signal, "memory_limit", _MEMORY)
        return _UNAVAILABLE, _MEMORY, b"", _retry_metadata(1, _MEMORY)
    try:
        request = parse_protobuf(signal, raw)
    except DecodeError as e:
        refuse(signal, e.reason, str(e))
        return _INVALID_ARGUMENT, str(e), b"", ()
    try:
        result = service.accept(signal, request, raw, "grpc")
    except QueueFull as e:
        delay = max(1, math.ceil(e.retry_after_s))
        message = f"{e}; retry after {delay}s"
        refuse(signal, e.reason, message, count_items(signal, request))
        return _UNAVAILABLE, message, b"", _retry_metadata(delay, message)
    except Exception as e:  # a processor bug must not kill the receiver
        log.exception("processing failed", signal=signal)
        return _INTERNAL, f"processing failed: {type(e).__name__}", b"", ()
    return _OK, "", bytes(export_response(signal, result).SerializeToString()), ()


class OtlpGrpcReceiver:
    def __init__(
        self,
        service: Service,
        endpoint: str,
        max_request_bytes: int,
        auth_token: str | None = None,
        tls: tuple[bytes, bytes] | None = None,
        workers: int = 8,
        transport: str = "auto",
        max_inflight_bytes: int = ReceiversConfig.grpc_max_inflight_bytes,
        max_decompressed_bytes: int = ReceiversConfig.max_decompressed_bytes,
        max_streams_per_connection: int = ReceiversConfig.grpc_max_streams_per_connection,
        max_connections: int = ReceiversConfig.grpc_max_connections,
        request_timeout_s: float = ReceiversConfig.grpc_request_timeout_s,
        idle_timeout_s: float = ReceiversConfig.grpc_idle_timeout_s,
    ) -> None:
        self.service = service
        self.endpoint = endpoint
        self.refuse = Refusals(service)
        self._native: Any = None
        self._server: Any = None
        server = _native.native_transport(transport, _native.GrpcServer, tls is None)
        # the largest request must fit when nothing else is in flight: its compressed bytes
        # stay paid for while they are inflated
        inflight = max(max_inflight_bytes, max_request_bytes + max_decompressed_bytes)
        if server is not None:
            self.transport = "native"
            self._native = server(
                endpoint,
                self._native_handler,
                list(_PATHS),
                max_message_bytes=max_request_bytes,
                max_decompressed_bytes=max_decompressed_bytes,
                max_inflight_bytes=inflight,
                max_concurrent_calls=workers * 8,
                max_streams_per_connection=max_streams_per_connection,
                max_connections=max_connections,
                request_timeout_s=request_timeout_s,
                idle_timeout_s=idle_timeout_s,
                auth_token=auth_token or None,
            )
            self.port = int(self._native.port)
            return
        from ._grpcio import GrpcioServer

        self.transport = "grpcio"
        self._server = GrpcioServer(
            self,
            endpoint,
            auth_token,
            tls,
            workers,
            max_message_bytes=max(max_request_bytes, max_decompressed_bytes),
            max_inflight_bytes=inflight,
            max_streams_per_connection=max_streams_per_connection,
            max_connections=max_connections,
            request_timeout_s=request_timeout_s,
            idle_timeout_s=idle_timeout_s,
        )
        self.port = self._server.port

    def answer(self, signal: str, raw: bytes) -> Answer:
        try:
            return _answer(self.service, self.refuse, signal, raw)
        except Exception as e:  # the transport must get an answer whatever happens
            log.exception("receiver failed", signal=signal)
            return _INTERNAL, f"receiver failed: {type(e).__name__}", b"", ()

    def busy(self, signal: str) -> Answer:
        return _busy(self.refuse, signal)

    def _native_handler(
        self, path: str, message: bytes | None, refusal: tuple[str, int, str] | None
    ) -> Answer:
        """Called by the native transport once per request (in one of its threads), and for
        connection-level events (path ""); see native/src/grpc.rs."""
        if not path:  # a connection refused or not accepted; the status field is how many
            if refusal is not None:
                reason, count, text = refusal
                if reason == "too_many_connections":
                    tel = self.service.telemetry
                    tel.inc(tel.refused_connections, ("otlp_grpc",), count)
                self.refuse.note(reason, text, count)
            return _OK, "", b"", ()
        signal = _PATHS[path]  # the transport answers unknown methods itself
        if message is None:
            reason, code, text = refusal or ("malformed", _INTERNAL, "no message")
            if reason == "receiver_busy":
                return _busy(self.refuse, signal)
            self.refuse(signal, reason, text)
            return code, text, b"", ()
        return self.answer(signal, message)

    @property
    def connections(self) -> int:
        """Open connections (native transport; grpcio does not say)."""
        return int(self._native.connections) if self._native is not None else -1

    def start(self) -> None:
        if self._native is not None:
            self._native.start()
        else:
            self._server.start()

    def shutdown(self, grace_s: float = 5.0) -> None:
        if self._native is not None:
            self._native.stop(grace_s)
        else:
            self._server.stop(grace_s)
