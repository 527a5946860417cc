"""The whole path on real parts only, ending in real trace and log backends (issue 17):

    demo LLM traffic (OTel SDK) --OTLP--> otelcol-llm (collector/config.yaml)
      --persistent queue--> sidecar --OTLP--> otelcol-llm (otlp/enriched)
      --> Jaeger v2 (traces, OTLP/gRPC)  and  VictoriaLogs (logs, OTLP/HTTP)
    sidecar /metrics <-- Prometheus (Debian's), exemplars on

Collector config is the production file: its Tempo exporter points at Jaeger and its Loki
exporter at VictoriaLogs' OTLP endpoint, which is what the compose profiles do too.
The test follows a metric to its trace and its logs the way a user would in Grafana: an
exemplar of a slow TTFT bucket from Prometheus -> the trace in Jaeger -> its logs in VictoriaLogs.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

# The demo is the one import from pipeline's demo module: adapt here if it moves.
from pipeline.demo import DemoStats, run_demo
from tests.backends._backends import Jaeger, VictoriaLogs
from tests.backends._screenshots import OUT_DIR as SHOTS
from tests.backends._screenshots import capture, chromium, prometheus_graph_url, vmui_url
from tests.collector._helpers import (
    CONFIG,
    SKIP_ENV,
    Collector,
    CollectorPorts,
    build_collector,
    collector_env,
)
from tests.helpers.otlp_sink import free_port
from tests.helpers.process import start_on_free_ports, wait_until
from tests.helpers.prometheus import start_prometheus
from tests.helpers.sidecar import SidecarProcess, start_sidecar
from tests.stack._prom import PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GRAFANA_DATASOURCES = (
    Path(__file__).resolve().parents[2]
    / "compose/grafana/jaeger-victorialogs/datasources/datasources.yaml"
)
TTFT_BUCKET = "gen_ai_client_operation_time_to_first_chunk_seconds_bucket"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@pytest.fixture(scope="session")
def otelcol_binary() -> Path:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1")
    return build_collector()


# ------------------------------------------------------------------- recording what was accepted


@dataclass(frozen=True)
class SentSpan:
    trace_id: str
    span_id: str
    name: str
    attributes: dict[str, Any]


class SpanRecorder(SpanExporter):
    """The SDK's OTLP exporter, recording every span of a batch the Collector accepted."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.accepted: list[SentSpan] = []
        self.refused = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        with self.lock:
            if result != SpanExportResult.SUCCESS:
                self.refused += len(spans)
                return result
            for s in spans:
                ctx = s.get_span_context()
                assert ctx is not None
                self.accepted.append(
                    SentSpan(
                        format(ctx.trace_id, "032x"),
                        format(ctx.span_id, "016x"),
                        s.name,
                        dict(s.attributes or {}),
                    )
                )
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class LogRecorder(LogRecordExporter):
    """The SDK's OTLP log exporter, recording (trace id, body) of each accepted record."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.accepted: list[tuple[str, str]] = []
        self.refused = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        with self.lock:
            if result != LogRecordExportResult.SUCCESS:
                self.refused += len(batch)
                return result
            for r in batch:
                rec = r.log_record
                self.accepted.append((format(rec.trace_id or 0, "032x"), str(rec.body)))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


# ------------------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    tmp: Path
    jaeger: Jaeger
    victorialogs: VictoriaLogs
    collector: Collector
    ports: CollectorPorts
    sidecar: SidecarProcess
    prometheus: PrometheusServer

    @property
    def app_grpc(self) -> str:
        return f"127.0.0.1:{self.ports.otlp_grpc}"

    def demo(
        self, rate: float, duration: float, seed: int
    ) -> tuple[DemoStats, SpanRecorder, LogRecorder]:
        spans = SpanRecorder(OTLPSpanExporter(endpoint=self.app_grpc, insecure=True))
        logs = LogRecorder(OTLPLogExporter(endpoint=self.app_grpc, insecure=True))
        try:
            stats = run_demo(
                self.app_grpc,
                rate=rate,
                duration=duration,
                seed=seed,
                span_exporter=spans,
                log_exporter=logs,
                schedule_delay_ms=200,
            )
        finally:
            spans.shutdown()
            logs.shutdown()
        return stats, spans, logs


@pytest.fixture
def stack(
    otelcol_binary: Path, jaeger: Jaeger, victorialogs: VictoriaLogs, tmp_path: Path
) -> Iterator[Stack]:
    sidecar_ports = (free_port(), free_port(), free_port())

    def make_collector() -> Collector:
        env = collector_env(
            tmp_path / "storage",
            CollectorPorts(),
            sidecar=f"127.0.0.1:{sidecar_ports[0]}",
            tempo=jaeger.otlp_grpc,
            loki=victorialogs.otlp_endpoint,
            BACKEND_RETRY_MAX_INTERVAL="1s",
        )
        return Collector(otelcol_binary, [CONFIG], env, tmp_path / "collector.log")

    collector: Collector = start_on_free_ports(make_collector)
    ports = collector_ports(collector)
    enriched = f"127.0.0.1:{ports.enriched_grpc}"
    sidecar = prom = None
    try:
        sidecar = start_sidecar(
            tmp_path,
            {  # as compose/sidecar/config.yaml: traces and logs back to the enriched receiver
                "exporters": {
                    "traces": {"protocol": "grpc", "endpoint": enriched, "compression": "none"},
                    "logs": {"protocol": "grpc", "endpoint": enriched},
                },
                "queue": {"retry_initial_s": 0.2, "retry_max_s": 1.0},
                "file": {"directory": str(tmp_path / "pipeline-data")},
            },
            sidecar_ports,
        )
        prom = start_prometheus(
            tmp_path / "prometheus", {"llm-pipeline": f"127.0.0.1:{sidecar.metrics_port}"}
        )
        yield Stack(tmp_path, jaeger, victorialogs, collector, ports, sidecar, prom)
    finally:
        if prom is not None:
            prom.stop()
        if sidecar is not None:
            sidecar.stop()
        collector.stop()


def collector_ports(c: Collector) -> CollectorPorts:
    """The ports a started Collector's env gave it."""

    def port(var: str) -> int:
        return int(c.env[var].rsplit(":", 1)[1])

    return CollectorPorts(
        otlp_grpc=port("COLLECTOR_OTLP_GRPC_ENDPOINT"),
        otlp_http=port("COLLECTOR_OTLP_HTTP_ENDPOINT"),
        enriched_grpc=port("COLLECTOR_ENRICHED_GRPC_ENDPOINT"),
        enriched_http=port("COLLECTOR_ENRICHED_HTTP_ENDPOINT"),
        health=port("COLLECTOR_HEALTH_ENDPOINT"),
        metrics=int(c.env["COLLECTOR_METRICS_PORT"]),
    )


