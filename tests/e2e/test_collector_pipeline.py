"""The whole data path with real processes (issue 4):

    OTel SDK --OTLP--> otelcol-llm (collector/config.yaml, env on free loopback ports)
      --persistent queue--> sidecar (python -m pipeline.cli run)
      --OTLP--> otelcol-llm (otlp/enriched, the 4319 receiver) --> Tempo / Loki stand-ins
    sidecar /metrics <-- real Prometheus scrape

Tempo and Loki are OTLP sinks (tests/collector/_helpers.py); everything else is the real thing.
The second test streams demo traffic through the same path and restarts the sidecar mid-stream:
the Collector's file_storage queue holds the batches until the new sidecar process takes them.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from pipeline.demo import DemoStats, run_demo
from tests.collector._helpers import (
    CONFIG,
    SKIP_ENV,
    Collector,
    CollectorPorts,
    OtlpGrpcSink,
    OtlpHttpSink,
    attrs,
    build_collector,
    collector_env,
    wait_until,
)
from tests.e2e.test_sidecar import emit_scenario
from tests.helpers.metrics import value
from tests.helpers.otlp_sink import free_port
from tests.helpers.prometheus import start_prometheus
from tests.helpers.sidecar import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture(scope="session")
def otelcol_binary() -> Path:
    """The OCB-built Collector (cached by scripts/build-collector.sh; tests/collector/conftest.py
    builds it right after collection when the whole suite runs)."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1")
    return build_collector()


@dataclass
class Stack:
    """Collector + sidecar + Tempo/Loki/Prometheus-OTLP stand-ins, wired like compose."""

    tmp: Path
    collector: Collector
    ports: CollectorPorts
    sidecar_ports: tuple[int, int, int]
    sidecar_config: dict[str, Any]
    tempo: OtlpGrpcSink
    loki: OtlpHttpSink
    prom_otlp: OtlpHttpSink
    sidecar: SidecarProcess | None = None
    sidecar_logs: list[str] = field(default_factory=list)

    @property
    def app_grpc(self) -> str:
        return f"127.0.0.1:{self.ports.otlp_grpc}"

    @property
    def app_http(self) -> str:
        return f"http://127.0.0.1:{self.ports.otlp_http}"

    def start_sidecar(self) -> SidecarProcess:
        """(Re)start the sidecar on the same three ports, as a restarted container would."""
        self.sidecar = start_sidecar(self.tmp, self.sidecar_config, self.sidecar_ports)
        return self.sidecar

    def stop_sidecar(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        sc = self.sidecar
        assert sc is not None
        sc.proc.send_signal(sig)
        try:
            rc = sc.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            sc.proc.kill()
            rc = sc.proc.wait()
        self.sidecar_logs.append(sc.logs())
        self.sidecar = None
        return int(rc)


@pytest.fixture
def stack(otelcol_binary: Path, tmp_path: Path) -> Iterator[Stack]:
    tempo = OtlpGrpcSink().start()
    loki = OtlpHttpSink("/otlp").start()
    prom_otlp = OtlpHttpSink("/api/v1/otlp").start()
    ports = CollectorPorts()
    sidecar_ports = (free_port(), free_port(), free_port())
    env = collector_env(
        tmp_path / "storage",
        ports,
        sidecar=f"127.0.0.1:{sidecar_ports[0]}",
        tempo=tempo.endpoint,
        loki=loki.endpoint,
        prometheus=prom_otlp.endpoint,
    )
    collector = Collector(otelcol_binary, [CONFIG], env, tmp_path / "collector.log")
    # The sidecar as compose runs it (compose/sidecar/config.yaml): traces and logs back to the
    # Collector's enriched receiver over OTLP/gRPC, traces uncompressed as there; logs keep the
    # exporter's default gzip, so the real Collector's gzip decoding stays covered too.
    enriched = f"127.0.0.1:{ports.enriched_grpc}"
    sidecar_config: dict[str, Any] = {
        "exporters": {
            "traces": {"protocol": "grpc", "endpoint": enriched, "compression": "none"},
            "logs": {"protocol": "grpc", "endpoint": enriched},
        },
        "queue": {"retry_initial_s": 0.2, "retry_max_s": 1.0},
        "fallback": {"window_s": 1.0},
        "file": {"directory": str(tmp_path / "pipeline-data")},
    }
    st = Stack(tmp_path, collector, ports, sidecar_ports, sidecar_config, tempo, loki, prom_otlp)
    try:
        collector.start()
        st.start_sidecar()
        yield st
    finally:
        if st.sidecar is not None:
            st.stop_sidecar()
        collector.stop()
        for sink in (tempo, loki, prom_otlp):
            sink.stop()


def tempo_span_ids(sink: OtlpGrpcSink) -> list[str]:
    """Span ids (hex) of every span the Tempo stand-in received, duplicates kept."""
    with sink.cond:
        reqs = list(sink.traces)
    return [
        s.span_id.hex()
        for r in reqs
        for rs in r.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def tempo_spans_by_name(sink: OtlpGrpcSink) -> dict[str, list[dict[str, Any]]]:
    with sink.cond:
        reqs = list(sink.traces)
    out: dict[str, list[dict[str, Any]]] = {}
    for r in reqs:
        for rs in r.resource_spans:
            res = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.setdefault(s.name, []).append(
                        {"attrs": attrs(s.attributes), "resource": res, "span_id": s.span_id.hex()}
                    )
    return out


def emit_log_in_span(http_base: str, body: str, service: str) -> str:
    """One WARN log record, emitted inside a span, through the SDK's OTLP/HTTP log exporter.
    Returns the trace id (hex) the record carries."""
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.name": service})
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(f"{http_base}/v1/logs")))
    tp = TracerProvider(resource=resource)
    with tp.get_tracer("e2e").start_as_current_span("handle ticket") as span:
        lp.get_logger("e2e.support").emit(
            body=body, severity_number=SeverityNumber.WARN, severity_text="WARN"
        )
        trace_id = format(span.get_span_context().trace_id, "032x")
    lp.shutdown()
    tp.shutdown()
    return trace_id


