"""`gen_ai.evaluation.result` events sent as log records (the OpenTelemetry SDK's Logs API)
through the real sidecar: counted on /metrics beside the span-event ones, forwarded unchanged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from pipeline.model import any_value
from tests.helpers.metrics import find, value
from tests.helpers.otlp_sink import OtlpSink
from tests.helpers.sidecar import SidecarProcess, start_sidecar

pytestmark = pytest.mark.e2e


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink().start()
    yield s
    s.stop()


@pytest.fixture
def sidecar(tmp_path: Path, sink: OtlpSink) -> Iterator[SidecarProcess]:
    sc = start_sidecar(
        tmp_path,
        {
            "exporters": {
                "logs": {"protocol": "http", "endpoint": f"http://127.0.0.1:{sink.http_port}"}
            },
            "queue": {"retry_initial_s": 0.2, "retry_max_s": 1.0},
        },
    )
    yield sc
    assert sc.stop() == 0, sc.logs()


def _wait(pred: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def test_evaluation_log_records_through_the_sidecar(
    sidecar: SidecarProcess, sink: OtlpSink
) -> None:
    lp = LoggerProvider(resource=Resource.create({"service.name": "judge-svc"}))
    lp.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=sidecar.grpc_endpoint, insecure=True))
    )
    logger = lp.get_logger("evaluator")
    tp = TracerProvider()
    with tp.get_tracer("app").start_as_current_span("chat gpt-4o") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        for name, score, label in (("relevance", 0.9, "pass"), ("relevance", 0.4, "fail")):
            logger.emit(
                event_name="gen_ai.evaluation.result",
                attributes={
                    "gen_ai.evaluation.name": name,
                    "gen_ai.evaluation.score.value": score,
                    "gen_ai.evaluation.score.label": label,
                    "gen_ai.evaluation.explanation": "compared with the reference answer",
                    "gen_ai.request.model": "gpt-4o",
                },
            )
    # an evaluation naming no model, outside any span
    logger.emit(
        event_name="gen_ai.evaluation.result",
        attributes={"gen_ai.evaluation.name": "toxicity", "gen_ai.evaluation.score.value": 0.05},
    )
    logger.emit(body="an ordinary log line")
    lp.shutdown()

    _wait(lambda: len(sink.log_records()) == 4)
    text = sidecar.scrape()
    labels = {
        "service_name": "judge-svc",
        "gen_ai_evaluation_name": "relevance",
        "gen_ai_request_model": "gpt-4o",
    }
    assert value(text, "llm_pipeline_evaluation_score_count", **labels) == 2
    assert value(text, "llm_pipeline_evaluation_score_sum", **labels) == pytest.approx(1.3)
    assert value(text, "llm_pipeline_evaluation_score_bucket", le="0.4", **labels) == 1
    [passed] = find(
        text, "llm_pipeline_evaluations_total", gen_ai_evaluation_score_label="pass", **labels
    )
    assert passed.value == 1
    assert passed.exemplar is not None and passed.exemplar.labels["trace_id"] == trace_id
    assert value(text, "llm_pipeline_evaluations_total", gen_ai_evaluation_score_label="fail") == 1
    toxicity = {"gen_ai_evaluation_name": "toxicity", "gen_ai_request_model": ""}
    assert value(text, "llm_pipeline_evaluation_score_sum", **toxicity) == pytest.approx(0.05)
    assert value(text, "llm_pipeline_evaluations_total", service_name="judge-svc") == 3

    # forwarded as sent
    recs = sink.log_records()
    assert [r.event_name for r in recs].count("gen_ai.evaluation.result") == 3
    first = next(r for r in recs if r.event_name)
    attrs = {kv.key: any_value(kv.value) for kv in first.attributes}
    assert attrs["gen_ai.evaluation.explanation"] == "compared with the reference answer"
    assert first.trace_id.hex() == trace_id
