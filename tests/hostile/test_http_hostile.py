"""OTLP/HTTP under hostile senders (loopback only, every loop bounded in count and time).

Slow senders (trickling bodies, stalled bodies, trickling heads, idle connections) must not
lock valid senders out of the byte budget or the connection slots; refused bodies (404, 401)
are never kept; and a canary of valid requests sent throughout an attack on the real sidecar
arrives in full, with every refusal counted by reason on /metrics.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.receivers.decode import Limits
from pipeline.receivers.http_conn import Timeouts
from tests.helpers.metrics import value
from tests.helpers.sidecar import start_sidecar
from tests.receivers.test_http_receiver import GOOD, PB, Running, gzip_bomb, llm_span

HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"


def _connect(port: int, first: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(first)
    return s


def _answer(s: socket.socket) -> bytes:
    """What the server sent before closing (or what came within the socket's timeout)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


class Trickler(threading.Thread):
    """Sends `data` one byte every `every_s` until the server answers or closes, `stop` is
    set, or `max_s` passes; keeps what the server answered."""

    def __init__(self, port: int, first: bytes, data: bytes, every_s: float, max_s: float) -> None:
        super().__init__(daemon=True)
        self.sock = _connect(port, first)
        self.data, self.every_s, self.max_s = data, every_s, max_s
        self.stop = threading.Event()
        self.reply = b""
        self.closed_after: float | None = None

    def run(self) -> None:
        t0 = time.monotonic()
        self.sock.settimeout(self.every_s)
        for i in range(len(self.data)):
            if self.stop.is_set() or time.monotonic() - t0 > self.max_s:
                break
            try:
                self.sock.sendall(self.data[i : i + 1])
                got = self.sock.recv(65536)  # the pause between bytes
            except TimeoutError:
                continue
            except OSError:
                break
            self.reply = got + _answer(self.sock) if got else b""
            self.closed_after = time.monotonic() - t0
            break
        self.sock.close()


def _canary(url: str, stop: threading.Event, body: bytes, pause_s: float) -> list[int]:
    """Valid requests on fresh connections until `stop` (bounded: 400 at most)."""
    codes: list[int] = []
    for _ in range(400):
        if stop.is_set():
            break
        with httpx.Client(timeout=10) as c:
            r = c.post(url + "/v1/traces", content=body, headers={"Content-Type": PB})
        codes.append(r.status_code)
        time.sleep(pause_s)
    return codes


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def test_trickling_bodies_hold_no_budget_and_are_cut_at_the_minimum_rate(tmp_path: Path) -> None:
    """The issue's attack, scaled: connections declaring the largest body and sending a byte
    every 0.2 s. They reserve only what arrived, so valid POSTs keep getting 200; each is cut
    (408) once under the minimum rate after the grace period."""
    limit = 256 << 10
    timeouts = Timeouts(grace_s=1.0, min_rate=1024, stall_s=0.5)
    r = Running(
        tmp_path,
        Limits(limit, 1 << 20),
        rx={"max_inflight_bytes": 4 * limit, "timeouts": timeouts},
    ).start()
    tel = r.service.telemetry
    try:
        tricklers = [
            Trickler(r.receiver.port, HEAD + b"Content-Length: %d\r\n\r\n" % limit, GOOD, 0.2, 8)
            for _ in range(4)
        ]
        for t in tricklers:
            t.start()
        stop = threading.Event()
        canary, codes = _in_thread(lambda: _canary(r.url, stop, GOOD, 0.05))
        for t in tricklers:
            t.join(10)
        stop.set()
        canary.join(10)
        assert codes[0] and set(codes[0]) == {200}, codes
        for t in tricklers:
            assert t.reply.startswith(b"HTTP/1.1 408"), t.reply[:120]
            assert t.closed_after is not None and t.closed_after < 4
        assert r.counter(tel.rejected, "traces", "too_slow") == 4
        assert r.counter(tel.received, "traces", "http") == len(codes[0])
        assert r.receiver.budget.used == 0
    finally:
        r.stop()


def test_stalled_bodies_give_their_bytes_back_to_valid_senders(tmp_path: Path) -> None:
    """Four senders send most of the largest body fast, then stall: together they hold the
    whole budget. A valid POST closes the most stalled one for its room, and gets 200."""
    limit = 256 << 10
    timeouts = Timeouts(stall_s=0.5, min_rate=0, body_s=30)
    r = Running(
        tmp_path, Limits(limit, 1 << 20), rx={"max_inflight_bytes": 4 * limit, "timeouts": timeouts}
    ).start()
    tel = r.service.telemetry
    held: list[socket.socket] = []
    try:
        sent = limit - 1024
        for _ in range(4):
            held.append(_connect(r.receiver.port, HEAD + b"Content-Length: %d\r\n\r\n" % limit))
            held[-1].sendall(b"\x0a" * sent)
        deadline = time.monotonic() + 10
        while r.receiver.budget.used < 4 * sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.receiver.budget.used == 4 * sent
        time.sleep(0.7)  # now stalled longer than stall_s
        ok = r.post(llm_span(**{"pad": "x" * 8000}).SerializeToString())
        assert ok.status_code == 200, ok.text
        replies = []
        for s in held:
            s.settimeout(0.5)
            replies.append(_answer(s))
        closed = [x for x in replies if x]
        assert 1 <= len(closed) < 4  # only as many as the room needed
        for x in closed:
            assert x.startswith(b"HTTP/1.1 503") and b"arrives too slowly" in x
        assert r.counter(tel.rejected, "traces", "too_slow") == len(closed)
    finally:
        for s in held:
            s.close()
        r.stop()


def test_trickling_heads_and_idle_connections_do_not_hold_every_slot(tmp_path: Path) -> None:
    """Every slot held by connections trickling their heads (slowloris), then by idle
    kept-alive ones: a new valid sender gets a slot (an idle connection, else the slowest
    sender, is closed for it), never a 503."""
    slots = 6
    timeouts = Timeouts(stall_s=0.3, min_rate=1024, header_s=30)
    r = Running(tmp_path, rx={"max_connections": slots, "timeouts": timeouts}).start()
    tel = r.service.telemetry
    tricklers = [Trickler(r.receiver.port, b"P", HEAD[1:], 0.2, 10) for _ in range(slots)]
    try:
        for t in tricklers:
            t.start()
        time.sleep(0.6)  # every slot taken, by senders under 1 kB/s
        for _ in range(3):
            with httpx.Client(timeout=10) as c:
                resp = c.post(r.url + "/v1/traces", content=GOOD, headers={"Content-Type": PB})
            assert resp.status_code == 200, resp.text
        closed = [t for t in tricklers if t.closed_after is not None]
        assert 1 <= len(closed) <= 3
        for t in closed:
            assert t.reply.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in t.reply
            assert b"this request arrives too slowly" in t.reply
        assert r.counter(tel.rejected, "unknown", "too_slow") == len(closed)
        for t in tricklers:
            t.stop.set()
            t.join(5)
        time.sleep(0.3)  # their slots come back

        idle = [httpx.Client(timeout=10) for _ in range(slots)]
        for c in idle:  # one request each, then the connection idles (kept alive)
            resp = c.post(r.url + "/v1/traces", content=GOOD, headers={"Content-Type": PB})
            assert resp.status_code == 200
        with httpx.Client(timeout=10) as c:
            resp = c.post(r.url + "/v1/traces", content=GOOD, headers={"Content-Type": PB})
            assert resp.status_code == 200
        for c in idle:  # the one closed for it reconnects
            resp = c.post(r.url + "/v1/traces", content=GOOD, headers={"Content-Type": PB})
            assert resp.status_code == 200
            c.close()
        assert r.counter(tel.refused_connections, "otlp_http") == 0
        assert r.counter(tel.received, "traces", "http") == 3 + 2 * slots + 1
    finally:
        for t in tricklers:
            t.stop.set()
        r.stop()


def test_a_head_that_never_finishes_gets_408(tmp_path: Path) -> None:
    r = Running(tmp_path, rx={"timeouts": Timeouts(header_s=0.5)}).start()
    try:
        with _connect(r.receiver.port, HEAD) as s:  # no blank line: the head never ends
            t0 = time.monotonic()
            reply = _answer(s)
        assert reply.startswith(b"HTTP/1.1 408") and b"Connection: close" in reply
        assert 0.4 < time.monotonic() - t0 < 3
        assert r.counter(r.service.telemetry.rejected, "unknown", "too_slow") == 1
    finally:
        r.stop()


def test_floods_of_refused_bodies_are_not_kept(tmp_path: Path) -> None:
    """Twenty 4 MiB bodies at once to an unknown path and with a bad token: answered, and
    not one of them kept (the issue measured +600 MB for 40 x 15 MiB)."""
    r = Running(tmp_path, token="s3cret").start()
    body = b"\x0a" * (4 << 20)
    paths = [b"/v1/nope", b"/v1/traces"] * 10
    replies: list[bytes] = [b""] * len(paths)

    def send(i: int) -> None:
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\n" % paths[i]
        with _connect(r.receiver.port, head + b"Content-Length: %d\r\n\r\n" % len(body)) as s:
            with contextlib.suppress(OSError):
                s.sendall(memoryview(body))
            replies[i] = _answer(s)

    tracemalloc.start()
    try:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(paths))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        r.stop()
    assert [x[:12] for x in replies] == [b"HTTP/1.1 404", b"HTTP/1.1 401"] * 10
    assert peak < 8 << 20  # 80 MiB went by
    tel = r.service.telemetry
    assert r.counter(tel.rejected, "unknown", "not_found") == 10
    assert r.counter(tel.rejected, "traces", "unauthenticated") == 10


