"""The "Agents" dashboard (agents.json): agent runs, tools, evaluations beside cost, and where a
call's time goes. Built by build.py (BOARDS); the helpers come from panels.py."""

from __future__ import annotations

from typing import Any

from panels import (
    COST,
    DUR,
    RI,
    Board,
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

FILE = "agents.json"

AGENT = "gen_ai_invoke_agent_duration_seconds"
TOOL = "gen_ai_execute_tool_duration_seconds"
WORKFLOW = "gen_ai_workflow_duration_seconds"
RETRIEVAL = "gen_ai_retrieval_duration_seconds"
TOOL_CALLS = "gen_ai_invoke_agent_tool_calls"
TOOL_COST = "llm_pipeline_tool_cost_usd_total"
SCORE = "llm_pipeline_evaluation_score"
EVALS = "llm_pipeline_evaluations_total"
RATE_LIMITED = "llm_pipeline_rate_limited_calls_total"
RETRY_AFTER = "llm_pipeline_rate_limit_retry_after_seconds"
GAP = "llm_pipeline_client_server_ttft_gap_seconds"
SRV = "llm_pipeline_server"

A = 'service_name=~"$service", gen_ai_agent_name=~"$agent"'
SV = 'service_name=~"$service"'


def _runs(b: Board) -> None:
    b.row("Agent runs")
    runs = f"{AGENT}_count{{{A}}}"
    b.add(
        "timeseries",
        "Runs / s by agent",
        [q(f"sum by (gen_ai_agent_name) (rate({runs}[{RI}]))", "{{gen_ai_agent_name}}")],
        w=8,
        h=8,
        unit="reqps",
        options=ts_options(),
        description="Agent invocations (invoke_agent spans) per second.",
    )
    b.add(
        "timeseries",
        "Run duration",
        percentiles(AGENT, A),
        w=8,
        h=8,
        unit="s",
        options=ts_options(),
        description="gen_ai.invoke_agent.duration percentiles; exemplars open the run's trace.",
    )
    b.add(
        "stat",
        "Failed runs",
        [
            q(
                f'(sum(rate({AGENT}_count{{{A}, error_type!=""}}[{RI}])) or on() vector(0))'
                f" / sum(rate({runs}[{RI}]))",
                "failed",
            )
        ],
        w=4,
        h=8,
        unit="percentunit",
        options=stat_options(),
        defaults={"decimals": 2, "thresholds": thresholds((None, "green"), (0.05, "red"))},
        description="Share of agent runs that ended in an error.",
    )
    b.add(
        "stat",
        "Tool calls per run",
        [
            q(
                f"sum(rate({TOOL_CALLS}_sum{{{A}}}[{RI}]))"
                f" / sum(rate({TOOL_CALLS}_count{{{A}}}[{RI}]))",
                "tools/run",
            )
        ],
        w=4,
        h=8,
        options=stat_options(),
        defaults={"decimals": 2},
        description="gen_ai.invoke_agent.tool_calls: an agent's own tool calls per run.",
    )
    # The run's model calls plus its paid tools, per run, by service (every call of these
    # services runs inside an agent).
    llm_cost = f"sum by (service_name) (rate({COST}{{{SV}}}[{RI}]))"
    tool_cost = f"sum by (service_name) (rate({TOOL_COST}{{{SV}}}[{RI}]))"
    per_run = f"sum by (service_name) (rate({runs}[{RI}]))"
    b.add(
        "timeseries",
        "Cost per run (model calls + paid tools)",
        [
            q(
                f"({llm_cost} + ({tool_cost} or {llm_cost} * 0)) / {per_run}",
                "{{service_name}}",
            ),
            q(f"{tool_cost} / {per_run}", "{{service_name}} tools"),
        ],
        w=12,
        h=8,
        unit="currencyUSD",
        options=ts_options(["mean", "max"]),
        description="USD per agent run: the service's model cost plus llm_pipeline_tool_cost_usd "
        "(tool_prices), over its runs.",
    )
    b.add(
        "timeseries",
        "Workflow duration p95",
        [
            q(
                f"histogram_quantile(0.95, sum by (le, gen_ai_workflow_name) "
                f"(rate({WORKFLOW}_bucket{{{SV}}}[{RI}])))",
                "{{gen_ai_workflow_name}}",
                exemplar=True,
            )
        ],
        w=12,
        h=8,
        unit="s",
        options=ts_options(),
        description="gen_ai.workflow.duration (invoke_workflow spans, workflow decorators, root "
        "chains).",
    )


def _tools(b: Board) -> None:
    b.row("Tools")
    t = f"{TOOL}_count{{{A}}}"
    b.add(
        "timeseries",
        "Tool calls / s",
        [q(f"sum by (gen_ai_tool_name) (rate({t}[{RI}]))", "{{gen_ai_tool_name}}")],
        w=6,
        h=8,
        unit="reqps",
        options=ts_options(),
    )
    b.add(
        "timeseries",
        "Tool duration p95",
        [
            q(
                f"histogram_quantile(0.95, sum by (le, gen_ai_tool_name) "
                f"(rate({TOOL}_bucket{{{A}}}[{RI}])))",
                "{{gen_ai_tool_name}}",
                exemplar=True,
            )
        ],
        w=6,
        h=8,
        unit="s",
        options=ts_options(),
        description="gen_ai.execute_tool.duration, 95th percentile by tool.",
    )
    b.add(
        "timeseries",
        "Tool errors / s",
        [
            q(
                f'sum by (gen_ai_tool_name, error_type) (rate({TOOL}_count{{{A}, error_type!=""}}'
                f"[{RI}])) or on() vector(0)",
                "{{gen_ai_tool_name}} {{error_type}}",
            )
        ],
        w=6,
        h=8,
        unit="reqps",
        options=ts_options(),
    )
    b.add(
        "timeseries",
        "Tool spend / hour",
        [
            q(
                f"sum by (gen_ai_tool_name) (rate({TOOL_COST}{{{A}}}[{RI}])) * 3600",
                "{{gen_ai_tool_name}}",
            )
        ],
        w=6,
        h=8,
        unit="currencyUSD",
        options=ts_options(),
        description="Paid tools at their tool_prices (USD per call).",
    )


def _quality(b: Board) -> None:
    b.row("Quality beside cost")
    b.add(
        "timeseries",
        "Mean evaluation score",
        [
            q(
                f"sum by (gen_ai_evaluation_name, gen_ai_request_model) "
                f"(rate({SCORE}_sum{{{SV}}}[{RI}])) / sum by (gen_ai_evaluation_name, "
                f"gen_ai_request_model) (rate({SCORE}_count{{{SV}}}[{RI}]))",
                "{{gen_ai_evaluation_name}} {{gen_ai_request_model}}",
            )
        ],
        w=8,
        h=8,
        options=ts_options(["mean", "min"]),
        description="gen_ai.evaluation.score.value of gen_ai.evaluation.result events.",
    )
    b.add(
        "timeseries",
        "Evaluations by label / s",
        [
            q(
                f"sum by (gen_ai_evaluation_name, gen_ai_evaluation_score_label) "
                f"(rate({EVALS}{{{SV}}}[{RI}]))",
                "{{gen_ai_evaluation_name}} {{gen_ai_evaluation_score_label}}",
            )
        ],
        w=6,
        h=8,
        unit="reqps",
        options=ts_options(),
    )
    by = "gen_ai_request_model"
    table = b.add(
        "table",
        "Score and cost per call, per model",
        [
            q(
                f'sum by ({by}) (rate({SCORE}_sum{{gen_ai_evaluation_name="relevance"}}[$__range]))'
                f' / sum by ({by}) (rate({SCORE}_count{{gen_ai_evaluation_name="relevance"}}'
                "[$__range]))",
                instant=True,
                fmt="table",
            ),
            q(
                f"sum by ({by}) (increase({COST}[$__range])) / sum by ({by}) "
                f"(increase({DUR}_count[$__range]))",
                instant=True,
                fmt="table",
            ),
        ],
        w=10,
        h=8,
        description="Mean relevance score beside the cost per call of each model: is the "
        "expensive model worth it?",
        options={"showHeader": True, "cellHeight": "sm"},
        transformations=[
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {
                        by: "Model",
                        "Value #A": "Relevance",
                        "Value #B": "USD per call",
                    },
                },
            },
        ],
    )
    table["fieldConfig"]["overrides"] = [
        {
            "matcher": {"id": "byName", "options": "USD per call"},
            "properties": [{"id": "unit", "value": "currencyUSD"}, {"id": "decimals", "value": 5}],
        },
        {
            "matcher": {"id": "byName", "options": "Relevance"},
            "properties": [{"id": "decimals", "value": 3}],
        },
    ]


