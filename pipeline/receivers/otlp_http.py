"""OTLP/HTTP receiver: POST /v1/traces, /v1/logs, /v1/metrics.

application/x-protobuf and application/json, optionally gzip, bodies framed by
Content-Length or chunked; the response uses the request's content type. Errors carry a
google.rpc.Status body: 400 malformed, 401 unauthenticated, 404 unknown path, 405 not POST,
408 too slow, 413 too large, 415 unsupported media type, 503 + Retry-After when busy or the
queue is full. Every refusal is counted in llm_pipeline_rejected_items_total{reason} and logged
(rate-limited).

What is refused on its head (path, method, token, framing, media type, declared size) is
refused before its body is read: the body is discarded as it arrives (bounded), never kept.
A body is limited while it is read: `max_request_bytes` as received, `max_decompressed_bytes`
as it is inflated, and the in-flight budget reserved as bytes (decompressed ones) arrive.
"""

from __future__ import annotations

import json
import socketserver
from typing import Any

import h11
import structlog
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

from .._http import Evict, HttpServer, Tracked
from ..config import ReceiversConfig
from ..exporters.queue import QueueFull
from ..service import Service
from ._common import ByteBudget, bearer_ok, export_response, refuse
from .decode import (
    DecodeError,
    Inflater,
    Limits,
    count_items,
    media_type,
    parse,
    unsupported_media_type,
)
from .http_conn import Conn, Gone, Refusal, Timeouts

log = structlog.get_logger("pipeline.receivers")

_PATHS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}
_STATUS_FOR_REASON = {"malformed": 400, "too_large": 413, "unsupported_media_type": 415}
_GRPC_CODE = {
    400: 3,
    401: 16,
    404: 5,
    405: 12,
    408: 4,
    413: 8,
    415: 3,
    431: 3,
    500: 13,
    501: 12,
    503: 14,
}
_RETRY = (("Retry-After", "1"),)


class _Held:
    """What one request holds of the budget; given back when the request is done."""

    def __init__(self, budget: ByteBudget, who: Tracked) -> None:
        self.budget, self.who, self.n = budget, who, 0

    def take(self, n: int) -> None:
        if self.n + n > self.budget.limit:
            raise Refusal(
                413,
                "too_large",
                f"decompressed body exceeds the receiver's in-flight budget of "
                f"{self.budget.limit} bytes",
            )
        if not self.budget.reserve(n, self.who):
            raise Refusal(503, "receiver_busy", "receiver busy; retry later", _RETRY)
        self.n += n
        self.who.held = self.n

    def release(self) -> None:
        self.budget.release(self.n)
        self.n = self.who.held = 0


