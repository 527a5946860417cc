"""The file sink: OTLP/JSON lines written item by item, rotation's deletions counted."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from pipeline.exporters.file import FileSink
from pipeline.exporters.queue import PermanentError
from pipeline.receivers.decode import to_json
from tests.helpers.otlp_build import spans_request


def _logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.schema_url = "https://opentelemetry.io/schemas/1.41.0"
    sl = rl.scope_logs.add()
    sl.scope.name = "app"
    for i in range(3):
        lr = sl.log_records.add()
        lr.body.string_value = f"log {i}"
        lr.trace_id = bytes(range(16))
        lr.severity_number = 9
    req.resource_logs.add()  # an empty one too
    return req


def _metrics() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "x"
    p = m.sum.data_points.add()
    p.as_int = 3
    m.sum.aggregation_temporality = 2
    return req


@pytest.mark.parametrize(
    ("signal", "request_"),
    [
        ("traces", spans_request(0, 4, attrs={"k": "v{i}"})),
        ("logs", _logs()),
        ("metrics", _metrics()),
        ("traces", spans_request(0, 0)),
    ],
)
def test_each_line_is_the_requests_otlp_json(tmp_path: Path, signal: str, request_: object) -> None:
    sink = FileSink(str(tmp_path), signal, 1 << 20, 2)
    data = request_.SerializeToString()  # type: ignore[attr-defined]
    sink(data)
    sink(data)
    lines = (tmp_path / f"{signal}.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == json.loads(to_json(request_))  # type: ignore[arg-type]
    assert lines[0] == lines[1]


def test_a_json_line_from_an_earlier_versions_spool_is_written_as_it_is(tmp_path: Path) -> None:
    line = to_json(spans_request(0, 2)).encode()
    FileSink(str(tmp_path), "traces", 1 << 20, 2)(line)
    assert (tmp_path / "traces.jsonl").read_bytes() == line + b"\n"


def test_bytes_that_are_not_a_request_are_refused_for_good(tmp_path: Path) -> None:
    with pytest.raises(PermanentError):
        FileSink(str(tmp_path), "traces", 1 << 20, 2)(b"\xff\xff\xff")
    assert (tmp_path / "traces.jsonl").read_bytes() == b""  # no half line left


def test_rotation_keeps_max_files_and_counts_what_it_deletes(tmp_path: Path) -> None:
    deleted: list[int] = []
    sink = FileSink(str(tmp_path), "traces", 1024, 2, deleted.append)
    data = spans_request(0, 5).SerializeToString()  # ~1 KB, ~3 KB of JSON: one a file
    for _ in range(5):
        sink(data)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["traces-1.jsonl", "traces-2.jsonl", "traces.jsonl"]
    # 5 lines over 5 files (each line makes the next overflow), 2 rotated kept: 2 deleted
    assert len(deleted) == 2
    line = len((tmp_path / "traces.jsonl").read_bytes())
    assert deleted == [line, line]


def test_a_large_request_is_written_without_building_its_json(tmp_path: Path) -> None:
    # 100 spans x 100 attributes: ~0.8 MB of protobuf, ~1.1 MB of JSON
    attrs = {f"attr.{n}": f"value {n} of span {{i}}" + "x" * 40 for n in range(100)}
    data = spans_request(0, 100, attrs=attrs).SerializeToString()
    sink = FileSink(str(tmp_path), "traces", 1 << 30, 2)
    tracemalloc.start()
    sink(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    written = (tmp_path / "traces.jsonl").stat().st_size
    assert written > len(data)
    # The parsed request (upb, outside tracemalloc) and ~64 KB of JSON at a time: ~0.25 MB
    # whatever the size. Building the whole document (MessageToDict + dumps) peaked at ~13x
    # the protobuf's size (measured: 20 MB for 1.5 MB).
    assert peak < len(data) / 2, (peak, len(data))