def _latency(b: Board) -> None:
    b.row("Where the time goes")
    phases = [
        q(
            f"histogram_quantile(0.95, sum by (le) (rate({SRV}_{p}_time_seconds_bucket[{RI}])))",
            f"{p} p95",
            exemplar=True,
        )
        for p in ("queue", "prefill", "decode")
    ]
    b.add(
        "timeseries",
        "Model server: queue, prefill, decode",
        phases,
        w=8,
        h=8,
        unit="s",
        options=ts_options(),
        description="vLLM's gen_ai.latency.time_in_queue / time_in_model_prefill / "
        "time_in_model_decode, 95th percentiles.",
    )
    b.add(
        "timeseries",
        "Decode speed",
        [
            q(
                f"histogram_quantile({p}, sum by (le, gen_ai_response_model) "
                f"(rate({SRV}_decode_tokens_per_second_bucket[{RI}])))",
                f"p{int(p * 100)} {{{{gen_ai_response_model}}}}",
                exemplar=True,
            )
            for p in (0.5, 0.05)
        ],
        w=8,
        h=8,
        unit="short",
        options=ts_options(),
        description="Output tokens per second over vLLM's decode window (p5 is the slow tail).",
    )
    b.add(
        "timeseries",
        "Client TTFT - server TTFT",
        percentiles(GAP, SV),
        w=8,
        h=8,
        unit="s",
        options=ts_options(),
        description="Network, gateway and client-library overhead before the first chunk: the "
        "client's time to first chunk minus the model server's time to first token, same call.",
    )
    b.add(
        "timeseries",
        "Retrieval and embeddings p95",
        [
            q(
                f"histogram_quantile(0.95, sum by (le) (rate({RETRIEVAL}_bucket{{{SV}}}[{RI}])))",
                "retrieval",
                exemplar=True,
            ),
            q(
                f"histogram_quantile(0.95, sum by (le) (rate({DUR}_bucket{{{SV}, "
                f'gen_ai_operation_name="embeddings"}}[{RI}])))',
                "embeddings",
                exemplar=True,
            ),
        ],
        w=12,
        h=8,
        unit="s",
        options=ts_options(),
        description="gen_ai.retrieval.duration and the embeddings calls (kept apart from chat).",
    )
    b.add(
        "timeseries",
        "LLM calls inside agents vs tools: time share",
        [
            q(
                f'sum(rate({DUR}_sum{{{SV}, gen_ai_operation_name="chat"}}[{RI}])) / '
                f"sum(rate({AGENT}_sum{{{A}}}[{RI}]))",
                "model calls",
            ),
            q(f"sum(rate({TOOL}_sum{{{A}}}[{RI}])) / sum(rate({AGENT}_sum{{{A}}}[{RI}]))", "tools"),
        ],
        w=12,
        h=8,
        unit="percentunit",
        options=ts_options(),
        description="Seconds spent in chat calls and in tools per second of agent run time.",
    )


