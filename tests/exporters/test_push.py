"""metrics.push: the OTLP encoding of the aggregation, and delivery through the sending queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.aggregation import DURATION_BUCKETS, TOKEN_BUCKETS
from pipeline.config import Config, ConfigError, PushConfig, from_dict
from pipeline.exporters.otlp_metrics import CUMULATIVE, DELTA
from pipeline.exporters.prometheus import AggregationCollector, render
from pipeline.exporters.snapshot import take
from pipeline.service import Service
from tests.helpers.otlp_build import spans_request
from tests.helpers.otlp_sink import OtlpSink
from tests.helpers.process import wait_until


def _service(tmp_path: Path, **push: Any) -> Service:
    cfg = Config()
    cfg.file.directory = str(tmp_path / "out")
    cfg.metrics.push = PushConfig(**{"endpoint": "127.0.0.1:1", **push})
    cfg.queue.retry_initial_s = 0.05
    cfg.queue.retry_max_s = 0.2
    cfg.validate()
    return Service(cfg)


def _metrics(req: Any) -> dict[str, Any]:
    return {m.name: m for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def _attrs(dp: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in dp.attributes}


def _scraped(svc: Service) -> dict[str, float]:
    """Sample name (+ sorted labels) -> value, as /metrics serves them."""
    body, _ = render(AggregationCollector(svc.agg, svc.telemetry), "text/plain")
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[s.name + repr(sorted(s.labels.items()))] = s.value
    return out


def _sum(m: Any, attr: str | None = None, value: str | None = None) -> float:
    return sum(
        dp.as_double for dp in m.sum.data_points if attr is None or _attrs(dp).get(attr) == value
    )


def test_names_units_buckets_exemplars_match_the_scrape(tmp_path: Path) -> None:
    svc = _service(tmp_path, service_name="sidecar-a")
    svc.accept("traces", spans_request(0, 7, model="gpt-4o"), None, "grpc")
    svc.accept("traces", spans_request(100, 3, model="gpt-4o-mini"), None, "grpc")
    assert svc.pusher is not None
    req, points = svc.pusher.encoder.encode(svc.pusher.snapshot())
    m = _metrics(req)
    assert points == sum(len(x.histogram.data_points) + len(x.sum.data_points) for x in m.values())
    res = {kv.key: kv.value.string_value for kv in req.resource_metrics[0].resource.attributes}
    assert res["service.name"] == "sidecar-a" and res["service.instance.id"]

    dur = m["gen_ai.client.operation.duration"]
    assert dur.unit == "s"
    assert dur.histogram.aggregation_temporality == CUMULATIVE
    usage = m["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    dps = {
        (_attrs(d)["gen_ai.request.model"], _attrs(d)["gen_ai.token.type"]): d
        for d in usage.histogram.data_points
    }
    inp = dps["gpt-4o", "input"]
    assert list(inp.explicit_bounds) == list(TOKEN_BUCKETS)
    assert inp.count == 7 and inp.sum == 70.0
    assert len(inp.bucket_counts) == len(TOKEN_BUCKETS) + 1
    assert inp.bucket_counts[TOKEN_BUCKETS.index(16)] == 7  # 10 tokens: (4, 16]
    assert list(dur.histogram.data_points[0].explicit_bounds) == list(DURATION_BUCKETS)
    # exemplars: the ids of a span that fell into the bucket
    ex = inp.exemplars[0]
    assert 1 <= int.from_bytes(ex.trace_id, "big") <= 7 and len(ex.span_id) == 8
    assert ex.as_double == 10.0

    # the same numbers as the scrape
    scraped = _scraped(svc)
    tokens = m["gen_ai_client_tokens"]
    assert tokens.sum.is_monotonic and tokens.unit == "{token}"
    scraped_tokens = sum(
        v for k, v in scraped.items() if k.startswith("gen_ai_client_tokens_total")
    )
    assert _sum(tokens) == scraped_tokens == 10 * (10 + 5)
    cost = m["gen_ai_client_cost_usd"]
    scraped_cost = sum(
        v for k, v in scraped.items() if k.startswith("gen_ai_client_cost_usd_total")
    )
    assert scraped_cost > 0
    assert _sum(cost) == pytest.approx(scraped_cost, rel=1e-12)
    # derived only: self-metrics stay home unless `self: true`
    assert not any(n.startswith("llm_pipeline_") for n in m if "time_per_output" not in n)


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_self_metrics_go_through_the_sdk_into_the_same_queue(
    tmp_path: Path, temporality: str
) -> None:
    sink = OtlpSink().start()
    try:
        svc = _service(
            tmp_path,
            endpoint=f"127.0.0.1:{sink.grpc_port}",
            interval_s=0.3,
            self=True,
            temporality=temporality,
        )
        svc.start()
        svc.accept("traces", spans_request(0, 2), None, "http")
        assert svc.wait_processed()

        def received() -> float:
            for r in sink.requests["metrics"]:
                m = _metrics(r).get("llm_pipeline_received_items")
                if m is not None and _sum(m, "signal", "traces") == 2:
                    return 2.0
            return 0.0

        wait_until(received, 20)
        svc.shutdown()
        by_name: dict[str, Any] = {}
        resources = set()
        for r in sink.requests["metrics"]:
            for rm in r.resource_metrics:
                res = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
                resources.add(res["service.instance.id"])
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        by_name[m.name] = m
        # one sidecar: the SDK's requests carry the same resource as the derived ones
        assert len(resources) == 1
        received = by_name["llm_pipeline_received_items"].sum
        assert received.is_monotonic
        # the SDK's own always cumulative: a refused delta would be lost
        assert received.aggregation_temporality == CUMULATIVE
        assert "gen_ai_client_tokens" in by_name  # the derived ones, same destination
        q = by_name["llm_pipeline_queue_size"].gauge.data_points
        assert {_attrs(d)["exporter"] for d in q} >= {"otlp_grpc/push", "file/traces"}
        # the SDK's points are counted like any other in the push queue's self-metrics
        exported = svc.telemetry.exported.series[("metrics", "otlp_grpc/push")].value
        assert exported == sum(
            len(getattr(m, m.WhichOneof("data")).data_points)
            for r in sink.requests["metrics"]
            for m in _metrics(r).values()
        )
    finally:
        sink.stop()


def test_delta_sends_the_change_and_leaves_quiet_series_out(tmp_path: Path) -> None:
    svc = _service(tmp_path, temporality="delta")
    enc = svc.pusher.encoder if svc.pusher else None
    assert enc is not None
    svc.accept("traces", spans_request(0, 4, model="a"), None, "grpc")
    svc.accept("traces", spans_request(10, 2, model="b"), None, "grpc")
    first, _ = enc.encode(take(svc.agg))
    svc.accept("traces", spans_request(20, 3, model="a"), None, "grpc")
    second, _ = enc.encode(take(svc.agg))
    m1, m2 = _metrics(first), _metrics(second)
    u1, u2 = m1["gen_ai.client.token.usage"].histogram, m2["gen_ai.client.token.usage"].histogram
    assert u2.aggregation_temporality == DELTA
    models = {_attrs(d)["gen_ai.request.model"] for d in u2.data_points}
    assert models == {"a"}  # b did not change
    a_in = next(d for d in u2.data_points if _attrs(d)["gen_ai.token.type"] == "input")
    assert a_in.count == 3 and a_in.sum == 30.0
    # the second interval starts where the first ended
    assert a_in.start_time_unix_nano == u1.data_points[0].time_unix_nano
    assert _sum(m2["gen_ai_client_tokens"]) == 3 * 15
    _, points = enc.encode(take(svc.agg))
    assert points == 0


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_outage_is_retried_through_the_queue_nothing_lost(tmp_path: Path, protocol: str) -> None:
    sink = OtlpSink().start()
    try:
        endpoint = (
            f"127.0.0.1:{sink.grpc_port}"
            if protocol == "grpc"
            else f"http://127.0.0.1:{sink.http_port}"
        )
        svc = _service(
            tmp_path, endpoint=endpoint, protocol=protocol, interval_s=0.2, temporality="delta"
        )
        assert svc.pusher is not None
        name = svc.pusher.queue.name
        assert name == ("otlp_grpc/push" if protocol == "grpc" else "otlp_http/push")
        svc.start()
        sink.failing = True
        svc.accept("traces", spans_request(0, 5), None, "grpc")
        assert svc.wait_processed()
        wait_until(lambda: sink.attempts >= 3, 20)
        svc.accept("traces", spans_request(50, 6), None, "grpc")
        assert svc.wait_processed()
        sink.failing = False
        tel = svc.telemetry
        left = svc.shutdown()
        assert left["metrics"] == 0
        tokens = [
            m
            for r in sink.requests["metrics"]
            for m in _metrics(r).values()
            if m.name == "gen_ai_client_tokens"
        ]
        # delta: the requests add up to the totals, each change delivered exactly once
        assert sum(_sum(m) for m in tokens) == 11 * 15
        assert tel.export_failures.series[("metrics", name)].value >= 1
        exported = tel.exported.series[("metrics", name)].value
        points = sum(
            len(m.histogram.data_points) + len(m.sum.data_points)
            for r in sink.requests["metrics"]
            for m in _metrics(r).values()
        )
        assert exported == points
    finally:
        sink.stop()


def test_config_is_validated() -> None:
    for bad, msg in (
        ({"protocol": "http"}, "grpc or http/protobuf"),
        ({"temporality": "both"}, "cumulative or delta"),
        ({"interval_s": 0}, "interval_s"),
        ({"protocol": "http/protobuf", "endpoint": "host:1"}, "http(s)://"),
    ):
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            from_dict(Config, {"metrics": {"push": {"endpoint": "h:4317", **bad}}}).validate()
    off = from_dict(Config, {"metrics": {"push": {"interval_s": 0, "service_name": ""}}})
    off.validate()  # no endpoint: push is off, nothing else is looked at


def test_delta_keeps_the_change_of_a_request_a_full_queue_refused(tmp_path: Path) -> None:
    svc = _service(tmp_path, temporality="delta")
    pusher = svc.pusher
    assert pusher is not None
    pusher.queue.max_items = 1  # one request waits (never delivered: not started), no more
    svc.accept("traces", spans_request(0, 2), None, "grpc")
    assert pusher.push() > 0
    svc.accept("traces", spans_request(10, 3), None, "grpc")
    assert pusher.push() == 0 and pusher.skipped == 1
    # the refused change is not lost: the next request carries it
    req, _ = pusher.encoder.encode(pusher.snapshot())
    assert _sum(_metrics(req)["gen_ai_client_tokens"]) == 3 * 15
    assert pusher.shutdown(0.0) > 0  # never delivered: counted as dropped at shutdown
    name = pusher.queue.name
    assert svc.telemetry.dropped.series[("metrics", name, "shutdown")].value > 0
