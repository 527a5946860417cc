"""A threaded HTTP(S) server on HOST:PORT, shared by the OTLP/HTTP receiver and /metrics."""

from __future__ import annotations

import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

log = structlog.get_logger("pipeline.http")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake or a reset connection: the client's problem, not a traceback.
        log.debug("connection error", client=client_address[0], error=str(sys.exc_info()[1]))


class HttpServer:
    """Serves `handler` on `endpoint`; HTTPS when `tls` is (certificate file, key file), PEM.

    The TLS handshake runs in the connection's own thread (under the handler's timeout), not
    in accept(): a client that never finishes it must not block everyone else.
    """

    def __init__(
        self,
        endpoint: str,
        handler: type[BaseHTTPRequestHandler],
        name: str,
        tls: tuple[str, str] | None = None,
    ) -> None:
        host, _, port = endpoint.rpartition(":")
        self._server = _Server((host.strip("[]"), int(port)), handler)
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
