"""The service: the answer comes before the chain, the backlog is bounded, nothing is lost."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Config
from pipeline.exporters.queue import QueueFull
from pipeline.model import TraceBatch
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


def test_a_failing_processor_drops_that_request_counted_and_the_service_lives_on(
    tmp_path: Path,
) -> None:
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
    assert svc.queues["traces"].size in (0, 3)  # the failed request's room was given back
    assert svc.shutdown()["traces"] == 0
    assert _exported_spans(tmp_path) == 3
    dropped = svc.telemetry.dropped.series
    assert [(k, s.value) for k, s in dropped.items()] == [
        (("traces", "file/traces", "processing_error"), 5.0)
    ]


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
    spool = svc.queues["traces"]._spool
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
    # the parsed spans only when something reads those (model.settled): the file exporter
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