# ------------------------------------------------------------------------------ the data path


def test_sdk_to_collector_to_sidecar_to_tempo_loki_and_prometheus(stack: Stack) -> None:
    assert stack.sidecar is not None
    prom = start_prometheus(stack.tmp, {"llm-pipeline": f"127.0.0.1:{stack.sidecar.metrics_port}"})
    try:
        runs = 2
        ids = [
            emit_scenario(OTLPSpanExporter(endpoint=stack.app_grpc, insecure=True), "pipeline-e2e")
            for _ in range(runs)
        ]
        log_trace = emit_log_in_span(
            stack.app_http, "refund request from jane.doe@example.com, order 1234", "pipeline-e2e"
        )

        # Tempo gets every span, enriched, exactly once.
        assert stack.tempo.wait_spans(lambda s: len(s) >= 4 * runs, 20), stack.collector.logs()[
            -3000:
        ]
        time.sleep(0.5)  # anything extra (a duplicate) would arrive in this time
        span_ids = tempo_span_ids(stack.tempo)
        assert len(span_ids) == len(set(span_ids)) == 4 * runs
        spans = tempo_spans_by_name(stack.tempo)
        assert {n: len(v) for n, v in spans.items()} == {
            "chat gpt-4o": runs,
            "chat claude": runs,
            "chat gpt-4o-mini": runs,
            "chat ft": runs,
        }
        assert {s.trace_id for s in stack.tempo.spans()} == {t for i in ids for t in i.values()}

        want_cost = float(
            calc_price(
                Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=200),
                model_ref="gpt-4o-2024-08-06",
                provider_id="openai",
            ).total_price
        )
        assert want_cost > 0
        for s in spans["chat gpt-4o"]:
            a = s["attrs"]
            assert a["gen_ai.usage.cost"] == pytest.approx(want_cost, abs=1e-12)
            assert a["gen_ai.usage.input_tokens"] == 1200  # the original attributes stay
            assert "jane.doe@example.com" not in a["gen_ai.input.messages"]
            assert "[REDACTED:email]" in a["gen_ai.input.messages"]
            assert s["resource"]["service.name"] == "pipeline-e2e"
        want_claude = float(
            calc_price(
                Usage(input_tokens=500, output_tokens=101),
                model_ref="claude-sonnet-4-5",
                provider_id="anthropic",
            ).total_price
        )
        for s in spans["chat claude"]:  # deprecated names: current ones are added next to them
            a = s["attrs"]
            assert a["gen_ai.system"] == "anthropic"
            assert a["gen_ai.provider.name"] == "anthropic"
            assert a["gen_ai.usage.prompt_tokens"] == 500
            assert a["gen_ai.usage.input_tokens"] == 500
            assert a["gen_ai.usage.output_tokens"] == 101
            assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.3)
            assert a["gen_ai.usage.cost"] == pytest.approx(want_claude, abs=1e-12)
        for s in spans["chat ft"]:
            assert "gen_ai.usage.cost" not in s["attrs"]  # unknown price: no made-up cost

        # Loki gets the log record, redacted, still correlated with its trace.
        assert wait_until(lambda: stack.loki.log_records(), 15)
        time.sleep(0.3)
        [rec] = stack.loki.log_records()
        assert rec.body == "refund request from [REDACTED:email], order 1234"
        assert rec.trace_id == log_trace
        assert rec.resource["service.name"] == "pipeline-e2e"
        assert set(stack.loki.paths) == {"/otlp/v1/logs"}

        # Prometheus scraped the derived metrics: PromQL sums equal what was sent.
        q = 'sum by (gen_ai_token_type) (gen_ai_client_tokens_total{service_name="pipeline-e2e"})'
        want_tokens = {
            "input": runs * (1200 + 500 + 10),
            "output": runs * (300 + 101 + 5),
            "cache_read": runs * 200,
        }

        def tokens() -> dict[str, float]:
            return {
                r["metric"]["gen_ai_token_type"]: float(r["value"][1])
                for r in prom.query(q)
                if float(r["value"][1]) > 0
            }

        got = wait_until(lambda: tokens() if tokens() == want_tokens else None, 20) or tokens()
        assert got == want_tokens, prom.log_path.read_text()[-2000:]
        [total] = prom.query('sum(gen_ai_client_tokens_total{service_name="pipeline-e2e"})')
        assert float(total["value"][1]) == sum(want_tokens.values())
        [cost] = prom.query(
            'sum(gen_ai_client_cost_usd_total{service_name="pipeline-e2e",'
            'gen_ai_request_model="gpt-4o"})'
        )
        assert float(cost["value"][1]) == pytest.approx(runs * want_cost, rel=1e-9)
        [errors] = prom.query(
            'sum(gen_ai_client_operation_duration_seconds_count{service_name="pipeline-e2e",'
            'error_type="RateLimitError"})'
        )
        assert float(errors["value"][1]) == runs

        # The Collector's own telemetry agrees: every span in, to the sidecar, out to Tempo.
        col = stack.collector
        assert col.metric("otelcol_receiver_accepted_spans", receiver="otlp") == 4 * runs
        assert col.metric("otelcol_exporter_sent_spans", exporter="otlp_grpc/sidecar") == 4 * runs
        assert wait_until(
            lambda: (
                col.metric("otelcol_exporter_sent_spans", exporter="otlp_grpc/tempo") == 4 * runs
            ),
            5,
        )
        assert col.metric("otelcol_exporter_sent_log_records", exporter="otlp_http/loki") == 1
        # nothing fell back to the sidecar's local files
        assert not (stack.tmp / "pipeline-data").exists() or not any(
            (stack.tmp / "pipeline-data").iterdir()
        )
    finally:
        prom.stop()


