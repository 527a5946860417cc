"""The OTLP/gRPC receiver, on both transports (native/src/grpc.rs and grpcio), answers alike:
real gRPC clients (grpcio channels, the OTel SDK's exporter) against an in-process receiver."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
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
from pipeline.receivers.otlp_grpc import OtlpGrpcReceiver
from pipeline.service import Service
from tests.helpers.otlp_build import spans_request

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LIMIT = 64 * 1024


class Receiver:
    def __init__(
        self, tmp_path: Path, transport: str, auth: str | None = None, inflight: int = LIMIT * 8
    ) -> None:
        cfg = Config()
        cfg.file.directory = str(tmp_path / "out")
        self.out = tmp_path / "out" / "traces.jsonl"
        self.service = Service(cfg)
        self.receiver = OtlpGrpcReceiver(
            self.service, "127.0.0.1:0", LIMIT, auth, max_inflight_bytes=inflight
        )
        assert self.receiver.transport == transport
        self.service.start()
        self.receiver.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.receiver.port}")
        self.export = self.channel.unary_unary(TRACES)

    def rejected(self, reason: str) -> float:
        s = self.service.telemetry.rejected.series.get(("traces", reason))
        return s.value if s is not None else 0

    def exported_span_ids(self) -> list[str]:
        self.service.shutdown()
        return [
            span["spanId"]
            for line in self.out.read_text().splitlines()
            for rs in json.loads(line)["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        ]

    def close(self) -> None:
        self.channel.close()
        self.receiver.shutdown(0.5)
        self.service.shutdown()


@pytest.fixture(params=["native", "grpcio"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "native":
        if _native.GrpcServer is None:
            pytest.skip("native helpers not built (scripts/setup.sh builds them)")
    else:
        monkeypatch.setattr(_native, "GrpcServer", None)
    return str(request.param)


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

    code, details, _ = _code(rx.export, b"\x0a" + b"\x80" * (LIMIT + 10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rx.rejected("too_large") == (1 if rx.receiver.transport == "native" else 0)

    # well under the limit on the wire, far over it inflated: refused, not inflated
    bomb = b"\0" * (LIMIT * 20)
    assert len(gzip.compress(bomb)) < LIMIT
    code, _, _ = _code(rx.export, bomb, compression=grpc.Compression.Gzip)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED

    unknown = rx.channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Nope")
    assert _code(unknown, b"")[0] == grpc.StatusCode.UNIMPLEMENTED

    # and the receiver still works
    raw = rx.export(spans_request(1, 3).SerializeToString(), timeout=10)
    assert ExportTraceServiceResponse.FromString(raw) == ExportTraceServiceResponse()
    assert len(rx.exported_span_ids()) == 3


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
    r = Receiver(tmp_path, "native", inflight=LIMIT)  # room for one full-size request
    try:
        accept = r.service.accept
        entered, release = threading.Event(), threading.Event()

        def held(*args: Any) -> Any:
            entered.set()
            assert release.wait(10)
            return accept(*args)

        monkeypatch.setattr(r.service, "accept", held)
        big = spans_request(1, 40, pad=LIMIT // 60).SerializeToString()
        assert LIMIT // 2 < len(big) <= LIMIT
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


def _raw_call(port: int, path: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """One HTTP/2 request by hand (h2): the response's headers and trailers, merged."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", f"127.0.0.1:{port}"),
                (":path", path),
                ("te", "trailers"),
                *headers.items(),
            ],
        )
        conn.send_data(sid, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        got: dict[str, str] = {}
        ended = False
        while not ended:
            data = sock.recv(65536)
            assert data, "connection closed without an answer"
            for ev in conn.receive_data(data):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    got.update({_s(k): _s(v) for k, v in ev.headers})
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                ended |= isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))
            sock.sendall(conn.data_to_send())
    return got


def _s(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


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
    got = _raw_call(native_rx.receiver.port, TRACES, body, headers)
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
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    got = _raw_call(
        native_rx.receiver.port, TRACES, b"\0\0\0\0\0", {"content-type": "application/grpc"}
    )
    assert got["grpc-status"] == "0"  # an empty request is a valid one
    got = _raw_call(native_rx.receiver.port, TRACES, b"", {"content-type": "text/plain"})
    assert got[":status"] == "415"
