"""Scale-out (issue 5): N sidecars behind a trace-ID load balancer count what one sidecar counts.

The Collector's `load_balancing` exporter (collector/loadbalancing.yaml, `routing_key: traceID`)
is not in the otelcol-llm build (its Go module is not on the module proxy this project builds
from), so this test does the routing itself, the way that exporter does it: a consistent-hash
ring over the backend endpoints (crc32, 100 points per endpoint on 36000 positions, as in
contrib's exporter/loadbalancingexporter/consistent_hashing.go) and each span and log record
sent to the owner of its trace ID.

Seeded demo traffic is generated into memory, encoded to OTLP requests, and
- each request is split by trace ID into one request for sidecar A and one for sidecar B;
- the unsplit requests go to a third sidecar C.
Then every gen_ai_* series (tokens, cost, duration/token-usage/TTFT/time-per-chunk histogram
buckets, counts and sums, fallbacks and retries after the fallback window closed) summed over A
and B equals C's, read directly from /metrics and through a real Prometheus scraping all three
with `sum without (instance)`; and each equals what the demo says it sent. A control then
splits new traffic by span ID instead: tokens still add up, fallbacks and retries do not, which
is why the Collector must route by trace ID.
"""

from __future__ import annotations

import bisect
import math
import signal
import struct
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.demo import DemoStats, TokenCounts, emit_into
from tests.helpers.metrics import samples
from tests.helpers.otlp_sink import OtlpSink
from tests.helpers.prometheus import start_prometheus
from tests.helpers.sidecar import SidecarProcess, start_sidecar
from tests.stack._prom import PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

SEED = 5150
REQUESTS = 500  # demo requests: ~1.3k spans, ~700 log records
BATCH = 200  # spans per OTLP request, like a Collector batch
FALLBACK_WINDOW_S = 1.0
TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation", "reasoning")

# ------------------------------------------------------------------ the load balancer's ring

MAX_POSITIONS = 36000  # 360 degrees with two decimals
POINTS_PER_ENDPOINT = 100
PROBE_LIMIT = 10


class HashRing:
    """Consistent-hash ring of the loadbalancing exporter: each endpoint hashed to 100 points
    (crc32 of the endpoint followed by the point index as a little-endian uint32, modulo
    36000, moved forward past taken positions); an identifier (the 16 trace-ID bytes) belongs
    to the first point at or after crc32(identifier) % 36000, wrapping around."""

    def __init__(self, endpoints: Iterable[str]) -> None:
        taken: set[int] = set()
        items: list[tuple[int, str]] = []
        for endpoint in endpoints:
            for i in range(POINTS_PER_ENDPOINT):
                pos = zlib.crc32(endpoint.encode() + struct.pack("<I", i)) % MAX_POSITIONS
                probes = 0
                while pos in taken and probes < PROBE_LIMIT:
                    pos, probes = (pos + 1) % MAX_POSITIONS, probes + 1
                if probes >= PROBE_LIMIT:
                    continue
                taken.add(pos)
                items.append((pos, endpoint))
        items.sort()
        self.positions = [p for p, _ in items]
        self.endpoints = [e for _, e in items]

    def endpoint_for(self, identifier: bytes) -> str:
        i = bisect.bisect_left(self.positions, zlib.crc32(identifier) % MAX_POSITIONS)
        return self.endpoints[i if i < len(self.endpoints) else 0]


def split_traces(
    req: trace_service_pb2.ExportTraceServiceRequest, ring: HashRing
) -> dict[str, trace_service_pb2.ExportTraceServiceRequest]:
    """One request per backend, each span under its original resource and scope."""
    out: dict[str, trace_service_pb2.ExportTraceServiceRequest] = {}
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            parts: dict[str, Any] = {}
            for span in ss.spans:
                backend = ring.endpoint_for(span.trace_id)
                if backend not in parts:
                    new_rs = out.setdefault(
                        backend, trace_service_pb2.ExportTraceServiceRequest()
                    ).resource_spans.add()
                    new_rs.resource.CopyFrom(rs.resource)
                    new_rs.schema_url = rs.schema_url
                    new_ss = new_rs.scope_spans.add()
                    new_ss.scope.CopyFrom(ss.scope)
                    new_ss.schema_url = ss.schema_url
                    parts[backend] = new_ss
                parts[backend].spans.append(span)
    return out


