"""The OTLP/gRPC sender on both transports (native/src/grpc_client.rs and grpcio) against a
grpcio server: delivery, gzip, metadata, status classification, restarts, timeouts."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from pipeline import _native
from pipeline.exporters.otlp import GrpcSender
from pipeline.exporters.queue import PermanentError, RetryableError
from tests.helpers.otlp_build import spans_request
from tests.helpers.otlp_sink import free_port


class Peer:
    """A grpcio TraceService that records what it got and answers `status` (OK by default);
    `hold` makes it wait before answering."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.status = grpc.StatusCode.OK
        self.hold = threading.Event()
        self.hold.set()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def export(raw: bytes, ctx: Any) -> bytes:
            assert self.hold.wait(30)
            self.received.append((raw, dict(ctx.invocation_metadata())))
            if self.status != grpc.StatusCode.OK:
                ctx.abort(self.status, "peer says no: 100% sure")
            return b""

        self.server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService",
                    {"Export": grpc.unary_unary_rpc_method_handler(export)},
                )
            ]
        )
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def stop(self) -> None:
        self.hold.set()
        self.server.stop(0).wait()


@pytest.fixture(params=["native", "grpcio"])
def transport(request: pytest.FixtureRequest) -> str:
    if request.param == "native" and _native.GrpcClient is None:
        pytest.skip("native helpers not built (scripts/setup.sh builds them)")
    return str(request.param)


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.stop()


def _sender(port: int, transport: str, **kw: Any) -> GrpcSender:
    s = GrpcSender("traces", f"127.0.0.1:{port}", transport=transport, **kw)
    assert s.transport == transport
    return s


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_payloads_arrive_unchanged_with_the_metadata(
    peer: Peer, transport: str, compression: str
) -> None:
    s = _sender(peer.port, transport, compression=compression, headers={"X-Tenant": "team-a"})
    payloads = [spans_request(i * 10, 10).SerializeToString() for i in range(3)]
    for p in payloads:
        s(p)
    s.close()
    assert [raw for raw, _ in peer.received] == payloads
    md = peer.received[0][1]
    assert md["x-tenant"] == "team-a"
    assert len(ExportTraceServiceRequest.FromString(peer.received[2][0]).resource_spans) == 1


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_compression_is_what_was_configured(transport: str, compression: str) -> None:
    """The native server inflates gzip itself, so what it reports is what arrived: with a
    limit on the bytes as sent between the gzip size and the plain size, only a gzip sender
    gets through; a plain one is refused as too large."""
    if _native.GrpcServer is None:
        pytest.skip("native helpers not built (scripts/setup.sh builds them)")
    payload = spans_request(1, 50).SerializeToString()
    seen: list[tuple[bytes | None, tuple[str, int, str] | None]] = []

    def handler(path: str, message: bytes | None, refusal: Any) -> Any:
        if path:
            seen.append((message, refusal))
        return 0, "", b"", ()

    path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    server = _native.GrpcServer(
        "127.0.0.1:0",
        handler,
        [path],
        max_message_bytes=len(payload) // 2,  # the gzip form is under a third (checked below)
        max_decompressed_bytes=1 << 24,
        max_inflight_bytes=1 << 26,
    )
    server.start()
    try:
        s = _sender(server.port, transport, compression=compression)
        with contextlib.suppress(RetryableError, PermanentError):  # a plain sender's refusal
            s(payload)
        s.close()
    finally:
        server.stop(1.0)
    [(message, refusal)] = seen
    if compression == "gzip":
        assert message == payload and refusal is None
    else:
        assert message is None and refusal is not None and refusal[0] == "too_large"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (grpc.StatusCode.UNAVAILABLE, RetryableError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RetryableError),
        (grpc.StatusCode.INVALID_ARGUMENT, PermanentError),
        (grpc.StatusCode.UNAUTHENTICATED, PermanentError),
    ],
)
def test_statuses_are_classified_with_the_peers_message(
    peer: Peer, transport: str, status: grpc.StatusCode, error: type[Exception]
) -> None:
    peer.status = status
    s = _sender(peer.port, transport, compression="none")
    with pytest.raises(error) as e:
        s(spans_request(1, 2).SerializeToString())
    assert status.name in str(e.value) and "peer says no: 100% sure" in str(e.value)
    peer.status = grpc.StatusCode.OK
    s(spans_request(1, 2).SerializeToString())  # the same sender goes on
    assert len(peer.received) == 2
    s.close()


def test_nobody_listening_is_retryable(transport: str) -> None:
    s = _sender(free_port(), transport, timeout_s=5)
    with pytest.raises(RetryableError):
        s(b"")
    s.close()


def test_a_restarted_peer_is_reached_again(peer: Peer, transport: str) -> None:
    s = _sender(peer.port, transport, compression="none")
    s(spans_request(1, 2).SerializeToString())
    peer.stop()
    with pytest.raises(RetryableError):
        s(spans_request(3, 2).SerializeToString())
    again = Peer(peer.port)
    try:
        for _ in range(20):  # grpcio's channel reconnects with its own backoff
            try:
                s(spans_request(5, 2).SerializeToString())
                break
            except RetryableError:
                threading.Event().wait(0.25)
        assert len(again.received) == 1
    finally:
        s.close()
        again.stop()


def test_a_peer_that_does_not_answer_times_out(peer: Peer, transport: str) -> None:
    peer.hold.clear()
    s = _sender(peer.port, transport, timeout_s=0.5)
    with pytest.raises(RetryableError) as e:
        s(spans_request(1, 2).SerializeToString())
    assert "DEADLINE_EXCEEDED" in str(e.value)
    peer.hold.set()
    s.close()
