"""`llm-pipeline rules`: the budgets' Prometheus rules, checked and unit-tested by Debian's real
promtool (`promtool check rules`, `promtool test rules` on the generated tests), the committed
stack file equal to the generator's output, and the period boundary across DST changes."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from pipeline.budgets import periods, promtest_paths, write
from pipeline.budgets.config import BudgetConfig
from pipeline.config import Config, ConfigError, from_dict, load
from tests.stack._prom import require_binary

REPO = Path(__file__).resolve().parents[1]
STACK_CONFIG = "compose/sidecar/config.yaml"
STACK_RULES = REPO / "dashboards" / "rules" / "llm-budgets.yml"
AT = datetime(2026, 1, 15, tzinfo=UTC)

CONFIGS: dict[str, list[dict[str, Any]]] = {
    # a DST zone, custom levels over 100%, a dimension label: overlapping with the next
    "day-new-york": [
        {
            "name": "daily",
            "amount_usd": 20,
            "period": "day",
            "timezone": "America/New_York",
            "warn_levels": [25, 90, 100, 150],
            "forecast_hours": 6,
        },
        {
            "name": "gpt4o",
            "amount_usd": 300,
            "selector": {"gen_ai_request_model": "gpt-4o", "service_name": "chat-api"},
            "anomaly_factor": 5,
            "anomaly_min_days": 2,
            "anomaly_min_usd_per_hour": 0.5,
        },
    ],
    # east of UTC: the month and the week start before promtool's time 0
    "week-month-east": [
        {
            "name": "weekly.tokyo",
            "amount_usd": 70,
            "period": "week",
            "timezone": "Asia/Tokyo",
            "selector": {"gen_ai_provider_name": "anthropic"},
            "warn_levels": [10, 50],
        },
        {"name": "kathmandu-month", "amount_usd": 1e4, "timezone": "Asia/Kathmandu"},
    ],
}


def _budgets(spec: list[dict[str, Any]]) -> list[BudgetConfig]:
    cfg = from_dict(Config, {"budgets": spec})
    cfg.validate()
    return cfg.budgets


def _promtool(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, timeout=timeout
    )


def _check_and_test(out: Path, written: list[Path]) -> str:
    r = _promtool("check", "rules", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    tests = [str(p) for p in written[1:]]
    r = _promtool("test", "rules", *tests)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == 3, r.stdout
    return r.stdout


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_generated_rules_pass_promtool(name: str, tmp_path: Path) -> None:
    budgets = _budgets(CONFIGS[name])
    out = tmp_path / "rules" / "budgets.yml"
    written = write(budgets, out, f"{name}.yaml", AT)
    assert written == [out, *promtest_paths(out).values()]
    _check_and_test(out, written)
    rules = yaml.safe_load(out.read_text())
    assert [g["name"] for g in rules["groups"]] == [f"llm-budget-{b.name}" for b in budgets]
    for b, g in zip(budgets, rules["groups"], strict=True):
        alerts = [r for r in g["rules"] if "alert" in r]
        assert {a["alert"] for a in alerts} == {
            "LLMBudgetThresholdReached",
            "LLMBudgetExceeded",
            "LLMBudgetExhaustionForecast",
            "LLMBudgetSpendAnomaly",
        }
        assert all(a["labels"]["budget"] == b.name for a in alerts)
        warn = [r for r in g["rules"] if r.get("record") == "llm:budget_warn_percent"]
        assert sorted(float(r["labels"]["level"]) for r in warn) == sorted(b.warn_levels)
    # every alert is tested firing and silent, for every budget
    doc = yaml.safe_load(written[1].read_text()) | {"more": yaml.safe_load(written[2].read_text())}
    text = yaml.safe_dump(doc)
    for b in budgets:
        assert f"{b.name}: burn" in text and f"{b.name}: quiet" in text
    assert "exp_alerts: []" in text or "exp_samples: []" in text


def test_the_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """Not vacuous: a spend off by a step's worth, or a boundary off by an hour, fails."""
    budgets = _budgets(CONFIGS["day-new-york"][:1])
    out = tmp_path / "budgets.yml"
    written = write(budgets, out, "x.yaml", AT)
    good = out.read_text()
    for broken, fails in (
        (good.replace("* 300\n", "* 310\n"), "llm:budget_spend_usd:period"),
        (good.replace("vector(-18000)", "vector(-14400)"), "llm:budget_spend_usd:period"),
        (
            good.replace("group_right() (llm:budget_warn_percent", "group_right() (-1 +"),
            "LLMBudget",
        ),
    ):
        assert broken != good
        out.write_text(broken)
        r = _promtool("test", "rules", *map(str, written[1:]))
        assert r.returncode != 0, broken
        out_text = r.stdout + r.stderr
        assert "FAILED" in out_text and fails in out_text, out_text[-2000:]


