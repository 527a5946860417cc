"""Alert and recording rules (dashboards/rules), their promtool unit tests, the Prometheus and
Alertmanager configs: checked by promtool and amtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _prom import compose_prometheus_config, require_binary
from _queries import load_rules

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "dashboards" / "rules"
RULE_FILES = sorted(RULES.glob("*.yml"))
TEST_FILES = sorted((RULES / "tests").glob("*.yml"))
ALERTMANAGER = REPO / "compose" / "alertmanager" / "alertmanager.yml"
RUNBOOK = RULES / "RUNBOOK.md"


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    return [r for _, r in load_rules() if "alert" in r]


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return [r for _, r in load_rules() if "record" in r]


def test_rule_files_present() -> None:
    assert {p.name for p in RULE_FILES} == {"llm-alerts.yml", "llm-recording.yml"}
    assert TEST_FILES


def test_promtool_check_rules() -> None:
    r = run([require_binary("promtool"), "check", "rules", *map(str, RULE_FILES)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_test_rules() -> None:
    r = run([require_binary("promtool"), "test", "rules", *map(str, TEST_FILES)], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(TEST_FILES), r.stdout


def test_promtool_test_rules_catches_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests are not vacuous: raising a threshold makes them fail."""
    rules = tmp_path / "rules"
    (rules / "tests").mkdir(parents=True)
    for p in RULE_FILES:
        text = p.read_text()
        if p.name == "llm-alerts.yml":
            text = text.replace('up{job="llm-pipeline"} == 0', 'up{job="llm-pipeline"} == 2')
            text = text.replace("> 0.05\n          and", "> 0.5\n          and")
        (rules / p.name).write_text(text)
    for p in TEST_FILES:
        (rules / "tests" / p.name).write_text(p.read_text())
    r = run(
        [
            require_binary("promtool"),
            "test",
            "rules",
            str(rules / "tests" / "targets.test.yml"),
            str(rules / "tests" / "calls.test.yml"),
        ]
    )
    assert r.returncode != 0
    assert "LLMPipelineSidecarDown" in r.stdout + r.stderr
    assert "LLMHighErrorRate" in r.stdout + r.stderr


def test_every_alert_has_a_firing_and_a_non_firing_test(alerts: list[dict[str, Any]]) -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        files = {Path(f).name for f in doc["rule_files"]}
        for t in doc["tests"]:
            for case in t.get("alert_rule_test", []):
                name = case["alertname"]
                assert "llm-alerts.yml" in files, (path.name, name)
                (firing if case.get("exp_alerts") else silent).add(name)
    names = {a["alert"] for a in alerts}
    assert names - firing == set(), f"alerts never tested firing: {sorted(names - firing)}"
    assert names - silent == set(), f"alerts never tested silent: {sorted(names - silent)}"
    assert (firing | silent) <= names, f"tests for unknown alerts: {(firing | silent) - names}"


def test_every_recording_rule_is_tested_or_used(
    records: list[dict[str, Any]], alerts: list[dict[str, Any]]
) -> None:
    tested = ""
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        for t in doc["tests"]:
            tested += " ".join(c["expr"] for c in t.get("promql_expr_test", []))
    used_by_alerts = " ".join(a["expr"] for a in alerts)
    for r in records:
        name = r["record"]
        assert re.search(rf"{re.escape(name)}\b", tested + " " + used_by_alerts), name


def test_alert_labels_and_annotations(alerts: list[dict[str, Any]]) -> None:
    runbook = RUNBOOK.read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (.+)$", runbook, re.M)}
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names))
    for a in alerts:
        labels, ann = a.get("labels", {}), a.get("annotations", {})
        assert labels.get("severity") in ("critical", "warning"), a["alert"]
        assert labels.get("component") in ("llm-app", "llm-pipeline", "otel-collector"), a["alert"]
        assert ann.get("summary") and ann.get("description"), a["alert"]
        url = ann.get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert (REPO / path) == RUNBOOK and anchor == a["alert"].lower(), a["alert"]
        assert anchor in anchors, f"{a['alert']}: no section in RUNBOOK.md"


def test_the_issue_alerts_exist(alerts: list[dict[str, Any]]) -> None:
    exprs = {a["alert"]: a["expr"] for a in alerts}
    assert 'up{job="llm-pipeline"} == 0' in exprs["LLMPipelineSidecarDown"]
    assert 'up{job="otel-collector"} == 0' in exprs["OtelCollectorDown"]
    assert "llm:cost_ceiling_usd_per_hour" in exprs["LLMCostAboveCeiling"]
    assert "queue_utilization" in exprs["LLMPipelineQueueNearFull"]
    assert "> 0.8" in exprs["LLMPipelineQueueNearFull"]
    for slo in ("Availability", "TTFT"):
        fast = exprs[f"LLM{slo}ErrorBudgetFastBurn"]
        slow = exprs[f"LLM{slo}ErrorBudgetSlowBurn"]
        for factor, windows in (("14.4", ("1h", "5m")), ("6", ("6h", "30m"))):
            assert f"({factor} *" in fast and all(f"_rate{w} " in fast for w in windows)
        for factor, windows in (("3", ("1d", "2h")), ("1", ("3d", "6h"))):
            assert f"({factor} *" in slow and all(f"_rate{w} " in slow for w in windows)


def test_job_names_match_prometheus_config(alerts: list[dict[str, Any]]) -> None:
    cfg = yaml.safe_load((REPO / "compose" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    for a in alerts:
        for job in re.findall(r'job="([^"]+)"', a["expr"]):
            assert job in jobs, (a["alert"], job)


def test_promtool_check_config(tmp_path: Path) -> None:
    """compose/prometheus/prometheus.yml, with its rule_files pointed at the repository (in the
    container they are /etc/prometheus/rules/*.yml), passes promtool check config, rules
    included."""
    text = (REPO / "compose" / "prometheus" / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/*.yml" in text
    text = text.replace("/etc/prometheus/rules/*.yml", str(RULES / "*.yml"))
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(text)
    r = run([require_binary("promtool"), "check", "config", str(cfg)])
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "SUCCESS" in out and all(p.name in out for p in RULE_FILES), out


def test_compose_prometheus_config_helper() -> None:
    cfg = compose_prometheus_config({"llm-pipeline": "127.0.0.1:1234"})
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["llm-pipeline"]
    assert cfg["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:1234"]}]
    assert cfg["global"]["evaluation_interval"] == "1s"
    with pytest.raises(KeyError):
        compose_prometheus_config({"no-such-job": "127.0.0.1:1"})


def test_amtool_check_config() -> None:
    r = run([require_binary("amtool"), "check-config", str(ALERTMANAGER)])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=LLMPipelineSidecarDown"], "critical"),
        (["severity=warning", "alertname=LLMHighErrorRate"], "warning"),
        (["alertname=Unlabelled"], "warning"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    r = run(
        [
            require_binary("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            *labels,
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == [receiver], r.stdout


def test_every_alert_severity_has_a_route(alerts: list[dict[str, Any]]) -> None:
    cfg = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"] for r in cfg["receivers"]}
    routed = {
        m.split("=", 1)[1].strip('"')
        for r in cfg["route"]["routes"]
        for m in r["matchers"]
        if m.startswith("severity=")
    }
    assert {a["labels"]["severity"] for a in alerts} <= routed
    assert {r["receiver"] for r in cfg["route"]["routes"]} <= receivers
    assert all(r.get("webhook_configs") for r in cfg["receivers"])
