"""An in-process OTLP/gRPC receiver for tests, on either transport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from pipeline import _native
from pipeline.config import Config
from pipeline.receivers.otlp_grpc import OtlpGrpcReceiver
from pipeline.service import Service

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LIMIT = 64 * 1024  # max_request_bytes
INFLATED = LIMIT * 4  # max_decompressed_bytes


def use_transport(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The `transport` fixtures' body: skip native when it is not built, hide it for grpcio."""
    if name == "native":
        if _native.GrpcServer is None:
            pytest.skip("native helpers not built (scripts/setup.sh builds them)")
    else:
        monkeypatch.setattr(_native, "GrpcServer", None)
    return name


class Receiver:
    def __init__(
        self,
        tmp_path: Path,
        transport: str,
        auth: str | None = None,
        inflight: int = LIMIT * 8,
        **limits: Any,
    ) -> None:
        cfg = Config()
        cfg.file.directory = str(tmp_path / "out")
        self.out = tmp_path / "out" / "traces.jsonl"
        self.service = Service(cfg)
        limits.setdefault("max_decompressed_bytes", INFLATED)
        self.receiver = OtlpGrpcReceiver(
            self.service, "127.0.0.1:0", LIMIT, auth, max_inflight_bytes=inflight, **limits
        )
        assert self.receiver.transport == transport
        self.service.start()
        self.receiver.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.receiver.port}")
        self.export = self.channel.unary_unary(TRACES)

    def rejected(self, reason: str) -> float:
        s = self.service.telemetry.rejected.series.get(("traces", reason))
        return s.value if s is not None else 0

    def refused_connections(self) -> float:
        tel = self.service.telemetry
        s = tel.refused_connections.series.get(("otlp_grpc",))
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
