"""Every PromQL expression the stack ships, and the README metric contract they are held to.

Sources: the panels and template variables of dashboards/*.json, the Tempo data source's
tracesToMetrics queries (compose/grafana/provisioning/datasources/datasources.yaml) and the
recording and alerting rules (dashboards/rules/*.yml).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
DATASOURCES = REPO / "compose" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
RULE_FILES = sorted((REPO / "dashboards" / "rules").glob("*.yml"))
README = REPO / "README.md"

# Values the template variables stand for in tests: "All" (the variables' allValue) for the
# label filters, and what Grafana substitutes for its built-ins.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$__tags": 'service_name=~".+", gen_ai_request_model=~".+"',
}
ALL = ".*"


@dataclass(frozen=True)
class Query:
    source: str  # "llm-overview.json: panel 'Error rate' A", "rule llm:requests:rate5m", ...
    expr: str  # as written (Grafana variables still in)
    kind: str  # panel | variable | traces_to_metrics | record | alert
    exemplar: bool = False

    @property
    def promql(self) -> str:
        return substitute(self.expr)


def substitute(expr: str) -> str:
    out = expr
    for k in sorted(SUBSTITUTIONS, key=len, reverse=True):
        out = out.replace(k, SUBSTITUTIONS[k])
    out = re.sub(r"\$\{(\w+)(?::\w+)?\}", lambda m: ALL, out)
    out = re.sub(r"\$(\w+)", lambda m: ALL, out)
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", out, re.S)
    if m:  # Grafana's label_values(series, label): the label's values = count by (label)
        out = f"count by ({m.group(2)}) ({m.group(1)})"
    return out


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


def iter_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(iter_panels(p.get("panels", [])))
    return out


def dashboard_queries() -> list[Query]:
    out = []
    for name, d in load_dashboards().items():
        for p in iter_panels(d["panels"]):
            for t in p.get("targets", []):
                out.append(
                    Query(
                        f"{name}: panel {p['title']!r} {t.get('refId')}",
                        t["expr"],
                        "panel",
                        bool(t.get("exemplar")),
                    )
                )
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                qv = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                out.append(Query(f"{name}: variable ${v['name']}", qv, "variable"))
    return out


def load_datasources() -> dict[str, Any]:
    raw = yaml.safe_load(DATASOURCES.read_text())
    result: dict[str, Any] = raw
    return result


def unescape_provisioning(text: str) -> str:
    """Grafana expands $VAR in provisioning files; `$$` is a literal `$`."""
    return text.replace("$$", "$")


def traces_to_metrics_queries() -> list[Query]:
    out = []
    for ds in load_datasources()["datasources"]:
        t2m = ds.get("jsonData", {}).get("tracesToMetrics")
        if t2m:
            for q in t2m["queries"]:
                out.append(
                    Query(
                        f"datasource {ds['uid']}: tracesToMetrics {q['name']!r}",
                        unescape_provisioning(q["query"]),
                        "traces_to_metrics",
                    )
                )
    return out


def load_rules() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in RULE_FILES:
        for g in yaml.safe_load(path.read_text())["groups"]:
            for r in g["rules"]:
                out.append((path.name, r))
    return out


def rule_queries() -> list[Query]:
    out = []
    for fname, r in load_rules():
        if "record" in r:
            out.append(Query(f"{fname}: record {r['record']}", r["expr"], "record"))
        else:
            out.append(Query(f"{fname}: alert {r['alert']}", r["expr"], "alert"))
    return out


def all_queries() -> list[Query]:
    return dashboard_queries() + traces_to_metrics_queries() + rule_queries()


# --- README contract ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Contract:
    # series names as scraped with the default `metrics.semconv: v1.41` (histograms expanded
    # to _bucket/_sum/_count): what the dashboards and rules may use
    metrics: frozenset[str]
    labels: frozenset[str]
    development: frozenset[str]  # the `development` column's names (not for the dashboards)


_TYPES = ("histogram", "counter", "gauge")


def _series(name: str, kind: str) -> list[str]:
    if kind == "histogram":
        return [f"{name}{s}" for s in ("_bucket", "_sum", "_count")]
    return [name]


def readme_contract() -> Contract:
    """The metric reference's tables: the first column names a metric exposed by default;
    in the main table a second column, before the type, holds its `development` names."""
    text = README.read_text()
    section = text.split("## Metric reference", 1)[1].split("\n## ", 1)[0]
    metrics: set[str] = set()
    development: set[str] = set()
    labels: set[str] = {"job", "instance", "le"}
    for line in section.splitlines():
        labels.update(re.findall(r"`([a-z][a-z0-9_]*)`", line))
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        kind = next((c for c in cells[1:3] if c in _TYPES), None)
        if kind is None:
            continue
        if cells[0].startswith("`"):
            metrics.update(_series(cells[0].strip("`"), kind))
        if cells[2] == kind:  # the two-column table
            for name in re.findall(r"`([a-z][a-z0-9_]*)`", cells[1]):
                development.update(_series(name, kind))
    names = metrics | development
    labels -= names
    labels -= {m.removesuffix("_bucket") for m in names if m.endswith("_bucket")}
    labels -= {m.removesuffix("_total") for m in names}
    return Contract(frozenset(metrics), frozenset(labels), frozenset(development))


_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_BRACES = re.compile(r"\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def metric_names(promql: str) -> set[str]:
    """Names of the series an expression selects (strings, matchers and groupings removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    s = _BRACES.sub("{}", s)
    s = _GROUPING.sub("()", s)
    s = re.sub(r"\[[^\]]*\]", "[]", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[)\s,]|$)", s):
        word = m.group(1)
        if word in _KEYWORDS or re.fullmatch(r"\d\w*", word):
            continue
        names.add(word)
    return names


def label_names(promql: str) -> set[str]:
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '"x"', promql)
    out = set()
    for block in _BRACES.findall(s):
        out.update(_MATCHER.findall(block))
    for grp in _GROUPING.findall(s):
        out.update(x.strip() for x in grp.split(",") if x.strip())
    return out


_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "stdvar",
    "count_values",
    "group",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "histogram_quantile",
    "vector",
    "scalar",
    "absent",
    "absent_over_time",
    "round",
    "clamp_min",
    "clamp_max",
    "label_replace",
    "label_join",
    "time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "sum_over_time",
    "count_over_time",
    "abs",
    "ceil",
    "floor",
    "sort",
    "sort_desc",
    "inf",
    "nan",
    "Inf",
    "NaN",
    "le",
}
