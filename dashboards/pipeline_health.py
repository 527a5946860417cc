"""The pipeline health board: the sidecar's own state (receivers, queues, exports, drops,
fallbacks).
"""

from __future__ import annotations

from typing import Any

from panels import (
    INST,
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

FILE = "pipeline-health.json"


def build() -> dict[str, Any]:
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