def _spans_in(directory: Path) -> int:
    n = 0
    for f in directory.glob("traces*.jsonl*"):
        for line in f.read_text().splitlines():
            doc = json.loads(line)
            for rs in doc.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    n += len(ss.get("spans", []))
    return n


@pytest.mark.timeout(120)
def test_a_canary_arrives_in_full_through_an_attack_on_the_real_sidecar(tmp_path: Path) -> None:
    """The sidecar process, small limits, attacked at once by trickling bodies, trickling
    heads, gzip bombs (chunked), smuggling attempts, 404 floods and oversized bodies: every
    canary request gets 200 and every canary span is written; each refusal is on /metrics
    under its reason; peak RSS stays bounded."""
    limit = 1 << 20
    sc = start_sidecar(
        tmp_path,
        {
            "receivers": {
                "max_request_bytes": limit,
                "max_decompressed_bytes": 4 * limit,
                "http_max_inflight_bytes": 4 * limit,
                "http_max_connections": 24,
                "http_read_timeout_s": 6,
                "http_min_body_rate": 4096,
            },
        },
    )
    port = sc.http_port
    try:
        stop = threading.Event()
        canary_body = gzip.compress(GOOD)

        def canary() -> list[int]:
            codes: list[int] = []
            for _ in range(200):
                if stop.is_set():
                    break
                with httpx.Client(timeout=10) as c:
                    resp = c.post(
                        sc.http_url + "/v1/traces",
                        content=canary_body,
                        headers={"Content-Type": PB, "Content-Encoding": "gzip"},
                    )
                codes.append(resp.status_code)
                time.sleep(0.05)
            return codes

        c_thread, c_codes = _in_thread(canary)
        attackers: list[threading.Thread] = []
        for _ in range(6):  # trickling bodies, declaring the largest size
            attackers.append(
                Trickler(port, HEAD + b"Content-Length: %d\r\n\r\n" % limit, GOOD, 0.5, 15)
            )
        for _ in range(6):  # trickling heads
            attackers.append(Trickler(port, b"P", HEAD[1:] * 3, 0.5, 15))
        for t in attackers:
            t.start()

        def bombs() -> list[bytes]:
            bomb = gzip_bomb(64)
            out = []
            for _ in range(3):
                head = HEAD + b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                chunks = b"".join(
                    b"%x\r\n" % len(bomb[i : i + 8192]) + bomb[i : i + 8192] + b"\r\n"
                    for i in range(0, len(bomb), 8192)
                )
                with _connect(port, head) as s:
                    with contextlib.suppress(OSError):
                        s.sendall(chunks + b"0\r\n\r\n")
                    out.append(_answer(s)[:12])
            return out

        def smuggle_and_flood() -> list[bytes]:
            out = []
            hidden = HEAD + b"Content-Length: %d\r\n\r\n" % len(GOOD) + GOOD
            body = b"0\r\n\r\n" + hidden
            for _ in range(5):
                head = HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n"
                with _connect(port, head % len(body) + body) as s:
                    out.append(_answer(s)[:12])
            big = b"\x0a" * (2 * limit)
            for path in (b"/v1/nope", b"/v1/traces"):  # unknown path; over max_request_bytes
                head = (
                    b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                    b"Content-Length: %d\r\n\r\n"
                )
                with _connect(port, head % (path, len(big))) as s:
                    with contextlib.suppress(OSError):
                        s.sendall(big)
                    out.append(_answer(s)[:12])
            return out

        b_thread, b_out = _in_thread(bombs)
        s_thread, s_out = _in_thread(smuggle_and_flood)
        for t in attackers:
            t.join(20)
        b_thread.join(30)
        s_thread.join(30)
        stop.set()
        c_thread.join(30)

        codes = c_codes[0]
        assert codes and set(codes) == {200}, codes
        assert b_out[0] == [b"HTTP/1.1 413"] * 3
        assert s_out[0] == [b"HTTP/1.1 400"] * 5 + [b"HTTP/1.1 404", b"HTTP/1.1 413"]
        text = sc.scrape()

        def rejected(signal: str, reason: str) -> float:
            return value(text, "llm_pipeline_rejected_items_total", signal=signal, reason=reason)

        assert rejected("traces", "too_slow") == 6
        assert rejected("unknown", "too_slow") == 6
        assert rejected("traces", "too_large") == 3 + 1
        assert rejected("traces", "malformed") == 5
        assert rejected("unknown", "not_found") == 1
        assert value(text, "llm_pipeline_received_items_total", signal="traces") == len(codes)
        hwm_kib = next(
            int(line.split()[1])
            for line in Path(f"/proc/{sc.proc.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
        assert hwm_kib < 400 * 1024, hwm_kib
        assert "request refused" in sc.logs() and "reason=too_slow" in sc.logs()
    finally:
        assert sc.stop() == 0
    assert _spans_in(tmp_path / "pipeline-data") == len(codes)
