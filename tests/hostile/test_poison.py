"""One bad span never loses an acknowledged batch (issue 21.2), with the real sidecar.

The sidecar runs with a spool, where the chain runs before the answer: a processor raising
there used to answer 500/INTERNAL (which senders do not retry) and drop the whole request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.helpers.metrics import value
from tests.helpers.otlp_build import add_attrs, spans_request
from tests.helpers.otlp_sink import OtlpSink
from tests.helpers.sidecar import start_sidecar

pytestmark = pytest.mark.e2e

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink().start()
    yield s
    s.stop()


def test_a_poison_span_costs_its_own_cost_and_a_poison_batch_its_stage(
    tmp_path: Path, sink: OtlpSink
) -> None:
    cfg = {
        "exporters": {"traces": {"protocol": "grpc", "endpoint": f"127.0.0.1:{sink.grpc_port}"}},
        "queue": {"spool_directory": str(tmp_path / "spool"), "retry_initial_s": 0.1},
    }
    sc = start_sidecar(tmp_path, cfg, module="tests.hostile._poison_cli")
    try:
        with grpc.insecure_channel(sc.grpc_endpoint) as ch:
            export = ch.unary_unary(TRACES)
            # 49 valid spans + 1 whose price lookup raises (inside the real cost processor)
            req = spans_request(0, 50)
            poison = req.resource_spans[0].scope_spans[0].spans[17]
            poison.attributes[2].value.string_value = "poison-model"
            export(req.SerializeToString(), timeout=10)  # OK, not INTERNAL
            # a batch on which a whole stage (ttft) raises: forwarded, later stages still ran
            req = spans_request(100, 20, model="poison-batch")
            export(req.SerializeToString(), timeout=10)
            # Anthropic-style usage with more cache reads than input tokens: forwarded, whatever
            # its price (issue 21.2's original poison; helper `calls` interprets it)
            req = spans_request(200, 1, model="claude-3-5-sonnet")
            span = req.resource_spans[0].scope_spans[0].spans[0]
            add_attrs(
                span.attributes,
                {"gen_ai.usage.cache_read.input_tokens": 2000, "gen_ai.provider.name": "x"},
            )
            span.attributes[1].value.string_value = "anthropic"
            del span.attributes[-1]
            export(req.SerializeToString(), timeout=10)
        deadline = time.monotonic() + 20
        while len(sink.spans()) < 71 and time.monotonic() < deadline:
            time.sleep(0.05)
        spans = sink.spans()
        assert len(spans) == 71
        by_model: dict[str, list[bool]] = {}
        for s in spans:
            attrs = {kv.key: kv.value for kv in s.attributes}
            model = attrs["gen_ai.request.model"].string_value
            by_model.setdefault(model, []).append("gen_ai.usage.cost" in attrs)
        assert by_model["gpt-4o"] == [True] * 49  # the 49 valid spans are priced
        assert by_model["poison-model"] == [False]  # the poison one is not, but is there
        assert by_model["poison-batch"] == [False] * 20  # unpriced model; forwarded anyway
        assert len(by_model["claude-3-5-sonnet"]) == 1
        text = sc.scrape()
        fails = "llm_pipeline_processor_failures_total"
        assert value(text, fails, processor="cost", cause="ArithmeticError") == 1
        assert value(text, fails, processor="ttft", cause="KeyError") == 20
        assert value(text, "llm_pipeline_dropped_items_total") == 0
        # the metrics stage after the failing ttft stage still counted the poisoned batch
        assert value(text, "gen_ai_client_operation_duration_seconds_count") == 71
        assert value(text, "llm_pipeline_exported_items_total", signal="traces") == 71
    finally:
        assert sc.stop() == 0, sc.logs()
    logs = sc.logs()
    # logged once per cause, not once per span
    failed = [line for line in logs.splitlines() if "processor failed" in line]
    assert sum("cause=ArithmeticError" in f and "processor=cost" in f for f in failed) == 1, logs
    assert sum("cause=KeyError" in f and "processor=ttft" in f for f in failed) == 1, logs
