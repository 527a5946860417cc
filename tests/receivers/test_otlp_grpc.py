"""The OTLP/gRPC receiver, on both transports (native/src/grpc.rs and grpcio), answers alike:
real gRPC clients (grpcio channels, the OTel SDK's exporter) against an in-process receiver."""

from __future__ import annotations

import errno
import gzip
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from pipeline import _native
from pipeline.config import Config
from pipeline.exporters.queue import QueueFull
from pipeline.service import Service
from tests.helpers import h2raw
from tests.helpers.grpc_rx import INFLATED, LIMIT, TRACES, Receiver, use_transport
from tests.helpers.otlp_build import spans_request


@pytest.fixture(params=["native", "grpcio"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return use_transport(str(request.param), monkeypatch)


@pytest.fixture
def rx(tmp_path: Path, transport: str) -> Iterator[Receiver]:
    r = Receiver(tmp_path, transport)
    yield r
    r.close()


def _code(call: Any, data: bytes, **kw: Any) -> tuple[grpc.StatusCode, str, dict[str, Any]]:
    with pytest.raises(grpc.RpcError) as e:
        call(data, timeout=10, **kw)
    err: Any = e.value
    return err.code(), err.details() or "", dict(err.trailing_metadata() or ())


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip])
def test_requests_plain_and_gzipped_are_accepted_and_forwarded(
    rx: Receiver, compression: grpc.Compression | None
) -> None:
    sent = []
    for first in (1, 101):
        req = spans_request(first, 40)
        sent += [s.span_id.hex() for ss in req.resource_spans[0].scope_spans for s in ss.spans]
        raw = rx.export(req.SerializeToString(), timeout=10, compression=compression)
        assert not ExportTraceServiceResponse.FromString(raw).HasField("partial_success")
    assert sorted(rx.exported_span_ids()) == sorted(sent)


