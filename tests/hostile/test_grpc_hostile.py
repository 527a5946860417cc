"""The OTLP/gRPC receiver under hostile clients (issue 21.1, 21.4), on both transports: raw
HTTP/2 connections (h2) and real grpcio clients over loopback, every loop bounded. While an
attack runs, valid Exports from a grpcio client still succeed, and what was refused is counted.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo

from pipeline import _native
from tests.helpers import h2raw
from tests.helpers.grpc_rx import LIMIT, TRACES, Receiver, use_transport
from tests.helpers.otlp_build import spans_request

GRPC = {"content-type": "application/grpc"}
# HTTP/2 error codes a server refuses streams over its limit with (hyper; grpc core)
REFUSED = {7, 11}  # REFUSED_STREAM, ENHANCE_YOUR_CALM


@pytest.fixture(params=["native", "grpcio"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return use_transport(str(request.param), monkeypatch)


def _span_ids(first: int, n: int) -> list[str]:
    return [f"{i + 1:016x}" for i in range(first, first + n)]


def test_unfinished_streams_on_one_connection_do_not_lock_out_exports(
    tmp_path: Path, transport: str
) -> None:
    """64 streams opened and never finished on one connection: 8 are taken (the
    per-connection limit), 56 refused by HTTP/2 (RST_STREAM), the 8 are ended after the
    request timeout; meanwhile a grpcio client's Exports all succeed at once."""
    r = Receiver(tmp_path, transport, max_streams_per_connection=8, request_timeout_s=3.0)
    attack = h2raw.H2Conn(r.receiver.port)
    try:
        t0 = time.monotonic()
        sids = [attack.open(TRACES, GRPC, b"\0\0\0\4\0" + b"\x0a", end=False) for _ in range(64)]
        attack.pump(lambda: sum(attack.streams[s].reset in REFUSED for s in sids) >= 56, 5)
        retried = 0
        for i in range(10):  # the canary, during the attack, retrying as OTel exporters do
            while True:
                try:
                    r.export(spans_request(10 * i, 10).SerializeToString(), timeout=10)
                    break
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
                    assert time.monotonic() - t0 < 10
                    retried += 1
                    time.sleep(0.2)
        if transport == "native":
            assert retried == 0 and time.monotonic() - t0 < 3.0, "run during the attack"
        # grpcio: grpc core refuses new streams (REFUSED_STREAM) on every connection after a
        # few calls while the unfinished ones are held, until the request timeout ends them
        assert attack.pump(lambda: all(attack.streams[s].done for s in sids), 15)
        refused = [s for s in sids if attack.streams[s].reset in REFUSED]
        assert len(refused) == 56
        assert h2raw.eventually(lambda: r.rejected("request_timeout") == 8)
        assert sorted(r.exported_span_ids()) == sorted(_span_ids(0, 100))
    finally:
        attack.close()
        r.close()


