"""The service: the answer comes before the chain, the backlog is bounded, nothing is lost."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Config
from pipeline.exporters.prometheus import AggregationCollector, render
from pipeline.exporters.queue import QueueFull
from pipeline.memlimit import MemoryLimited, MemoryLimiter
from pipeline.model import LLMCall, TraceBatch
from pipeline.processors.cost import CostProcessor
from pipeline.service import Service
from tests.helpers.otlp_build import spans_request
from tests.helpers.otlp_sink import free_port


def _service(tmp_path: Path, backlog: int = 3) -> Service:
    cfg = Config()
    cfg.file.directory = str(tmp_path / "out")
    cfg.queue.max_unprocessed_requests = backlog
    cfg.queue.shutdown_timeout_s = 10.0
    return Service(cfg)


def _exported_spans(tmp_path: Path) -> int:
    lines = (tmp_path / "out" / "traces.jsonl").read_text().splitlines()
    return sum(
        len(ss["spans"])
        for line in lines
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
    )


class Gate:
    """A first processor that holds every batch until opened."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        self.entered.set()
        assert self.open.wait(30)
        return batch


def test_answer_before_the_chain_bounded_backlog_then_everything_processed(
    tmp_path: Path,
) -> None:
    svc = _service(tmp_path, backlog=3)
    gate = Gate()
    svc.trace_chain.insert(0, gate)
    svc.start()
    traces = svc.queues["traces"]
    # The first request is taken by the processing thread and held at the gate; the accept
    # call itself returned without waiting for it.
    assert svc.accept("traces", spans_request(0, 10), None, "grpc").rejected == 0
    assert gate.entered.wait(10)
    for i in range(3):  # the backlog: 3 requests
        svc.accept("traces", spans_request(100 * (i + 1), 10), None, "grpc")
    with pytest.raises(QueueFull):  # a fifth finds the backlog full: 503 / UNAVAILABLE
        svc.accept("traces", spans_request(900, 10), None, "grpc")
    assert traces.size == 40  # the refused request's reservation was given back
    assert not svc.wait_processed(0.2)
    gate.open.set()
    assert svc.wait_processed(10)
    assert svc.shutdown()["traces"] == 0
    assert _exported_spans(tmp_path) == 40
    assert svc.llm_metrics.tokens.series  # the chain ran: 40 calls counted
    counted = sum(s.value for s in svc.llm_metrics.tokens.series.values())
    assert counted == 40 * 15


def test_shutdown_processes_the_backlog_before_draining(tmp_path: Path) -> None:
    svc = _service(tmp_path, backlog=8)
    gate = Gate()
    svc.trace_chain.insert(0, gate)
    svc.start()
    for i in range(6):
        svc.accept("traces", spans_request(100 * i, 7), None, "grpc")
    assert gate.entered.wait(10)
    threading.Timer(0.3, gate.open.set).start()
    assert svc.shutdown()["traces"] == 0  # waits for the chain, then drains
    assert _exported_spans(tmp_path) == 42


