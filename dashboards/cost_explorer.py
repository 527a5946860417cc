"""The "Cost explorer" dashboard: who and what spent it, cost per request, budgets, prompt cache.

Built with the helpers of panels.py, listed in BOARDS in build.py. Spend by dimension needs the
sidecar's `dimensions:` (labels `tenant`, `user`, `team`, `feature` on
gen_ai_client_cost_usd_total), cost per request `attribution: {requests: true}`, and the budget
panels the rules `llm-pipeline rules` writes.
"""

from __future__ import annotations

from typing import Any

from panels import (
    RI,
    Board,
    dashboard,
    link,
    q,
    stat_options,
    thresholds,
    ts_options,
    var_datasource,
    var_query,
)

FILE = "cost-explorer.json"
COST = "gen_ai_client_cost_usd_total"
REQ = "llm_pipeline_request_cost_usd"
SAVED = "llm_pipeline_cache_savings_usd_total"
SV = 'service_name=~"$service"'


def _by(b: Board, dim: str, title: str) -> None:
    b.add(
        "timeseries",
        f"Spend per hour by {title}",
        [q(f"topk(10, sum by ({dim}) (rate({COST}{{{SV}}}[{RI}]))) * 3600", f"{{{{{dim}}}}}")],
        w=12,
        h=8,
        unit="currencyUSD",
        description=f"USD per hour, the 10 largest {title} values (`__other__`: the folded "
        "rest, see dimensions in the README).",
        options=ts_options(["mean", "max"]),
    )


def build() -> dict[str, Any]:
    b = Board()
    b.row("Who spent it")
    b.add(
        "stat",
        "Spend in range",
        [q(f"sum(increase({COST}{{{SV}}}[$__range]))", "USD", instant=True)],
        w=6,
        h=6,
        unit="currencyUSD",
        options=stat_options(),
    )
    b.add(
        "timeseries",
        "Spend per hour by model",
        [
            q(
                f"sum by (gen_ai_provider_name, gen_ai_request_model) "
                f"(rate({COST}{{{SV}}}[{RI}])) * 3600",
                "{{gen_ai_provider_name}} {{gen_ai_request_model}}",
            )
        ],
        w=18,
        h=6,
        unit="currencyUSD",
        options=ts_options(["mean", "max"]),
    )
    for dim, title in (("tenant", "tenant"), ("user", "user"), ("team", "team")):
        _by(b, dim, title)
    _by(b, "feature", "feature")
    b.add(
        "table",
        "Top spenders",
        [
            q(
                f"topk(20, sum by (tenant, user) (increase({COST}{{{SV}}}[$__range])))",
                instant=True,
                fmt="table",
            )
        ],
        w=24,
        h=8,
        unit="currencyUSD",
        description="The 20 tenant and user pairs that spent most in the time range.",
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
    )
    b.row("Cost per request")
    b.add(
        "timeseries",
        "Cost per request p50 / p90 / p99",
        [
            q(
                f"histogram_quantile({p}, sum by (le) (rate({REQ}_bucket{{{SV}}}[{RI}])))",
                f"p{int(p * 100)}",
                exemplar=True,
            )
            for p in (0.5, 0.9, 0.99)
        ],
        w=12,
        h=8,
        unit="currencyUSD",
        description="Total cost of the LLM calls in one user request (trace). The exemplars "
        "open the most expensive traces.",
        options=ts_options(["mean", "max"]),
    )
    b.add(
        "timeseries",
        "Mean cost per request by root span",
        [
            q(
                f"sum by (root_span_name) (rate({REQ}_sum{{{SV}}}[{RI}]))"
                f" / sum by (root_span_name) (rate({REQ}_count{{{SV}}}[{RI}]))",
                "{{root_span_name}}",
            )
        ],
        w=12,
        h=8,
        unit="currencyUSD",
        options=ts_options(["mean", "max"]),
    )
    b.row("Budgets")
    b.add(
        "bargauge",
        "Budget used",
        [q("max by (budget) (llm:budget_used_percent)", "{{budget}}", instant=True)],
        w=8,
        h=8,
        unit="percent",
        description="Spend in the current period over the budget's amount (config budgets:, "
        "rules from `llm-pipeline rules`).",
        options={"orientation": "horizontal", "displayMode": "gradient"},
        defaults={
            "min": 0,
            "max": 100,
            "thresholds": thresholds((None, "green"), (80, "orange"), (100, "red")),
        },
    )
    b.add(
        "timeseries",
        "Budget burn: spend in period vs amount",
        [
            q("max by (budget) (llm:budget_spend_usd:period)", "{{budget}} spent"),
            q("max by (budget) (llm:budget_amount_usd)", "{{budget}} amount"),
        ],
        w=10,
        h=8,
        unit="currencyUSD",
        options=ts_options(["last"]),
    )
    b.add(
        "bargauge",
        "Hours to exhaustion at the current burn",
        [q("min by (budget) (llm:budget_exhaustion_seconds) / 3600", "{{budget}}", instant=True)],
        w=6,
        h=8,
        unit="h",
        options={"orientation": "horizontal", "displayMode": "basic"},
        defaults={"thresholds": thresholds((None, "red"), (24, "orange"), (72, "green"))},
    )
    b.row("Prompt cache")
    b.add(
        "stat",
        "Saved by cache reads in range",
        [q(f"sum(increase({SAVED}{{{SV}}}[$__range]))", "USD", instant=True)],
        w=6,
        h=7,
        unit="currencyUSD",
        options=stat_options(),
    )
    b.add(
        "timeseries",
        "Cache savings per hour by model",
        [
            q(
                f"sum by (gen_ai_request_model) (llm:cache_savings_usd_per_hour:rate5m{{{SV}}})",
                "{{gen_ai_request_model}}",
            )
        ],
        w=9,
        h=7,
        unit="currencyUSD",
        description="(input price - cache-read price) x cache-read tokens, per hour.",
        options=ts_options(["mean"]),
    )
    b.add(
        "timeseries",
        "Cache hit ratio by model",
        [
            q(
                f"max by (gen_ai_request_model) (llm:cache_hit_ratio:rate5m{{{SV}}})",
                "{{gen_ai_request_model}}",
            )
        ],
        w=9,
        h=7,
        unit="percentunit",
        description="Cache-read tokens / input tokens.",
        options=ts_options(["mean"]),
        defaults={"min": 0, "max": 1},
    )
    return dashboard(
        "llm-cost-explorer",
        "Cost explorer",
        "Who and what spent it: spend by tenant, user, team, feature and model, cost per "
        "request with exemplars to the most expensive traces, budget burn, prompt-cache "
        "savings.",
        ["llm", "genai", "cost"],
        [
            var_datasource(),
            var_query("service", "Service", f"label_values({COST}, service_name)"),
        ],
        b,
        [link("LLM overview", "llm-overview")],
    )
