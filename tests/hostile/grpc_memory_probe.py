"""Peak RSS of a receiver (default limits) sent N gzip Exports at once that each inflate to
~60 MB (issue 21.1's case, over gRPC). Not a test: a measurement, printed.

    PYTHONPATH=$PWD python tests/hostile/grpc_memory_probe.py [native|grpcio] [N]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_CHILD = """
import sys
from pipeline import _native
if sys.argv[2] == "grpcio":
    _native.GrpcServer = None
from pipeline.config import Config
from pipeline.receivers.otlp_grpc import OtlpGrpcReceiver
from pipeline.service import Service
cfg = Config(); cfg.file.directory = sys.argv[1]
rc = cfg.receivers
service = Service(cfg); service.start()
rx = OtlpGrpcReceiver(service, "127.0.0.1:0", rc.max_request_bytes,
    max_inflight_bytes=rc.grpc_max_inflight_bytes, max_decompressed_bytes=rc.max_decompressed_bytes)
rx.start()
print(rx.port, flush=True)
sys.stdin.read()
"""


def _request(spans: int = 1000, attrs: int = 830) -> bytes:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(spans):
        s = ss.spans.add()
        s.name = "chat"
        s.trace_id = (i + 1).to_bytes(16, "big")
        s.span_id = (i + 1).to_bytes(8, "big")
        s.start_time_unix_nano, s.end_time_unix_nano = 1, 2
        for k in range(attrs):
            kv = s.attributes.add()
            kv.key = f"attribute.number.{k}"
            kv.value.string_value = f"value {k} of span {i}, padded to some length"
    return req.SerializeToString()


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    transport = sys.argv[1] if len(sys.argv) > 1 else "native"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    raw = _request()
    with tempfile.TemporaryDirectory() as out:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, out, transport],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            base = _hwm_mb(child.pid)
            codes: list[str] = []

            def send() -> None:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    try:
                        ch.unary_unary(TRACES)(raw, timeout=120, compression=grpc.Compression.Gzip)
                        codes.append("OK")
                    except grpc.RpcError as e:
                        codes.append(e.code().name)  # type: ignore[attr-defined]

            t0 = time.monotonic()
            threads = [threading.Thread(target=send) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(2)
            print(
                f"{transport}: {n} x {len(raw) / 1e6:.1f} MB inflated: answers {sorted(codes)} "
                f"in {time.monotonic() - t0:.1f}s; peak RSS {_hwm_mb(child.pid):.0f} MB "
                f"(idle {base:.0f} MB)"
            )
        finally:
            child.kill()
            child.wait(10)


if __name__ == "__main__":
    main()
