"""A raw HTTP/2 client (the h2 package over a socket) for what gRPC clients never do: streams
left unfinished, bodies trickled, many streams on one connection, connections left idle."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def _s(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


@dataclass
class Stream:
    headers: dict[str, str] = field(default_factory=dict)  # response headers and trailers
    ended: bool = False
    reset: int | None = None  # the RST_STREAM error code

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Conn:
    def __init__(self, port: int, timeout_s: float = 10.0) -> None:
        self.port = port
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.streams: dict[int, Stream] = {}
        self.goaway: int | None = None  # the error code of a GOAWAY received
        self.closed = False  # the server closed the connection
        self.server_settings: dict[int, int] = {}
        self.conn.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:  # the server closed it (the reads say so too)
                self.closed = True

    def open(self, path: str, headers: dict[str, str], body: bytes = b"", end: bool = True) -> int:
        """A POST on a new stream; with `end` False the body is left unfinished."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", f"127.0.0.1:{self.port}"),
                (":path", path),
                ("te", "trailers"),
                *headers.items(),
            ],
            end_stream=end and not body,
        )
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self.streams[sid] = Stream()
        self._flush()
        return sid

    def pump(self, until: Callable[[], bool], timeout_s: float) -> bool:
        """Reads until `until()` holds, the connection ends or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while not until() and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return until()
            except OSError:
                data = b""
            if not data:
                self.closed = True
                break
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:  # e.g. a PING after the GOAWAY we received
                self.closed = True
                break
            for ev in events:
                self._event(ev)
            self._flush()
        return until()

    def _event(self, ev: h2.events.Event) -> None:
        sid = getattr(ev, "stream_id", 0)
        st = self.streams.get(sid)
        if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and st:
            st.headers.update({_s(k): _s(v) for k, v in ev.headers})
        elif isinstance(ev, h2.events.DataReceived):
            self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        elif isinstance(ev, h2.events.StreamEnded) and st:
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset) and st:
            st.reset = int(ev.error_code)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = int(ev.error_code)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for k, v in ev.changed_settings.items():
                self.server_settings[int(k)] = v.new_value

    @property
    def max_concurrent_streams(self) -> int | None:
        return self.server_settings.get(int(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def call(port: int, path: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """One request, answered: the response's headers and trailers, merged."""
    c = H2Conn(port)
    try:
        sid = c.open(path, headers, body)
        assert c.pump(lambda: c.streams[sid].done, 10), "no answer"
        return c.streams[sid].headers
    finally:
        c.close()


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Polls `check` (counted after the answer is on its way, so a moment later)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
