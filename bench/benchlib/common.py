"""Paths and names every part of the benchmark shares: where the repository and the
output are, the payload shape, and the systems under test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the checkout's pipeline/ and tests/, not an installed copy

BENCH_DIR = REPO / "bench"
OUT_DIR = BENCH_DIR / "_out"
COLLECTOR_CONFIG = BENCH_DIR / "collector-bench.yaml"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_BATCH = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")

FULL_RATES = [
    2_000,
    5_000,
    10_000,
    15_000,
    20_000,
    30_000,
    40_000,
    60_000,
    80_000,
    120_000,
    160_000,
]
QUICK_RATES = [2_000, 10_000, 40_000]

# The sidecar variants: the product as configured by default, and two stripped chains that
# split its cost into "receive + forward" and "the LLM metrics proper".
SIDECAR_PROCESSORS: dict[str, list[str] | None] = {
    "sidecar": None,  # the default chain (all processors)
    "sidecar-min": ["normalize", "metrics"],
    "sidecar-passthrough": [],
    "sidecar-python": None,  # the default chain without the native helpers (native/)
    "sidecar-gzip": None,  # the default chain, forwarding with gzip
    "sidecar-grpcio": None,  # the default chain on grpcio's transports (not native/'s)
    "sidecar-file": None,  # the default chain into the embedded default's OTLP/JSON files
    "sidecar-dims": None,  # the default chain with three attribution dimensions (DIMENSIONS)
}
# No destination: traces go to OTLP/JSON-lines files (what `llm-pipeline run` does out of the
# box), in a temporary directory; the counting sink sees nothing, the sidecar counts them.
FILE_SINK = {"sidecar-file"}
WITHOUT_NATIVE = {"sidecar-python"}
# The sidecars forward uncompressed, as compose/sidecar/config.yaml does on its hop back to the
# Collector beside it; `sidecar-gzip` shows what gzip on that hop would cost.
WITH_GZIP = {"sidecar-gzip"}
WITH_GRPCIO = {"sidecar-grpcio"}
# Who spent it (#18): tenant, user and feature, which the demo sets on each request's root
# span (the LLM spans below inherit them), and series room for their combinations, so the
# labels are measured rather than the overflow series.
DIMENSIONS = [
    {"name": "tenant", "sources": ["resource:tenant.id", "span:tenant.id"]},
    {"name": "user", "sources": ["span:user.id", "span:enduser.id"]},
    {"name": "feature", "sources": ["span:app.feature"]},
]
WITH_DIMENSIONS = {"sidecar-dims"}
# The variants compared with the default sidecar in the same run (paired rounds), and what
# each may cost at most: the file sink's CPU per span <= 1.5x forwarding's (#12); three
# attribution dimensions <= +10% (#18).
VARIANT_TARGETS = {
    "sidecar-file": (1.5, "the embedded default's file sink vs forwarding"),
    "sidecar-dims": (1.10, "three attribution dimensions vs none"),
}
GZIP_STAGE = "gzip (export with compression: gzip only, approx.)"
SYSTEMS = (*SIDECAR_PROCESSORS, "collector")