def split_logs(
    req: logs_service_pb2.ExportLogsServiceRequest, ring: HashRing
) -> dict[str, logs_service_pb2.ExportLogsServiceRequest]:
    out: dict[str, logs_service_pb2.ExportLogsServiceRequest] = {}
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            parts: dict[str, Any] = {}
            for rec in sl.log_records:
                backend = ring.endpoint_for(rec.trace_id)
                if backend not in parts:
                    new_rl = out.setdefault(
                        backend, logs_service_pb2.ExportLogsServiceRequest()
                    ).resource_logs.add()
                    new_rl.resource.CopyFrom(rl.resource)
                    new_sl = new_rl.scope_logs.add()
                    new_sl.scope.CopyFrom(sl.scope)
                    parts[backend] = new_sl
                parts[backend].log_records.append(rec)
    return out


def split_by_span_id(
    req: trace_service_pb2.ExportTraceServiceRequest, ring: HashRing
) -> dict[str, trace_service_pb2.ExportTraceServiceRequest]:
    """The control: spans hashed by their own ID, so a trace's calls land on both sidecars."""
    out: dict[str, trace_service_pb2.ExportTraceServiceRequest] = {}
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                backend = ring.endpoint_for(span.span_id)
                new_rs = out.setdefault(
                    backend, trace_service_pb2.ExportTraceServiceRequest()
                ).resource_spans.add()
                new_rs.resource.CopyFrom(rs.resource)
                new_ss = new_rs.scope_spans.add()
                new_ss.scope.CopyFrom(ss.scope)
                new_ss.spans.append(span)
    return out


def test_ring_is_consistent() -> None:
    """The property the deployment relies on: a trace always goes to the same backend, both
    backends get a fair share, and adding a third moves only about a third of the traces."""
    two = HashRing(["10.0.0.1:4317", "10.0.0.2:4317"])
    three = HashRing(["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"])
    assert len(two.positions) == 200 and len(set(two.positions)) == 200
    ids = [zlib.crc32(i.to_bytes(4, "big")).to_bytes(4, "big") * 4 for i in range(6000)]
    owners = [two.endpoint_for(t) for t in ids]
    assert owners == [two.endpoint_for(t) for t in ids]  # deterministic
    share = Counter(owners)["10.0.0.1:4317"] / len(ids)
    assert 0.3 < share < 0.7, share
    moved = [t for t, o in zip(ids, owners, strict=True) if three.endpoint_for(t) != o]
    assert all(three.endpoint_for(t) == "10.0.0.3:4317" for t in moved)  # only to the newcomer
    assert 0.15 < len(moved) / len(ids) < 0.5


# ------------------------------------------------------------------------------- the traffic


def demo_requests(
    seed: int = SEED,
) -> tuple[
    DemoStats,
    list[trace_service_pb2.ExportTraceServiceRequest],
    list[logs_service_pb2.ExportLogsServiceRequest],
]:
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    stats = emit_into(spans, logs, REQUESTS, seed=seed)
    finished = spans.get_finished_spans()
    records = logs.get_finished_logs()
    assert len(finished) == stats.spans and len(records) == stats.log_records
    traces = [
        trace_service_pb2.ExportTraceServiceRequest.FromString(
            encode_spans(finished[i : i + BATCH]).SerializeToString()
        )
        for i in range(0, len(finished), BATCH)
    ]
    log_reqs = [
        logs_service_pb2.ExportLogsServiceRequest.FromString(
            encode_logs(records[i : i + BATCH]).SerializeToString()
        )
        for i in range(0, len(records), BATCH)
    ]
    return stats, traces, log_reqs