# ------------------------------------------------------------------- sidecar restart mid-stream


class Recording(SpanExporter):
    """Wraps the SDK's OTLP exporter: the span ids of every batch the Collector accepted."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.sent_at: list[tuple[float, int]] = []  # (monotonic time, spans) per accepted batch

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        ids = [format(s.get_span_context().span_id, "016x") for s in spans]
        with self.lock:
            if result == SpanExportResult.SUCCESS:
                self.accepted += ids
                self.sent_at.append((time.monotonic(), len(ids)))
            else:
                self.refused += ids
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass
class Stream:
    """Demo traffic at a fixed rate into the Collector, in a thread, recording what was accepted."""

    rec: Recording
    thread: threading.Thread
    log_exporter: Any
    started: float
    result: list[DemoStats] = field(default_factory=list)

    def join(self, timeout: float) -> DemoStats:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the demo did not finish"
        self.log_exporter.shutdown()
        self.rec.shutdown()
        [stats] = self.result
        return stats


def stream_demo(stack: Stack, rate: float, duration: float, seed: int) -> Stream:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    rec = Recording(OTLPSpanExporter(endpoint=stack.app_grpc, insecure=True))
    log_exporter = OTLPLogExporter(endpoint=stack.app_grpc, insecure=True)
    stream = Stream(rec, threading.Thread(daemon=True), log_exporter, time.monotonic())

    def run() -> None:
        stream.result.append(
            run_demo(
                stack.app_grpc,
                rate=rate,
                duration=duration,
                seed=seed,
                span_exporter=rec,
                log_exporter=log_exporter,
                schedule_delay_ms=200,
            )
        )

    stream.thread = threading.Thread(target=run, daemon=True)
    stream.thread.start()
    return stream


def sidecar_queued(stack: Stack, signal_name: str = "traces") -> float:
    assert stack.sidecar is not None
    return value(stack.sidecar.scrape(), "llm_pipeline_queue_size", signal=signal_name)


def test_sidecar_restart_mid_stream_loses_nothing(stack: Stack) -> None:
    """Demo traffic at a fixed rate; the sidecar gets SIGTERM 3 s in and is started again on the
    same ports 3 s later. Every span the Collector accepted reaches Tempo exactly once.

    Exactly once, not just at least once: on SIGTERM the sidecar stops its gRPC server with a
    grace period (in-flight Export calls complete and are answered), then drains its sending
    queue to the Collector before exiting, so no batch is both processed by the sidecar and
    retried by the Collector. Batches the Collector could not deliver meanwhile wait in its
    file_storage queue (retry_on_failure.max_elapsed_time: 0) for the new process.
    """
    rate, duration = 25.0, 9.0
    stream = stream_demo(stack, rate, duration, seed=20240605)
    col = stack.collector
    try:
        assert stack.tempo.wait_spans(lambda s: len(s) > 0, 10), "nothing flowed before the stop"
        time.sleep(max(0.0, stream.started + 3.0 - time.monotonic()))
        down_at = time.monotonic()
        rc = stack.stop_sidecar(signal.SIGTERM)
        assert rc == 0, stack.sidecar_logs[-1][-3000:]
        # it drained its sending queues to the Collector before exiting
        assert re.search(r"llm-pipeline stopped.*undelivered=0\b", stack.sidecar_logs[-1]), (
            stack.sidecar_logs[-1][-2000:]
        )
        # while it is down the app keeps sending and the Collector queues on disk
        queued = wait_until(
            lambda: (
                (col.metric("otelcol_exporter_queue_size", exporter="otlp_grpc/sidecar") or 0) >= 1
            ),
            5,
        )
        assert queued, "the Collector never queued: the outage did not happen mid-stream"
        time.sleep(max(0.0, down_at + 3.0 - time.monotonic()))
        up_at = time.monotonic()
        stack.start_sidecar()
    finally:
        stats = stream.join(duration + 30)
    rec = stream.rec

    sent = rec.accepted
    assert rec.refused == [], "the Collector must accept while the sidecar is down"
    assert len(sent) == stats.spans == len(set(sent))
    assert stats.requests == int(rate * duration)
    during = sum(n for t, n in rec.sent_at if down_at < t < up_at)
    assert during > 50, f"only {during} spans were sent during the outage"

    want = set(sent)
    arrived = wait_until(lambda: want <= set(tempo_span_ids(stack.tempo)), 30)
    got = tempo_span_ids(stack.tempo)
    missing = want - set(got)
    assert arrived and not missing, f"{len(missing)} of {len(want)} spans lost"
    time.sleep(1.0)  # a late duplicate would show up here
    got = tempo_span_ids(stack.tempo)
    dupes = {k: v for k, v in Counter(got).items() if v > 1}
    assert dupes == {}, f"{len(dupes)} spans delivered twice"
    assert set(got) == want  # and nothing that was not sent

    # Logs too (they carry no ids): as many as were sent, each in the context of a sent span.
    assert wait_until(lambda: len(stack.loki.log_records()) >= stats.log_records, 15)
    time.sleep(0.3)
    logs = stack.loki.log_records()
    assert len(logs) == stats.log_records
    assert {r.trace_id for r in logs} <= {s.trace_id for s in stack.tempo.spans()}
    # nothing was dropped for a full queue
    assert col.metric("otelcol_exporter_enqueue_failed_spans", exporter="otlp_grpc/sidecar") in (
        None,
        0,
    )
    print(
        f"\nsent {len(sent)} spans / {stats.log_records} logs in {stats.wall_s:.1f}s; "
        f"{during} spans during the {up_at - down_at:.1f}s outage; "
        f"total {time.monotonic() - stream.started:.1f}s"
    )


def test_sidecar_sigkill_with_spool_loses_nothing(stack: Stack) -> None:
    """The harsh case: SIGKILL while the sidecar holds spans it has already acknowledged.

    The Collector's persistent queue covers what the sidecar has *not* acknowledged; what it
    has (processed, answered OK, not yet forwarded) lives only in the sidecar, so a SIGKILL
    loses it unless the sidecar spools it to disk (`queue.spool_directory`). To make that
    window certain rather than a race, the first sidecar process forwards to a port where
    nothing listens: everything it accepts piles up in its spool. It is SIGKILLed mid-stream,
    and a new process on the same ports and spool directory, forwarding to the Collector,
    delivers the spool and takes the Collector's queued batches.

    At least once, not exactly once: an Export call from the Collector that the killed process
    had spooled but not yet answered is retried by the Collector and processed again, so a
    span can arrive twice (it is counted as a duplicate below, and reported); nothing may be
    missing and nothing may arrive that was not sent.
    """
    spool = stack.tmp / "spool"
    good = copy.deepcopy(stack.sidecar_config)
    good["queue"]["spool_directory"] = str(spool)
    dead = copy.deepcopy(good)
    nowhere = f"127.0.0.1:{free_port()}"
    dead["exporters"] = {
        "traces": {"protocol": "grpc", "endpoint": nowhere},
        "logs": {"protocol": "grpc", "endpoint": nowhere},
    }
    assert stack.stop_sidecar(signal.SIGTERM) == 0  # the fixture's sidecar: replace it
    stack.sidecar_config = dead
    stack.start_sidecar()

    rate, duration = 25.0, 8.0
    stream = stream_demo(stack, rate, duration, seed=777)
    try:
        # the sidecar accepts (the Collector's queue stays empty) and spools
        assert wait_until(lambda: sidecar_queued(stack) >= 150, 10), sidecar_queued(stack)
        assert stack.tempo.spans() == []
        held = sidecar_queued(stack)
        rc = stack.stop_sidecar(signal.SIGKILL)
        assert rc == -signal.SIGKILL
        killed_at = time.monotonic()
        assert any(spool.rglob("*.seg")), "nothing on disk"
        time.sleep(2.0)
        stack.sidecar_config = good
        stack.start_sidecar()
        restarted_at = time.monotonic()
    finally:
        stats = stream.join(duration + 30)
    rec = stream.rec
    sent = rec.accepted
    assert rec.refused == [] and len(sent) == stats.spans == len(set(sent))

    want = set(sent)
    arrived = wait_until(lambda: want <= set(tempo_span_ids(stack.tempo)), 30)
    missing = want - set(tempo_span_ids(stack.tempo))
    assert arrived and not missing, f"{len(missing)} of {len(want)} spans lost"
    time.sleep(1.0)
    got = tempo_span_ids(stack.tempo)
    assert set(got) == want
    dupes = sum(n - 1 for n in Counter(got).values() if n > 1)
    assert wait_until(lambda: len(stack.loki.log_records()) >= stats.log_records, 15)
    logs = stack.loki.log_records()
    assert {r.trace_id for r in logs} <= {s.trace_id for s in stack.tempo.spans()}
    assert sidecar_queued(stack) == 0
    print(
        f"\nsent {len(sent)} spans; SIGKILL with {held:.0f} acknowledged spans only in the "
        f"spool; down {restarted_at - killed_at:.1f}s; {dupes} duplicate span deliveries, "
        f"{len(logs) - stats.log_records} extra log records (at least once)"
    )
