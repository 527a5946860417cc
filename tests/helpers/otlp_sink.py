"""An OTLP sink standing in for Tempo/Loki/a Collector: gRPC and HTTP, recording requests.

It can be told to fail (UNAVAILABLE / 503) to test retries and backpressure.
"""

from __future__ import annotations

import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
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

from tests.helpers.process import free_port

_TYPES: dict[str, tuple[Any, Any, str]] = {
    "traces": (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
        "opentelemetry.proto.collector.trace.v1.TraceService",
    ),
    "logs": (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
        "opentelemetry.proto.collector.logs.v1.LogsService",
    ),
    "metrics": (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
    ),
}


class OtlpSink:
    """Records every request per signal; `failing = True` answers UNAVAILABLE / 503."""

    def __init__(self, grpc_port: int | None = None, http_port: int | None = None) -> None:
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.requests: dict[str, list[Any]] = {s: [] for s in _TYPES}
        self.failing = False
        self.attempts = 0
        self._lock = threading.Lock()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None

    # -- counting helpers
    def spans(self) -> list[Any]:
        with self._lock:
            return [
                s
                for r in self.requests["traces"]
                for rs in r.resource_spans
                for ss in rs.scope_spans
                for s in ss.spans
            ]

    def log_records(self) -> list[Any]:
        with self._lock:
            return [
                lr
                for r in self.requests["logs"]
                for rl in r.resource_logs
                for sl in rl.scope_logs
                for lr in sl.log_records
            ]

    def _record(self, signal: str, raw: bytes) -> bool:
        with self._lock:
            self.attempts += 1
            if self.failing:
                return False
            msg = _TYPES[signal][0]()
            msg.ParseFromString(raw)
            self.requests[signal].append(msg)
            return True

    def start(self) -> OtlpSink:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for signal, (_, resp_t, name) in _TYPES.items():

            def handler(raw: bytes, ctx: Any, signal: str = signal, resp_t: Any = resp_t) -> bytes:
                if not self._record(signal, raw):
                    ctx.abort(grpc.StatusCode.UNAVAILABLE, "sink is down")
                return bytes(resp_t().SerializeToString())

            server.add_generic_rpc_handlers(
                [
                    grpc.method_handlers_generic_handler(
                        name, {"Export": grpc.unary_unary_rpc_method_handler(handler)}
                    )
                ]
            )
        server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        server.start()
        self._grpc = server
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                import gzip

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                signal = self.path.rsplit("/", 1)[-1]
                ok = sink._record(signal, body)
                code = 200 if ok else 503
                self.send_response(code)
                if not ok:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(0).wait()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
