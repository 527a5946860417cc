"""The llm_pipeline_* self-metrics through the OpenTelemetry metrics SDK, served on /metrics."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.config import Config
from pipeline.exporters.prometheus import AggregationCollector, render
from pipeline.service import Service
from tests.helpers.metrics import samples
from tests.helpers.otlp_build import spans_request

OM = "application/openmetrics-text; version=1.0.0"


def _service(tmp_path: Path) -> Service:
    cfg = Config()
    cfg.file.directory = str(tmp_path / "out")
    return Service(cfg)


def _scrape(svc: Service, accept: str = OM) -> str:
    return render(AggregationCollector(svc.agg, svc.telemetry), accept)[0].decode()


def test_names_labels_values_and_created(tmp_path: Path) -> None:
    before = time.time()
    svc = _service(tmp_path)
    svc.accept("traces", spans_request(0, 3), None, "grpc")
    svc.accept("traces", spans_request(10, 2), None, "http")
    svc.reject("logs", "malformed", 4)
    tel = svc.telemetry
    text = _scrape(svc)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples(text)}
    received = "llm_pipeline_received_items_total"
    assert got[received, (("signal", "traces"), ("transport", "grpc"))] == 3
    assert got[received, (("signal", "traces"), ("transport", "http"))] == 2
    assert (
        got["llm_pipeline_rejected_items_total", (("reason", "malformed"), ("signal", "logs"))] == 4
    )
    assert got["llm_pipeline_llm_spans_total", (("convention", "otel_genai"),)] == 5
    # every counter sample has its _created: the start of this process's counting
    totals = [k for k in got if k[0].startswith("llm_pipeline_") and k[0].endswith("_total")]
    assert totals
    for name, labels in totals:
        if name == "llm_pipeline_implausible_values_total":
            continue  # the aggregation's (processors/plausible.py), not the SDK's
        created = got.get((name.removesuffix("_total") + "_created", labels))
        assert created is not None, name
        assert before <= created <= time.time()
    # the labels are the families' label names, nothing added (no otel_scope_*, no job)
    for fam in tel.counters:
        for name, labels in got:
            if name == fam.name + "_total":
                assert {k for k, _ in labels} == set(fam.label_names), name
    assert got["llm_pipeline_build_info", (("version", "0.1.0"),)] == 1
    queue = {
        dict(labels)["exporter"]: v
        for (n, labels), v in got.items()
        if n == "llm_pipeline_queue_size"
    }
    assert queue == {"file/traces": 5, "file/logs": 0, "file/metrics": 0}
    assert "target_info" not in text
    # the text format carries the same
    assert 'llm_pipeline_received_items_total{signal="traces",transport="grpc"} 3.0' in _scrape(
        svc, "text/plain"
    )


def test_families_without_samples_are_left_out(tmp_path: Path) -> None:
    text = _scrape(_service(tmp_path))
    assert "llm_pipeline_received_items" not in text
    assert "llm_pipeline_dropped_items" not in text
    assert "llm_pipeline_build_info" in text  # always has its one sample


def test_a_restart_is_visible_as_a_new_created(tmp_path: Path) -> None:
    first = _service(tmp_path / "a")
    first.accept("traces", spans_request(0, 4), None, "grpc")
    time.sleep(0.05)
    second = _service(tmp_path / "b")  # the restarted process: counting from zero again
    second.accept("traces", spans_request(0, 1), None, "grpc")

    def sample(svc: Service, name: str) -> float:
        (s,) = [x for x in samples(_scrape(svc)) if x.name == name]
        return float(s.value)

    assert sample(first, "llm_pipeline_received_items_total") == 4
    assert sample(second, "llm_pipeline_received_items_total") == 1
    assert sample(second, "llm_pipeline_received_items_created") > sample(
        first, "llm_pipeline_received_items_created"
    )


def test_counts_keep_going_between_scrapes(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    values = []
    for i in range(3):
        svc.accept("traces", spans_request(i * 10, 2), None, "grpc")
        text = _scrape(svc)
        (s,) = [x for x in samples(text) if x.name == "llm_pipeline_received_items_total"]
        values.append(s.value)
    assert values == [2, 4, 6]  # cumulative, read fresh at every scrape
