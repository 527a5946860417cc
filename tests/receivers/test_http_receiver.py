"""The OTLP/HTTP receiver in process: every bad request gets a clean 4xx, never a 500 or a hang.

A real `OtlpHttpReceiver` on a free port in front of a real `Service` (file exporter under
tmp): hypothesis sends random bodies, content types and encodings over HTTP; the fixed cases
cover gzip bombs, lying Content-Length headers, clients that stop sending, a full queue, auth.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pipeline.config import Config
from pipeline.receivers._common import RateLimitedLog, bearer_ok
from pipeline.receivers.decode import Limits, parse_json, to_json
from pipeline.receivers.http_conn import Timeouts
from pipeline.receivers.otlp_http import OtlpHttpReceiver
from pipeline.service import Service

PB = "application/x-protobuf"
JSON = "application/json"
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def llm_span(**attrs: Any) -> ExportTraceServiceRequest:
    """One LLM span: gpt-4o chat, one second, plus `attrs`."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "rx-test"
    span = rs.scope_spans.add().spans.add()
    span.name, span.trace_id, span.span_id = "chat", bytes(range(1, 17)), bytes(range(1, 9))
    span.start_time_unix_nano = 1_700_000_000 * 10**9
    span.end_time_unix_nano = span.start_time_unix_nano + 10**9
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
    }
    for k, v in {**base, **attrs}.items():
        a = span.attributes.add()
        a.key = k
        if isinstance(v, int):
            a.value.int_value = v
        else:
            a.value.string_value = str(v)
    return req


def gzip_bomb(mib: int) -> bytes:
    """gzip of `mib` MiB of zeros, built without compressing (or holding) them all."""
    chunk = b"\0" * (1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every MiB
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
        + first
        + again * (mib - 1)
        + c.flush(zlib.Z_FINISH)
        + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)
    )


class Running:
    def __init__(
        self,
        tmp: Path,
        limits: Limits | None = None,
        rx: dict[str, Any] | None = None,
        token: str | None = None,
        **queue: Any,
    ) -> None:
        cfg = Config()
        cfg.file.directory = str(tmp / "out")
        for k, v in queue.items():
            setattr(cfg.queue, k, v)
        self.service = Service(cfg)
        self.receiver = OtlpHttpReceiver(
            self.service, "127.0.0.1:0", limits or Limits(), auth_token=token, **(rx or {})
        )
        self.url = f"http://127.0.0.1:{self.receiver.port}"
        self.client = httpx.Client(timeout=10)

    def start(self, queues: bool = True) -> Running:
        if queues:
            self.service.start()
        self.receiver.start()
        return self

    def post(
        self, body: bytes, ctype: str = PB, path: str = "/v1/traces", **headers: str
    ) -> httpx.Response:
        return self.client.post(
            self.url + path, content=body, headers={"Content-Type": ctype, **headers}
        )

    def counter(self, family: Any, *key: str) -> float:
        with self.service.agg.lock:
            s = family.series.get(key)
            return 0.0 if s is None else float(s.value)

    def stop(self) -> None:
        self.client.close()
        self.receiver.shutdown()
        self.service.shutdown()


@pytest.fixture(scope="module")
def rx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    r = Running(tmp_path_factory.mktemp("rx"), Limits(2 << 20, 4 << 20)).start()
    yield r
    r.stop()


def _status(r: httpx.Response) -> status_pb2.Status:
    st_ = status_pb2.Status()
    if r.headers["content-type"] == JSON:
        body = r.json()
        st_.code, st_.message = body.get("code", 0), body.get("message", "")
    else:
        st_.ParseFromString(r.content)
    return st_


GOOD = llm_span().SerializeToString()


def _still_serves(rx: Running) -> None:
    r = rx.post(GOOD)
    assert r.status_code == 200, r.text
    ExportTraceServiceResponse().ParseFromString(r.content)