def send(endpoint: str, traces: Sequence[Any], logs: Sequence[Any]) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        t = trace_service_pb2_grpc.TraceServiceStub(ch)
        lg = logs_service_pb2_grpc.LogsServiceStub(ch)
        for req in traces:
            resp = t.Export(req, timeout=20)
            assert resp.partial_success.rejected_spans == 0, resp
        for lreq in logs:
            lg.Export(lreq, timeout=20)


def n_spans(reqs: Iterable[Any]) -> int:
    return sum(len(ss.spans) for r in reqs for rs in r.resource_spans for ss in rs.scope_spans)


def n_logs(reqs: Iterable[Any]) -> int:
    return sum(len(sl.log_records) for r in reqs for rl in r.resource_logs for sl in rl.scope_logs)


# ----------------------------------------------------------------------------------- metrics

Key = tuple[str, frozenset[tuple[str, str]]]
ADDITIVE_SELF = (  # llm_pipeline_* counters that must add up too
    "llm_pipeline_received_items_total",
    "llm_pipeline_llm_spans_total",
    "llm_pipeline_unpriced_spans_total",
    "llm_pipeline_redactions_total",
)


def series(sc: SidecarProcess) -> dict[Key, float]:
    """gen_ai_* samples and the additive llm_pipeline_* counters of one sidecar's /metrics."""
    out: dict[Key, float] = {}
    for s in samples(sc.scrape()):
        if s.name.endswith("_created"):
            continue
        if s.name.startswith("gen_ai_") or s.name in ADDITIVE_SELF:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def add(*parts: dict[Key, float]) -> dict[Key, float]:
    total: dict[Key, float] = {}
    for p in parts:
        for k, v in p.items():
            total[k] = total.get(k, 0.0) + v
    return total


def nonzero(d: dict[Key, float]) -> dict[Key, float]:
    return {k: v for k, v in d.items() if v != 0}


def exact(name: str) -> bool:
    """Integer-valued series compare exactly; sums of float observations and cost to 1e-9."""
    return not (name.endswith("_sum") or name.startswith("gen_ai_client_cost_usd"))


def assert_same(got: dict[Key, float], want: dict[Key, float], what: str) -> None:
    assert set(got) == set(want), (
        f"{what}: series only in one side: {sorted(set(got) ^ set(want), key=str)[:10]}"
    )
    bad = [
        (k, got[k], want[k])
        for k in want
        if (got[k] != want[k] if exact(k[0]) else not math.isclose(got[k], want[k], abs_tol=1e-9))
    ]
    assert bad == [], f"{what}: {len(bad)} series differ, e.g. {bad[:5]}"


def by_name(d: dict[Key, float]) -> Counter[str]:
    return Counter(k[0] for k in d)


def tokens_by_series(d: dict[Key, float]) -> dict[tuple[str, str, str, str], TokenCounts]:
    """Token counters folded to DemoStats' key (service, operation, provider, request model)."""
    out: dict[tuple[str, str, str, str], TokenCounts] = {}
    for (name, labels), v in d.items():
        if name != "gen_ai_client_tokens_total":
            continue
        lab = dict(labels)
        key = (
            lab["service_name"],
            lab["gen_ai_operation_name"],
            lab["gen_ai_provider_name"],
            lab["gen_ai_request_model"],
        )
        t = out.setdefault(key, TokenCounts())
        tt = lab["gen_ai_token_type"]
        setattr(t, tt, getattr(t, tt) + int(v))
    return out


def fallback_pairs(d: dict[Key, float]) -> Counter[tuple[str, str, str, str, str]]:
    out: Counter[tuple[str, str, str, str, str]] = Counter()
    for (name, labels), v in d.items():
        if name == "gen_ai_client_fallbacks_total":
            lab = dict(labels)
            key = ("service_name", "from_provider", "from_model", "to_provider", "to_model")
            k = tuple(lab[x] for x in key)
            out[(k[0], k[1], k[2], k[3], k[4])] += int(v)
    return out


