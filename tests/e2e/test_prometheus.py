"""Debian's real Prometheus scrapes the sidecar: PromQL sums and stored exemplars."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.test_sidecar import _grpc_exporter, emit_scenario
from tests.helpers.prometheus import start_prometheus
from tests.helpers.sidecar import start_sidecar

pytestmark = pytest.mark.e2e


def test_prometheus_scrapes_tokens_and_exemplars(tmp_path: Path) -> None:
    sc = start_sidecar(tmp_path)
    prom = start_prometheus(tmp_path, {"llm-pipeline": f"127.0.0.1:{sc.metrics_port}"})
    try:
        start = time.time() - 5
        ids = [emit_scenario(_grpc_exporter(sc), "prom-svc") for _ in range(3)]
        res = prom.wait_for(
            'sum(gen_ai_client_tokens_total{service_name="prom-svc",gen_ai_token_type="input"})'
            " >= 3 * (1200 + 500 + 10)"
        )
        assert res, prom.log_path.read_text()[-2000:]
        [sample] = prom.query(
            'sum by (gen_ai_request_model) (gen_ai_client_tokens_total{service_name="prom-svc",'
            'gen_ai_token_type="input",gen_ai_request_model="gpt-4o"})'
        )
        assert float(sample["value"][1]) == 3 * 1200
        [up] = prom.query('up{job="llm-pipeline"}')
        assert up["value"][1] == "1"

        # Exemplars: the trace ids of the spans we sent are stored by Prometheus.
        want = {i["A"] for i in ids}
        deadline = time.monotonic() + 20
        got: set[str] = set()
        while time.monotonic() < deadline and ids[-1]["A"] not in got:
            data = prom.exemplars(
                'gen_ai_client_operation_duration_seconds_bucket{service_name="prom-svc",'
                'gen_ai_request_model="gpt-4o"}',
                start,
                time.time() + 5,
            )
            got = {e["labels"]["trace_id"] for series in data for e in series["exemplars"]}
            time.sleep(0.5)
        # One exemplar per bucket is exposed at a time; all three calls fall in one bucket, so
        # the latest must be stored, and every stored one must be a trace we sent.
        assert ids[-1]["A"] in got and got <= want, (got, want)
        data = prom.exemplars(
            'gen_ai_client_tokens_total{service_name="prom-svc"}', start, time.time() + 5
        )
        counter_ids = {e["labels"]["trace_id"] for s in data for e in s["exemplars"]}
        all_ids = {v for i in ids for v in i.values()}
        assert counter_ids and counter_ids <= all_ids
    finally:
        prom.stop()
        assert sc.stop() == 0
