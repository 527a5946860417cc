"""metrics.push over real parts: sidecar -> Collector (otlp -> prometheus_remote_write) -> Debian's
Prometheus with its remote-write receiver, which also scrapes the sidecar's /metrics.

The same traffic must give the same token and cost sums by both paths, and a 30 s outage of the
Collector must lose nothing (the push queue retries until it is back).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.collector._helpers import (
    REMOTE_WRITE_CONFIG,
    SKIP_ENV,
    Collector,
    CollectorPorts,
    build_collector,
)
from tests.e2e.test_sidecar import _grpc_exporter, emit_scenario
from tests.helpers.metrics import value
from tests.helpers.sidecar import SidecarProcess, start_sidecar
from tests.stack._prom import PrometheusServer

pytestmark = pytest.mark.e2e

CONFIG = REMOTE_WRITE_CONFIG
PUSH_JOB = "llm-push"  # metrics.push.service_name: the pushed series' `job`
SCRAPE_JOB = "llm-pipeline"
SERVICE = "push-svc"
TOKENS = f'sum(gen_ai_client_tokens_total{{job="{{job}}",service_name="{SERVICE}"}})'
COST = f'sum(gen_ai_client_cost_usd_total{{job="{{job}}",service_name="{SERVICE}"}})'


@pytest.fixture(scope="module")
def otelcol_binary() -> Path:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1")
    return build_collector()


def _collector(binary: Path, tmp: Path, ports: CollectorPorts, prom: PrometheusServer) -> Collector:
    env = {
        "COLLECTOR_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports.otlp_grpc}",
        "COLLECTOR_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports.otlp_http}",
        "COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{ports.health}",
        "COLLECTOR_METRICS_HOST": "127.0.0.1",
        "COLLECTOR_METRICS_PORT": str(ports.metrics),
        "COLLECTOR_BATCH_TIMEOUT": "200ms",
        "PROMETHEUS_REMOTE_WRITE_ENDPOINT": f"http://127.0.0.1:{prom.port}/api/v1/write",
    }
    return Collector(binary, [CONFIG], env, tmp / f"collector-{time.monotonic_ns()}.log")


def _scalar(prom: PrometheusServer, expr: str) -> float | None:
    got = prom.query(expr)
    return float(got[0]["value"][1]) if got else None


def _scraped(sc: SidecarProcess, name: str) -> float:
    total = value(sc.scrape(), name, service_name=SERVICE)
    assert total is not None
    return float(total)


def _agree(prom: PrometheusServer, sc: SidecarProcess, timeout: float = 60) -> tuple[float, float]:
    """Wait until push and scrape show the sidecar's current totals; (tokens, cost)."""
    want_tokens = _scraped(sc, "gen_ai_client_tokens_total")
    want_cost = _scraped(sc, "gen_ai_client_cost_usd_total")
    deadline = time.monotonic() + timeout
    got: dict[str, float | None] = {}
    while time.monotonic() < deadline:
        got = {
            f"{what} {job}": _scalar(prom, expr.replace("{job}", job))
            for what, expr in (("tokens", TOKENS), ("cost", COST))
            for job in (PUSH_JOB, SCRAPE_JOB)
        }
        if (
            got[f"tokens {PUSH_JOB}"] == got[f"tokens {SCRAPE_JOB}"] == want_tokens
            and got[f"cost {PUSH_JOB}"] == pytest.approx(want_cost, rel=1e-9)
            and got[f"cost {SCRAPE_JOB}"] == pytest.approx(want_cost, rel=1e-9)
        ):
            return want_tokens, want_cost
        time.sleep(0.5)
    raise AssertionError(f"push and scrape disagree: {got}, /metrics: {want_tokens}, {want_cost}")


def test_push_and_scrape_agree_and_a_collector_outage_loses_nothing(
    tmp_path: Path, otelcol_binary: Path
) -> None:
    ports = CollectorPorts()
    sc = start_sidecar(
        tmp_path,
        {
            "metrics": {
                "push": {
                    "endpoint": f"127.0.0.1:{ports.otlp_grpc}",
                    "interval_s": 1,
                    "service_name": PUSH_JOB,
                }
            },
            "queue": {"retry_initial_s": 0.2, "retry_max_s": 2},
        },
    )
    prom_cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{sc.metrics_port}"]}],
            }
        ],
    }
    prom = PrometheusServer(
        tmp_path / "prom", prom_cfg, extra_args=["--web.enable-remote-write-receiver"]
    ).start()
    collector = _collector(otelcol_binary, tmp_path, ports, prom).start()
    try:
        # the start-up line says where the metrics go
        assert f"metrics_pushed_to=grpc:127.0.0.1:{ports.otlp_grpc}" in sc.logs()
        start = time.time() - 5
        ids = [emit_scenario(_grpc_exporter(sc), SERVICE) for _ in range(2)]
        tokens, cost = _agree(prom, sc)
        assert tokens > 0 and cost > 0
        # the histograms arrive too, under the names /metrics serves them
        count = f'sum(gen_ai_client_operation_duration_seconds_count{{service_name="{SERVICE}",job="{{job}}"}})'
        assert _scalar(prom, count.replace("{job}", PUSH_JOB)) == _scalar(
            prom, count.replace("{job}", SCRAPE_JOB)
        )
        # exemplars ride along remote write: trace ids of the spans we sent
        sent = {v for i in ids for v in i.values()}
        data = prom.exemplars(
            f'gen_ai_client_operation_duration_seconds_bucket{{job="{PUSH_JOB}"}}',
            start,
            time.time() + 5,
        )
        pushed_ids = {e["labels"].get("trace_id") for s in data for e in s["exemplars"]}
        assert pushed_ids and pushed_ids <= sent, (pushed_ids, sent)

        # A 30 s outage of the Collector: traffic goes on, the push queue holds and retries.
        collector.stop()
        outage_end = time.monotonic() + 30
        for _ in range(3):
            emit_scenario(_grpc_exporter(sc), SERVICE)
        time.sleep(max(0.0, outage_end - time.monotonic()))
        failures = value(
            sc.scrape(),
            "llm_pipeline_export_failures_total",
            signal="metrics",
            exporter="otlp_grpc/push",
        )
        assert failures and failures > 0
        collector = _collector(otelcol_binary, tmp_path, ports, prom).start()
        tokens_after, cost_after = _agree(prom, sc)
        assert tokens_after == pytest.approx(tokens * 5 / 2)
        assert cost_after == pytest.approx(cost * 5 / 2, rel=1e-9)
        text = sc.scrape()
        assert not value(text, "llm_pipeline_dropped_items_total", exporter="otlp_grpc/push")
        # every queued request of the outage got through: the push gauge is back to empty
        assert value(text, "llm_pipeline_queue_size", exporter="otlp_grpc/push") == 0
    finally:
        collector.stop()
        prom.stop()
        assert sc.stop() == 0
