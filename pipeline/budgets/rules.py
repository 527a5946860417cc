"""Prometheus recording and alert rules for the configured budgets (`llm-pipeline rules`).

Per budget, one group of recording rules, every series labelled `budget`:
  llm:budget_cost_usd:rate5m / :rate1h      USD/s of the selected gen_ai_client_cost_usd_total
  llm:budget_period_index                   the period's number (changes at the boundary)
  llm:budget_spend_usd:period               USD spent since the period began
  llm:budget_amount_usd, :used_percent      the amount, and spend / amount * 100
  llm:budget_warn_percent{level}            one series per warn level
  llm:budget_exhaustion_seconds             (amount - spend) / the last hour's burn
  llm:budget_period_remaining_seconds, :forecast_horizon_seconds
  llm:budget_cost_usd_per_hour:baseline     the mean of the same hour on the previous 7 days
  llm:budget_anomaly_threshold_usd_per_hour max(anomaly_factor * baseline, the floor)
and, after them in the same group (so they see this evaluation's values), its alerts:
LLMBudgetThresholdReached (one per warn level below 100%, warning), LLMBudgetExceeded (levels
from 100%, critical), LLMBudgetExhaustionForecast, LLMBudgetSpendAnomaly.

Spend in the period: a 5-minute-step subquery sums the recorded 5m burn per period index (a
label made by count_values), the current index's sum is kept, plus the current burn times the
seconds since the last step. Every real zone's offset is a multiple of 5 minutes, so a period starts
on a step and no step straddles a boundary.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml

from . import periods
from .config import BudgetConfig

COST_METRIC = "gen_ai_client_cost_usd_total"
STEP_S = 300
RUNBOOK = "dashboards/rules/RUNBOOK.md"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(b: BudgetConfig) -> str:
    """The cost series of the budget: `{label="value", ...}`, or nothing for all spend."""
    inner = ", ".join(f"{k}={_quote(v)}" for k, v in sorted(b.selector.items()))
    return f"{{{inner}}}" if inner else ""


def _num(x: float) -> str:
    return f"{x:g}" if x == int(x) and abs(x) < 1e15 else repr(x)


def group_name(b: BudgetConfig) -> str:
    return f"llm-budget-{b.name}"


def budget_group(b: BudgetConfig, at: datetime) -> dict[str, Any]:
    o = periods.offsets(b.timezone, at)
    me = f"{{budget={_quote(b.name)}}}"
    cost = f"{COST_METRIC}{selector(b)}"
    amount = _num(b.amount_usd)
    step = f"{STEP_S // 60}m"
    lab = {"budget": b.name}
    # Each step's 5m burn, labelled with its window's period index (count_values turns the
    # recorded index into a label), summed per period; the current period's sum is kept.
    spend = (
        f"(\n  sum(\n    sum_over_time((\n"
        f"        llm:budget_cost_usd:rate5m{me}\n"
        f'        * on() group_left(period) count_values("period", '
        f"llm:budget_window_period_index{me})\n"
        f"      )[{periods.PERIOD_RANGE[b.period]}:{step}])\n"
        f'    and on(period) count_values("period", llm:budget_period_index{me})\n'
        f"  ) * {STEP_S}\n"
        f"  or vector(0)\n)\n"
        f"+ (sum(llm:budget_cost_usd:rate5m{me}) or vector(0)) * (time() % {STEP_S})"
    )
    days_ago = " or ".join(
        f'label_replace(llm:budget_cost_usd:rate1h{me} offset {d}d, "days_ago", "{d}", "", "")'
        for d in range(1, 8)
    )
    rules: list[dict[str, Any]] = [
        # no series without traffic: the spend subquery only visits the steps that had some
        {"record": "llm:budget_cost_usd:rate5m", "expr": f"sum(rate({cost}[5m]))"},
        {"record": "llm:budget_cost_usd:rate1h", "expr": f"sum(rate({cost}[1h])) or vector(0)"},
        {"record": "llm:budget_period_index", "expr": periods.index_expr(b.period, o, "time()")},
        {
            "record": "llm:budget_window_period_index",
            "expr": periods.index_expr(b.period, o, "time() - 1"),
        },
        {"record": "llm:budget_spend_usd:period", "expr": spend},
        {"record": "llm:budget_amount_usd", "expr": f"vector({amount})"},
        {
            "record": "llm:budget_used_percent",
            "expr": f"sum(llm:budget_spend_usd:period{me}) / {amount} * 100",
        },
        *(
            {
                "record": "llm:budget_warn_percent",
                "expr": f"vector({_num(level)})",
                "labels": {"level": _num(level)},
            }
            for level in sorted(b.warn_levels)
        ),
        {
            "record": "llm:budget_period_remaining_seconds",
            "expr": f"{periods.length_expr(b.period, o, 'time()')}"
            f" - {periods.elapsed_expr(b.period, o, 'time()')}",
        },
        {
            "record": "llm:budget_exhaustion_seconds",
            "expr": f"(vector({amount}) - sum(llm:budget_spend_usd:period{me}) > 0)\n"
            f"/ (sum(llm:budget_cost_usd:rate1h{me}) > 0)",
        },
        {
            "record": "llm:budget_forecast_horizon_seconds",
            "expr": f"vector({_num(b.forecast_hours * 3600)})",
        },
        {
            "record": "llm:budget_cost_usd_per_hour:baseline",
            "expr": f"avg({days_ago}) * 3600\nand on() count({days_ago}) >= {b.anomaly_min_days}",
        },
        {
            "record": "llm:budget_anomaly_threshold_usd_per_hour",
            "expr": f"clamp_min(sum(llm:budget_cost_usd_per_hour:baseline{me})"
            f" * {_num(b.anomaly_factor)}, {_num(b.anomaly_min_usd_per_hour)})",
        },
    ]
    for r in rules:
        r["labels"] = {**lab, **r.get("labels", {})}
    # the alerts in the same group, after the records: evaluated on this evaluation's values
    for a in ALERTS:
        # the budget label on the rule too: promtool's lint takes rules of one name and
        # the same labels for duplicates
        labels = {"budget": b.name, **a["labels"]}
        rules.append({**a, "expr": a["expr"].replace("{budget}", me), "labels": labels})
    return {"name": group_name(b), "rules": rules}


def _alert(
    name: str, expr: str, severity: str, summary: str, description: str, for_: str = ""
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, "component": "llm-app"}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{RUNBOOK}#{name.lower()}",
    }
    return rule


ALERTS: list[dict[str, Any]] = [
    _alert(
        "LLMBudgetThresholdReached",
        "llm:budget_used_percent{budget} >= on(budget) group_right()"
        " (llm:budget_warn_percent{budget} < 100)",
        "warning",
        "LLM budget {{ $labels.budget }} passed {{ $labels.level }}% of its amount",
        "Spend in the current period of budget {{ $labels.budget }} has reached its "
        "{{ $labels.level }}% warn level. See the Cost explorer dashboard's budget burn.",
    ),
    _alert(
        "LLMBudgetExceeded",
        "llm:budget_used_percent{budget} >= on(budget) group_right()"
        " (llm:budget_warn_percent{budget} >= 100)",
        "critical",
        "LLM budget {{ $labels.budget }} is at {{ $labels.level }}% of its amount",
        "Spend in the current period of budget {{ $labels.budget }} has reached "
        "{{ $labels.level }}% of the amount.",
    ),
    _alert(
        "LLMBudgetExhaustionForecast",
        "llm:budget_exhaustion_seconds{budget}"
        " <= on(budget) llm:budget_forecast_horizon_seconds{budget}\n"
        "and on(budget) llm:budget_exhaustion_seconds{budget}"
        " < on(budget) llm:budget_period_remaining_seconds{budget}",
        "warning",
        "LLM budget {{ $labels.budget }} runs out before its period ends",
        "At the last hour's burn, budget {{ $labels.budget }} is exhausted within its forecast "
        "horizon and before the period ends.",
        "10m",
    ),
    _alert(
        "LLMBudgetSpendAnomaly",
        "llm:budget_cost_usd:rate1h{budget} * 3600"
        " > on(budget) llm:budget_anomaly_threshold_usd_per_hour{budget}",
        "warning",
        "LLM budget {{ $labels.budget }}: unusual spend this hour",
        "The last hour's spend of budget {{ $labels.budget }} is above its anomaly factor "
        "times the mean of the same hour on the previous days.",
        "15m",
    ),
]


def generate(budgets: list[BudgetConfig], at: datetime | None = None) -> dict[str, Any]:
    at = at or datetime.now(UTC)
    return {"groups": [budget_group(b, at) for b in budgets]}


def header(budgets: list[BudgetConfig], at: datetime | None, source: str) -> str:
    at = at or datetime.now(UTC)
    lines = [
        f"# Generated by `llm-pipeline rules --config {source}`: do not edit; change the",
        "# config's budgets and generate again. Needs Prometheus retention >= the longest",
        "# period (31d for a month) plus 7d for the spend-anomaly baseline.",
    ]
    for b in budgets:
        o = periods.offsets(b.timezone, at)
        if o.changes:
            lines.append(
                f"# {b.name}: {b.timezone}'s UTC offset changes are exact until "
                f"{o.valid_until:%Y-%m-%d}; generate again before then."
            )
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.ScalarNode:
    style = "|" if "\n" in s or len(s) > 90 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def render(budgets: list[BudgetConfig], source: str, at: datetime | None = None) -> str:
    return header(budgets, at, source) + dump(generate(budgets, at))
