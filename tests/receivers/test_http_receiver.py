"""The OTLP/HTTP receiver in process: every bad request gets a clean 4xx, never a 500 or a hang.

A real `OtlpHttpReceiver` on a free port in front of a real `Service` (file exporter under
tmp): hypothesis sends random bodies, content types and encodings over HTTP; the fixed cases
cover gzip bombs, lying Content-Length headers, clients that stop sending, a full queue, auth.
"""

from __future__ import annotations

import gzip
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

import pipeline.receivers.otlp_http as otlp_http
from pipeline.config import Config
from pipeline.receivers.decode import Limits, parse_json, to_json
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
        **queue: Any,
    ) -> None:
        cfg = Config()
        cfg.file.directory = str(tmp / "out")
        for k, v in queue.items():
            setattr(cfg.queue, k, v)
        self.service = Service(cfg)
        self.receiver = OtlpHttpReceiver(
            self.service, "127.0.0.1:0", limits or Limits(), auth_token=None, **(rx or {})
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


@pytest.mark.parametrize(
    ("length", "status"),
    [("", 411), ("abc", 411), ("-5", 413), ("1e3", 411)],
)
def test_bad_content_length(rx: Running, length: str, status: int) -> None:
    with socket.create_connection(("127.0.0.1", rx.receiver.port), timeout=5) as s:
        head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        if length:
            head += b"Content-Length: " + length.encode() + b"\r\n"
        s.sendall(head + b"\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 %d" % status), reply[:80]


def test_a_client_that_stops_sending_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp_http, "READ_TIMEOUT_S", 0.5)
    r = Running(tmp_path).start()
    try:
        with socket.create_connection(("127.0.0.1", r.receiver.port), timeout=5) as s:
            s.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: 1000\r\n\r\n" + b"\x0a" * 10
            )
            t0 = time.monotonic()
            assert s.recv(4096) == b""  # the server hung up...
            assert time.monotonic() - t0 < 3  # ...after its read timeout, not never
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


def test_connections_over_the_limit_get_503_and_are_counted(tmp_path: Path) -> None:
    r = Running(tmp_path, rx={"max_connections": 3}).start()
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


def test_bodies_over_the_inflight_budget_get_503_unread(tmp_path: Path) -> None:
    budget = 3 * len(GOOD) // 2
    r = Running(tmp_path, Limits(len(GOOD), 1 << 20), rx={"max_inflight_bytes": budget}).start()
    try:
        slow = _open_post(r.receiver.port, len(GOOD), GOOD[:10])  # holds len(GOOD) bytes
        time.sleep(0.2)
        busy = r.post(GOOD)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert _status(busy).code == 14 and "busy" in _status(busy).message
        tel = r.service.telemetry
        assert r.counter(tel.rejected, "traces", "receiver_busy") == 1
        assert r.receiver.budget.used == len(GOOD)
        slow.sendall(GOOD[10:])  # the slow body completes: accepted, budget given back
        assert slow.recv(4096).startswith(b"HTTP/1.1 200")
        slow.close()
        # given back right after the reply is written (the client may read it first)
        deadline = time.monotonic() + 5
        while r.receiver.budget.used and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.receiver.budget.used == 0
        _still_serves(r)
        assert r.counter(tel.received, "traces", "http") == 2
    finally:
        r.stop()
