"""OTLP/gRPC receiver: TraceService, LogsService and MetricsService Export.

Handlers take the raw request bytes (no generated deserializer), so a malformed message is
answered INVALID_ARGUMENT with the parser's reason and the unmodified bytes can be forwarded
as they came.
"""

from __future__ import annotations

import math
from concurrent import futures
from typing import Any

import grpc
import structlog
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo

from ..exporters.queue import QueueFull
from ..service import Service
from ._common import bearer_ok, export_response
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


class OtlpGrpcReceiver:
    def __init__(
        self,
        service: Service,
        endpoint: str,
        max_request_bytes: int,
        auth_token: str | None = None,
        tls: tuple[bytes, bytes] | None = None,
        workers: int = 8,
    ) -> None:
        self.service = service
        self.endpoint = endpoint
        self._auth = auth_token
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

    def _handler(self, signal: str) -> Any:
        service = self.service

        def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
            if self._auth:
                md = dict(context.invocation_metadata())
                if not bearer_ok(self._auth, md.get("authorization")):
                    service.reject(signal, "unauthenticated")
                    context.abort(
                        grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token"
                    )
            try:
                request = parse_protobuf(signal, raw)
            except DecodeError as e:
                service.reject(signal, e.reason)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            try:
                result = service.accept(signal, request, raw, "grpc")
            except QueueFull as e:
                service.reject(signal, "queue_full", count_items(signal, request))
                delay = max(1, math.ceil(e.retry_after_s))
                message = f"sending queue full; retry after {delay}s"
                context.set_trailing_metadata(_retry_metadata(delay, message))
                context.abort(grpc.StatusCode.UNAVAILABLE, message)
            except Exception as e:  # a processor bug must not kill the receiver
                log.exception("processing failed", signal=signal)
                context.abort(grpc.StatusCode.INTERNAL, f"processing failed: {type(e).__name__}")
            return bytes(export_response(signal, result).SerializeToString())

        return export

    def start(self) -> None:
        self._server.start()

    def shutdown(self, grace_s: float = 5.0) -> None:
        self._server.stop(grace_s).wait()
