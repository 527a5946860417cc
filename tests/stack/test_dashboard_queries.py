"""Every PromQL expression the stack ships (dashboard panels and variables, the Tempo data
source's tracesToMetrics queries, recording and alerting rules) parses, and returns data from a
real Prometheus scraping the real sidecar under demo traffic.

Live setup (module fixture `live`), all on 127.0.0.1 with free ports:
  OTLP sink (stands in for the Collector's enriched receiver)
    <- llm-pipeline run --config <compose/sidecar/config.yaml, exporters -> sink>
         --otlp-grpc P1 --otlp-http P2 --metrics P3
    <- llm-pipeline demo --endpoint http://127.0.0.1:P1
  prometheus (compose/prometheus/prometheus.yml: job llm-pipeline -> P3, scrape and rule
  evaluation every 1s, dashboards/rules/*.yml loaded, exemplar storage on)
Template variables are set to "All" (.*), $__rate_interval to 1m, $__range to 5m.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from _prom import PrometheusServer, compose_prometheus_config, free_port, require_binary
from _queries import Query, all_queries, dashboard_queries

REPO = Path(__file__).resolve().parents[2]
COMPOSE_SIDECAR_CONFIG = REPO / "compose" / "sidecar" / "config.yaml"
DEMO_RATE = 25  # requests/s
DEMO_DURATION = 6  # s
DEMO_SEED = 20240611


# --- offline: every expression parses ----------------------------------------------------------
def test_every_query_parses(tmp_path: Path) -> None:
    queries = all_queries()
    assert len(queries) > 60
    groups = [
        {"name": f"q{i}", "rules": [{"record": f"stack_test:q{i}", "expr": q.promql}]}
        for i, q in enumerate(queries)
    ]
    path = tmp_path / "all-queries.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    r = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        out = r.stdout + r.stderr
        bad = sorted({int(i) for i in re.findall(r'group "q(\d+)"', out)})
        detail = "\n".join(f"{queries[i].source}: {queries[i].promql}" for i in bad)
        pytest.fail(f"{out}\n{detail}")


def test_substitution_leaves_no_grafana_variables() -> None:
    for q in all_queries():
        assert "$" not in q.promql, (q.source, q.promql)


# --- live ------------------------------------------------------------------------------------
@dataclass
class Live:
    prom: PrometheusServer
    sink: Any
    start: float
    demo_log: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    try:
        import pipeline.cli  # noqa: F401
    except ImportError:
        pytest.xfail("sidecar not built yet")
    from tests.helpers.otlp_sink import OtlpSink
    from tests.helpers.sidecar import start_sidecar

    tmp = tmp_path_factory.mktemp("live-stack")
    require_binary("prometheus")

    sink = OtlpSink().start()
    cfg = yaml.safe_load(COMPOSE_SIDECAR_CONFIG.read_text())
    for signal in ("traces", "logs"):
        cfg["exporters"][signal] = {
            **cfg["exporters"][signal],
            "endpoint": f"127.0.0.1:{sink.grpc_port}",
        }
    sidecar = start_sidecar(tmp, cfg)
    port = free_port()
    prom_cfg = compose_prometheus_config(
        {
            "llm-pipeline": f"127.0.0.1:{sidecar.metrics_port}",
            "prometheus": f"127.0.0.1:{port}",
        }
    )
    prom = PrometheusServer(tmp / "prometheus", prom_cfg, port=port)
    try:
        prom.start()
        start = time.time()
        assert prom.wait_for('up{job="llm-pipeline"} == 1', timeout=20), prom.log()
        demo = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "demo",
                "--endpoint",
                f"http://127.0.0.1:{sidecar.grpc_port}",
                "--rate",
                str(DEMO_RATE),
                "--duration",
                str(DEMO_DURATION),
                "--seed",
                str(DEMO_SEED),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        # Everything the demo sent is processed, scraped twice more, and the rules evaluated.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sidecar.proc.poll() is not None:
                raise RuntimeError(sidecar.logs())
            queued = prom.query("sum(llm_pipeline_queue_size)")
            if (
                queued
                and float(queued[0]["value"][1]) == 0
                and prom.query("llm:requests:rate5m")
                and sink.spans()
            ):
                break
            time.sleep(0.5)
        time.sleep(2.5)
        yield Live(prom, sink, start, demo.stdout + demo.stderr)
    finally:
        prom.stop()
        sidecar.stop()
        sink.stop()


# Budget records rightly empty in a Prometheus a minute old: the anomaly baseline needs days of
# history (dashboards/rules/tests/llm-budgets-anomaly.test.yml checks them on 3 days).
NEEDS_HISTORY = {
    "llm:budget_cost_usd_per_hour:baseline",
    "llm:budget_anomaly_threshold_usd_per_hour",
}


def _no_burn_yet(live: Live, q: Any) -> bool:
    """A budget's time to exhaustion is rightly empty while its burn rate is 0: in a minute-old
    Prometheus every series of a small selection may have only its first sample, which rate()
    does not count (README, Budgets)."""
    if not q.source.endswith("record llm:budget_exhaustion_seconds"):
        return False
    m = re.search(r'budget="([^"]+)"', q.promql)
    assert m, q.promql
    burn = live.prom.query(f'llm:budget_cost_usd:rate5m{{budget="{m.group(1)}"}}')
    return bool(burn) and all(float(s["value"][1]) == 0 for s in burn)


def _promql_regex_literal(value: str) -> str:
    """A value as a regex matching only itself, inside a PromQL string (as Grafana does)."""
    return "".join("\\\\" + c if c in r"\.^$*+?()[]{}|" else c for c in value)


def _finite(sample: dict[str, Any]) -> bool:
    return math.isfinite(float(sample["value"][1]))


@pytest.mark.e2e
def test_every_query_returns_data(live: Live) -> None:
    problems = []
    checked = 0
    for q in all_queries():
        try:
            result = live.prom.query(q.promql)
        except AssertionError as e:
            problems.append(f"{q.source}: ERROR {e}\n    {q.promql}")
            continue
        if q.kind == "alert":
            continue  # alerts may rightly be empty; they only have to evaluate
        if q.kind == "record" and q.source.split(" record ")[-1] in NEEDS_HISTORY:
            continue
        checked += 1
        if not result and _no_burn_yet(live, q):
            continue
        if not result:
            problems.append(f"{q.source}: EMPTY\n    {q.promql}")
        elif not any(_finite(s) for s in result):
            problems.append(f"{q.source}: only NaN/Inf {result[:3]}\n    {q.promql}")
    assert not problems, f"{len(problems)} of {checked} queries:\n" + "\n".join(problems)


@pytest.mark.e2e
def test_rules_evaluate_cleanly(live: Live) -> None:
    groups = live.prom.rules()
    names = {g["name"] for g in groups}
    assert {"llm-recording", "llm-slo", "llm-calls", "llm-pipeline-health"} <= names
    bad = [
        (r.get("name"), r.get("lastError"))
        for g in groups
        for r in g["rules"]
        if r.get("health") != "ok"
    ]
    assert not bad, bad


@pytest.mark.e2e
def test_variables_list_the_demo_services_and_models(live: Live) -> None:
    services = {
        s["metric"]["service_name"]
        for s in live.prom.query(
            "count by (service_name) (gen_ai_client_operation_duration_seconds_count)"
        )
    }
    assert {"chat-api", "rag-worker", "support-bot"} <= services, services
    models = {
        s["metric"]["gen_ai_request_model"]
        for s in live.prom.query(
            "count by (gen_ai_request_model) (gen_ai_client_operation_duration_seconds_count"
            '{service_name=~"chat-api"})'
        )
    }
    assert len(models) >= 3, models


@pytest.mark.e2e
def test_queries_with_one_real_value_per_variable(live: Live) -> None:
    """Panels also return data with a single service/provider/model selected (not only All)."""
    [row] = live.prom.query(
        "topk(1, sum by (service_name, gen_ai_provider_name, gen_ai_request_model) "
        "(gen_ai_client_operation_time_to_first_chunk_seconds_count))"
    )
    pick = {
        "service": row["metric"]["service_name"],
        "provider": row["metric"]["gen_ai_provider_name"],
        "model": row["metric"]["gen_ai_request_model"],
    }
    problems = []
    for q in dashboard_queries():
        if not q.source.startswith("llm-overview.json: panel"):
            continue
        expr = q.expr
        for var, value in pick.items():
            expr = expr.replace(f'"${var}"', f'"{_promql_regex_literal(value)}"')
        if "$service" in expr or "$provider" in expr or "$model" in expr:
            problems.append(f"{q.source}: unsubstituted {expr}")
            continue
        result = live.prom.query(Query(q.source, expr, q.kind).promql)
        if not result:
            problems.append(f"{q.source}: EMPTY for {pick}")
    assert not problems, "\n".join(problems)


@pytest.mark.e2e
def test_histogram_panels_have_exemplars(live: Live) -> None:
    """Every exemplar-enabled panel query finds exemplars whose trace_id is a real trace id."""
    problems = []
    trace_ids: set[str] = set()
    for q in dashboard_queries():
        if not q.exemplar:
            continue
        data = live.prom.exemplars(q.promql, live.start - 60, time.time() + 5)
        ids = {e["labels"].get("trace_id", "") for s in data for e in s["exemplars"]}
        if not ids:
            problems.append(f"{q.source}: no exemplars")
        elif not all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids):
            problems.append(f"{q.source}: bad trace ids {sorted(ids)[:3]}")
        trace_ids |= ids
    assert not problems, "\n".join(problems)
    # The exemplars point at traces the sidecar forwarded (to Tempo, in the stack).
    forwarded = {s.trace_id.hex() for s in live.sink.spans()}
    assert trace_ids & forwarded, "exemplar trace ids not among the forwarded spans"


@pytest.mark.e2e
def test_pipeline_health_shows_the_healthy_run(live: Live) -> None:
    def value(expr: str) -> float:
        [s] = live.prom.query(expr)
        return float(s["value"][1])

    received = value('sum(llm_pipeline_received_items_total{signal="traces"})')
    exported = value('sum(llm_pipeline_exported_items_total{signal="traces"})')
    # Every span the sidecar accepted was delivered, and the counter says so.
    assert received > 0 and exported == len(live.sink.spans()) and 0 < exported <= received
    assert value("sum(llm_pipeline_rejected_items_total) or on() vector(0)") == 0
    assert value("sum(llm_pipeline_dropped_items_total) or on() vector(0)") == 0
    assert value("max(llm_pipeline:queue_utilization:ratio)") == 0


@pytest.mark.e2e
def test_cost_explorer_shows_spend_by_tenant_and_budgets(live: Live) -> None:
    """The demo's tenants, users and features reach the cost counter with their skew, cost
    per request is recorded, and every stack budget has its spend and percent used."""

    def by(label: str) -> dict[str, float]:
        res = live.prom.query(f'sum by ({label}) (gen_ai_client_cost_usd_total{{{label}!=""}})')
        return {s["metric"][label]: float(s["value"][1]) for s in res}

    tenants = by("tenant")
    assert len(tenants) >= 5 and "acme" in tenants, tenants
    ranked = sorted(tenants.values(), reverse=True)
    assert ranked[0] > 2 * ranked[len(ranked) // 2], tenants  # Zipf-like skew
    assert len(by("user")) >= 20 and len(by("feature")) >= 5 and len(by("team")) >= 3
    assert live.prom.query("sum(llm_pipeline_request_cost_usd_count) > 0")
    cfg = yaml.safe_load(COMPOSE_SIDECAR_CONFIG.read_text())
    for b in cfg["budgets"]:
        sel = f'{{budget="{b["name"]}"}}'
        [spent] = live.prom.query(f"llm:budget_spend_usd:period{sel}")
        [used] = live.prom.query(f"llm:budget_used_percent{sel}")
        [burn] = live.prom.query(f"llm:budget_cost_usd:rate5m{sel}")
        if float(burn["value"][1]) == 0:  # only first samples so far (see _no_burn_yet)
            assert float(spent["value"][1]) == 0, b["name"]
        else:
            assert float(spent["value"][1]) > 0, b["name"]
        assert float(used["value"][1]) == pytest.approx(
            float(spent["value"][1]) / b["amount_usd"] * 100, rel=1e-3
        )
