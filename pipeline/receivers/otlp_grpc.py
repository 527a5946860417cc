"""OTLP/gRPC receiver: TraceService, LogsService and MetricsService Export.

Handlers take the raw request bytes (no generated deserializer), so a malformed message is
answered INVALID_ARGUMENT with the parser's reason and the unmodified bytes can be forwarded
as they came.

Two transports answer the same way (`_answer` decides): the native one (`GrpcServer` from
native/src/grpc.rs: HTTP/2 in Rust, one Python call per request) when it is built and TLS is
off, grpcio otherwise. A grpcio server costs ~0.85 ms of CPU per 58 KB request before our code
runs; the native one ~0.4 ms (bench/README).
"""

from __future__ import annotations

import math
from concurrent import futures
from typing import Any

import grpc
import structlog
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo

from .. import _native
from ..exporters.queue import QueueFull
from ..service import Service
from ._common import bearer_ok, export_response
from .decode import DecodeError, count_items, gunzip, parse_protobuf

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
_OK, _INVALID_ARGUMENT, _RESOURCE_EXHAUSTED = 0, 3, 8
_UNIMPLEMENTED, _INTERNAL, _UNAVAILABLE, _UNAUTHENTICATED = 12, 13, 14, 16
_PATHS = {f"/{name}/Export": signal for signal, name in _SERVICES.items()}

_MEMORY = "memory limit reached; retry after 1s"
# (status code, message, response bytes, trailing metadata)
Answer = tuple[int, str, bytes, tuple[tuple[str, str | bytes], ...]]


def _answer(
    service: Service, auth: str | None, signal: str, raw: bytes, authorization: str | None
) -> Answer:
    """What to answer an Export call carrying `raw` (the request message's bytes)."""
    if auth and not bearer_ok(auth, authorization):
        service.reject(signal, "unauthenticated")
        return _UNAUTHENTICATED, "missing or invalid bearer token", b"", ()
    if not service.memory_ok(signal):  # above the soft memory limit: refuse undecoded
        return _UNAVAILABLE, _MEMORY, b"", _retry_metadata(1, _MEMORY)
    try:
        request = parse_protobuf(signal, raw)
    except DecodeError as e:
        service.reject(signal, e.reason)
        return _INVALID_ARGUMENT, str(e), b"", ()
    try:
        result = service.accept(signal, request, raw, "grpc")
    except QueueFull as e:
        service.reject(signal, e.reason, count_items(signal, request))
        delay = max(1, math.ceil(e.retry_after_s))
        message = f"{e}; retry after {delay}s"
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
        max_inflight_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.service = service
        self.endpoint = endpoint
        self._auth = auth_token
        self._max_request_bytes = max_request_bytes
        self._native: Any = None
        self._server: Any = None
        server = _native.native_transport(transport, _native.GrpcServer, tls is None)
        if server is not None:
            self.transport = "native"
            self._native = server(
                endpoint,
                self._native_handler,
                max_request_bytes,
                max(max_inflight_bytes, max_request_bytes),
                workers * 8,
            )
            self.port = int(self._native.port)
            return
        self.transport = "grpcio"
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc"),
            options=[
                ("grpc.max_receive_message_length", max_request_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=workers * 8,
        )
        handlers = [
            grpc.method_handlers_generic_handler(
                name, {"Export": grpc.unary_unary_rpc_method_handler(self._handler(signal))}
            )
            for signal, name in _SERVICES.items()
        ]
        self._server.add_generic_rpc_handlers(handlers)
        if tls is not None:
            creds = grpc.ssl_server_credentials([(tls[1], tls[0])])
            self.port = self._server.add_secure_port(endpoint, creds)
        else:
            self.port = self._server.add_insecure_port(endpoint)
        if self.port == 0:
            raise OSError(f"cannot bind OTLP/gRPC receiver to {endpoint}")

    def _native_handler(
        self,
        path: str,
        message: bytes | None,
        compressed: bool,
        authorization: str | None,
        refused: str,
    ) -> Answer:
        """Called by the native transport once per request (in one of its threads); `message`
        is None when the transport refused the request unread, `refused` says why."""
        signal = _PATHS.get(path)
        if signal is None:
            return _UNIMPLEMENTED, f"unknown method {path}", b"", ()
        if message is None:
            self.service.reject(signal, refused)
            if refused == "receiver_busy":
                text = "receiver busy; retry after 1s"
                return _UNAVAILABLE, text, b"", _retry_metadata(1, text)
            limit = self._max_request_bytes
            return _RESOURCE_EXHAUSTED, f"request exceeds {limit} bytes", b"", ()
        if not self.service.memory_ok(signal):  # refuse before inflating
            return _UNAVAILABLE, _MEMORY, b"", _retry_metadata(1, _MEMORY)
        if compressed:  # grpc-encoding: gzip (the transport refuses other encodings)
            try:
                message = gunzip(message, self._max_request_bytes)
            except DecodeError as e:
                self.service.reject(signal, e.reason)
                code = _RESOURCE_EXHAUSTED if e.reason == "too_large" else _INVALID_ARGUMENT
                return code, str(e), b"", ()
        try:
            return _answer(self.service, self._auth, signal, message, authorization)
        except Exception as e:  # the transport must get an answer whatever happens
            log.exception("receiver failed", signal=signal)
            return _INTERNAL, f"receiver failed: {type(e).__name__}", b"", ()

    def _handler(self, signal: str) -> Any:
        service = self.service
        auth = self._auth

        def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
            authorization = None
            if auth:
                authorization = dict(context.invocation_metadata()).get("authorization")
            code, message, body, trailers = _answer(service, auth, signal, raw, authorization)
            if code:
                if trailers:
                    context.set_trailing_metadata(trailers)
                context.abort(_CODES[code], message)
            return body

        return export

    def start(self) -> None:
        if self._native is not None:
            self._native.start()
        else:
            self._server.start()

    def shutdown(self, grace_s: float = 5.0) -> None:
        if self._native is not None:
            self._native.stop(grace_s)
        else:
            self._server.stop(grace_s).wait()
