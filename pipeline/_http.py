"""A threaded HTTP(S) server on HOST:PORT, shared by the OTLP/HTTP receiver and /metrics."""

from __future__ import annotations

import ssl
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

log = structlog.get_logger("pipeline.http")


# What a connection over the limit gets (plain HTTP only: a TLS client is just closed).
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


class _Server(ThreadingHTTPServer):
    """One thread per connection, as ThreadingHTTPServer, but at most `max_connections`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: Any,
        handler: Any,
        max_connections: int | None,
        on_refuse: Callable[[], None] | None,
    ) -> None:
        super().__init__(address, handler)
        self.on_refuse = on_refuse
        self._slots = threading.BoundedSemaphore(max_connections) if max_connections else None

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._slots is not None and not self._slots.acquire(blocking=False):
            if self.on_refuse is not None:
                self.on_refuse()
            try:
                if not isinstance(request, ssl.SSLSocket):  # no handshake yet: just close
                    request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            if self._slots is not None:
                self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake or a reset connection: the client's problem, not a traceback.
        log.debug("connection error", client=client_address[0], error=str(sys.exc_info()[1]))


class HttpServer:
    """Serves `handler` on `endpoint`; HTTPS when `tls` is (certificate file, key file), PEM.

    The TLS handshake runs in the connection's own thread (under the handler's timeout), not
    in accept(): a client that never finishes it must not block everyone else. Past
    `max_connections` open connections (so threads), a new one gets 503 and is closed.
    """

    def __init__(
        self,
        endpoint: str,
        handler: type[BaseHTTPRequestHandler],
        name: str,
        tls: tuple[str, str] | None = None,
        max_connections: int | None = None,
        on_refuse: Callable[[], None] | None = None,
    ) -> None:
        host, _, port = endpoint.rpartition(":")
        self._server = _Server((host.strip("[]"), int(port)), handler, max_connections, on_refuse)
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self._server.socket = ctx.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