def traces_to_logs_query(trace_id: str) -> str:
    """The LogsQL query of the compose stack's Grafana Jaeger data source (trace -> logs),
    as Grafana expands it for ``trace_id``."""
    ds = yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]
    [jaeger] = [d for d in ds if d["type"] == "jaeger"]
    query = str(jaeger["jsonData"]["tracesToLogsV2"]["query"]).replace("$$", "$")
    assert "${__trace.traceId}" in query, query
    return query.replace("${__trace.traceId}", trace_id)


def jaeger_spans(jaeger: Jaeger, trace_ids: set[str]) -> list[dict[str, Any]]:
    return [s for t in sorted(trace_ids) for s in jaeger.trace(t)]


# ------------------------------------------------------------------------------------ the tests


def test_exemplar_to_jaeger_trace_to_victorialogs_logs(stack: Stack) -> None:
    t0 = time.time() - 5
    stats, sent_spans, sent_logs = stack.demo(rate=20, duration=3, seed=1717)
    assert sent_spans.refused == 0 and sent_logs.refused == 0
    assert len(sent_spans.accepted) == stats.spans > 0
    assert len(sent_logs.accepted) == stats.log_records > 0
    assert stats.streamed > 0 and stats.pii["email"] > 0  # the seed makes both happen
    trace_ids = {s.trace_id for s in sent_spans.accepted}

    # --- every span reaches Jaeger, once; every log record reaches VictoriaLogs, once
    j = stack.jaeger
    assert wait_until(
        lambda: (j.metric("otelcol_receiver_accepted_spans") or 0) >= stats.spans, 30
    ), stack.collector.logs()[-3000:]
    sent_ids = {s.span_id for s in sent_spans.accepted}
    in_jaeger: list[dict[str, Any]] = []

    def stored() -> bool:  # accepted is not yet stored: Jaeger batches too
        in_jaeger[:] = jaeger_spans(j, trace_ids)
        return {s["spanID"] for s in in_jaeger} >= sent_ids

    assert wait_until(stored, 15, interval=0.5)
    time.sleep(0.5)  # a duplicate would be stored by now
    in_jaeger[:] = jaeger_spans(j, trace_ids)
    got_ids = Counter(s["spanID"] for s in in_jaeger)
    assert sum(got_ids.values()) == len(got_ids) == stats.spans, "duplicates or losses"
    assert set(got_ids) == sent_ids
    assert {s["traceID"] for s in in_jaeger} == trace_ids

    vl = stack.victorialogs
    assert wait_until(lambda: vl.count("*") >= stats.log_records, 30), vl.logs()[-2000:]
    time.sleep(1.0)  # a duplicate would be searchable by now
    assert vl.count("*") == stats.log_records
    by_trace = {
        r["trace_id"]: int(r["n"]) for r in vl.query("* | stats by (trace_id) count() as n")
    }
    assert by_trace == dict(Counter(t for t, _ in sent_logs.accepted))
    # no email is stored (the demo seldom logs one; the spans' redaction is checked below)
    assert not [r["_msg"] for r in vl.query("*") if EMAIL.search(r["_msg"])]

    # --- Prometheus: the streamed calls' TTFT histogram, with exemplars
    prom = stack.prometheus

    def scalar(expr: str) -> float:
        return sum(float(r["value"][1]) for r in prom.query(expr))

    calls = "sum(gen_ai_client_operation_duration_seconds_count)"
    assert wait_until(lambda: scalar(calls) == stats.llm_spans, 30), (scalar(calls), stats)
    ttft_count = "sum(gen_ai_client_operation_time_to_first_chunk_seconds_count)"
    assert scalar(ttft_count) == stats.streamed
    series = wait_until(lambda: prom.exemplars(TTFT_BUCKET, t0, time.time() + 5), 20)
    exemplars = [
        (float(s["seriesLabels"]["le"]), float(e["value"]), e["labels"], s["seriesLabels"])
        for s in series
        for e in s["exemplars"]
    ]
    # the slowest bucket that holds an exemplar of a priced model
    priced = {
        r["metric"]["gen_ai_request_model"]
        for r in prom.query("sum by (gen_ai_request_model) (gen_ai_client_cost_usd_total) > 0")
    }
    le, ttft, labels, series_labels = max(
        (x for x in exemplars if x[3]["gen_ai_request_model"] in priced), key=lambda x: x[0]
    )
    assert ttft <= le and ttft > 0.1, (le, ttft)  # a slow one: above the 100 ms buckets
    trace_id, span_id = labels["trace_id"], labels["span_id"]
    assert trace_id in trace_ids

    # --- the exemplar's trace in Jaeger: the LLM span with its cost and redacted content
    trace = j.trace(trace_id)
    assert {s["spanID"] for s in trace} == {
        s.span_id for s in sent_spans.accepted if s.trace_id == trace_id
    }
    [llm] = [s for s in trace if s["spanID"] == span_id]
    tags = llm["tags"]
    assert tags["gen_ai.request.model"] == series_labels["gen_ai_request_model"]
    assert tags["gen_ai.response.time_to_first_chunk"] == pytest.approx(ttft, abs=1e-6)
    assert float(tags["gen_ai.usage.cost"]) > 0
    [sent_llm] = [s for s in sent_spans.accepted if s.span_id == span_id]
    for key in ("gen_ai.input.messages", "gen_ai.output.messages"):
        original = str(sent_llm.attributes.get(key, ""))
        for email in EMAIL.findall(original):
            assert email not in str(tags[key])
            assert "[REDACTED:email]" in str(tags[key])
    # ... and over the whole run: every email the app wrote into a span was redacted
    jaeger_by_id = {s["spanID"]: s for s in in_jaeger}
    redacted = 0
    for s in sent_spans.accepted:
        original = str(s.attributes.get("gen_ai.input.messages", ""))
        if EMAIL.search(original):
            stored = str(jaeger_by_id[s.span_id]["tags"]["gen_ai.input.messages"])
            assert not EMAIL.search(stored) and "[REDACTED:email]" in stored
            redacted += 1
    assert redacted > 0
    # the costs on the spans in Jaeger add up to the cost counter in Prometheus
    span_cost = sum(float(s["tags"].get("gen_ai.usage.cost", 0)) for s in in_jaeger)
    assert span_cost == pytest.approx(scalar("sum(gen_ai_client_cost_usd_total)"), rel=1e-9)

    # --- the logs of that trace, from VictoriaLogs by trace id, redacted
    want_logs = [b for t, b in sent_logs.accepted if t == trace_id]
    assert want_logs, "the followed request logged nothing"
    # with the query Grafana's Jaeger data source runs for "logs of this trace"
    got_logs = vl.query(traces_to_logs_query(trace_id))
    assert len(got_logs) == len(want_logs)
    assert {r["span_id"] for r in got_logs} <= {s["spanID"] for s in trace}
    for r in got_logs:
        assert not EMAIL.search(r["_msg"]), r["_msg"]
    print(
        f"\nfollowed trace {trace_id} (TTFT exemplar {ttft:.3f}s in bucket le={le}, "
        f"model {series_labels['gen_ai_request_model']}, cost {float(tags['gen_ai.usage.cost']):.6f}"
        f" USD): {len(trace)} spans in Jaeger, {len(got_logs)} logs in VictoriaLogs; "
        f"run: {stats.requests} requests, {stats.spans} spans and {stats.log_records} log records "
        f"sent = {sum(got_ids.values())} spans in Jaeger, {vl.count('*')} records in VictoriaLogs"
    )

    # --- what a user sees (only where Debian's chromium is installed): saved screenshots
    if (browser := chromium()) is not None:
        shot = capture(
            browser, vmui_url(vl.url, traces_to_logs_query(trace_id)), SHOTS / "vmui-trace-logs.png"
        )
        assert all(r["_msg"] in shot.dom for r in got_logs), (shot.url, shot.dom[-2000:])
        expr = "sum by (gen_ai_request_model) (gen_ai_client_operation_duration_seconds_count)"
        graph = capture(
            browser, prometheus_graph_url(prom.url, expr), SHOTS / "prometheus-graph.png"
        )
        assert series_labels["gen_ai_request_model"] in graph.dom, (graph.url, graph.dom[-2000:])
        print(f"screenshots: {shot.png}, {graph.png}")