def test_a_failing_processor_costs_its_own_work_not_the_request(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    calls = {"n": 0}

    def flaky(batch: TraceBatch) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return batch

    svc.trace_chain.insert(0, flaky)
    svc.start()
    svc.accept("traces", spans_request(0, 5), None, "grpc")
    assert svc.wait_processed(10)
    svc.accept("traces", spans_request(100, 3), None, "grpc")
    assert svc.wait_processed(10)
    assert svc.shutdown()["traces"] == 0
    assert _exported_spans(tmp_path) == 8  # the failed stage was skipped, nothing dropped
    assert not svc.telemetry.dropped.series
    failures = {k: s.value for k, s in svc.telemetry.processor_failures.series.items()}
    assert failures == {("flaky", "RuntimeError"): 5.0}
    # the stages after the failing one still ran: every call was counted and priced
    assert sum(s.value for s in svc.llm_metrics.tokens.series.values()) == 8 * 15
    assert sum(s.value for s in svc.llm_metrics.cost.series.values()) > 0


def _file_spans(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "out" / "traces.jsonl").read_text().splitlines()
    return [
        {a["key"]: a["value"] for a in s["attributes"]}
        for line in lines
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]


def test_a_call_the_cost_processor_cannot_price_loses_only_its_cost(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    cost = next(p for p in svc.trace_chain if isinstance(p, CostProcessor))
    real = cost.price

    def price(call: LLMCall) -> float | None:
        if call.request_model == "poison":
            raise ArithmeticError("no such price")
        return real(call)

    cost.price = price  # type: ignore[method-assign]
    req = spans_request(0, 10)
    req.resource_spans[0].scope_spans[0].spans[3].attributes[2].value.string_value = "poison"
    svc.start()
    svc.accept("traces", req, req.SerializeToString(), "grpc")
    assert svc.wait_processed(10)
    assert svc.shutdown()["traces"] == 0
    spans = _file_spans(tmp_path)
    assert len(spans) == 10
    costed = [a["gen_ai.request.model"]["stringValue"] for a in spans if "gen_ai.usage.cost" in a]
    assert sorted(costed) == ["gpt-4o"] * 9
    failures = {k: s.value for k, s in svc.telemetry.processor_failures.series.items()}
    assert failures == {("cost", "ArithmeticError"): 1.0}


def test_a_failing_redactor_drops_the_request_rather_than_leak_it(tmp_path: Path) -> None:
    svc = _service(tmp_path)

    def broken(batch: Any) -> Any:
        raise ValueError("regex engine on fire")

    svc._redactor.redact_traces = broken  # type: ignore[method-assign]
    svc.start()
    svc.accept("traces", spans_request(0, 4, attrs={"note": "mail bob@example.com"}), None, "g")
    assert svc.wait_processed(10)
    assert svc.shutdown()["traces"] == 0
    assert not (tmp_path / "out" / "traces.jsonl").exists()
    dropped = {k: s.value for k, s in svc.telemetry.dropped.series.items()}
    assert dropped == {("traces", "file/traces", "redaction_failed"): 4.0}
    assert svc.queues["traces"].size == 0


def test_a_batch_left_unencodable_is_forwarded_as_received(tmp_path: Path) -> None:
    svc = _service(tmp_path)

    class Unencodable(TraceBatch):
        __slots__ = ()

        def encode(self) -> bytes:
            raise ValueError("not a protobuf")

    def corrupt(batch: TraceBatch) -> TraceBatch:
        return Unencodable(batch.request, batch.calls, batch.span_count)

    svc.trace_chain.append(corrupt)
    svc.start()
    svc.accept("traces", spans_request(0, 6), None, "grpc")
    assert svc.wait_processed(10)
    assert svc.shutdown()["traces"] == 0
    assert _exported_spans(tmp_path) == 6
    (key,) = svc.telemetry.processor_failures.series
    assert key[0] == "encode"


def test_with_a_spool_the_answer_waits_until_the_request_is_on_disk(tmp_path: Path) -> None:
    """A SIGKILL must not lose what was acknowledged: with a spool there is no in-memory backlog."""
    cfg = Config()
    cfg.queue.spool_directory = str(tmp_path / "spool")
    cfg.queue.shutdown_timeout_s = 1.0
    # Nothing listens there: what was appended stays in the spool for the assertion.
    cfg.exporters.traces.protocol = "grpc"
    cfg.exporters.traces.endpoint = f"127.0.0.1:{free_port()}"
    svc = Service(cfg)
    gate = Gate()
    svc.trace_chain.insert(0, gate)
    svc.start()
    spool = svc.queues["traces"].spool
    assert spool is not None
    answered = threading.Event()

    def send() -> None:
        svc.accept("traces", spans_request(0, 6), None, "grpc")
        answered.set()

    sender = threading.Thread(target=send)
    sender.start()
    assert gate.entered.wait(10)
    assert not answered.wait(0.3)  # held in the chain: not acknowledged yet
    assert spool.pending_items == 0
    gate.open.set()
    assert answered.wait(10)
    assert spool.pending_items == 6  # acknowledged means appended
    sender.join()
    assert svc.shutdown()["traces"] == 6  # kept for the next start


def test_the_file_sink_writes_what_enrich_added_to_a_request_received_as_bytes(
    tmp_path: Path,
) -> None:
    # enrich records its additions as byte edits of the received bytes and merges them into
    # the parsed spans only when something reads those (TraceBatch.request): the file exporter
    # writes JSON from the parsed request, so it must get them too.
    svc = _service(tmp_path)
    svc.start()
    request = spans_request(0, 3)
    assert svc.accept("traces", request, request.SerializeToString(), "grpc").rejected == 0
    assert svc.wait_processed(10)
    assert svc.shutdown()["traces"] == 0
    lines = (tmp_path / "out" / "traces.jsonl").read_text().splitlines()
    spans = [
        {a["key"]: a["value"] for a in s["attributes"]}
        for line in lines
        for rs in json.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    assert len(spans) == 3
    # and the self-telemetry counted each LLM span once, by its convention
    llm_spans = {k: s.value for k, s in svc.telemetry.llm_spans.series.items()}
    assert llm_spans == {("otel_genai",): 3}
    for attrs in spans:
        # gpt-4o at genai-prices' rates: a cost, added once, beside the span's own keys
        assert attrs["gen_ai.usage.cost"]["doubleValue"] > 0
        assert attrs["gen_ai.usage.input_tokens"] == {"intValue": "10"}


def test_implausible_values_stay_out_of_the_metrics_and_the_spans_go_on(tmp_path: Path) -> None:
    cfg = Config()
    cfg.file.directory = str(tmp_path / "out")
    cfg.metrics.semconv = "both"
    svc = Service(cfg)
    svc.start()
    bad = {
        "gen_ai.usage.input_tokens": 2**63 - 1,
        "gen_ai.response.time_to_first_chunk": "1e9",  # on a 1 s span (a string: read too)
    }
    for request in (spans_request(0, 2, attrs=bad), spans_request(2, 1)):
        assert svc.accept("traces", request, request.SerializeToString(), "grpc").rejected == 0
    assert svc.wait_processed(10)
    assert svc.shutdown()["traces"] == 0
    assert _exported_spans(tmp_path) == 3  # every span forwarded
    m = svc.llm_metrics
    reasons = {k[0]: s.value for k, s in m.plausibility.implausible.series.items()}
    assert reasons == {"tokens_too_large": 2, "ttft_after_end": 2, "cost_too_large": 2}
    for fam in (m.duration, m.inference_duration):  # both names, every call counted
        assert sum(s.count for s in fam.series.values()) == 3
    assert not m.ttft.series and not m.inference_ttft.series
    usage = [s for k, s in m.token_usage.series.items() if k[-1] == "input"]
    assert [(s.count, s.total) for s in usage] == [(1, 10)]  # only the plausible call's


def test_above_the_soft_memory_limit_requests_are_refused_and_counted(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    assert not svc.memory.enabled  # off unless asked (the sidecar asks): it measures the process
    assert Service(svc.config, limit_memory=True).memory.enabled
    svc.memory = MemoryLimiter(1, 80, interval_s=0.0)  # 1 MiB: below any process
    assert not svc.memory_ok("traces")
    with pytest.raises(MemoryLimited) as refused:  # a QueueFull: 503 / UNAVAILABLE
        svc.accept("traces", spans_request(0, 3), None, "grpc")
    assert isinstance(refused.value, QueueFull) and refused.value.reason == "memory_limit"
    assert svc.queues["traces"].size == 0  # refused before anything was reserved
    rejected = {k: s.value for k, s in svc.telemetry.rejected.series.items()}
    assert rejected == {("traces", "memory_limit"): 1.0}
    assert svc.memory.rss > 1 << 20


def test_what_shutdown_cannot_process_in_time_is_counted_as_dropped(tmp_path: Path) -> None:
    svc = _service(tmp_path, backlog=8)
    svc.config.queue.shutdown_timeout_s = 0.5
    gate = Gate()
    svc.trace_chain.insert(0, gate)
    svc.start()
    for i in range(4):  # one held at the gate, three waiting
        svc.accept("traces", spans_request(100 * i, 5), None, "grpc")
    assert gate.entered.wait(10)
    assert svc.shutdown()["traces"] == 20  # none processed in time: all undelivered
    dropped = {k: s.value for k, s in svc.telemetry.dropped.series.items()}
    assert dropped == {("traces", "file/traces", "shutdown"): 20.0}
    gate.open.set()  # the one in progress finishes: not delivered, not counted again
    svc._worker.join(10)
    assert svc.queues["traces"].size == 0
    assert not (tmp_path / "out" / "traces.jsonl").exists()
    with pytest.raises(QueueFull):  # a request arriving now is refused, not acknowledged
        svc.accept("traces", spans_request(900, 5), None, "grpc")


def test_fallback_windows_closed_early_and_calls_ignored_are_exported(tmp_path: Path) -> None:
    cfg = Config()
    cfg.file.directory = str(tmp_path / "out")
    cfg.fallback.max_traces, cfg.fallback.max_calls_per_trace = 2, 2
    svc = Service(cfg)
    svc.start()
    request = spans_request(0, 6)
    for s in request.resource_spans[0].scope_spans[0].spans[:4]:
        s.trace_id = (1).to_bytes(16, "big")  # one trace of 4 calls: 2 beyond the 2 kept
    svc.accept("traces", request, None, "grpc")  # 3 traces open: the oldest closes early
    assert svc.wait_processed(10)
    assert svc.shutdown()["traces"] == 0
    body, _ = render(AggregationCollector(svc.agg, svc.telemetry), "text/plain")
    lines = body.decode().splitlines()
    assert "llm_pipeline_fallback_forced_closes_total 1.0" in lines
    assert "llm_pipeline_fallback_dropped_calls_total 2.0" in lines


def _evaluation_logs(score: float) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "judge"
    rec = rl.scope_logs.add().log_records.add(event_name="gen_ai.evaluation.result")
    rec.attributes.add(key="gen_ai.evaluation.name").value.string_value = "relevance"
    rec.attributes.add(key="gen_ai.evaluation.score.value").value.double_value = score
    return bytes(req.SerializeToString())


def test_evaluation_log_records_in_the_log_chain(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    svc = _service(tmp_path)
    raw = [_evaluation_logs(0.5), _evaluation_logs(0.25)]
    svc.start()
    svc.accept("logs", ExportLogsServiceRequest.FromString(raw[0]), raw[0], "grpc")
    assert svc.wait_processed(10)

    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    assert svc._serving is not None
    svc._serving._evaluated = broken  # type: ignore[method-assign]
    svc.accept("logs", ExportLogsServiceRequest.FromString(raw[1]), raw[1], "grpc")
    assert svc.wait_processed(10)
    assert svc.shutdown()["logs"] == 0
    [(key, s)] = svc._serving.score.series.items()
    assert key == ("judge", "relevance", "") and (s.count, s.total) == (1, 0.5)
    failures = {k: s.value for k, s in svc.telemetry.processor_failures.series.items()}
    assert failures == {("serving", "RuntimeError"): 1.0}
    lines = (tmp_path / "out" / "logs.jsonl").read_text().splitlines()
    assert len(lines) == 2  # both forwarded, the failed one too


def test_no_serving_no_log_stage(tmp_path: Path) -> None:
    cfg = Config()
    cfg.file.directory = str(tmp_path / "out")
    cfg.processors = ["normalize", "redact", "metrics"]
    svc = Service(cfg)
    assert svc.log_chain == [svc._redactor]
