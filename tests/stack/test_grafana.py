"""Grafana provisioning and dashboards: structure, cross-references and the README contract."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from _queries import (
    DATASOURCES,
    dashboard_queries,
    iter_panels,
    label_names,
    load_dashboards,
    load_datasources,
    load_rules,
    metric_names,
    readme_contract,
    traces_to_metrics_queries,
    unescape_provisioning,
)

REPO = Path(__file__).resolve().parents[2]
GRAFANA_BUILTINS = {
    "__rate_interval",
    "__interval",
    "__range",
    "__range_s",
    "__range_ms",
    "__interval_ms",
    "__from",
    "__to",
    "__dashboard",
    "__all",
}
HISTOGRAM = re.compile(r"histogram_quantile|_bucket\b")


@pytest.fixture(scope="module")
def datasources() -> dict[str, Any]:
    return load_datasources()


@pytest.fixture(scope="module")
def uids(datasources: dict[str, Any]) -> set[str]:
    return {d["uid"] for d in datasources["datasources"]}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


def by_uid(datasources: dict[str, Any], uid: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [d for d in datasources["datasources"] if d["uid"] == uid]
    assert len(found) == 1, uid
    return found[0]


# --- data sources ------------------------------------------------------------------------------
def test_datasource_uids_fixed_and_unique(datasources: dict[str, Any]) -> None:
    found = [d["uid"] for d in datasources["datasources"]]
    assert sorted(found) == ["alertmanager", "loki", "prometheus", "tempo"]
    assert datasources["apiVersion"] == 1
    assert [d["uid"] for d in datasources["datasources"] if d.get("isDefault")] == ["prometheus"]


def test_cross_links_point_to_existing_datasources(
    datasources: dict[str, Any], uids: set[str]
) -> None:
    prom = by_uid(datasources, "prometheus")["jsonData"]
    [ex] = prom["exemplarTraceIdDestinations"]
    assert ex == {**ex, "name": "trace_id", "datasourceUid": "tempo"}
    tempo = by_uid(datasources, "tempo")["jsonData"]
    refs = {
        "tracesToLogsV2": tempo["tracesToLogsV2"]["datasourceUid"],
        "tracesToMetrics": tempo["tracesToMetrics"]["datasourceUid"],
        "serviceMap": tempo["serviceMap"]["datasourceUid"],
        "lokiSearch": tempo["lokiSearch"]["datasourceUid"],
    }
    assert refs == {
        "tracesToLogsV2": "loki",
        "tracesToMetrics": "prometheus",
        "serviceMap": "prometheus",
        "lokiSearch": "loki",
    }
    assert tempo["nodeGraph"]["enabled"] is True
    for f in by_uid(datasources, "loki")["jsonData"]["derivedFields"]:
        assert f["datasourceUid"] == "tempo" and f["datasourceUid"] in uids
    assert by_uid(datasources, "alertmanager")["jsonData"]["implementation"] == "prometheus"


def test_provisioning_dollars_are_escaped() -> None:
    """Grafana expands $VAR and ${VAR} in provisioning files: a template variable written with
    a single `$` (e.g. $__tags) would be replaced by an empty environment variable."""
    text = DATASOURCES.read_text()
    body = "\n".join(
        line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        for line in text.splitlines()
    )
    single = re.findall(r"(?<!\$)\$(?!\$)[{\w]", body.replace("$$", ""))
    assert not single, single
    assert "$$__tags" in text and "$${__value.raw}" in text


def test_traces_to_logs_query(datasources: dict[str, Any]) -> None:
    t2l = by_uid(datasources, "tempo")["jsonData"]["tracesToLogsV2"]
    assert t2l["filterByTraceID"] is True
    assert t2l["spanStartTimeShift"].startswith("-") and t2l["spanEndTimeShift"]
    assert {"key": "service.name", "value": "service_name"} in t2l["tags"]
    query = unescape_provisioning(t2l["query"])
    # LogQL: stream selector from the mapped tags, then the structured-metadata trace_id.
    assert re.fullmatch(r'\{\$\{__tags\}\} \| trace_id="\$\{__trace\.traceId\}"', query), query


def test_traces_to_metrics_queries(datasources: dict[str, Any]) -> None:
    t2m = by_uid(datasources, "tempo")["jsonData"]["tracesToMetrics"]
    assert {"key": "gen_ai.request.model", "value": "gen_ai_request_model"} in t2m["tags"]
    assert {"key": "service.name", "value": "service_name"} in t2m["tags"]
    names = {q["name"] for q in t2m["queries"]}
    assert {"TTFT p95 (model)", "Output tokens/s (model)", "Cost USD/h (model)"} <= names
    for q in traces_to_metrics_queries():
        assert "{$__tags" in q.expr, q.source


def test_loki_derived_fields_find_trace_ids(datasources: dict[str, Any]) -> None:
    fields = by_uid(datasources, "loki")["jsonData"]["derivedFields"]
    [label] = [f for f in fields if f.get("matcherType") == "label"]
    assert label["matcherRegex"] == "trace_id"
    [rx] = [f for f in fields if f.get("matcherType", "regex") == "regex"]
    pattern = re.compile(rx["matcherRegex"])
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    for line in (
        f"level=info msg=done trace_id={tid} span_id=00f067aa0ba902b7",
        f'{{"msg": "llm call", "traceId": "{tid}"}}',
        f"traceID: {tid}",
        f"TRACE_ID={tid.upper()}",
    ):
        m = pattern.search(line)
        assert m and m.group(1).lower() == tid, line
    assert not pattern.search("span_id=00f067aa0ba902b7 request_id=1234")
    for f in fields:
        assert unescape_provisioning(f["url"]) == "${__value.raw}"


def test_dashboard_provider() -> None:
    p = REPO / "compose" / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
    [provider] = yaml.safe_load(p.read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# --- dashboards ----------------------------------------------------------------------------
def test_dashboards_are_generated_from_build_py() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "dashboards" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_uids_and_links(dashboards: dict[str, dict[str, Any]]) -> None:
    assert set(dashboards) == {
        "llm-overview.json",
        "pipeline-health.json",
        "agents.json",
        "cost-explorer.json",
    }
    dash_uids = [d["uid"] for d in dashboards.values()]
    assert len(set(dash_uids)) == len(dash_uids)
    for name, d in dashboards.items():
        assert d["title"] and d["schemaVersion"] >= 36, name
        for link in d.get("links", []):
            m = re.fullmatch(r"/d/([\w-]+)", link["url"])
            assert m and m.group(1) in dash_uids, (name, link)


def test_datasource_variable(dashboards: dict[str, dict[str, Any]], uids: set[str]) -> None:
    for name, d in dashboards.items():
        [ds] = [v for v in d["templating"]["list"] if v["name"] == "datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus", name
        assert ds["current"]["value"] in uids, name


def test_panels_structure(dashboards: dict[str, dict[str, Any]], uids: set[str]) -> None:
    for name, d in dashboards.items():
        panels = iter_panels(d["panels"])
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        cells: dict[tuple[int, int], int] = {}
        for p in panels:
            g = p["gridPos"]
            assert all(isinstance(g[k], int) for k in ("h", "w", "x", "y")), (name, p["title"])
            assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: {p['title']!r} overlaps {cells[x, y]}"
                    cells[x, y] = p["id"]
            if p["type"] == "row":
                continue
            assert p["title"], (name, p["id"])
            ds = p.get("datasource")
            assert ds and ds["type"] == "prometheus", (name, p["title"])
            assert ds["uid"] == "${datasource}" or ds["uid"] in uids, (name, p["title"])
            targets = p.get("targets")
            assert targets, (name, p["title"])
            refs = [t["refId"] for t in targets]
            assert len(refs) == len(set(refs)), (name, p["title"])
            for t in targets:
                assert t.get("expr", "").strip(), (name, p["title"], t["refId"])
                assert t["datasource"] == ds, (name, p["title"])


def test_template_variables_used_exist(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        defined = {v["name"] for v in d["templating"]["list"]}
        used = set()
        blob = yaml.safe_dump(d["panels"]) + yaml.safe_dump(d["templating"])
        for m in re.finditer(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", blob):
            used.add(m.group(1) or m.group(2))
        unknown = used - defined - GRAFANA_BUILTINS
        assert not unknown, f"{name}: undefined variables {unknown}"
        # and every filter variable is actually applied somewhere
        for v in defined - {"datasource"}:
            assert f"${v}" in blob, f"{name}: variable {v} unused"


def test_overview_filters_by_service_provider_model(dashboards: dict[str, dict[str, Any]]) -> None:
    for q in dashboard_queries():
        if not q.source.startswith("llm-overview.json: panel"):
            continue
        gen_ai = [
            m
            for m in metric_names(q.expr)
            if m.startswith("gen_ai_client_") or (m.startswith("llm:") and m.endswith("rate5m"))
        ]
        if gen_ai:
            assert '=~"$service"' in q.expr, q.source
        if any(m.startswith("gen_ai_client_") and "fallbacks" not in m for m in gen_ai):
            assert '=~"$provider"' in q.expr and '=~"$model"' in q.expr, q.source


def test_histogram_panels_show_exemplars(dashboards: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, d in dashboards.items():
        for p in iter_panels(d["panels"]):
            for t in p.get("targets", []):
                raw = [
                    m
                    for m in metric_names(t["expr"])
                    if m.endswith("_bucket") and not m.startswith("llm:")
                ]
                if raw and not t.get("instant"):
                    assert t.get("exemplar") is True, (name, p["title"], t["refId"])
                    checked += 1
    assert checked >= 8


def test_overview_has_the_panels_the_issue_asks_for(dashboards: dict[str, dict[str, Any]]) -> None:
    titles = " | ".join(p["title"] for p in iter_panels(dashboards["llm-overview.json"]["panels"]))
    for want in (
        "Sidecar",
        "Requests / min",
        "Error rate by error type",
        "Fallback rate",
        "Call duration p50 / p90 / p99",
        "Time to first token p50 / p90 / p99",
        "Time per output token",
        "Tokens / min by type",
        "Cost per hour by model",
        "Cost per hour by service",
        "Cost per day",
        "Prompt-cache share",
        "Requests / min by provider and model",
        "Top models",
    ):
        assert want in titles, want
    titles = " | ".join(
        p["title"] for p in iter_panels(dashboards["pipeline-health.json"]["panels"])
    )
    for want in (
        "Received",
        "Rejected",
        "Queue size vs capacity",
        "Export failures",
        "Dropped",
        "Unpriced",
        "Cardinality overflow",
        "Redactions",
    ):
        assert want in titles, want


# --- the README metric contract --------------------------------------------------------------
EXTERNAL_METRICS = {
    "up",
    "scrape_samples_scraped",
    "scrape_duration_seconds",
    "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity",
}


def test_queries_use_only_contract_metrics_and_labels() -> None:
    contract = readme_contract()
    recorded = {r["record"] for _, r in load_rules() if "record" in r}
    from _queries import all_queries

    allowed_labels = contract.labels | {"__name__", "data_type"}
    for q in all_queries():
        for m in metric_names(q.promql):
            if m in EXTERNAL_METRICS:
                continue
            if m.startswith(("llm:", "llm_pipeline:")):
                assert m in recorded, f"{q.source}: no recording rule {m}"
            else:
                assert m in contract.metrics, f"{q.source}: {m} is not in the README contract"
        unknown = label_names(q.promql) - allowed_labels
        assert not unknown, f"{q.source}: labels not in the README contract: {unknown}"


def test_contract_parser_sees_the_readme() -> None:
    c = readme_contract()
    assert "gen_ai_client_operation_duration_seconds_bucket" in c.metrics
    assert "gen_ai_client_tokens_total" in c.metrics
    assert "llm_pipeline_queue_capacity" in c.metrics
    assert {
        "service_name",
        "gen_ai_request_model",
        "error_type",
        "gen_ai_token_type",
        "from_provider",
        "signal",
        "reason",
        "exporter",
    } <= c.labels
    assert "model" not in c.labels
    # the default names (what the dashboards use) and the `development` column apart
    assert "gen_ai_client_operation_time_to_first_chunk_seconds_bucket" in c.metrics
    assert "llm_pipeline_time_per_output_token_seconds_bucket" in c.metrics
    assert "gen_ai_server_time_per_output_token_seconds_count" in c.metrics
    assert "gen_ai_client_inference_duration_seconds_bucket" in c.development
    assert "gen_ai_client_inference_usage_input_tokens_total" in c.development
    assert "gen_ai_client_inference_duration_seconds_bucket" not in c.metrics
    assert "gen_ai_token_modality" in c.labels