@settings(
    max_examples=int(80 * SCALE),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(
        st.binary(max_size=1024),
        st.just(GOOD).flatmap(lambda g: st.integers(0, len(g)).map(lambda n: g[:n])),
        st.just(to_json(llm_span()).encode()).flatmap(
            lambda g: st.integers(0, len(g)).map(lambda n: g[:n])
        ),
    ),
    ctype=st.sampled_from(
        [PB, JSON, "application/json; charset=utf-8", "text/plain", "", "application/x-protobuf;x"]
    ),
    gz=st.booleans(),
    bad_encoding=st.sampled_from(["", "identity", "br", "GZIP", "deflate"]),
    path=st.sampled_from(["/v1/traces", "/v1/logs", "/v1/metrics", "/v1/other", "/v1/traces?x=1"]),
)
def test_random_requests_get_a_clean_answer(
    rx: Running, body: bytes, ctype: str, gz: bool, bad_encoding: str, path: str
) -> None:
    headers = {}
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    elif bad_encoding:
        headers["Content-Encoding"] = bad_encoding
    r = rx.post(body, ctype, path, **headers)
    assert r.status_code in (200, 400, 404, 413, 415), r.text
    if r.status_code != 200:
        st_ = _status(r)
        assert st_.code in (3, 5, 8) and st_.message  # INVALID_ARGUMENT, NOT_FOUND, ...


def test_the_receiver_survives_the_fuzzing(rx: Running) -> None:
    _still_serves(rx)


def test_gzip_bomb_helper_is_a_real_gzip_stream() -> None:
    assert gzip.decompress(gzip_bomb(3)) == b"\0" * (3 << 20)


def test_gzip_bomb_is_refused_413_quickly_without_inflating_it(rx: Running) -> None:
    bomb = gzip_bomb(1024)  # 1 GiB of zeros
    before = rx.counter(rx.service.telemetry.rejected, "traces", "too_large")
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        r = rx.post(bomb, PB, **{"Content-Encoding": "gzip"})
        took = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 413
    assert "decompressed body exceeds 4194304 bytes" in _status(r).message
    assert took < 2.0
    assert peak < 32 << 20  # a few times the 4 MiB limit, nowhere near 1 GiB
    assert rx.counter(rx.service.telemetry.rejected, "traces", "too_large") == before + 1
    _still_serves(rx)


