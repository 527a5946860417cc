"""The LLM overview board: calls, errors, latency, tokens and cost by service, provider and
model.
"""

from __future__ import annotations

from typing import Any

from panels import (
    COST,
    DUR,
    FB,
    RI,
    TOKENS,
    TPOT,
    TTFT,
    USAGE,
    Board,
    S,
    dashboard,
    link,
    percentiles,
    q,
    stat_options,
    thresholds,
    ts_options,
    var_datasource,
    var_query,
)

FILE = "llm-overview.json"


def build() -> dict[str, Any]:
    b = Board()
    calls = f"{DUR}_count{{{S}}}"
    errors = f'{DUR}_count{{{S}, error_type!=""}}'

    b.row("Overview")
    b.add(
        "stat",
        "Sidecar",
        [q('min(up{job="llm-pipeline"})', "up")],
        w=4,
        h=4,
        description='Is Prometheus scraping the llm-pipeline sidecar (up{job="llm-pipeline"})?',
        options=stat_options(),
        defaults={
            "mappings": [
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "DOWN", "color": "red", "index": 0},
                        "1": {"text": "UP", "color": "green", "index": 1},
                    },
                }
            ],
            "thresholds": thresholds((None, "red"), (1, "green")),
        },
    )
    b.add(
        "stat",
        "Requests / min",
        [q(f"sum(llm:requests:rate5m{{{S}}}) * 60", "req/min")],
        w=4,
        h=4,
        unit="reqpm",
        options=stat_options(),
        description="LLM calls per minute (5m average, recording rule llm:requests:rate5m).",
    )
    b.add(
        "stat",
        "Error rate",
        [q(f"(sum(rate({errors}[{RI}])) or on() vector(0)) / sum(rate({calls}[{RI}]))", "errors")],
        w=4,
        h=4,
        unit="percentunit",
        options=stat_options(),
        defaults={
            "decimals": 2,
            "thresholds": thresholds((None, "green"), (0.01, "orange"), (0.05, "red")),
        },
        description="Share of calls with error_type set.",
    )
    b.add(
        "stat",
        "Fallback rate",
        [
            q(
                f"(sum(rate(gen_ai_client_fallbacks_total{{{FB}}}[{RI}])) or on() vector(0))"
                f" / sum(rate({calls}[{RI}]))",
                "fallbacks",
            )
        ],
        w=4,
        h=4,
        unit="percentunit",
        options=stat_options(),
        defaults={"decimals": 2, "thresholds": thresholds((None, "green"), (0.1, "orange"))},
        description="Fallbacks (a failed call followed by a successful call to another "
        "provider/model) per call.",
    )
    b.add(
        "stat",
        "Cost / hour",
        [q(f"sum(llm:cost_usd_per_hour:rate5m{{{S}}})", "USD/h")],
        w=4,
        h=4,
        unit="currencyUSD",
        options=stat_options(),
        description="Spend rate at the last 5 minutes' pace (llm:cost_usd_per_hour:rate5m).",
    )
    b.add(
        "stat",
        "Cost last 24h",
        [q(f"sum(increase({COST}{{{S}}}[24h]))", "USD")],
        w=4,
        h=4,
        unit="currencyUSD",
        options=stat_options(),
        description="Spend over the last 24 hours.",
    )

    b.row("Traffic and errors")
    b.add(
        "timeseries",
        "Requests / min by provider and model",
        [
            q(
                f"sum by (gen_ai_provider_name, gen_ai_request_model) (rate({calls}[{RI}])) * 60",
                "{{gen_ai_provider_name}} / {{gen_ai_request_model}}",
            )
        ],
        w=12,
        h=8,
        unit="reqpm",
        options=ts_options(["mean", "lastNotNull"]),
        defaults={"custom": {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 20}},
    )
    b.add(
        "timeseries",
        "Error rate by error type",
        [
            q(
                f"sum by (error_type) (rate({errors}[{RI}]))"
                f" / on() group_left() sum(rate({calls}[{RI}])) or on() vector(0)",
                "{{error_type}}",
            )
        ],
        w=12,
        h=8,
        unit="percentunit",
        options=ts_options(["mean", "max"]),
        description="Share of all calls failing, by error type (0 when nothing fails).",
    )
    b.add(
        "timeseries",
        "Fallbacks / min (from → to)",
        [
            q(
                "sum by (from_provider, from_model, to_provider, to_model) "
                f"(rate(gen_ai_client_fallbacks_total{{{FB}}}[{RI}])) * 60 or on() vector(0)",
                "{{from_provider}}/{{from_model}} → {{to_provider}}/{{to_model}}",
            )
        ],
        w=12,
        h=8,
        options=ts_options(["mean", "max"]),
    )
    b.add(
        "timeseries",
        "Retries / min",
        [
            q(
                "sum by (gen_ai_provider_name, gen_ai_request_model) "
                f"(rate(gen_ai_client_retries_total{{{S}}}[{RI}])) * 60 or on() vector(0)",
                "{{gen_ai_provider_name}} / {{gen_ai_request_model}}",
            )
        ],
        w=12,
        h=8,
        options=ts_options(["mean", "max"]),
        description="A failed call followed by a call to the same provider and model.",
    )

    b.row("Latency")
    b.add(
        "timeseries",
        "Call duration p50 / p90 / p99",
        percentiles(DUR, S),
        w=12,
        h=8,
        unit="s",
        options=ts_options(["mean", "max"]),
        description="Click an exemplar (dot) to open the call's trace in Tempo.",
    )
    b.add(
        "timeseries",
        "Call duration p95 by model",
        [
            q(
                f"histogram_quantile(0.95, sum by (le, gen_ai_request_model) "
                f"(rate({DUR}_bucket{{{S}}}[{RI}])))",
                "{{gen_ai_request_model}}",
                exemplar=True,
            )
        ],
        w=12,
        h=8,
        unit="s",
        options=ts_options(["mean", "max"]),
    )
    b.add(
        "timeseries",
        "Time to first token p50 / p90 / p99",
        percentiles(TTFT, S),
        w=12,
        h=8,
        unit="s",
        options=ts_options(["mean", "max"]),
        description="Streamed calls only: time from the request to the first chunk.",
    )
    b.add(
        "timeseries",
        "Time per output token p50 / p90 / p99",
        percentiles(TPOT, S),
        w=12,
        h=8,
        unit="s",
        options=ts_options(["mean", "max"]),
        description="Streamed calls only: time between output chunks after the first.",
    )
    b.add(
        "heatmap",
        "Time to first token distribution",
        [
            q(
                f"sum by (le) (increase({TTFT}_bucket{{{S}}}[{RI}]))",
                "{{le}}",
                exemplar=True,
                fmt="heatmap",
            )
        ],
        w=12,
        h=8,
        unit="s",
        options={
            "calculate": False,
            "yAxis": {"unit": "s"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5, "steps": 64},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "filterValues": {"le": 1e-9},
        },
    )
    b.add(
        "timeseries",
        "SLO error-budget burn rate (1h)",
        [
            q(
                'llm:slo_availability:error_ratio_rate1h{service_name=~"$service"}'
                " / on() group_left() (1 - llm:slo_availability:objective)",
                "{{service_name}} availability",
            ),
            q(
                'llm:slo_ttft:slow_ratio_rate1h{service_name=~"$service"}'
                " / on() group_left() (1 - llm:slo_ttft:objective)",
                "{{service_name}} TTFT ≤ 1.28s",
            ),
        ],
        w=12,
        h=8,
        options=ts_options(["lastNotNull", "max"]),
        description="1 = spending the error budget exactly as fast as a 30-day SLO allows. "
        "Pages at 14.4 (1h and 5m) or 6 (6h and 30m); see dashboards/rules.",
        defaults={
            "custom": {"thresholdsStyle": {"mode": "line+area"}},
            "thresholds": thresholds((None, "green"), (1, "yellow"), (6, "orange"), (14.4, "red")),
        },
    )

    b.row("Tokens")
    b.add(
        "timeseries",
        "Tokens / min by type",
        [
            q(
                f"sum by (gen_ai_token_type) (rate({TOKENS}{{{S}}}[{RI}])) * 60",
                "{{gen_ai_token_type}}",
            )
        ],
        w=12,
        h=8,
        options=ts_options(["mean", "lastNotNull"]),
        description="input includes cache_read and cache_creation; output includes reasoning.",
    )
    b.add(
        "timeseries",
        "Tokens per call p50 / p95",
        [
            q(
                f"histogram_quantile({p}, sum by (le, gen_ai_token_type) "
                f"(rate({USAGE}_bucket{{{S}}}[{RI}])))",
                f"p{int(p * 100)} {{{{gen_ai_token_type}}}}",
                exemplar=True,
            )
            for p in (0.5, 0.95)
        ],
        w=12,
        h=8,
        options=ts_options(["mean", "max"]),
    )
    cache = f'{TOKENS}{{{S}, gen_ai_token_type="cache_read"}}'
    inp = f'{TOKENS}{{{S}, gen_ai_token_type="input"}}'
    b.add(
        "stat",
        "Prompt-cache share",
        [q(f"(sum(rate({cache}[{RI}])) or on() vector(0)) / sum(rate({inp}[{RI}]))", "cached")],
        w=6,
        h=8,
        unit="percentunit",
        options=stat_options(),
        description="cache_read tokens / input tokens: the share of prompt tokens served from "
        "the provider's prompt cache.",
    )
    b.add(
        "timeseries",
        "Prompt-cache share by model",
        [
            q(
                f"(sum by (gen_ai_request_model) (rate({cache}[{RI}]))"
                f" or sum by (gen_ai_request_model) (rate({inp}[{RI}])) * 0)"
                f" / sum by (gen_ai_request_model) (rate({inp}[{RI}]))",
                "{{gen_ai_request_model}}",
            )
        ],
        w=9,
        h=8,
        unit="percentunit",
        options=ts_options(["mean"]),
    )
    b.add(
        "timeseries",
        "Output tokens / s by model",
        [
            q(
                f'sum by (gen_ai_request_model) (rate({TOKENS}{{{S}, gen_ai_token_type="output"}}'
                f"[{RI}]))",
                "{{gen_ai_request_model}}",
            )
        ],
        w=9,
        h=8,
        options=ts_options(["mean", "max"]),
    )

    b.row("Cost")
    b.add(
        "timeseries",
        "Cost per hour by model",
        [
            q(
                "sum by (gen_ai_provider_name, gen_ai_request_model) "
                f"(llm:cost_usd_per_hour:rate5m{{{S}}})",
                "{{gen_ai_provider_name}} / {{gen_ai_request_model}}",
            ),
            q("llm:cost_ceiling_usd_per_hour", "ceiling (all services)"),
        ],
        w=12,
        h=8,
        unit="currencyUSD",
        options=ts_options(["mean", "max"]),
        defaults={"custom": {"stacking": {"mode": "none"}}},
        overrides=[
            {
                "matcher": {"id": "byName", "options": "ceiling (all services)"},
                "properties": [
                    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                    {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                ],
            }
        ],
    )
    b.add(
        "timeseries",
        "Cost per hour by service",
        [q(f"sum by (service_name) (llm:cost_usd_per_hour:rate5m{{{S}}})", "{{service_name}}")],
        w=12,
        h=8,
        unit="currencyUSD",
        options=ts_options(["mean", "max"]),
        defaults={"custom": {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 20}},
    )
    b.add(
        "bargauge",
        "Cost per day by service and model",
        [
            q(
                f"sum by (service_name, gen_ai_request_model) (increase({COST}{{{S}}}[24h]))",
                "{{service_name}} / {{gen_ai_request_model}}",
                instant=True,
            )
        ],
        w=12,
        h=8,
        unit="currencyUSD",
        options={
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
            "valueMode": "color",
        },
        description="Spend over the last 24 hours.",
    )
    b.add(
        "piechart",
        "Calls by provider",
        [
            q(
                f"sum by (gen_ai_provider_name) (increase({calls}[$__range]))",
                "{{gen_ai_provider_name}}",
                instant=True,
            )
        ],
        w=12,
        h=8,
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "pieType": "donut",
            "legend": {
                "displayMode": "table",
                "placement": "right",
                "showLegend": True,
                "values": ["value", "percent"],
            },
        },
    )

    b.row("Models")
    by = "gen_ai_provider_name, gen_ai_request_model"
    top = b.add(
        "table",
        "Top models (time range)",
        [
            q(f"topk(10, sum by ({by}) (increase({calls}[$__range])))", instant=True, fmt="table"),
            q(f"sum by ({by}) (increase({COST}{{{S}}}[$__range]))", instant=True, fmt="table"),
            q(
                f'sum by ({by}) (increase({TOKENS}{{{S}, gen_ai_token_type=~"input|output"}}'
                f"[$__range]))",
                instant=True,
                fmt="table",
            ),
            q(
                f"histogram_quantile(0.95, sum by (le, {by}) (rate({DUR}_bucket{{{S}}}[$__range])))",
                instant=True,
                fmt="table",
            ),
            q(
                f"(sum by ({by}) (increase({errors}[$__range]))"
                f" or sum by ({by}) (increase({calls}[$__range])) * 0)"
                f" / sum by ({by}) (increase({calls}[$__range]))",
                instant=True,
                fmt="table",
            ),
        ],
        w=24,
        h=10,
        description="The ten most-called models in the time range.",
        options={
            "showHeader": True,
            "sortBy": [{"displayName": "Calls", "desc": True}],
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
        },
        transformations=[
            {"id": "merge", "options": {}},
            {
                "id": "filterByValue",
                "options": {
                    "filters": [
                        {"fieldName": "Value #A", "config": {"id": "isNull", "options": {}}}
                    ],
                    "type": "exclude",
                    "match": "any",
                },
            },
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {
                        "gen_ai_provider_name": "Provider",
                        "gen_ai_request_model": "Model",
                        "Value #A": "Calls",
                        "Value #B": "Cost (USD)",
                        "Value #C": "Tokens",
                        "Value #D": "p95 duration",
                        "Value #E": "Error share",
                    },
                },
            },
        ],
    )
    top["fieldConfig"]["overrides"] = [
        {
            "matcher": {"id": "byName", "options": n},
            "properties": [{"id": "unit", "value": u}, {"id": "decimals", "value": d}],
        }
        for n, u, d in (
            ("Calls", "short", 0),
            ("Cost (USD)", "currencyUSD", 2),
            ("Tokens", "short", 0),
            ("p95 duration", "s", 2),
            ("Error share", "percentunit", 2),
        )
    ]

    return dashboard(
        "llm-overview",
        "LLM overview",
        "LLM calls from the llm-pipeline sidecar's gen_ai_* metrics: traffic, errors, latency, "
        "time to first token, tokens, cost and prompt caching. Exemplars link to Tempo traces.",
        ["llm", "genai", "opentelemetry"],
        [
            var_datasource(),
            var_query("service", "Service", f"label_values({DUR}_count, service_name)"),
            var_query(
                "provider",
                "Provider",
                f'label_values({DUR}_count{{service_name=~"$service"}}, gen_ai_provider_name)',
            ),
            var_query(
                "model",
                "Model",
                f'label_values({DUR}_count{{service_name=~"$service", '
                f'gen_ai_provider_name=~"$provider"}}, gen_ai_request_model)',
            ),
        ],
        b,
        [link("LLM pipeline health", "llm-pipeline-health")],
    )