class OtlpHttpReceiver(HttpServer):
    """Memory stays bounded under a flood: at most `max_connections` open connections (a
    thread each; when full, an idle or slow one is closed for a new one, else it gets 503)
    and `max_inflight_bytes` of bodies being read and decoded at once, counted decompressed
    and as they arrive (a body that does not fit gets 503 with Retry-After)."""

    def __init__(
        self,
        service: Service,
        endpoint: str,
        limits: Limits,
        auth_token: str | None = None,
        tls: tuple[str, str] | None = None,
        max_connections: int | None = ReceiversConfig.http_max_connections,
        max_inflight_bytes: int = ReceiversConfig.http_max_inflight_bytes,
        timeouts: Timeouts | None = None,
    ) -> None:
        timeouts = timeouts or Timeouts()
        self.service = service
        self.limits = limits
        self.auth_token = auth_token
        self.timeouts = timeouts
        self.budget = ByteBudget(max_inflight_bytes)
        tel = service.telemetry

        def refused() -> None:
            tel.inc(tel.refused_connections, ("otlp_http",))

        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                receiver._serve_connection(self.request, self.server.tracked(self.request))  # type: ignore[attr-defined]

        evict = Evict(timeouts.stall_s, timeouts.min_rate)
        super().__init__(endpoint, Handler, "otlp-http", tls, max_connections, refused, evict)
        self.budget.reclaim = self._server.reclaim

    # -- one connection ---------------------------------------------------------------------

    def _serve_connection(self, sock: Any, tracked: Tracked) -> None:
        conn = Conn(sock, tracked, self.timeouts)
        try:
            while True:
                try:
                    req = conn.next_request()
                except Refusal as r:  # a malformed head, or one that never finished
                    self._refuse(conn, "unknown", r, False)
                    return
                if req is None or not self._exchange(conn, req) or not conn.next_cycle():
                    return
        except Gone:
            return
        except Exception:  # a bug, not the client's doing: seen, and the connection closed
            log.exception("OTLP/HTTP connection failed")

    def _exchange(self, conn: Conn, req: h11.Request) -> bool:
        """Answer one request; True when the connection can be kept for another."""
        headers: dict[str, str] = {}
        for k, v in req.headers:
            headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))
        path = req.target.decode("latin-1").split("?", 1)[0]
        ctype = headers.get("content-type", "")
        as_json = media_type(ctype) == "json"
        signal = _PATHS.get(path)
        held = _Held(self.budget, conn.t)
        try:
            body = self._read(conn, req, headers, signal, held)
            assert signal is not None
            try:
                request = parse(signal, body, ctype)
            except DecodeError as e:
                raise Refusal(_STATUS_FOR_REASON.get(e.reason, 400), e.reason, str(e)) from e
            # protobuf: the received bytes go along, as over gRPC (forwarded as they are
            # when unchanged, and the queue counts their length instead of re-measuring)
            raw = None if as_json else body
            del body
            return self._accept(conn, signal, request, raw, as_json)
        except Refusal as r:
            held.release()  # before answering: what was read is dropped (and so is the frame
            r.__traceback__ = r.__cause__ = r.__context__ = None  # that held it)
            return self._refuse(conn, signal or "unknown", r, as_json)
        finally:
            held.release()

    def _read(
        self,
        conn: Conn,
        req: h11.Request,
        headers: dict[str, str],
        signal: str | None,
        held: _Held,
    ) -> bytes:
        """Check the head, then read the body within every limit: the body, decompressed."""
        if signal is None:
            path = req.target[:100].decode("latin-1").split("?", 1)[0]
            use = "use /v1/traces, /v1/logs, /v1/metrics"
            raise Refusal(404, "not_found", f"unknown path {path!r}; {use}")
        if req.method != b"POST":
            method = req.method.decode("latin-1")[:20]
            raise Refusal(
                405,
                "method_not_allowed",
                f"{method} is not allowed; use POST",
                (("Allow", "POST"),),
            )
        if not bearer_ok(self.auth_token, headers.get("authorization")):
            raise Refusal(
                401,
                "unauthenticated",
                "missing or invalid bearer token",
                (("WWW-Authenticate", "Bearer"),),
            )
        framing = conn.framing_error(req)
        if framing is not None:
            raise Refusal(400, "malformed", f"bad request framing: {framing}", close=True)
        ctype = headers.get("content-type", "")
        if not media_type(ctype):
            e = unsupported_media_type(ctype)
            raise Refusal(415, e.reason, str(e))
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            raise Refusal(
                415,
                "unsupported_media_type",
                f"unsupported Content-Encoding {encoding[:40]!r}; use gzip or none",
            )
        if not self.service.memory.ok():  # above the soft memory limit: refused unread
            raise Refusal(503, "memory_limit", "memory limit reached; retry later", _RETRY)
        limit = self.limits.max_request_bytes
        declared = int(headers.get("content-length", "-1"))  # h11 checked it is digits
        if declared > limit:
            raise Refusal(413, "too_large", f"request body of {declared} bytes exceeds {limit}")
        if (
            encoding != "gzip"
            and declared > 0
            and not self.budget.reserve(declared, conn.t, take=False)
        ):
            raise Refusal(503, "receiver_busy", "receiver busy; retry later", _RETRY)

        inflater = Inflater(self.limits.max_decompressed_bytes) if encoding == "gzip" else None
        parts: list[bytes | bytearray] = []
        received = 0
        for piece in conn.body():
            received += len(piece)
            if received > limit:
                raise Refusal(413, "too_large", f"request body exceeds {limit} bytes")
            if inflater is not None:
                try:
                    piece = inflater.feed(piece)
                except DecodeError as e:
                    raise Refusal(_STATUS_FOR_REASON.get(e.reason, 400), e.reason, str(e)) from e
            if piece:
                held.take(len(piece))
                parts.append(piece)
        if inflater is not None:
            try:
                inflater.finish()
            except DecodeError as e:
                raise Refusal(400, e.reason, str(e)) from e
        return b"".join(parts)  # one copy, into what the parser and the queue keep

    def _accept(
        self, conn: Conn, signal: str, request: Message, raw: bytes | None, as_json: bool
    ) -> bool:
        try:
            result = self.service.accept(signal, request, raw, "http")
        except QueueFull as e:
            retry = (("Retry-After", str(max(1, int(e.retry_after_s)))),)
            r = Refusal(503, e.reason, f"{e}; retry later", retry)
            return self._refuse(conn, signal, r, as_json, count_items(signal, request))
        except Exception as e:
            log.exception("processing failed", signal=signal)
            r = Refusal(500, "internal_error", f"processing failed: {type(e).__name__}")
            return self._refuse(conn, signal, r, as_json)
        resp = export_response(signal, result)
        if as_json:
            conn.respond(200, "application/json", _json(resp))
        else:
            conn.respond(200, "application/x-protobuf", resp.SerializeToString())
        return True

    def _refuse(self, conn: Conn, signal: str, r: Refusal, as_json: bool, items: int = 0) -> bool:
        """Count, log and answer a refusal; True when the connection can be kept."""
        refuse(self.service, "http", signal, r.reason, str(r), items, status=r.status)
        complete = not r.close and conn.skip_buffered_body()
        status = status_pb2.Status(code=_GRPC_CODE.get(r.status, 2), message=str(r))
        if as_json:
            conn.respond(r.status, "application/json", _json(status), r.headers, not complete)
        else:
            body = status.SerializeToString()
            conn.respond(r.status, "application/x-protobuf", body, r.headers, not complete)
        if not complete and not r.close and r.reason != "too_slow":
            conn.linger(2 * self.limits.max_request_bytes)
        return complete


def _json(msg: Message) -> bytes:
    return json.dumps(json_format.MessageToDict(msg)).encode()
