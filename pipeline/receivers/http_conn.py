"""One OTLP/HTTP connection: h11 framing (Content-Length or chunked), every read under a
deadline, answers, and a lingering close so a refused sender reads its answer.

A request's head must arrive within `header_s` (from its first byte, or from the connection's
start), its body within `body_s` and, once `grace_s` has passed, at `min_rate` bytes/s on
average; a kept-alive connection may idle `idle_s` between requests. The server may also
close a slow connection for another (pipeline/_http.py): its read then ends, `Evicted`.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus

import h11

from .._http import BODY, DISCARD, HEAD, IDLE, WORK, Tracked

_RECV = 64 * 1024
_RECV_BODY = 1024 * 1024  # large bodies in fewer, bigger reads (the cost is per read)
_MAX_HEAD = 16 * 1024  # request line and headers (h11 answers 431 past it)
# Chunked bodies in tiny chunks cost h11 ~0.1 ms each: past the first 256, the chunks must
# average this many bytes, so a body cannot be made to cost more than its bytes' worth.
_MIN_AVG_CHUNK = 1024
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Timeouts:
    header_s: float = 10.0
    body_s: float = 30.0
    idle_s: float = 60.0
    min_rate: int = 16 * 1024  # body bytes/s on average once grace_s has passed; 0: none
    grace_s: float = 5.0
    stall_s: float = 1.0  # when slots or bytes run out, a sender this quiet can be closed
    send_s: float = 10.0  # writing an answer
    linger_s: float = 2.0  # discarding a refused body so that the client reads the answer


class Gone(Exception):
    """The peer went away or went quiet where no answer is due: close without one."""


class Refusal(Exception):
    """A request refused: the status, the rejected-items reason and the message to send."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.headers = headers
        self.close = close  # the framing cannot be trusted: never read another request


class _Deadline(Exception):
    pass


class _Evicted(Exception):
    pass


def _evicted(what: str) -> Refusal:
    return Refusal(
        503,
        "too_slow",
        f"receiver busy and this {what} arrives too slowly; retry later",
        (("Retry-After", "1"),),
    )


