"""OTLP/HTTP receiver: POST /v1/traces, /v1/logs, /v1/metrics.

application/x-protobuf and application/json, optionally gzip; the response uses the request's
content type. Errors carry a google.rpc.Status body: 400 malformed, 401 unauthenticated,
413 too large, 415 unsupported media type, 503 with Retry-After when the queue is full.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

import structlog
from google.protobuf import json_format
from google.rpc import status_pb2

from .._http import HttpServer
from ..config import ReceiversConfig
from ..exporters.queue import QueueFull
from ..service import Service
from ._common import bearer_ok, export_response
from .decode import DecodeError, Limits, count_items, decode

log = structlog.get_logger("pipeline.receivers")

_PATHS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}
_STATUS_FOR_REASON = {"malformed": 400, "too_large": 413, "unsupported_media_type": 415}
_GRPC_CODE = {400: 3, 401: 16, 413: 8, 415: 3, 503: 14, 500: 13, 404: 5, 405: 12}
# A client that stops sending (mid-body, or idle on a kept-alive connection) loses its
# connection after this long instead of holding a server thread forever.
READ_TIMEOUT_S = 60.0


class ByteBudget:
    """Bytes of request bodies being read or decoded at once, across connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def try_reserve(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n


class OtlpHttpReceiver(HttpServer):
    """Memory stays bounded under a flood: at most `max_connections` open connections (a
    thread each; more get 503 and are closed) and `max_inflight_bytes` of bodies being read
    and decoded at once (a body that does not fit gets 503 with Retry-After, unread)."""

    def __init__(
        self,
        service: Service,
        endpoint: str,
        limits: Limits,
        auth_token: str | None = None,
        tls: tuple[str, str] | None = None,
        max_connections: int | None = ReceiversConfig.http_max_connections,
        max_inflight_bytes: int = ReceiversConfig.http_max_inflight_bytes,
    ) -> None:
        self.budget = ByteBudget(max_inflight_bytes)
        handler = _make_handler(service, limits, auth_token, self.budget)
        tel = service.telemetry

        def refused() -> None:
            tel.inc(tel.refused_connections, ("otlp_http",))

        super().__init__(endpoint, handler, "otlp-http", tls, max_connections, refused)


def _make_handler(
    service: Service, limits: Limits, auth_token: str | None, budget: ByteBudget
) -> Any:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "llm-pipeline"
        timeout = READ_TIMEOUT_S

        def log_message(self, format: str, *args: Any) -> None:
            pass  # access logs would drown the sidecar's own

        def _reply(
            self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _error(
            self, code: int, message: str, as_json: bool, headers: dict[str, str] | None = None
        ) -> None:
            status = status_pb2.Status(code=_GRPC_CODE.get(code, 2), message=message)
            if as_json:
                body = json.dumps(json_format.MessageToDict(status)).encode()
                self._reply(code, body, "application/json", headers)
            else:
                self._reply(code, status.SerializeToString(), "application/x-protobuf", headers)

        def do_POST(self) -> None:
            signal = _PATHS.get(self.path.split("?", 1)[0])
            ctype = self.headers.get("Content-Type", "")
            as_json = ctype.split(";", 1)[0].strip().lower() == "application/json"
            if signal is None:
                self._drain()
                self._error(
                    404, f"unknown path {self.path}; use /v1/traces, /v1/logs, /v1/metrics", as_json
                )
                return
            if not bearer_ok(auth_token, self.headers.get("Authorization")):
                self._drain()
                service.reject(signal, "unauthenticated")
                self._error(
                    401, "missing or invalid bearer token", as_json, {"WWW-Authenticate": "Bearer"}
                )
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                self._error(411, "Content-Length is required", as_json)
                return
            if length < 0 or length > limits.max_request_bytes:
                self.close_connection = True  # do not read a body we refuse
                service.reject(signal, "too_large")
                self._error(
                    413,
                    f"request body of {length} bytes exceeds {limits.max_request_bytes}",
                    as_json,
                )
                return
            if not service.memory_ok(signal):  # above the soft memory limit: refuse unread
                self.close_connection = True
                self._error(503, "memory limit reached; retry later", as_json, {"Retry-After": "1"})
                return
            if not budget.try_reserve(length):
                self.close_connection = True  # the body stays unread
                service.reject(signal, "receiver_busy")
                self._error(503, "receiver busy; retry later", as_json, {"Retry-After": "1"})
                return
            try:
                self._export(signal, length, ctype, as_json)
            finally:
                budget.release(length)

        def _export(self, signal: str, length: int, ctype: str, as_json: bool) -> None:
            body = self.rfile.read(length)
            try:
                request = decode(
                    signal, body, ctype, self.headers.get("Content-Encoding", ""), limits
                )
            except DecodeError as e:
                service.reject(signal, e.reason)
                self._error(_STATUS_FOR_REASON.get(e.reason, 400), str(e), as_json)
                return
            try:
                result = service.accept(signal, request, None, "http")
            except QueueFull as e:
                service.reject(signal, e.reason, count_items(signal, request))
                self._error(
                    503,
                    f"{e}; retry later",
                    as_json,
                    {"Retry-After": str(max(1, int(e.retry_after_s)))},
                )
                return
            except Exception as e:
                log.exception("processing failed", signal=signal)
                self._error(500, f"processing failed: {type(e).__name__}", as_json)
                return
            resp = export_response(signal, result)
            if as_json:
                body = json.dumps(json_format.MessageToDict(resp)).encode()
                self._reply(200, body, "application/json")
            else:
                self._reply(200, resp.SerializeToString(), "application/x-protobuf")

        def _drain(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = 0
            if 0 < length <= limits.max_request_bytes:
                self.rfile.read(length)
            elif length:
                self.close_connection = True

        def do_GET(self) -> None:
            self._error(405, "use POST", False, {"Allow": "POST"})

    return Handler