@pytest.mark.timeout(300)
def test_jaeger_outage_loses_nothing_acknowledged(stack: Stack) -> None:
    """Jaeger is stopped for 30 s mid-stream and started again. Its in-memory storage is then
    empty, so what arrives after the restart is counted against what the app had sent since the
    stop: every span the Collector acknowledged after the stop reaches the new Jaeger (the
    Collector's persistent queue for the trace backend holds it, retried without a deadline),
    and the logs (VictoriaLogs stayed up) all arrive too."""
    outage, rate, duration = 30.0, 10.0, 38.0
    spans = SpanRecorder(OTLPSpanExporter(endpoint=stack.app_grpc, insecure=True))
    logs = LogRecorder(OTLPLogExporter(endpoint=stack.app_grpc, insecure=True))
    result: list[DemoStats] = []

    def run() -> None:
        result.append(
            run_demo(
                stack.app_grpc,
                rate=rate,
                duration=duration,
                seed=4242,
                span_exporter=spans,
                log_exporter=logs,
                schedule_delay_ms=200,
            )
        )

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    j = stack.jaeger
    try:
        assert wait_until(lambda: (j.metric("otelcol_receiver_accepted_spans") or 0) > 0, 15)
        time.sleep(max(0.0, started + 3.0 - time.monotonic()))
        j.stop()
        down_at = time.monotonic()
        with spans.lock:  # everything from this index on was sent with Jaeger down
            before_stop = len(spans.accepted)
        time.sleep(outage)
        with spans.lock:
            during = len(spans.accepted) - before_stop
        j.start()
        up_at = time.monotonic()
    finally:
        thread.join(duration + 60)
        spans.shutdown()
        logs.shutdown()
    assert not thread.is_alive()
    [stats] = result
    assert spans.refused == 0 and logs.refused == 0
    assert len(spans.accepted) == stats.spans
    after_stop = {s.span_id for s in spans.accepted[before_stop:]}
    assert during > 100, f"only {during} spans were sent during the outage"

    trace_ids = {s.trace_id for s in spans.accepted}
    got: list[str] = []

    def all_arrived() -> bool:
        got[:] = [s["spanID"] for s in jaeger_spans(j, trace_ids)]
        return after_stop <= set(got)

    arrived = wait_until(all_arrived, 60, interval=1.0)
    missing = after_stop - set(got)
    assert arrived and not missing, f"{len(missing)} of {len(after_stop)} spans lost"
    assert set(got) <= {s.span_id for s in spans.accepted}  # nothing that was not sent
    dupes = sum(n - 1 for n in Counter(got).values() if n > 1)

    vl = stack.victorialogs
    assert wait_until(lambda: vl.count("*") >= stats.log_records, 30)
    time.sleep(1.0)
    assert vl.count("*") == stats.log_records == len(logs.accepted)
    print(
        f"\nJaeger down {up_at - down_at:.1f}s: {len(after_stop)} spans sent after the stop "
        f"({during} while down), all {len(after_stop)} in the restarted Jaeger "
        f"({len(set(got))} spans there, {dupes} duplicates); {stats.log_records} log records "
        f"sent = in VictoriaLogs; total {time.monotonic() - started:.1f}s"
    )
