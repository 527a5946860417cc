"""A threaded HTTP(S) server on HOST:PORT, shared by the OTLP/HTTP receiver and /metrics.

At most `max_connections` connections are served at once (a thread each). With `evict` set
(the OTLP receiver), a server that is full makes room before refusing: it closes an idle
kept-alive connection, else the sender that is slowest to deliver its request (silent for
`evict.stall_s`, or under `evict.min_rate` bytes/s), so trickling clients cannot hold every
slot. The same rule picks which senders give back in-flight bytes (`reclaim`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from socketserver import BaseRequestHandler
from typing import Any

import structlog

log = structlog.get_logger("pipeline.http")


# What a connection over the limit gets (plain HTTP only: a TLS client is just closed).
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)

# What a connection is doing, as far as choosing one to close goes.
NEW, IDLE, HEAD, BODY, WORK, DISCARD = "new", "idle", "head", "body", "work", "discard"


@dataclass(frozen=True, slots=True)
class Evict:
    """When the server is out of slots or bytes, which connections may be closed for others."""

    stall_s: float = 1.0  # sending nothing for this long while a request is under way
    min_rate: int = 16 * 1024  # or averaging fewer bytes/s than this, after stall_s


class Tracked:
    """One connection as the server sees it; its handler keeps `phase`, `received` (bytes
    in this phase) and `held` (in-flight bytes reserved) up to date."""

    __slots__ = ("evicted", "held", "last", "phase", "received", "since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.phase = NEW
        self.since = self.last = time.monotonic()
        self.received = 0
        self.held = 0
        self.evicted = False

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.since = self.last = time.monotonic()
        self.received = 0

    def progress(self, n: int) -> None:
        if n:
            self.received += n
            self.last = time.monotonic()

    def slowness(self, now: float, rule: Evict) -> float | None:
        """How readily to close this connection (higher first), None when it must not be:
        idle or discarding ones first, then senders stalled or under the minimum rate."""
        if self.phase in (IDLE, DISCARD):
            return 1e9 + now - self.since
        if self.phase in (HEAD, BODY):
            quiet, age = now - self.last, now - self.since
            if quiet >= rule.stall_s or (
                age >= rule.stall_s and self.received < age * rule.min_rate
            ):
                return quiet
        return None

    def evict(self) -> None:
        """Wake the handler's read (it sees end of input and `evicted`); writing still
        works, so it can answer. Not SSLSocket.shutdown: that drops the TLS session."""
        self.evicted = True
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RD)


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
        evict: Evict | None,
    ) -> None:
        super().__init__(address, handler)
        self.on_refuse = on_refuse
        self.max_connections = max_connections
        self.evict_rule = evict
        self._lock = threading.Lock()
        self.conns: dict[Any, Tracked] = {}  # open and not being closed for another

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = self.max_connections is not None and len(self.conns) >= self.max_connections
            if full and self._evict_one():
                full = False
            if not full:
                self.conns[request] = Tracked(request)
        if full:
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
            self.shutdown_request(request)
            raise

    def _evict_one(self) -> bool:
        if self.evict_rule is None:
            return False
        now = time.monotonic()
        best: tuple[float, Any] | None = None
        for key, t in self.conns.items():
            s = t.slowness(now, self.evict_rule)
            if s is not None and (best is None or s > best[0]):
                best = (s, key)
        if best is None:
            return False
        self.conns.pop(best[1]).evict()  # its slot is the new connection's from now
        return True

    def reclaim(self, nbytes: int, exclude: Tracked | None) -> bool:
        """Close slow senders holding in-flight bytes until `nbytes` will come back; False
        (and nobody closed) when the slow ones do not hold that much."""
        if self.evict_rule is None:
            return False
        now = time.monotonic()
        with self._lock:
            slow = []
            for key, t in self.conns.items():
                if t is not exclude and t.phase == BODY and t.held > 0:
                    s = t.slowness(now, self.evict_rule)
                    if s is not None:
                        slow.append((s, key, t))
            slow.sort(key=lambda x: x[0], reverse=True)
            chosen, freed = [], 0
            for _, key, t in slow:
                if freed >= nbytes:
                    break
                chosen.append(key)
                freed += t.held
            if freed < nbytes:
                return False
            for key in chosen:
                self.conns.pop(key).evict()
        return True

    def tracked(self, request: Any) -> Tracked:
        with self._lock:
            t = self.conns.get(request)
        return t if t is not None else Tracked(request)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self.conns.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake or a reset connection: the client's problem, not a traceback.
        log.debug("connection error", client=client_address[0], error=str(sys.exc_info()[1]))


class HttpServer:
    """Serves `handler` on `endpoint`; HTTPS when `tls` is (certificate file, key file), PEM.

    The TLS handshake runs in the connection's own thread (under the handler's timeout), not
    in accept(): a client that never finishes it must not block everyone else. Past
    `max_connections` open connections (so threads), a new one gets 503 and is closed, unless
    `evict` lets an idle or slow one be closed for it.
    """

    def __init__(
        self,
        endpoint: str,
        handler: type[BaseRequestHandler],
        name: str,
        tls: tuple[str, str] | None = None,
        max_connections: int | None = None,
        on_refuse: Callable[[], None] | None = None,
        evict: Evict | None = None,
    ) -> None:
        host, _, port = endpoint.rpartition(":")
        self._server = _Server(
            (host.strip("[]"), int(port)), handler, max_connections, on_refuse, evict
        )
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