def test_the_otel_sdk_exporter_delivers(rx: Receiver) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    results: list[SpanExportResult] = []

    class Recording(OTLPSpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            results.append(super().export(spans))
            return results[-1]

    exporter = Recording(endpoint=f"127.0.0.1:{rx.receiver.port}", insecure=True)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for i in range(3):
        with tracer.start_as_current_span(f"chat m{i}") as span:
            span.set_attribute("gen_ai.request.model", f"m{i}")
    provider.shutdown()
    assert results == [SpanExportResult.SUCCESS] * 3
    assert len(rx.exported_span_ids()) == 3


def test_bad_requests_get_a_clear_status_and_are_counted(rx: Receiver) -> None:
    code, details, _ = _code(rx.export, b"\xff\xff\xff\x0f")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "invalid OTLP/protobuf" in details
    assert rx.rejected("malformed") == 1

    # over both limits (grpcio has one for a message as received and inflated: the larger)
    code, details, _ = _code(rx.export, b"\x0a" + b"\x80" * (INFLATED + 10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    if rx.receiver.transport == "native":
        assert rx.rejected("too_large") == 1
    else:  # grpcio refuses it itself; our handler sees no message or a cancelled call
        assert h2raw.eventually(lambda: rx.rejected("too_large") + rx.rejected("cancelled") == 1)

    # well under the limit on the wire, far over it inflated: refused, not inflated
    bomb = b"\0" * (INFLATED * 5)
    assert len(gzip.compress(bomb)) < LIMIT
    code, details, _ = _code(rx.export, bomb, compression=grpc.Compression.Gzip)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    if rx.receiver.transport == "native":  # grpcio ends the call before our code sees it
        assert f"exceeds {INFLATED} bytes" in details
        assert rx.rejected("too_large") == 2

    unknown = rx.channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Nope")
    assert _code(unknown, b"")[0] == grpc.StatusCode.UNIMPLEMENTED

    # and the receiver still works
    raw = rx.export(spans_request(1, 3).SerializeToString(), timeout=10)
    assert ExportTraceServiceResponse.FromString(raw) == ExportTraceServiceResponse()
    assert len(rx.exported_span_ids()) == 3


def test_gzip_is_inflated_up_to_max_decompressed_bytes(rx: Receiver) -> None:
    """Issue 21.10: the configured max_decompressed_bytes, not max_request_bytes, caps what a
    gzip message inflates to (as over OTLP/HTTP)."""
    req = spans_request(1, 30, pad=INFLATED // 40)
    raw = req.SerializeToString()
    assert LIMIT * 2 < len(raw) < INFLATED and len(gzip.compress(raw)) < LIMIT
    rx.export(raw, timeout=10, compression=grpc.Compression.Gzip)
    over = spans_request(100, 30, pad=INFLATED // 25).SerializeToString()
    assert INFLATED < len(over) < INFLATED * 2 and len(gzip.compress(over)) < LIMIT
    code, _, _ = _code(rx.export, over, compression=grpc.Compression.Gzip)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sorted(rx.exported_span_ids()) == sorted(f"{i + 1:016x}" for i in range(1, 31))


def test_a_full_queue_answers_unavailable_with_retry_hints(
    rx: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: Any) -> Any:
        raise QueueFull(2.5)

    monkeypatch.setattr(rx.service, "accept", full)
    code, details, md = _code(rx.export, spans_request(1, 7).SerializeToString())
    assert code == grpc.StatusCode.UNAVAILABLE and "retry after 3s" in details
    assert md["retry-after"] == "3"
    info = RetryInfo.FromString(md["google.rpc.retryinfo-bin"])
    assert info.retry_delay.seconds == 3
    assert rx.rejected("queue_full") == 7


def test_bearer_token(tmp_path: Path, transport: str) -> None:
    r = Receiver(tmp_path, transport, auth="s3cret-token")
    try:
        data = spans_request(1, 2).SerializeToString()
        assert _code(r.export, data)[0] == grpc.StatusCode.UNAUTHENTICATED
        wrong = (("authorization", "Bearer nope"),)
        assert _code(r.export, data, metadata=wrong)[0] == grpc.StatusCode.UNAUTHENTICATED
        r.export(data, timeout=10, metadata=(("authorization", "Bearer s3cret-token"),))
        assert r.rejected("unauthenticated") == 2
        assert len(r.exported_span_ids()) == 2
    finally:
        r.close()


def test_shutdown_lets_a_call_under_way_finish_then_refuses(
    rx: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    accept = rx.service.accept
    entered = threading.Event()

    def slow(*args: Any) -> Any:
        entered.set()
        time.sleep(0.5)
        return accept(*args)

    monkeypatch.setattr(rx.service, "accept", slow)
    answers: list[bytes] = []
    t = threading.Thread(
        target=lambda: answers.append(rx.export(spans_request(1, 4).SerializeToString()))
    )
    t.start()
    assert entered.wait(10)
    rx.receiver.shutdown(5.0)
    t.join(10)
    assert len(answers) == 1
    fresh = grpc.insecure_channel(f"127.0.0.1:{rx.receiver.port}")
    try:
        call = fresh.unary_unary(TRACES)
        assert _code(call, b"")[0] == grpc.StatusCode.UNAVAILABLE
    finally:
        fresh.close()
    assert len(rx.exported_span_ids()) == 4


def test_native_requests_in_flight_are_bounded_in_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _native.GrpcServer is None:
        pytest.skip("native helpers not built (scripts/setup.sh builds them)")
    # room for one full-size request
    # the budget: the largest request, compressed and inflated
    r = Receiver(tmp_path, "native", inflight=LIMIT, max_decompressed_bytes=LIMIT // 4)
    try:
        accept = r.service.accept
        entered, release = threading.Event(), threading.Event()

        def held(*args: Any) -> Any:
            entered.set()
            assert release.wait(10)
            return accept(*args)

        monkeypatch.setattr(r.service, "accept", held)
        big = spans_request(1, 40, pad=LIMIT // 60).SerializeToString()
        assert LIMIT * 5 // 8 < len(big) <= LIMIT  # two do not fit in LIMIT * 5 / 4
        t = threading.Thread(target=lambda: r.export(big, timeout=10))
        t.start()
        assert entered.wait(10)  # its bytes are held while it is handled
        code, details, md = _code(r.export, big)
        assert code == grpc.StatusCode.UNAVAILABLE and "receiver busy" in details
        assert RetryInfo.FromString(md["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
        assert r.rejected("receiver_busy") == 1
        release.set()
        t.join(10)
        r.export(big, timeout=10)  # the budget is back
        assert len(r.exported_span_ids()) == 80
    finally:
        release.set()
        r.close()


@pytest.fixture(scope="module")
def native_rx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    if _native.GrpcServer is None:
        pytest.skip("native helpers not built (scripts/setup.sh builds them)")
    r = Receiver(tmp_path_factory.mktemp("fuzz"), "native")
    yield r
    r.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        # a frame header that claims more or less than follows, compressed or not
        st.builds(
            lambda flag, n, rest: bytes([flag]) + struct.pack(">I", n) + rest,
            st.sampled_from([0, 1, 2, 255]),
            st.integers(0, 2**32 - 1),
            st.binary(max_size=100),
        ),
        # well framed, random flag and message
        st.builds(
            lambda flag, rest: bytes([flag]) + struct.pack(">I", len(rest)) + rest,
            st.sampled_from([0, 1, 2]),
            st.binary(max_size=200),
        ),
    ),
    encoding=st.sampled_from(["", "gzip", "deflate", "snappy"]),
)
def test_native_transport_answers_any_body_with_a_grpc_status(
    native_rx: Receiver, body: bytes, encoding: str
) -> None:
    headers = {"content-type": "application/grpc"}
    if encoding:
        headers["grpc-encoding"] = encoding
    got = h2raw.call(native_rx.receiver.port, TRACES, body, headers)
    assert got[":status"] == "200"
    # OK only for a well-formed empty-ish request; otherwise a clean error with a reason
    assert got["grpc-status"] in {"0", "3", "8", "12", "13"}, got
    if got["grpc-status"] != "0":
        assert got.get("grpc-message")
    framed = len(body) >= 5 and len(body) - 5 == int.from_bytes(body[1:5], "big")
    if not framed:
        assert got["grpc-status"] == "13" and "frame" in got["grpc-message"]
    elif body[0] > 1:  # the compressed flag is 0 or 1
        assert got["grpc-status"] == "13" and "compressed flag" in got["grpc-message"]


def test_native_transport_survives_garbage_connections(native_rx: Receiver) -> None:
    for junk in (
        b"",
        b"\0" * 100,
        b"GET / HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,
    ):
        with socket.create_connection(("127.0.0.1", native_rx.receiver.port), timeout=5) as s:
            # the server may read the junk and close before we finish sending or half-close
            # (issue 15.5: ENOTCONN from shutdown on a loaded machine): that is its answer
            try:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError, OSError) as e:
                if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    raise
            # ... and it does close the connection (a timeout here fails the test)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    got = h2raw.call(
        native_rx.receiver.port, TRACES, b"\0\0\0\0\0", {"content-type": "application/grpc"}
    )
    assert got["grpc-status"] == "0"  # an empty request is a valid one
    got = h2raw.call(native_rx.receiver.port, TRACES, b"", {"content-type": "text/plain"})
    assert got[":status"] == "415"
    assert native_rx.rejected("unsupported_media_type") == 1


GRPC = {"content-type": "application/grpc"}


def test_the_token_is_checked_before_the_body_is_read(tmp_path: Path, transport: str) -> None:
    """Issue 21.4: a wrong token is answered from the headers alone; the body never comes."""
    r = Receiver(tmp_path, transport, auth="s3cret-token")
    c = h2raw.H2Conn(r.receiver.port)
    try:
        wrong = {**GRPC, "authorization": "Bearer nope"}
        sid = c.open(TRACES, wrong, b"\0\0\1\0\0" + b"\x0a" * 100, end=False)
        assert c.pump(lambda: c.streams[sid].done, 10)
        assert c.streams[sid].headers["grpc-status"] == "16"
        assert r.rejected("unauthenticated") == 1
    finally:
        c.close()
        r.close()


def test_a_request_not_sent_in_time_is_ended_and_counted(tmp_path: Path, transport: str) -> None:
    """Issue 21.4: an unfinished stream is answered (or reset) after the request timeout,
    and the connection still serves."""
    r = Receiver(tmp_path, transport, request_timeout_s=1.0)
    c = h2raw.H2Conn(r.receiver.port)
    try:
        t0 = time.monotonic()
        sid = c.open(TRACES, GRPC, b"\0\0\0\1\0", end=False)  # 256 bytes announced, none sent
        assert c.pump(lambda: c.streams[sid].done, 10)
        assert 0.9 < time.monotonic() - t0 < 8
        st = c.streams[sid]
        # native: DEADLINE_EXCEEDED; grpcio cancels the call (RST_STREAM)
        assert st.headers.get("grpc-status") == "4" or st.reset is not None, st
        assert h2raw.eventually(lambda: r.rejected("request_timeout") == 1)
        ok = c.open(TRACES, GRPC, b"\0\0\0\0\0")
        assert c.pump(lambda: c.streams[ok].done, 10)
        assert c.streams[ok].headers["grpc-status"] == "0"
    finally:
        c.close()
        r.close()


def test_streams_per_connection_and_idle_connections_are_bounded(
    tmp_path: Path, transport: str
) -> None:
    """Issue 21.4: SETTINGS_MAX_CONCURRENT_STREAMS is announced; a connection with no call
    gets GOAWAY after the idle timeout."""
    r = Receiver(tmp_path, transport, max_streams_per_connection=5, idle_timeout_s=1.0)
    c = h2raw.H2Conn(r.receiver.port)
    try:
        assert c.pump(lambda: c.max_concurrent_streams is not None, 10)
        assert c.max_concurrent_streams == 5
        sid = c.open(TRACES, GRPC, b"\0\0\0\0\0")
        assert c.pump(lambda: c.streams[sid].done, 10)
        t0 = time.monotonic()
        assert c.pump(lambda: c.goaway is not None or c.closed, 15)
        assert 0.5 < time.monotonic() - t0 < 12
        r.export(b"", timeout=10)  # a client reconnects as it sends
    finally:
        c.close()
        r.close()


def test_refusals_are_counted_each_and_logged_once_per_reason_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    from pipeline.receivers import _common, otlp_grpc

    clock = [1000.0]
    monkeypatch.setattr(_common, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    # a fresh rate limiter: the process-wide one may have logged these keys already
    monkeypatch.setattr(_common, "REFUSALS", _common.RateLimitedLog(_common.structlog.get_logger()))
    cfg = Config()
    cfg.file.directory = str(tmp_path)
    service = Service(cfg)
    refuse = otlp_grpc.Refusals(service)
    with capture_logs() as logs:
        for _ in range(5):
            refuse("traces", "too_large", "request exceeds 10 bytes")
        refuse("logs", "unauthenticated", "missing or invalid bearer token")
        refuse.note("too_many_connections", "connection limit reached", 3)
        refuse.note("too_many_connections", "connection limit reached", 2)
        clock[0] += _common.REFUSALS.interval_s + 0.1
        refuse("traces", "too_large", "request exceeds 10 bytes")
        refuse.note("too_many_connections", "connection limit reached", 1)
    rejected = service.telemetry.rejected.series
    assert rejected[("traces", "too_large")].value == 6
    assert rejected[("logs", "unauthenticated")].value == 1
    assert not any(key[1] == "too_many_connections" for key in rejected)
    assert [(e["reason"], e.get("suppressed_since_last", 0)) for e in logs] == [
        ("too_large", 0),
        ("unauthenticated", 0),
        ("too_many_connections", 0),
        ("too_large", 4),
        ("too_many_connections", 2),  # the connections of the one line not logged
    ]
    assert logs[0]["detail"] == "request exceeds 10 bytes" and logs[0]["signal"] == "traces"
    assert logs[0]["transport"] == "grpc" and logs[2]["count"] == 3