def test_declared_oversize_body_is_refused_before_it_is_read(rx: Running) -> None:
    with socket.create_connection(("127.0.0.1", rx.receiver.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


def _raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send `data` on a new connection and read until the server closes it (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


_HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"


@pytest.mark.parametrize(
    ("framing", "status"),
    [
        (b"", 200),  # no Content-Length and no Transfer-Encoding: an empty body (RFC 9112)
        (b"Content-Length: abc\r\n", 400),
        (b"Content-Length: -5\r\n", 400),
        (b"Content-Length: 1e3\r\n", 400),
        (b"Content-Length: 0\r\nContent-Length: 0\r\n", 400),  # duplicate, same value
        (b"Content-Length: 0, 0\r\n", 400),
        (b"Content-Length: 0\r\nContent-Length: 5\r\n", 400),
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501),
    ],
)
def test_request_framing(rx: Running, framing: bytes, status: int) -> None:
    tel = rx.service.telemetry

    def malformed() -> float:
        return rx.counter(tel.rejected, "unknown", "malformed") + rx.counter(
            tel.rejected, "traces", "malformed"
        )

    before = malformed()
    reply = _raw(rx.receiver.port, _HEAD + framing + b"Connection: close\r\n\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 %d" % status), reply[:200]
    assert malformed() == before + (status != 200)
    if status != 200:
        assert b"content-type: application/x-protobuf" in reply.lower()


def test_smuggling_with_both_framings_is_refused_and_nothing_behind_it_runs(rx: Running) -> None:
    """TE + CL: a front proxy reading the other header would see a second request hidden in
    the body. Refused with 400 and the connection closed: the hidden request never runs."""
    hidden = _HEAD + b"Content-Length: %d\r\n\r\n" % len(GOOD) + GOOD  # valid, if read
    body = b"0\r\n\r\n" + hidden
    before = rx.counter(rx.service.telemetry.received, "traces", "http")
    reply = _raw(
        rx.receiver.port,
        _HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
    )
    assert reply.startswith(b"HTTP/1.1 400") and reply.count(b"HTTP/1.1") == 1
    assert b"Transfer-Encoding together with Content-Length" in reply
    assert rx.counter(rx.service.telemetry.received, "traces", "http") == before


def test_a_client_that_stops_sending_is_cut_off_with_408(tmp_path: Path) -> None:
    timeouts = Timeouts(body_s=1.0, grace_s=0.5, min_rate=100)
    r = Running(tmp_path, rx={"timeouts": timeouts}).start()
    try:
        t0 = time.monotonic()
        reply = _raw(r.receiver.port, _HEAD + b"Content-Length: 1000\r\n\r\n" + b"\x0a" * 10)
        took = time.monotonic() - t0
        # 10 bytes at 100 bytes/s after a 0.5 s grace are due by 0.6 s; never by 3 s
        assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
        assert b"arriving under 100 bytes/s" in reply
        assert 0.5 <= took < 3
        assert r.counter(r.service.telemetry.rejected, "traces", "too_slow") == 1
        _still_serves(r)
    finally:
        r.stop()


def test_json_errors_for_json_requests_and_protobuf_for_protobuf(rx: Running) -> None:
    r = rx.post(b'{"resourceSpans": 5}', JSON)
    assert r.status_code == 400 and r.headers["content-type"] == JSON
    assert r.json()["code"] == 3 and "invalid OTLP/JSON" in r.json()["message"]
    r = rx.post(b"\xff\xff\xff\x0f", PB)
    assert r.status_code == 400 and r.headers["content-type"] == PB
    assert "invalid OTLP/protobuf" in _status(r).message
    assert rx.client.get(rx.url + "/v1/traces").status_code == 405


def test_unknown_enum_values_and_names_are_accepted(rx: Running) -> None:
    doc = json.loads(to_json(llm_span()))
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["kind"], span["status"] = 99, {"code": 42}
    assert rx.post(json.dumps(doc).encode(), JSON).status_code == 200
    # An unknown enum *name* is skipped like any unknown field (OTLP/JSON's forward
    # compatibility): the span is kept with the kind unspecified.
    span["kind"] = "SPAN_KIND_BOGUS"
    body = json.dumps(doc).encode()
    assert rx.post(body, JSON).status_code == 200
    assert parse_json("traces", body).resource_spans[0].scope_spans[0].spans[0].kind == 0


def test_invalid_utf8_in_json_is_400(rx: Running) -> None:
    body = to_json(llm_span()).encode().replace(b"gpt-4o", b"gpt-\xc3\x28")
    r = rx.post(body, JSON)
    assert r.status_code == 400 and "not valid UTF-8" in r.json()["message"]


def test_a_huge_attribute_value_is_accepted(rx: Running) -> None:
    req = llm_span(**{"gen_ai.input.messages": "x@" * 300_000})  # 600 kB, many '@'
    t0 = time.monotonic()
    r = rx.post(req.SerializeToString())
    assert r.status_code == 200
    assert time.monotonic() - t0 < 10


def test_partial_success_over_http_names_the_rejected_spans(rx: Running) -> None:
    req = llm_span()
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id, bad.span_id = b"\x00" * 16, b"\x01" * 8  # an all-zero trace id
    r = rx.post(req.SerializeToString())
    assert r.status_code == 200
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    assert resp.partial_success.rejected_spans == 1


def test_full_queue_answers_503_with_retry_after_and_counts(tmp_path: Path) -> None:
    r = Running(tmp_path, max_items=3).start(queues=False)  # nothing drains
    try:
        assert r.post(GOOD).status_code == 200
        assert r.post(GOOD).status_code == 200
        assert r.post(GOOD).status_code == 200
        five = llm_span()
        spans = five.resource_spans[0].scope_spans[0].spans
        for i in range(4):
            spans.add().CopyFrom(spans[0])
            spans[-1].span_id = bytes([9, 9, 9, 9, 9, 9, 9, i])
        full = r.post(five.SerializeToString())
        assert full.status_code == 503
        assert int(full.headers["Retry-After"]) >= 1
        assert _status(full).code == 14  # UNAVAILABLE
        tel = r.service.telemetry
        assert r.counter(tel.rejected, "traces", "queue_full") == 5  # items, not requests
        assert r.counter(tel.received, "traces", "http") == 3
        assert r.service.queues["traces"].size == 3
    finally:
        r.stop()


def test_concurrent_bad_and_good_requests(rx: Running) -> None:
    """Garbage from many threads at once does not disturb good requests in between."""
    errors: list[str] = []

    def worker(i: int) -> None:
        with httpx.Client(timeout=10) as c:
            for j in range(20):
                body = GOOD if (i + j) % 3 == 0 else bytes([i, j]) * 50
                resp = c.post(rx.url + "/v1/traces", content=body, headers={"Content-Type": PB})
                want = {200} if body is GOOD else {200, 400}
                if resp.status_code not in want:
                    errors.append(f"{resp.status_code} {resp.text[:80]}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


def test_empty_request_is_fine(rx: Running) -> None:
    r = rx.post(ExportTraceServiceRequest().SerializeToString())
    assert r.status_code == 200
    r = rx.post(b"{}", JSON)
    assert r.status_code == 200 and r.json() == {}


def _open_post(port: int, length: int, sent: bytes) -> socket.socket:
    """A connection that declared a `length`-byte body and sent only `sent` of it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: %d\r\n\r\n" % length + sent
    )
    return s


# Connections held in these tests must not count as slow (they would be closed for others).
PATIENT = Timeouts(stall_s=30, min_rate=0)


def _wait_for(cond: Any, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_connections_over_the_limit_get_503_and_are_counted(tmp_path: Path) -> None:
    r = Running(tmp_path, rx={"max_connections": 3, "timeouts": PATIENT}).start()
    held: list[socket.socket] = []
    try:
        held = [_open_post(r.receiver.port, len(GOOD), b"") for _ in range(3)]
        time.sleep(0.2)  # all three are being served (waiting for their bodies)
        with socket.create_connection(("127.0.0.1", r.receiver.port), timeout=5) as s:
            reply = s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in reply
            assert s.recv(4096) == b""  # and closed
        assert r.counter(r.service.telemetry.refused_connections, "otlp_http") == 1
        # a held connection finishes its request: it is answered, and its slot comes back
        held[0].sendall(GOOD)
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
        held.pop(0).close()
        time.sleep(0.2)
        _still_serves(r)
    finally:
        for s in held:
            s.close()
        r.stop()


def test_budget_is_reserved_as_bytes_arrive_not_as_declared(tmp_path: Path) -> None:
    budget = 3 * len(GOOD) // 2
    r = Running(
        tmp_path, Limits(len(GOOD), 1 << 20), rx={"max_inflight_bytes": budget, "timeouts": PATIENT}
    ).start()
    tel = r.service.telemetry
    try:
        # a lying Content-Length holds nothing until its bytes come
        liar = _open_post(r.receiver.port, len(GOOD), GOOD[:10])
        assert _wait_for(lambda: r.receiver.budget.used == 10), r.receiver.budget.used
        liar.sendall(GOOD[10:40])
        assert _wait_for(lambda: r.receiver.budget.used == 40), r.receiver.budget.used
        _still_serves(r)  # 40 + len(GOOD) fit in 1.5 x len(GOOD)
        slow = _open_post(r.receiver.port, len(GOOD), GOOD[: len(GOOD) // 2])
        assert _wait_for(lambda: r.receiver.budget.used == 40 + len(GOOD) // 2)
        busy = r.post(GOOD)  # would not fit: refused unread, not counted as too large
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert _status(busy).code == 14 and "busy" in _status(busy).message
        assert r.counter(tel.rejected, "traces", "receiver_busy") == 1
        for s in (liar, slow):  # the bodies complete: accepted, budget given back
            s.sendall(GOOD[len(GOOD) // 2 :] if s is slow else GOOD[40:])
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.close()
        # given back right after the reply is written (the client may read it first)
        assert _wait_for(lambda: r.receiver.budget.used == 0), r.receiver.budget.used
        _still_serves(r)
        assert r.counter(tel.received, "traces", "http") == 4
    finally:
        r.stop()


def _chunked(body: bytes, piece: int) -> Iterator[bytes]:
    for i in range(0, len(body), piece):
        yield body[i : i + piece]


def _post_chunked(port: int, body: Iterator[bytes], ctype: str = PB, **headers: str) -> Any:
    """POST with http.client's chunked encoding (no Content-Length), as Node's and Go's
    exporters send; (status, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(
            "POST",
            "/v1/traces",
            body=body,
            headers={"Content-Type": ctype, **headers},
            encode_chunked=True,
        )
        resp = c.getresponse()
        return resp.status, resp.read()
    finally:
        c.close()


@pytest.mark.parametrize(("ctype", "gz"), [(PB, False), (PB, True), (JSON, False), (JSON, True)])
def test_chunked_bodies_are_accepted(rx: Running, ctype: str, gz: bool) -> None:
    req = llm_span()
    spans = req.resource_spans[0].scope_spans[0].spans
    for i in range(1, 40):
        spans.add().CopyFrom(spans[0])
        spans[-1].span_id = bytes([0, 0, 0, 0, 0, 0, 0, i])
    body = to_json(req).encode() if ctype == JSON else req.SerializeToString()
    headers = {}
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    before = rx.counter(rx.service.telemetry.received, "traces", "http")
    status, reply = _post_chunked(rx.receiver.port, _chunked(body, 100), ctype, **headers)
    assert status == 200, reply
    assert rx.counter(rx.service.telemetry.received, "traces", "http") == before + 40
    assert reply == (b"{}" if ctype == JSON else b"")


def test_a_chunked_body_past_max_request_bytes_gets_a_413_the_client_reads(tmp_path: Path) -> None:
    r = Running(tmp_path, Limits(64 << 10, 256 << 10)).start()
    try:
        # 200 KiB in 8 KiB chunks: the receiver stops keeping it past 64 KiB and discards
        # the rest, so http.client (which writes everything before reading) gets the answer
        status, reply = _post_chunked(r.receiver.port, _chunked(b"\0" * (200 << 10), 8 << 10))
        assert status == 413
        st_ = status_pb2.Status.FromString(reply)
        assert st_.code == 8 and st_.message == "request body exceeds 65536 bytes"
        assert r.counter(r.service.telemetry.rejected, "traces", "too_large") == 1
        assert r.receiver.budget.used == 0
        _still_serves(r)
    finally:
        r.stop()


def test_a_chunked_gzip_bomb_stops_at_the_decompressed_cap(rx: Running) -> None:
    bomb = gzip_bomb(256)  # 256 MiB of zeros in ~256 kB
    tracemalloc.start()
    try:
        status, reply = _post_chunked(
            rx.receiver.port, _chunked(bomb, 16 << 10), **{"Content-Encoding": "gzip"}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413
    assert status_pb2.Status.FromString(reply).message == "decompressed body exceeds 4194304 bytes"
    assert peak < 16 << 20  # a few times the 4 MiB cap, nowhere near 256 MiB
    _still_serves(rx)


def _big_span(size: int) -> bytes:
    """A valid request of about `size` bytes that gzip shrinks to almost nothing."""
    return llm_span(**{"gen_ai.input.messages": "a" * size}).SerializeToString()


def test_the_budget_counts_decompressed_bytes(tmp_path: Path) -> None:
    """A small gzip body that inflates past the whole in-flight budget could never fit: 413
    before it is parsed. One that fits is accepted, and the budget given back."""
    r = Running(tmp_path, Limits(1 << 20, 8 << 20), rx={"max_inflight_bytes": 1 << 20}).start()
    try:
        big = gzip.compress(_big_span(2 << 20))
        assert len(big) < 8 << 10
        resp = r.post(big, **{"Content-Encoding": "gzip"})
        assert resp.status_code == 413
        assert "in-flight budget of 1048576 bytes" in _status(resp).message
        small = gzip.compress(_big_span(512 << 10))
        assert r.post(small, **{"Content-Encoding": "gzip"}).status_code == 200
        assert _wait_for(lambda: r.receiver.budget.used == 0)
        assert r.counter(r.service.telemetry.rejected, "traces", "too_large") == 1
    finally:
        r.stop()


def test_gzip_of_several_members_is_read_whole_and_trailing_garbage_is_400(rx: Running) -> None:
    before = rx.counter(rx.service.telemetry.received, "traces", "http")
    two = gzip.compress(GOOD[:50]) + gzip.compress(GOOD[50:])  # neither half parses alone
    assert rx.post(two, **{"Content-Encoding": "gzip"}).status_code == 200
    assert rx.counter(rx.service.telemetry.received, "traces", "http") == before + 1
    r = rx.post(gzip.compress(GOOD) + b"trailing", **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "trailing data after the last member" in _status(r).message


def _send_and_read(port: int, head: bytes, body: bytes) -> bytes:
    """Send a head and a body already in memory (sendall does not copy it) and read the
    answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(memoryview(body))
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def test_bodies_to_unknown_paths_or_with_a_bad_token_are_not_read_into_memory(
    tmp_path: Path,
) -> None:
    r = Running(tmp_path, token="s3cret").start()
    tel = r.service.telemetry
    body = b"\x0a" * (8 << 20)
    try:
        head = b"POST /v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        tracemalloc.start()
        try:
            not_found = _send_and_read(r.receiver.port, head, body)
            head = (
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            denied = _send_and_read(r.receiver.port, head, body)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert not_found.startswith(b"HTTP/1.1 404") and b"unknown path '/v1/nope'" in not_found
        assert denied.startswith(b"HTTP/1.1 401") and b"WWW-Authenticate: Bearer" in denied
        assert peak < 2 << 20  # 16 MiB went by; none of it was kept
        assert r.counter(tel.rejected, "unknown", "not_found") == 1
        assert r.counter(tel.rejected, "traces", "unauthenticated") == 1
        assert r.receiver.budget.used == 0
    finally:
        r.stop()


def test_a_non_ascii_authorization_header_is_401_and_counted(tmp_path: Path) -> None:
    r = Running(tmp_path, token="s3cret").start()
    try:
        for value in (b"Bearer \xc3\xa9t\xc3\xa9", b"Bearer s3cret\xff", b"\xff"):
            reply = _raw(
                r.receiver.port,
                _HEAD + b"Authorization: " + value + b"\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n",
            )
            assert reply.startswith(b"HTTP/1.1 401"), reply[:100]
        assert r.counter(r.service.telemetry.rejected, "traces", "unauthenticated") == 3
        ok = r.post(GOOD, Authorization="Bearer s3cret")
        assert ok.status_code == 200
    finally:
        r.stop()


@pytest.mark.parametrize("method", ["PUT", "OPTIONS", "DELETE", "PATCH", "GET"])
def test_other_methods_get_405_with_allow_in_the_request_format(rx: Running, method: str) -> None:
    before = rx.counter(rx.service.telemetry.rejected, "traces", "method_not_allowed")
    r = rx.client.request(
        method, rx.url + "/v1/traces", content=b"{}", headers={"Content-Type": JSON}
    )
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.headers["content-type"] == JSON
    assert r.json() == {"code": 12, "message": f"{method} is not allowed; use POST"}
    assert rx.counter(rx.service.telemetry.rejected, "traces", "method_not_allowed") == before + 1
    _still_serves(rx)  # on the same kept-alive connection: the small body was read


def test_an_oversized_body_gets_a_413_the_client_reads(rx: Running) -> None:
    r = rx.post(b"\0" * (3 << 20))  # the limit is 2 MiB; httpx writes it all, then reads
    assert r.status_code == 413
    assert _status(r).message == f"request body of {3 << 20} bytes exceeds {2 << 20}"


def test_expect_100_continue(tmp_path: Path) -> None:
    r = Running(tmp_path, token="s3cret").start()
    try:
        with socket.create_connection(("127.0.0.1", r.receiver.port), timeout=5) as s:
            s.sendall(
                _HEAD + b"Authorization: Bearer s3cret\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(GOOD)
            )
            assert s.recv(4096) == b"HTTP/1.1 100 \r\n\r\n"
            s.sendall(GOOD)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        # refused on its head: the final answer comes at once, no 100, and the body is unread
        reply = _raw(
            r.receiver.port,
            _HEAD + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(GOOD),
        )
        assert reply.startswith(b"HTTP/1.1 401") and b"100" not in reply.split(b"\r\n")[0][9:]
    finally:
        r.stop()


def test_kept_alive_and_pipelined_requests(rx: Running) -> None:
    one = _HEAD + b"Content-Length: %d\r\n\r\n" % len(GOOD) + GOOD
    last = _HEAD + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(GOOD) + GOOD
    reply = _raw(rx.receiver.port, one + one + last)  # in one write
    assert reply.count(b"HTTP/1.1 200 OK") == 3


def test_tiny_chunks_are_refused(rx: Running) -> None:
    body = b"1\r\n\x0a\r\n" * 2000 + b"0\r\n\r\n"
    reply = _raw(rx.receiver.port, _HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert reply.startswith(b"HTTP/1.1 400") and b"chunks too small" in reply


def test_refusals_are_logged_once_per_interval() -> None:
    lines: list[tuple[str, dict[str, Any]]] = []

    class Logger:
        def warning(self, event: str, **kw: Any) -> None:
            lines.append((event, kw))

    rl = RateLimitedLog(Logger(), interval_s=0.2)
    assert [rl.warning(("http", "traces", "malformed"), "refused", n=i) for i in range(5)] == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert rl.warning(("http", "logs", "malformed"), "refused", n=9)  # another key
    time.sleep(0.25)
    assert rl.warning(("http", "traces", "malformed"), "refused", n=5)
    assert lines == [
        ("refused", {"n": 0}),
        ("refused", {"n": 9}),
        ("refused", {"n": 5, "suppressed_since_last": 4}),
    ]


def test_bearer_ok_compares_any_bytes() -> None:
    assert bearer_ok("s3cret", "Bearer s3cret") and bearer_ok("s3cret", b"bearer s3cret")
    assert not bearer_ok("s3cret", "Bearer été") and not bearer_ok("s3cret", b"Bearer \xff")
    assert not bearer_ok("s3cret", None) and bearer_ok(None, "anything")
    assert bearer_ok("clé", "Bearer clé") and not bearer_ok("clé", "Bearer cle")