class Conn:
    def __init__(self, sock: socket.socket, tracked: Tracked, timeouts: Timeouts) -> None:
        self.sock = sock
        self.t = tracked
        self.to = timeouts
        self.h = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self._head = bytearray()  # raw bytes of the head being read (for framing checks)
        self._first = True
        self._no_body = False

    # -- reading ----------------------------------------------------------------------------

    def _fill(self, deadline: float, size: int = _RECV) -> bytes:
        """Receive once into h11 before `deadline` (monotonic); what was received."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Deadline
            try:
                self.sock.settimeout(left)
                data = self.sock.recv(size)
            except TimeoutError:
                continue
            except OSError as e:
                raise Gone(str(e)) from e
            if self.t.evicted:
                raise _Evicted
            if not data:
                raise Gone("closed by the peer")
            self.t.progress(len(data))
            self.h.receive_data(data)
            return data

    def next_request(self) -> h11.Request | None:
        """The next request's head; None when the connection ends quietly (closed, idle
        too long, or closed for another connection while idle)."""
        pending = self.h.trailing_data[0]
        self._head = bytearray(pending)
        now = time.monotonic()
        if pending or self._first:
            # a new connection is not idle (closed first for others): it owes its head within
            # header_s, and is only closed for others once it is slow to send it
            self.t.enter(HEAD)
            deadline = now + self.to.header_s
        else:
            self.t.enter(IDLE)
            deadline = now + self.to.idle_s
        self._first = False
        while True:
            try:
                ev = self.h.next_event()
            except h11.RemoteProtocolError as e:
                raise Refusal(
                    e.error_status_hint, "malformed", f"bad HTTP request: {e}", close=True
                ) from e
            if isinstance(ev, h11.Request):
                self._no_body = ev.method == b"HEAD"  # its answer has headers only
                return ev
            if ev is not h11.NEED_DATA:
                return None  # ConnectionClosed
            try:
                data = self._fill(deadline)
            except (_Deadline, _Evicted) as e:
                if self.t.phase == IDLE or not (self._head or self.t.received):
                    return None  # nothing of a request came: nothing to refuse
                if isinstance(e, _Evicted):
                    raise _evicted("request") from e
                raise Refusal(
                    408, "too_slow", f"request head not received within {self.to.header_s:g} s"
                ) from e
            except Gone:
                return None
            if self.t.phase == IDLE:
                self.t.enter(HEAD)
                self.t.progress(len(data))
                deadline = time.monotonic() + self.to.header_s
            if len(self._head) <= _MAX_HEAD:
                self._head += data

    def framing_error(self, req: h11.Request) -> str | None:
        """What h11 lets through and a proxy in front might read differently: both
        Transfer-Encoding and Content-Length (RFC 9112 6.3: reject, or let TE win), or
        Content-Length given twice (even with the same value)."""
        names = {k for k, _ in req.headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            return "Transfer-Encoding together with Content-Length"
        end = _HEAD_END.search(self._head)
        head = bytes(self._head[: end.start()] if end else self._head)
        lengths = _CONTENT_LENGTH.findall(head)
        if len(lengths) > 1 or any(b"," in v for v in lengths):
            return "Content-Length given more than once"
        return None

    def body(self) -> Iterator[bytes | bytearray]:
        """The request's body as it arrives; raises Refusal when it comes too slowly, or
        badly framed, Gone when the peer leaves."""
        if self.h.they_are_waiting_for_100_continue:
            self._send(self.h.send(h11.InformationalResponse(status_code=100, headers=[])))
        self.t.enter(BODY)
        start = self.t.since
        hard = start + self.to.body_s
        chunks = data = 0
        while True:
            try:
                ev = self.h.next_event()
            except h11.RemoteProtocolError as e:
                raise Refusal(400, "malformed", f"bad request body framing: {e}", close=True) from e
            if isinstance(ev, h11.Data):
                data += len(ev.data)
                if ev.chunk_start:
                    chunks += 1
                    if chunks > 256 and chunks * _MIN_AVG_CHUNK > data + 256 * _MIN_AVG_CHUNK:
                        raise Refusal(
                            400, "malformed", "chunks too small (1 KiB on average)", close=True
                        )
                yield ev.data
            elif isinstance(ev, h11.EndOfMessage):
                self.t.enter(WORK)
                return
            elif ev is h11.NEED_DATA:
                deadline = hard
                if self.to.min_rate:
                    due = start + self.to.grace_s + self.t.received / self.to.min_rate
                    deadline = min(deadline, due)
                try:
                    self._fill(deadline, _RECV_BODY)
                except _Deadline as e:
                    raise Refusal(408, "too_slow", self._slow_message()) from e
                except _Evicted as e:
                    raise _evicted("body") from e
            else:
                raise Gone("connection closed mid-body")

    def _slow_message(self) -> str:
        took = time.monotonic() - self.t.since
        if took >= self.to.body_s:
            return f"request body not received within {self.to.body_s:g} s"
        return f"request body arriving under {self.to.min_rate} bytes/s"

    def skip_buffered_body(self) -> bool:
        """Before answering a request whose body is not wanted: drop what is already buffered;
        True when that was the whole body (the connection can then be kept)."""
        while self.h.their_state is h11.SEND_BODY:
            try:
                ev = self.h.next_event()
            except h11.RemoteProtocolError:
                return False
            if ev is h11.NEED_DATA or not isinstance(ev, h11.Data | h11.EndOfMessage):
                return False
        return self.h.their_state is h11.DONE

    # -- answering --------------------------------------------------------------------------

    def _send(self, data: bytes | None) -> None:
        if not data:
            return
        try:
            self.sock.settimeout(self.to.send_s)
            self.sock.sendall(data)
        except OSError as e:
            raise Gone(str(e)) from e

    def respond(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (),
        close: bool = False,
    ) -> None:
        hs = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        if close:
            hs.append(("Connection", "close"))
        phrase = HTTPStatus(status).phrase.encode()
        try:
            out = self.h.send(h11.Response(status_code=status, headers=hs, reason=phrase)) or b""
            if not self._no_body:
                out += self.h.send(h11.Data(data=body)) or b""
            out += self.h.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # no request to answer (a head never finished)
            lines = [f"HTTP/1.1 {status} {phrase.decode()}", *(f"{k}: {v}" for k, v in hs)]
            if not close:
                lines.append("Connection: close")
            out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self._send(out)

    def next_cycle(self) -> bool:
        """After an answer: True when the connection can carry another request."""
        if self.h.our_state is h11.DONE and self.h.their_state is h11.DONE:
            self.h.start_next_cycle()
            return True
        return False

    def linger(self, max_bytes: int) -> None:
        """After answering a request whose body was left unread: read and discard what the
        client still sends, up to `max_bytes` and `linger_s`, before closing. A client that
        writes its whole body before reading (most do) then reads the answer instead of a
        reset; nothing is kept."""
        self.t.enter(DISCARD)
        if not isinstance(self.sock, ssl.SSLSocket):
            try:
                self.sock.shutdown(socket.SHUT_WR)  # the answer is complete: EOF after it
            except OSError:
                return
        deadline = time.monotonic() + self.to.linger_s
        buf = bytearray(_RECV)
        left = max_bytes
        while left > 0 and not self.t.evicted:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return
            try:
                self.sock.settimeout(wait)
                n = self.sock.recv_into(buf)
            except OSError:
                return
            if not n:
                return
            left -= n