def test_inflated_bytes_are_paid_for_before_parsing(
    tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21.1: small gzip requests that inflate to nearly the whole in-flight budget: while
    one is being handled, the others are refused UNAVAILABLE with a retry hint (counted), not
    parsed; afterwards they go through."""
    inflated = 1024 * 1024
    r = Receiver(tmp_path, transport, inflight=inflated * 3 // 2, max_decompressed_bytes=inflated)
    accept = r.service.accept
    entered, release = threading.Event(), threading.Event()

    def held(*args: Any) -> Any:
        if not entered.is_set():
            entered.set()
            assert release.wait(20)
        return accept(*args)

    monkeypatch.setattr(r.service, "accept", held)
    try:
        reqs = [spans_request(100 * i, 50, pad=inflated // 60) for i in range(5)]
        raws = [q.SerializeToString() for q in reqs]
        assert all(inflated * 3 // 4 < len(b) < inflated for b in raws)
        assert all(len(gzip.compress(b)) < LIMIT for b in raws)
        first = threading.Thread(
            target=r.export, args=(raws[0],), kwargs={"timeout": 20, "compression": 2}
        )
        first.start()
        assert entered.wait(10)
        codes: list[tuple[grpc.StatusCode, int]] = []
        lock = threading.Lock()

        def send(raw: bytes) -> None:
            try:
                r.export(raw, timeout=10, compression=grpc.Compression.Gzip)
                got = (grpc.StatusCode.OK, -1)
            except grpc.RpcError as e:
                md = dict(e.trailing_metadata() or ())  # type: ignore[attr-defined]
                info = RetryInfo.FromString(md.get("google.rpc.retryinfo-bin", b""))
                got = (e.code(), info.retry_delay.seconds)  # type: ignore[attr-defined]
            with lock:
                codes.append(got)

        others = [threading.Thread(target=send, args=(b,)) for b in raws[1:]]
        for t in others:
            t.start()
        for t in others:
            t.join(20)
        assert codes == [(grpc.StatusCode.UNAVAILABLE, 1)] * 4
        assert r.rejected("receiver_busy") == 4
        release.set()
        first.join(20)
        for raw in raws[1:]:  # the budget is back: the retries go through
            r.export(raw, timeout=10, compression=grpc.Compression.Gzip)
        assert sorted(r.exported_span_ids()) == sorted(
            i for k in range(5) for i in _span_ids(100 * k, 50)
        )
    finally:
        release.set()
        r.close()


def test_a_connection_flood_leaves_room_for_valid_clients(tmp_path: Path, transport: str) -> None:
    """More idle connections than the cap: native closes the longest idle ones for new ones
    (a valid client connects at once); grpcio refuses new ones until its idle timeout closes
    the flood's. Connections holding streams cannot be closed for others: a new one is refused
    and counted (native)."""
    cap = 8
    r = Receiver(
        tmp_path, transport, max_connections=cap, idle_timeout_s=2.0, request_timeout_s=3.0
    )
    flood = [socket.create_connection(("127.0.0.1", r.receiver.port)) for _ in range(30)]
    try:
        time.sleep(0.3)
        deadline = time.monotonic() + (1 if transport == "native" else 8)
        sent = 0
        while True:  # a fresh channel each time: a new connection
            ch = grpc.insecure_channel(f"127.0.0.1:{r.receiver.port}")
            try:
                ch.unary_unary(TRACES)(spans_request(sent, 5).SerializeToString(), timeout=3)
                sent += 5
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "no room for a valid client"
            finally:
                ch.close()
        if transport == "native":
            assert h2raw.eventually(lambda: r.receiver.connections <= cap + 2, 5)
            assert r.refused_connections() == 0  # idle ones made room
            # connections that hold a stream each are not closed for newcomers
            busy = [h2raw.H2Conn(r.receiver.port) for _ in range(cap)]
            for c in busy:
                c.open(TRACES, GRPC, b"\0\0\0\1\0", end=False)
                c.pump(lambda c=c: c.max_concurrent_streams is not None, 5)  # type: ignore[misc]
            assert h2raw.eventually(lambda: r.receiver.connections == cap, 5)
            late = h2raw.H2Conn(r.receiver.port)
            assert late.pump(lambda: False, 1.0) is False and late.closed
            assert h2raw.eventually(lambda: r.refused_connections() == 1)
            for c in busy:  # their streams end at the request timeout; then room again
                assert c.pump(lambda c=c: all(s.done for s in c.streams.values()), 10)  # type: ignore[misc]
                c.close()
            r.export(spans_request(sent, 5).SerializeToString(), timeout=10)
            sent += 5
        assert len(r.exported_span_ids()) == sent
    finally:
        for s in flood:
            s.close()
        r.close()


_CHILD = """
import resource, sys, time
from pathlib import Path
from pipeline.config import Config
from pipeline.receivers.otlp_grpc import OtlpGrpcReceiver
from pipeline.service import Service
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
cfg = Config(); cfg.file.directory = sys.argv[1]
service = Service(cfg); service.start()
rx = OtlpGrpcReceiver(service, "127.0.0.1:0", 1 << 20, transport="native", idle_timeout_s=60)
rx.start()
print(rx.port, flush=True)
sys.stdin.read()
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def low_fd_receiver(tmp_path: Path) -> Iterator[tuple[int, int]]:
    if _native.GrpcServer is None:
        pytest.skip("native helpers not built (scripts/setup.sh builds them)")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "out")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield child.pid, int(child.stdout.readline())
    finally:
        child.kill()
        child.wait(10)


def test_native_accept_backs_off_when_out_of_file_descriptors(
    low_fd_receiver: tuple[int, int],
) -> None:
    """Issue 21.4: 20,000 idle connections exhausted the descriptors and accept spun at 100%
    CPU. With a limit of 64 descriptors and 120 connections: the receiver sleeps between
    failed accepts (CPU stays low) and closes idle connections to make room, so a valid
    Export still succeeds during the flood."""
    pid, port = low_fd_receiver
    flood = []
    try:
        for _ in range(120):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        before, t0 = _cpu_s(pid), time.monotonic()
        time.sleep(2.0)
        busy = (_cpu_s(pid) - before) / (time.monotonic() - t0)
        assert busy < 0.5, f"accept spins: {busy:.0%} of a core"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            ch.unary_unary(TRACES)(spans_request(1, 3).SerializeToString(), timeout=20)
    finally:
        for s in flood:
            s.close()