def retries_by(d: dict[Key, float]) -> Counter[tuple[str, str, str]]:
    out: Counter[tuple[str, str, str]] = Counter()
    for (name, labels), v in d.items():
        if name == "gen_ai_client_retries_total":
            lab = dict(labels)
            out[
                (lab["service_name"], lab["gen_ai_provider_name"], lab["gen_ai_request_model"])
            ] += int(v)
    return out


# -------------------------------------------------------------------------------- Prometheus


def prom_view(d: dict[Key, float]) -> dict[Key, float]:
    """The gen_ai_* series as Prometheus stores them: a label with an empty value is no label."""
    return {
        (name, frozenset((k, v) for k, v in labels if v != "")): value
        for (name, labels), value in d.items()
        if name.startswith("gen_ai_")
    }


def start_prometheus_jobs(tmp: Path, jobs: dict[str, list[str]]) -> PrometheusServer:
    """A real Prometheus scraping several instances per job."""
    return start_prometheus(tmp, dict(jobs))


def prom_sums(prom: PrometheusServer, names: Iterable[str], job: str) -> dict[Key, float]:
    """`sum without (instance) (name{job=...})` for each name, job label dropped."""
    out: dict[Key, float] = {}
    for name in names:
        for r in prom.query(f'sum without (instance) ({name}{{job="{job}"}})'):
            labels = {k: v for k, v in r["metric"].items() if k != "job"}
            out[(name, frozenset(labels.items()))] = float(r["value"][1])
    return out


# -------------------------------------------------------------------------------------- test


@dataclass
class Trio:
    a: SidecarProcess  # A and B: the scaled-out pair, forwarding to sink_ab
    b: SidecarProcess
    c: SidecarProcess  # C: the single instance, forwarding to sink_c
    sink_ab: OtlpSink
    sink_c: OtlpSink


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[Trio]:
    sink_ab, sink_c = OtlpSink().start(), OtlpSink().start()

    def start(name: str, sink: OtlpSink) -> SidecarProcess:
        d = tmp_path / name
        d.mkdir()
        cfg = {
            "exporters": {
                "traces": {"protocol": "grpc", "endpoint": f"127.0.0.1:{sink.grpc_port}"},
                "logs": {"protocol": "grpc", "endpoint": f"127.0.0.1:{sink.grpc_port}"},
            },
            "fallback": {"window_s": FALLBACK_WINDOW_S},
        }
        return start_sidecar(d, cfg)

    with ThreadPoolExecutor(3) as pool:  # started side by side: a third of the wait
        futures = [
            pool.submit(start, n, s) for n, s in (("a", sink_ab), ("b", sink_ab), ("c", sink_c))
        ]
    started = [f.result() for f in futures if f.exception() is None]
    try:
        if len(started) < 3:
            raise next(e for f in futures if (e := f.exception()) is not None)
        a, b, c = started
        yield Trio(a, b, c, sink_ab, sink_c)
    finally:
        for sc in started:  # SIGTERM to all first: they shut down side by side
            sc.proc.send_signal(signal.SIGTERM)
        for sc in started:
            try:
                rc = sc.proc.wait(30)
            except subprocess.TimeoutExpired:
                rc = sc.stop()  # SIGKILL after another 30 s
            assert rc == 0, sc.logs()[-2000:]
        sink_ab.stop()
        sink_c.stop()


def received(sc: SidecarProcess, signal: str) -> float:
    return sum(
        v
        for (name, labels), v in series(sc).items()
        if name == "llm_pipeline_received_items_total" and ("signal", signal) in labels
    )