def _rate_limits(b: Board) -> None:
    b.row("Rate limits")
    b.add(
        "timeseries",
        "Rate-limited calls / s",
        [
            q(
                f"sum by (service_name, gen_ai_provider_name, gen_ai_request_model) "
                f"(rate({RATE_LIMITED}[{RI}])) or on() vector(0)",
                "{{service_name}} {{gen_ai_provider_name}}/{{gen_ai_request_model}}",
            )
        ],
        w=12,
        h=8,
        unit="reqps",
        options=ts_options(),
        description="Calls the provider refused with 429 (alert LLMRateLimited at 10%).",
    )
    b.add(
        "timeseries",
        "Retry-After",
        percentiles(RETRY_AFTER, 'service_name=~".*"'),
        w=12,
        h=8,
        unit="s",
        options=ts_options(),
        description="How long rate-limited callers were asked to wait (the span's Retry-After).",
    )


def build() -> dict[str, Any]:
    b = Board()
    _runs(b)
    _tools(b)
    _quality(b)
    _latency(b)
    _rate_limits(b)
    return dashboard(
        "llm-agents",
        "Agents",
        "Agent runs, tool calls, evaluation scores beside cost, and where a call's time goes "
        "(model server phases, client-server TTFT gap, rate limits), from the sidecar's "
        "gen_ai_* and llm_pipeline_* metrics.",
        ["llm", "genai", "agents", "opentelemetry"],
        [
            var_datasource(),
            var_query("service", "Service", f"label_values({AGENT}_count, service_name)"),
            var_query("agent", "Agent", f"label_values({AGENT}_count, gen_ai_agent_name)"),
        ],
        b,
        [link("LLM overview", "llm-overview"), link("Pipeline health", "llm-pipeline-health")],
    )
