"""The pieces every dashboard is built from: queries, the panel grid, options, variables.

The template variables' label filters (S, FB, INST) and the metric names (README.md's metric
reference) live here, so two boards cannot spell one series two ways.
"""

from __future__ import annotations

from typing import Any

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