def test_two_sidecars_routed_by_trace_id_count_what_one_counts(tmp_path: Path, trio: Trio) -> None:
    a, b, c = trio.a, trio.b, trio.c
    stats, traces, logs = demo_requests()
    # The ring over the names the static resolver would list (SIDECAR_ENDPOINTS' default in
    # collector/loadbalancing.yaml), standing for A and B: a fixed ring, so a fixed share.
    A, B = "sidecar-0:4317", "sidecar-1:4317"
    ring = HashRing([A, B])
    parts: dict[str, tuple[list[Any], list[Any]]] = {A: ([], []), B: ([], [])}
    for req in traces:
        for backend, sub in split_traces(req, ring).items():
            parts[backend][0].append(sub)
    for lreq in logs:
        for backend, lsub in split_logs(lreq, ring).items():
            parts[backend][1].append(lsub)

    # a real split: every trace on one side only, both sides with a fair share
    trace_ids = {
        ep: {
            s.trace_id
            for r in p[0]
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        }
        for ep, p in parts.items()
    }
    ta, tb = trace_ids[A], trace_ids[B]
    assert not ta & tb
    assert len(ta) + len(tb) == stats.requests  # one trace per demo request
    assert min(len(ta), len(tb)) > 0.3 * stats.requests
    assert n_spans(parts[A][0]) + n_spans(parts[B][0]) == stats.spans
    assert n_logs(parts[A][1]) + n_logs(parts[B][1]) == stats.log_records

    prom = start_prometheus_jobs(
        tmp_path,
        {
            "scaled": [f"127.0.0.1:{a.metrics_port}", f"127.0.0.1:{b.metrics_port}"],
            "single": [f"127.0.0.1:{c.metrics_port}"],
        },
    )
    try:
        # C gets everything while A and B get their halves, concurrently.
        t0 = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            jobs = [
                pool.submit(send, c.grpc_endpoint, traces, logs),
                pool.submit(send, a.grpc_endpoint, *parts[A]),
                pool.submit(send, b.grpc_endpoint, *parts[B]),
            ]
            for job in jobs:
                job.result(60)
        assert received(c, "traces") == stats.spans
        assert received(a, "traces") + received(b, "traces") == stats.spans
        assert received(a, "logs") + received(b, "logs") == received(c, "logs") == stats.log_records
        # Fallback/retry decisions are counted when a trace's window closes (window_s after
        # its first call, checked every second): wait until C has them all and A+B == C.
        deadline = time.monotonic() + FALLBACK_WINDOW_S + 10
        while True:
            sa, sb, sc_ = series(a), series(b), series(c)
            summed, single = nonzero(add(sa, sb)), nonzero(sc_)
            settled = (fallback_pairs(single), retries_by(single)) == (
                stats.fallback_pairs,
                stats.retries_by,
            )
            if (settled and summed == single) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        send_s = time.monotonic() - t0
        assert_same(summed, single, "A+B vs C (/metrics)")
        names = by_name(single)
        for family in (
            "gen_ai_client_tokens_total",
            "gen_ai_client_cost_usd_total",
            "gen_ai_client_operation_duration_seconds_bucket",
            "gen_ai_client_operation_duration_seconds_count",
            "gen_ai_client_operation_duration_seconds_sum",
            "gen_ai_client_token_usage_bucket",
            "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
            "gen_ai_client_operation_time_per_output_chunk_seconds_sum",
        ):
            assert names[family] > 0, f"no {family} series: the comparison would be vacuous"
        # ...and both equal what the demo sent (so A+B == C is not two equal wrong answers)
        want_tokens = {
            k: TokenCounts(0, t.input, t.output, t.cache_read, t.cache_creation, t.reasoning)
            for k, t in stats.tokens_by_series.items()
            if any(getattr(t, tt) for tt in TOKEN_TYPES)
        }
        assert tokens_by_series(single) == want_tokens
        failed = sum(
            v
            for (name, labels), v in single.items()
            if name == "gen_ai_client_operation_duration_seconds_count"
            and dict(labels)["error_type"] != ""
        )
        assert failed == sum(stats.errors.values())
        # A and B each counted a real share (neither is the whole, neither is empty)
        tok = "gen_ai_client_tokens_total"
        for part in (sa, sb):
            share = sum(v for k, v in part.items() if k[0] == tok) / sum(
                v for k, v in single.items() if k[0] == tok
            )
            assert 0.2 < share < 0.8, share

        # The forwarded spans: A and B together forwarded exactly what C forwarded.
        sink_ab, sink_c = trio.sink_ab, trio.sink_c
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            len(sink_ab.spans()) < stats.spans or len(sink_c.spans()) < stats.spans
        ):
            time.sleep(0.2)
        ab_ids = Counter(s.span_id for s in sink_ab.spans())
        c_ids = Counter(s.span_id for s in sink_c.spans())
        assert ab_ids == c_ids and len(c_ids) == stats.spans

        # Prometheus scraping all three: sum without (instance) over the scaled job == single.
        gen_ai = sorted({n for n in names if n.startswith("gen_ai_")})

        def prom_equal() -> tuple[dict[Key, float], dict[Key, float]] | None:
            p_scaled = nonzero(prom_sums(prom, gen_ai, "scaled"))
            p_single = nonzero(prom_sums(prom, gen_ai, "single"))
            want = prom_view(single)
            if set(p_scaled) == set(want) and set(p_single) == set(want):
                return p_scaled, p_single
            return None

        deadline = time.monotonic() + 15
        got = prom_equal()
        while got is None and time.monotonic() < deadline:
            time.sleep(0.5)
            got = prom_equal()
        assert got is not None, prom.log_path.read_text()[-2000:]
        p_scaled, p_single = got
        want = prom_view(single)
        assert_same(p_scaled, want, "Prometheus sum without (instance) {job=scaled} vs C")
        assert_same(p_single, want, "Prometheus {job=single} vs C")
        ups = {r["metric"]["instance"]: r["value"][1] for r in prom.query("up")}
        assert len(ups) == 3 and set(ups.values()) == {"1"}
        [tokens] = prom.query(
            'sum(gen_ai_client_tokens_total{job="scaled"}) - sum(gen_ai_client_tokens_total{job="single"})'
        )
        assert float(tokens["value"][1]) == 0

        # Fallbacks and retries are decided per trace (failed call, then the next call under
        # the same parent): they add up only because whole traces reach one sidecar.
        assert fallback_pairs(single) == stats.fallback_pairs and stats.fallbacks > 0
        assert retries_by(single) == stats.retries_by and stats.retries > 0
        print(
            f"\n{stats.requests} requests, {stats.spans} spans, {stats.log_records} logs; "
            f"A {len(ta)} traces, B {len(tb)}; {len(single)} series compared; "
            f"{stats.fallbacks} fallbacks, {stats.retries} retries; send+settle {send_s:.1f}s"
        )

        # Control: new traffic split by span ID instead (a trace-unaware balancer). The
        # additive metrics still add up; the per-trace decisions no longer do.
        stats2, traces2, _ = demo_requests(SEED + 1)
        before = add(series(a), series(b))
        by_span: dict[str, list[Any]] = {A: [], B: []}
        for req in traces2:
            for backend, sub in split_by_span_id(req, ring).items():
                by_span[backend].append(sub)
        send(a.grpc_endpoint, by_span[A], [])
        send(b.grpc_endpoint, by_span[B], [])
        time.sleep(FALLBACK_WINDOW_S + 1.3)  # every window closed (1 s ticker)
        delta = {k: v - before.get(k, 0.0) for k, v in add(series(a), series(b)).items()}
        assert tokens_by_series(nonzero(delta)) == {
            k: TokenCounts(0, t.input, t.output, t.cache_read, t.cache_creation, t.reasoning)
            for k, t in stats2.tokens_by_series.items()
            if any(getattr(t, tt) for tt in TOKEN_TYPES)
        }
        got2 = (fallback_pairs(nonzero(delta)), retries_by(nonzero(delta)))
        assert got2 != (stats2.fallback_pairs, stats2.retries_by)
        print(
            f"split by span id: {sum(got2[0].values())} fallbacks of {stats2.fallbacks}, "
            f"{sum(got2[1].values())} retries of {stats2.retries}"
        )
    finally:
        prom.stop()