def test_committed_stack_rules_equal_the_generator(tmp_path: Path) -> None:
    cfg = load(REPO / STACK_CONFIG)
    assert cfg.budgets, "the stack's sidecar config has budgets"
    assert all(not periods.offsets(b.timezone, AT).changes for b in cfg.budgets), (
        "stack budgets use zones without DST, so the committed file does not depend on the day"
    )
    out = tmp_path / "rules" / STACK_RULES.name
    written = write(cfg.budgets, out, STACK_CONFIG)
    committed = [STACK_RULES, *promtest_paths(STACK_RULES).values()]
    for new, old in zip(written, committed, strict=True):
        assert new.read_text() == old.read_text(), (
            f"{old.relative_to(REPO)} is stale: llm-pipeline rules --config {STACK_CONFIG} "
            f"-o {STACK_RULES.relative_to(REPO)}"
        )


def test_cli_writes_rules(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"budgets": CONFIGS["week-month-east"]}))
    cmd = [sys.executable, "-m", "pipeline.cli", "rules", "--config", str(cfg)]
    r = subprocess.run([*cmd, "--at", "2026-01-15T00:00:00Z"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# Generated by `llm-pipeline rules")
    assert yaml.safe_load(r.stdout)["groups"][0]["name"] == "llm-budget-weekly.tokyo"
    out = tmp_path / "o" / "b.yml"
    r = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(p) for p in [out, *promtest_paths(out).values()]]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"budgets": [{"name": "x", "amount_usd": 1, "period": "yr"}]}))
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "rules", "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "budgets.x.period" in r.stderr


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"name": "a b", "amount_usd": 1}, "name"),
        ({"name": "a", "amount_usd": 0}, "amount_usd"),
        ({"name": "a", "amount_usd": 1, "period": "year"}, "period"),
        ({"name": "a", "amount_usd": 1, "timezone": "Europe/Atlantis"}, "time zone"),
        ({"name": "a", "amount_usd": 1, "selector": {"tenant": "x"}}, "not a cost label"),
        ({"name": "a", "amount_usd": 1, "selector": {"__name__": "x"}}, "not a label name"),
        ({"name": "a", "amount_usd": 1, "warn_levels": [0]}, "warn_levels"),
        ({"name": "a", "amount_usd": 1, "warn_levels": [50, 50]}, "warn_levels"),
        ({"name": "a", "amount_usd": 1, "anomaly_factor": 1}, "anomaly_factor"),
    ],
)
def test_bad_budgets_are_config_errors(budget: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _budgets([budget])
    with pytest.raises(ConfigError, match="each name once"):
        _budgets([{"name": "a", "amount_usd": 1}, {"name": "a", "amount_usd": 2}])


def test_period_boundaries_follow_dst(tmp_path: Path) -> None:
    """New York's day and week start at local midnight in winter (UTC-5) and summer (UTC-4),
    evaluated by promtool at the real 2026 instants, around both DST changes."""
    o = periods.offsets("America/New_York", AT)
    assert [off for _, off in o.changes][:2] == [-4 * 3600, -5 * 3600]
    zone = ZoneInfo("America/New_York")
    cases = []
    for day in ("2026-03-07", "2026-03-09", "2026-11-01", "2026-11-02", "2026-12-28"):
        midnight = datetime.fromisoformat(day).replace(tzinfo=zone).timestamp()
        for t in (midnight - 300, midnight, midnight + 300):
            local = datetime.fromtimestamp(t, zone)
            for period in ("day", "week"):
                want = (local.date() - datetime(1970, 1, 1).date()).days
                if period == "week":
                    want = (local.date() - datetime(1969, 12, 29).date()).days // 7
                cases.append(
                    {
                        "expr": periods.index_expr(period, o, "time()"),
                        "eval_time": f"{int(t)}s",
                        "exp_samples": [{"labels": "{}", "value": want}],
                    }
                )
            start = datetime.combine(local.date(), datetime.min.time(), zone)
            nxt = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)
            if nxt.timestamp() - start.timestamp() != 86400:
                continue  # a DST-change day (23 or 25 h): the rules count 24 (README)
            cases.append(
                {
                    "expr": f"{periods.length_expr('day', o, 'time()')}"
                    f" - {periods.elapsed_expr('day', o, 'time()')}",
                    "eval_time": f"{int(t)}s",
                    "exp_samples": [{"labels": "{}", "value": nxt.timestamp() - t}],
                }
            )
            assert start.timestamp() <= t
    (tmp_path / "empty.yml").write_text("groups: []\n")
    test = {
        "rule_files": ["empty.yml"],
        "evaluation_interval": "10000d",
        "tests": [{"interval": "1m", "input_series": [], "promql_expr_test": cases}],
    }
    (tmp_path / "dst.test.yml").write_text(yaml.safe_dump(test))
    r = _promtool("test", "rules", str(tmp_path / "dst.test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
