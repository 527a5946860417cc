#!/usr/bin/env python3
"""Generates the Grafana dashboards in this folder: `python3 dashboards/build.py`.

The JSON files are what Grafana provisions (compose/grafana/provisioning/dashboards); this script
is their source, so edit here and regenerate (tests/stack checks the JSON is up to date).
Every query is written against the metric reference in README.md and the recording rules in
dashboards/rules/llm-recording.yml. Panels whose series legitimately do not exist on a healthy
system (rejections, drops, overflow, fallbacks...) end in `or on() vector(0)`, so they show 0
rather than "No data" (and tests/stack/test_dashboard_queries.py can require every query to
return something).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}

# Label filters from the template variables.
S = 'service_name=~"$service", gen_ai_provider_name=~"$provider", gen_ai_request_model=~"$model"'
FB = 'service_name=~"$service", from_provider=~"$provider", from_model=~"$model"'
INST = 'instance=~"$instance"'

DUR = "gen_ai_client_operation_duration_seconds"
TTFT = "gen_ai_client_operation_time_to_first_chunk_seconds"
TPOT = "gen_ai_client_operation_time_per_output_chunk_seconds"
USAGE = "gen_ai_client_token_usage"
TOKENS = "gen_ai_client_tokens_total"
COST = "gen_ai_client_cost_usd_total"
RI = "$__rate_interval"


def q(
    expr: str,
    legend: str = "",
    *,
    exemplar: bool = False,
    instant: bool = False,
    fmt: str | None = None,
) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "exemplar": exemplar,
    }
    if fmt:
        t["format"] = fmt
    return t


class Board:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(
        self,
        kind: str,
        title: str,
        targets: list[dict[str, Any]],
        *,
        w: int,
        h: int,
        unit: str = "short",
        description: str = "",
        options: dict[str, Any] | None = None,
        defaults: dict[str, Any] | None = None,
        overrides: list[dict[str, Any]] | None = None,
        transformations: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        if self.x + w > 24:
            self._newline()
        refs = iter("ABCDEFGHIJ")
        for t in targets:
            t["refId"] = next(refs)
        panel: dict[str, Any] = {
            "type": kind,
            "id": self._id(),
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": targets,
            "fieldConfig": {
                "defaults": {"unit": unit, **(defaults or {})},
                "overrides": overrides or [],
            },
            "options": options or {},
        }
        if transformations:
            panel["transformations"] = transformations
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel

    def _newline(self) -> None:
        self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def _id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i


def ts_options(legend_calcs: list[str] | None = None) -> dict[str, Any]:
    return {
        "legend": {
            "displayMode": "table" if legend_calcs else "list",
            "placement": "bottom",
            "showLegend": True,
            "calcs": legend_calcs or [],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def stat_options(text_mode: str = "auto") -> dict[str, Any]:
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "textMode": text_mode,
        "orientation": "auto",
    }


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def var_datasource() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "hide": 0,
        "refresh": 1,
        "current": {"selected": False, "text": "Prometheus", "value": "prometheus"},
    }


def var_query(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "regex": "",
        "options": [],
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    tags: list[str],
    variables: list[dict[str, Any]],
    board: Board,
    links: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "refresh": "30s",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": links,
        "templating": {"list": variables},
        "panels": board.panels,
    }


def link(title: str, uid: str) -> dict[str, Any]:
    return {
        "title": title,
        "type": "link",
        "url": f"/d/{uid}",
        "icon": "dashboard",
        "keepTime": True,
        "includeVars": False,
        "targetBlank": False,
        "tooltip": "",
        "asDropdown": False,
        "tags": [],
    }


def percentiles(metric: str, sel: str, by: str = "") -> list[dict[str, Any]]:
    grp = f"le, {by}" if by else "le"
    return [
        q(
            f"histogram_quantile({p}, sum by ({grp}) (rate({metric}_bucket{{{sel}}}[{RI}])))",
            f"p{int(p * 100)}" + (f" {{{{{by}}}}}" if by else ""),
            exemplar=True,
        )
        for p in (0.5, 0.9, 0.99)
    ]


# ---------------------------------------------------------------------------------------------
def llm_overview() -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------
def pipeline_health() -> dict[str, Any]:
    b = Board()
    b.row("Sidecar")
    b.add(
        "stat",
        "Sidecar up",
        [q(f'up{{job="llm-pipeline", {INST}}}', "{{instance}}")],
        w=6,
        h=4,
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
        "Version",
        [q(f"llm_pipeline_build_info{{{INST}}}", "{{version}}")],
        w=6,
        h=4,
        options=stat_options("name"),
    )
    b.add(
        "stat",
        "Series exposed",
        [q(f'sum(scrape_samples_scraped{{job="llm-pipeline", {INST}}})', "samples")],
        w=6,
        h=4,
        options=stat_options(),
        description="Samples per scrape of /metrics; the cardinality guard caps each family "
        "at metrics.max_series label sets.",
    )
    b.add(
        "stat",
        "Scrape duration",
        [q(f'max(scrape_duration_seconds{{job="llm-pipeline", {INST}}})', "scrape")],
        w=6,
        h=4,
        unit="s",
        options=stat_options(),
    )

    b.row("Intake")
    b.add(
        "timeseries",
        "Received items / s",
        [
            q(
                f"sum by (signal, transport) (rate(llm_pipeline_received_items_total{{{INST}}}[{RI}]))",
                "{{signal}} ({{transport}})",
            )
        ],
        w=8,
        h=8,
        options=ts_options(["mean", "max"]),
        description="Spans, log records and data points accepted.",
    )
    b.add(
        "timeseries",
        "Rejected items / s by reason",
        [
            q(
                f"sum by (signal, reason) (rate(llm_pipeline_rejected_items_total{{{INST}}}[{RI}]))"
                " or on() vector(0)",
                "{{signal}}: {{reason}}",
            )
        ],
        w=8,
        h=8,
        options=ts_options(["mean", "max"]),
    )
    b.add(
        "timeseries",
        "LLM spans recognised / s",
        [
            q(
                f"sum by (convention) (rate(llm_pipeline_llm_spans_total{{{INST}}}[{RI}]))",
                "{{convention}}",
            )
        ],
        w=8,
        h=8,
        options=ts_options(["mean"]),
        description="Spans recognised as LLM calls, by the attribute convention they use.",
    )

    b.row("Export")
    b.add(
        "timeseries",
        "Exported items / s",
        [
            q(
                f"sum by (signal, exporter) (rate(llm_pipeline_exported_items_total{{{INST}}}[{RI}]))",
                "{{signal}} → {{exporter}}",
            )
        ],
        w=8,
        h=8,
        options=ts_options(["mean"]),
    )
    b.add(
        "timeseries",
        "Export failures / s",
        [
            q(
                f"sum by (signal, exporter) (rate(llm_pipeline_export_failures_total{{{INST}}}[{RI}]))"
                " or on() vector(0)",
                "{{signal}} → {{exporter}}",
            )
        ],
        w=8,
        h=8,
        options=ts_options(["mean", "max"]),
        description="Failed attempts, retried or not.",
    )
    b.add(
        "timeseries",
        "Dropped items / s",
        [
            q(
                "sum by (signal, exporter, reason) "
                f"(rate(llm_pipeline_dropped_items_total{{{INST}}}[{RI}])) or on() vector(0)",
                "{{signal}} → {{exporter}}: {{reason}}",
            )
        ],
        w=8,
        h=8,
        options=ts_options(["mean", "max"]),
        description="Items given up on: telemetry lost.",
    )
    b.add(
        "timeseries",
        "Queue size vs capacity",
        [
            q(
                f"sum by (signal, exporter) (llm_pipeline_queue_size{{{INST}}})",
                "{{signal}} → {{exporter}} size",
            ),
            q(
                f"sum by (signal, exporter) (llm_pipeline_queue_capacity{{{INST}}})",
                "{{signal}} → {{exporter}} capacity",
            ),
        ],
        w=16,
        h=8,
        options=ts_options(["lastNotNull", "max"]),
        overrides=[
            {
                "matcher": {"id": "byRegexp", "options": ".*capacity"},
                "properties": [
                    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}
                ],
            }
        ],
    )
    b.add(
        "gauge",
        "Queue utilization",
        [q("llm_pipeline:queue_utilization:ratio", "{{signal}} → {{exporter}}")],
        w=8,
        h=8,
        unit="percentunit",
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showThresholdLabels": False,
            "showThresholdMarkers": True,
        },
        defaults={
            "min": 0,
            "max": 1,
            "thresholds": thresholds((None, "green"), (0.5, "yellow"), (0.8, "red")),
        },
        description="Alert LLMPipelineQueueNearFull above 80%.",
    )

    b.row("Data quality")
    b.add(
        "table",
        "Unpriced LLM spans (time range)",
        [
            q(
                "sum by (gen_ai_provider_name, gen_ai_request_model) "
                f"(increase(llm_pipeline_unpriced_spans_total{{{INST}}}[$__range])) or on() vector(0)",
                instant=True,
                fmt="table",
            )
        ],
        w=8,
        h=8,
        description="Models with no known price: their cost is missing. Add price_overrides.",
        options={"showHeader": True, "cellHeight": "sm"},
        transformations=[
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {
                        "gen_ai_provider_name": "Provider",
                        "gen_ai_request_model": "Model",
                        "Value": "Spans",
                    },
                },
            }
        ],
    )
    b.add(
        "timeseries",
        "Cardinality overflow / s",
        [
            q(
                f"sum by (metric) (rate(llm_pipeline_cardinality_overflow_total{{{INST}}}[{RI}]))"
                " or on() vector(0)",
                "{{metric}}",
            )
        ],
        w=8,
        h=8,
        options=ts_options(["mean", "max"]),
        description="Observations folded into the __other__ series (metrics.max_series).",
    )
    b.add(
        "timeseries",
        "Redactions / s by type",
        [
            q(
                f"sum by (type) (rate(llm_pipeline_redactions_total{{{INST}}}[{RI}])) or on() vector(0)",
                "{{type}}",
            )
        ],
        w=8,
        h=8,
        options=ts_options(["mean", "max"]),
    )

    return dashboard(
        "llm-pipeline-health",
        "LLM pipeline health",
        "The llm-pipeline sidecar's own telemetry (llm_pipeline_*): intake, rejections, export, "
        "queues, drops, unpriced models, cardinality overflow and redactions.",
        ["llm", "opentelemetry", "pipeline"],
        [
            var_datasource(),
            var_query("instance", "Sidecar", 'label_values(up{job="llm-pipeline"}, instance)'),
        ],
        b,
        [link("LLM overview", "llm-overview")],
    )


def _cost_explorer() -> dict[str, Any]:
    import cost_explorer  # type: ignore[import-not-found]  # beside this file

    result: dict[str, Any] = cost_explorer.build()
    return result


BOARDS = {
    "llm-overview.json": llm_overview,
    "pipeline-health.json": pipeline_health,
    "cost-explorer.json": _cost_explorer,
}


def render(name: str) -> str:
    return json.dumps(BOARDS[name](), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in BOARDS:
        path = HERE / name
        text = render(name)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date (run python3 dashboards/build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
