"""bench/collector-bench.yaml on the real otelcol-llm: the token sums it derives are the ones sent.

The benchmark's Collector baseline must do the sidecar's `normalize + metrics` work, including the
token usage histogram (signal_to_metrics). Here the bench config runs unchanged, plus a small
overlay that also sends its metrics pipeline to an OTLP sink; LLM spans go in with the SDK's
exporter in two requests, and per (model, token type) the histogram's sum, count and buckets
that come out (delta points, added up) must equal what the spans carried.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pipeline.aggregation import TOKEN_BUCKETS
from tests.collector._helpers import (
    REPO_ROOT,
    Collector,
    OtlpGrpcSink,
    attrs,
    free_port,
    send_spans,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

BENCH_CONFIG = REPO_ROOT / "bench" / "collector-bench.yaml"
METRIC = "gen_ai.client.token.usage"
OVERLAY = """\
exporters:
  otlp_grpc/test:
    endpoint: ${env:TEST_METRICS_SINK}
    tls:
      insecure: true
service:
  pipelines:
    metrics:
      exporters: [debug, otlp_grpc/test]
"""

Key = tuple[str, str]  # (gen_ai.request.model, gen_ai.token.type)


def llm_spans(rng: random.Random, n: int) -> list[tuple[str, dict[str, Any]]]:
    """Chat spans over three models with random token counts (some exactly on a bucket bound),
    embeddings with input tokens only, and tool spans without any."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        model = ("gpt-4o", "claude-sonnet-4", "llama-3.1-8b")[i % 3]
        a: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai" if model == "gpt-4o" else "other",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": rng.choice((16, 1024, rng.randint(1, 5000))),
            "gen_ai.usage.output_tokens": rng.randint(0, 900),
        }
        out.append((f"chat {model}", a))
        if i % 4 == 0:
            emb = {
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": rng.randint(1, 300),
            }
            out.append(("embeddings text-embedding-3-small", emb))
        if i % 5 == 0:
            out.append(("execute_tool get_weather", {"gen_ai.operation.name": "execute_tool"}))
    return out


def expected(spans: list[tuple[str, dict[str, Any]]]) -> dict[Key, tuple[int, int, list[int]]]:
    """(sum, count, bucket counts) per (model, token type), computed from the spans sent."""
    out: dict[Key, tuple[int, int, list[int]]] = {}
    for _, a in spans:
        for token_type in ("input", "output"):
            v = a.get(f"gen_ai.usage.{token_type}_tokens")
            if v is None:
                continue
            key = (a["gen_ai.request.model"], token_type)
            total, count, buckets = out.get(key, (0, 0, [0] * (len(TOKEN_BUCKETS) + 1)))
            buckets[bisect_left(TOKEN_BUCKETS, v)] += 1
            out[key] = (total + v, count + 1, buckets)
    return out


def received(
    sink: OtlpGrpcSink,
) -> tuple[dict[Key, tuple[int, int, list[int]]], set[tuple[float, ...]]]:
    """The token histogram's points added up per (model, token type), and the bounds seen."""
    sums: dict[Key, list[Any]] = defaultdict(lambda: [0, 0, [0] * (len(TOKEN_BUCKETS) + 1)])
    bounds: set[tuple[float, ...]] = set()
    with sink.cond:
        requests = list(sink.metrics)
    for req in requests:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != METRIC:
                        continue
                    assert m.WhichOneof("data") == "histogram", m
                    for dp in m.histogram.data_points:
                        a = attrs(dp.attributes)
                        s = sums[(str(a["gen_ai.request.model"]), str(a["gen_ai.token.type"]))]
                        s[0] += dp.sum
                        s[1] += dp.count
                        s[2] = [x + y for x, y in zip(s[2], dp.bucket_counts, strict=True)]
                        bounds.add(tuple(dp.explicit_bounds))
    return {k: (int(v[0]), int(v[1]), list(v[2])) for k, v in sums.items()}, bounds


def test_bench_collector_derives_the_token_sums_sent(otelcol_binary: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(OVERLAY)
    health, metrics_port, grpc_port = free_port(), free_port(), free_port()
    with OtlpGrpcSink() as traces_sink, OtlpGrpcSink() as metrics_sink:
        env = {
            "BENCH_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
            "BENCH_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
            "BENCH_SINK_ENDPOINT": traces_sink.endpoint,
            "BENCH_COLLECTOR_METRICS_PORT": str(metrics_port),
            "TEST_METRICS_SINK": metrics_sink.endpoint,
            # what the Collector helper reads for its health check and self-metrics
            "COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
            "COLLECTOR_METRICS_HOST": "127.0.0.1",
            "COLLECTOR_METRICS_PORT": str(metrics_port),
        }
        col = Collector(otelcol_binary, [BENCH_CONFIG, overlay], env, tmp_path / "collector.log")
        col.start(timeout=30)
        try:
            rng = random.Random(17)
            first, second = llm_spans(rng, 30), llm_spans(rng, 24)
            send_spans(col.env["BENCH_OTLP_GRPC_ENDPOINT"], first, service="bench-test")
            send_spans(col.env["BENCH_OTLP_GRPC_ENDPOINT"], second, service="bench-test")
            sent = first + second
            want = expected(sent)
            n_tokens = sum(c for _, c, _ in want.values())
            wait_until(
                lambda: sum(c for _, c, _ in received(metrics_sink)[0].values()) >= n_tokens, 30
            )
            got, bounds = received(metrics_sink)
            # the forwarding pipeline still passes every span on
            assert traces_sink.wait_spans(lambda s: len(s) >= len(sent), 30)
            assert len(traces_sink.spans()) == len(sent)
        finally:
            col.stop()
    # 3 chat models x input/output + embeddings' input; tool spans count nowhere
    assert len(want) == 7
    assert got == want, col.logs()[-3000:]
    assert bounds == {tuple(float(b) for b in TOKEN_BUCKETS)}
