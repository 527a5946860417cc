"""Large OTLP requests for the hostile-load tests, built as bytes (through protobuf, building
them takes longer than the sidecar takes to refuse them)."""

from __future__ import annotations

import random

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .otlp_build import T0

ATTRS = 2000  # per span
SPANS = 80  # per request: ~24 MB, ~1.3 MB gzip


def _ld(field: int, payload: bytes) -> bytes:
    n, out = len(payload), bytearray([field << 3 | 2])
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out) + payload


def large_traces(seed: int, n: int = SPANS, service: str = "flood") -> bytes:
    """`n` spans of ATTRS attributes each, built as bytes (building them through protobuf
    would take the test longer than the sidecar)."""
    rnd = random.Random(seed)
    spans = []
    for i in range(n):
        span = Span(
            trace_id=rnd.randbytes(16),
            span_id=rnd.randbytes(8),
            name="work",
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + 10**9,
        )
        head = span.SerializeToString()
        tag = rnd.randbytes(4).hex()
        attrs = b"".join(
            _ld(9, _ld(1, f"attr.{a}".encode()) + _ld(2, _ld(1, f"v{a}-{tag}-{i}".encode() * 8)))
            for a in range(ATTRS)
        )
        spans.append(_ld(2, head + attrs))
    scope = _ld(2, b"".join(spans))
    resource = _ld(1, _ld(1, _ld(1, b"service.name") + _ld(2, _ld(1, service.encode()))))
    return _ld(1, resource + scope)
