"""Benchmark: the sidecar against the otelcol-llm Collector on the same LLM span load.

What it does (all on loopback, all bounded in time):

1. Builds a pool of realistic 100-span OTLP/gRPC ExportTraceServiceRequest payloads with the
   demo's generator (`pipeline.demo.emit_into`, the real OTel SDK into an InMemorySpanExporter,
   encoded with the SDK's `encode_spans`), once, before any load, so the senders' CPU goes into
   sending. Every send rewrites the first 8 bytes of each trace id in place (offsets found once
   per payload), so no two sends carry the same (trace id, span id).
2. Starts a counting OTLP sink (its own process) and the system under test (SUT) pinned to one
   core (`--sut-core`, default 1): the sidecar (`python -m pipeline.cli run`, forwarding traces
   over OTLP/gRPC to the sink) or the Collector (`scripts/build-collector.sh`'s binary with
   `bench/collector-bench.yaml`: otlp receiver -> batch -> otlp_grpc exporter to the sink, plus
   span_metrics deriving the duration histogram, signal_to_metrics the token usage histogram).
3. Drives it with `--senders` sender processes pinned to the other core (`--load-core`,
   default 0), raw unary gRPC calls paced to a target rate, stepping the rate up until the
   accepted rate falls short of the offered rate (< 97%) or the p99 round trip exceeds
   `--p99-limit-ms`. Per step and system: accepted spans/s, CPU seconds of the SUT process
   (utime+stime from /proc/PID/stat, all threads) -> CPU us per span and utilisation, per-batch
   round-trip p50/p99 as the sender sees it ("added latency"), RSS and peak RSS (VmHWM), and the
   busy share of both cores from /proc/stat (to see noise from other processes and whether the
   load generator itself ran out of core).
4. Prints a table per system, the max sustained spans/s per core, and the ratio
   sidecar CPU us/span / Collector CPU us/span at a common moderate rate and at saturation.

Modes:
    python bench/bench.py                       # full ramp, sidecar + Collector (~6-8 min)
    python bench/bench.py --quick               # ~1 minute
    python bench/bench.py --systems sidecar,sidecar-passthrough,sidecar-min,collector
    python bench/bench.py --profile             # py-spy on the sidecar at --profile-rate
    python bench/bench.py --stages              # in-process CPU per stage of Service.accept
    python bench/bench.py --outage              # sink down --outage-seconds under steady load
    python bench/bench.py --json                # also write bench/results.json

`llm-pipeline bench ARGS` runs this file too. Figures are noisy when other work shares the
machine: the "core busy" columns show how much of each core was used by anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import multiprocessing as mp
import os
import pickle
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the checkout's pipeline/ and tests/, not an installed copy

BENCH_DIR = REPO / "bench"
OUT_DIR = BENCH_DIR / "_out"
COLLECTOR_CONFIG = BENCH_DIR / "collector-bench.yaml"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_BATCH = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")

FULL_RATES = [
    2_000,
    5_000,
    10_000,
    15_000,
    20_000,
    30_000,
    40_000,
    60_000,
    80_000,
    120_000,
    160_000,
]
QUICK_RATES = [2_000, 10_000, 40_000]

# The sidecar variants: the product as configured by default, and two stripped chains that
# split its cost into "receive + forward" and "the LLM metrics proper".
SIDECAR_PROCESSORS: dict[str, list[str] | None] = {
    "sidecar": None,  # the default chain (all processors)
    "sidecar-min": ["normalize", "metrics"],
    "sidecar-passthrough": [],
    "sidecar-python": None,  # the default chain without the native helpers (native/)
    "sidecar-gzip": None,  # the default chain, forwarding with gzip
    "sidecar-grpcio": None,  # the default chain on grpcio's transports (not native/'s)
}
WITHOUT_NATIVE = {"sidecar-python"}
# The sidecars forward uncompressed, as compose/sidecar/config.yaml does on its hop back to the
# Collector beside it; `sidecar-gzip` shows what gzip on that hop would cost.
WITH_GZIP = {"sidecar-gzip"}
WITH_GRPCIO = {"sidecar-grpcio"}
GZIP_STAGE = "gzip (export with compression: gzip only, approx.)"
SYSTEMS = (*SIDECAR_PROCESSORS, "collector")


# ------------------------------------------------------------------------------------------
# Results


@dataclass
class StepResult:
    system: str
    offered_spans_s: float  # the target rate
    attempted_spans_s: float  # what the senders managed to send (falls short when blocked)
    accepted_spans_s: float  # OK responses x 100 per second
    forwarded_spans_s: float  # arriving at the sink
    rejected: int  # UNAVAILABLE / RESOURCE_EXHAUSTED answers (backpressure)
    errors: dict[str, int]  # other gRPC status codes
    cpu_s: float  # SUT process CPU over the measured window
    cpu_util: float  # cpu_s / wall (1.0 = one core)
    cpu_us_per_span: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    rss_mb: float
    sut_core_other_util: float  # the SUT's core busy with anything but the SUT
    load_core_util: float  # the load generator's core, all processes
    load_gen_util: float  # senders + sink + this process
    load_core_other_util: float  # the load core busy with anything but the load generator
    window_s: float
    passed: bool
    verdict: str  # "ok" or why the step is not sustained


@dataclass
class SystemResult:
    system: str
    steps: list[StepResult] = field(default_factory=list)
    max_sustained_spans_s: float = 0.0  # highest accepted rate of a passing step
    cpu_util_at_max: float = 0.0
    cpu_us_per_span_at_max: float = 0.0
    spans_s_per_core: float = 0.0  # 1e6 / cpu_us_per_span at the highest passing step
    p50_ms_at_max: float = 0.0
    p99_ms_at_max: float = 0.0
    peak_rss_mb: float = 0.0  # VmHWM at the end of the ramp
    limited_by: str = ""  # what stopped the ramp
    notes: list[str] = field(default_factory=list)


@dataclass
class Ratio:
    label: str
    sidecar_system: str
    sidecar_rate: float
    sidecar_cpu_us_per_span: float
    collector_rate: float
    collector_cpu_us_per_span: float
    ratio: float
    # the ratio of each round at this rate (k-th step of each system: the same round), when a
    # rate was run more than once; `ratio` and the µs are then their medians
    rounds: list[float] = field(default_factory=list)


@dataclass
class OutageResult:
    system: str
    rate_spans_s: float
    outage_s: float
    queue_bound: str
    sent_ok_spans: int
    rejected_batches: int
    other_errors: dict[str, int]
    arrived_spans: int  # at the sink, counting duplicates
    arrived_unique_spans: int
    lost_spans: int  # sent OK but never arrived
    duplicate_spans: int
    queue_peak: float
    queue_unit: str
    rss_peak_mb: float
    drain_s: float  # from the sink's return until everything sent OK had arrived (or gave up)
    resume_s: float  # from the sink's return until the first span arrived again (retry backoff)
    p99_ms: float
    max_ms: float
    timeline: list[dict[str, float]] = field(default_factory=list)


@dataclass
class ProfileResult:
    rate_spans_s: float
    accepted_spans_s: float
    seconds: float
    samples: int
    gil_held_share: float  # of wall time, from the --gil sample count
    cpu_util: float  # process CPU over the raw profile window
    cpu_us_per_span: float
    threads: list[tuple[str, float]]  # CPU % of one core per thread name
    raw_path: str
    svg_path: str
    top_self: list[tuple[str, float]]
    top_inclusive: list[tuple[str, float]]
    by_file: list[tuple[str, float]]


@dataclass
class StageResult:
    batches: int
    spans: int
    us_per_span: dict[str, float]


@dataclass
class BenchResults:
    command: str
    started: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    pool: dict[str, Any]
    systems: list[SystemResult] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    outage: list[OutageResult] = field(default_factory=list)
    profile: ProfileResult | None = None
    stages: StageResult | None = None


# ------------------------------------------------------------------------------------------
# /proc readings


def proc_cpu_s(pid: int) -> float:
    """utime + stime (+ waited-for children) of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cores_busy() -> dict[int, tuple[float, float]]:
    """Per core: (busy seconds, total seconds) since boot, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                total = sum(v[:8])
                idle = v[3] + v[4]
                out[int(name[3:])] = ((total - idle) / CLK_TCK, total / CLK_TCK)
    return out


def core_util(
    a: dict[int, tuple[float, float]], b: dict[int, tuple[float, float]], core: int
) -> float:
    busy = b[core][0] - a[core][0]
    total = b[core][1] - a[core][1]
    return busy / total if total > 0 else 0.0


def pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def free_port() -> int:
    from tests.helpers.otlp_sink import free_port as _free_port

    return _free_port()


# ------------------------------------------------------------------------------------------
# The payload pool


@dataclass
class Payload:
    data: bytes
    trace_id_offsets: list[int]  # where each span's trace id starts in `data`
    spans: int


def build_pool(batches: int, seed: int) -> tuple[list[Payload], dict[str, Any]]:
    """`batches` serialized 100-span requests of the demo's traffic mix."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from pipeline import demo

    exporter = InMemorySpanExporter()
    spans: list[Any] = []
    requests = 0
    t0 = time.perf_counter()
    chunk = max(200, batches * SPANS_PER_BATCH // 3)
    while len(spans) < batches * SPANS_PER_BATCH:
        stats = demo.emit_into(exporter, None, chunk, seed=seed + requests)
        requests += stats.requests
        spans = list(exporter.get_finished_spans())
    spans = spans[: batches * SPANS_PER_BATCH]
    pool = []
    for i in range(0, len(spans), SPANS_PER_BATCH):
        part = spans[i : i + SPANS_PER_BATCH]
        data = encode_spans(part).SerializeToString()
        offsets: list[int] = []
        for tid in {s.context.trace_id.to_bytes(16, "big") for s in part}:
            at = data.find(tid)
            while at >= 0:
                offsets.append(at)
                at = data.find(tid, at + 16)
        pool.append(Payload(data, sorted(offsets), len(part)))
    kinds = Counter(s.kind.name for s in spans)
    llm = sum(
        1
        for s in spans
        if (s.attributes or {}).get("gen_ai.operation.name")
        not in (None, "execute_tool", "invoke_agent")
    )
    info = {
        "generator": "pipeline.demo.emit_into (OTel SDK, all demo services)",
        "batches": len(pool),
        "spans_per_batch": SPANS_PER_BATCH,
        "requests": requests,
        "mean_batch_bytes": round(statistics.mean(len(p.data) for p in pool)),
        "span_kinds": dict(kinds),
        "llm_call_share": round(llm / len(spans), 3),
        "build_s": round(time.perf_counter() - t0, 2),
    }
    return pool, info


def pool_file(pool: list[Payload]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"pool-{os.getpid()}.pkl"
    with open(path, "wb") as f:
        # plain tuples: the sender processes need not resolve this module's classes
        plain = [(p.data, p.trace_id_offsets, p.spans) for p in pool]
        pickle.dump(plain, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def stamp(p: Payload, prefix: bytes) -> bytes:
    """The payload with the first 8 bytes of every trace id replaced by `prefix`."""
    buf = bytearray(p.data)
    for off in p.trace_id_offsets:
        buf[off : off + 8] = prefix
    return bytes(buf)


# ------------------------------------------------------------------------------------------
# Sender processes


@dataclass
class SenderStep:
    attempted: int = 0
    ok: int = 0
    rejected: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    ok_spans: int = 0


def sender_main(conn: Connection, idx: int, target: str, pool_path: str, core: int | None) -> None:
    """One sender: paced unary Export calls with pre-built payloads, step by step."""
    import grpc

    pin(core)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(pool_path, "rb") as f:
        pool = [Payload(*t) for t in pickle.load(f)]
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
    call = channel.unary_unary(EXPORT_METHOD)
    rng = random.Random(idx)
    counter = 0
    backpressure = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        _, start, measure_from, end, rate_b, n_senders, timeout_s = msg
        res = SenderStep()
        interval = n_senders / rate_b
        due = start + idx * interval / n_senders
        while due < end:
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
                now = time.monotonic()
            if now >= end:
                break
            due += interval
            counter += 1
            p = pool[rng.randrange(len(pool))]
            data = stamp(p, struct.pack(">HHI", 0xBE, idx + 1, counter))
            t0 = time.monotonic()
            measured = measure_from <= t0 < end
            try:
                call(data, timeout=timeout_s)
                code = None
            except grpc.RpcError as e:
                code = e.code()
            rtt_ms = (time.monotonic() - t0) * 1000
            if not measured:
                continue
            res.attempted += 1
            if code is None:
                res.ok += 1
                res.ok_spans += p.spans
                res.latencies_ms.append(rtt_ms)
            elif code in backpressure:
                res.rejected += 1
            else:
                res.errors[code.name] = res.errors.get(code.name, 0) + 1
        conn.send(asdict(res))
    channel.close()


class Senders:
    def __init__(self, n: int, target: str, pool_path: Path, core: int | None) -> None:
        ctx = mp.get_context("spawn")
        self.n = n
        self.conns: list[Connection] = []
        self.procs = []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=sender_main, args=(child, i, target, str(pool_path), core), daemon=True
            )
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    def step(
        self, start: float, measure_from: float, end: float, rate_spans: float, timeout_s: float
    ) -> None:
        rate_b = rate_spans / SPANS_PER_BATCH
        for c in self.conns:
            c.send(("step", start, measure_from, end, rate_b, self.n, timeout_s))

    def collect(self, timeout_s: float) -> list[SenderStep]:
        out = []
        for c in self.conns:
            if not c.poll(timeout_s):
                raise RuntimeError("a sender did not report back")
            out.append(SenderStep(**c.recv()))
        return out

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.send(("stop",))
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(2)


# ------------------------------------------------------------------------------------------
# The counting sink (stands in for Tempo / the next Collector)


def sink_main(conn: Connection, port: int, track_ids: bool, core: int | None) -> None:
    import threading
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    pin(core)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lock = threading.Lock()
    state = {"requests": 0, "spans": 0, "other_requests": 0}
    seen: set[bytes] = set()

    def traces(raw: bytes, ctx: Any) -> bytes:
        req = ExportTraceServiceRequest.FromString(raw)
        n = 0
        keys = []
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                n += len(ss.spans)
                if track_ids:
                    keys.extend(s.trace_id + s.span_id for s in ss.spans)
        with lock:
            state["requests"] += 1
            state["spans"] += n
            seen.update(keys)
        return b""

    def other(raw: bytes, ctx: Any) -> bytes:
        with lock:
            state["other_requests"] += 1
        return b""

    def serve() -> grpc.Server:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)],
        )
        handlers = [
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService",
                {"Export": grpc.unary_unary_rpc_method_handler(traces)},
            )
        ]
        for svc in ("logs.v1.LogsService", "metrics.v1.MetricsService"):
            handlers.append(
                grpc.method_handlers_generic_handler(
                    f"opentelemetry.proto.collector.{svc}",
                    {"Export": grpc.unary_unary_rpc_method_handler(other)},
                )
            )
        server.add_generic_rpc_handlers(handlers)
        if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
            raise OSError(f"sink cannot bind 127.0.0.1:{port}")
        server.start()
        return server

    server: grpc.Server | None = serve()
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd == "stats":
            with lock:
                conn.send({**state, "unique": len(seen)})
        elif cmd == "down":
            if server is not None:
                server.stop(0).wait()
                server = None
            conn.send("down")
        elif cmd == "up":
            if server is None:
                server = serve()
            conn.send("up")
        elif cmd == "stop":
            break
    if server is not None:
        server.stop(0).wait()


class Sink:
    def __init__(self, track_ids: bool, core: int | None) -> None:
        self.port = free_port()
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=sink_main, args=(child, self.port, track_ids, core), daemon=True
        )
        self._proc.start()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            raise RuntimeError("sink did not start")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return int(self._proc.pid or 0)

    def _ask(self, cmd: str) -> Any:
        self._conn.send(cmd)
        return self._conn.recv()

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = self._ask("stats")
        return out

    def down(self) -> None:
        self._ask("down")

    def up(self) -> None:
        self._ask("up")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(2)


# ------------------------------------------------------------------------------------------
# Systems under test


@dataclass
class Sut:
    name: str
    proc: subprocess.Popen[bytes]
    endpoint: str  # OTLP/gRPC receiver
    log_path: Path
    queue_size: Callable[[], float]  # items (sidecar) or batches (Collector) waiting to export
    queue_unit: str
    queue_bound: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return str(r.read().decode())


def _gauge(text: str, name: str, must_contain: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in "{ ") and must_contain in line:
            total += float(line.rsplit(None, 1)[-1])
    return total


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready:\n{log_path.read_text()[-3000:]}")


def start_sidecar(
    name: str, sink_endpoint: str, core: int | None, queue_items: int | None, tag: str
) -> Sut:
    import yaml

    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    forward = {
        "protocol": "grpc",
        "endpoint": sink_endpoint,
        "compression": "gzip" if name in WITH_GZIP else "none",
        "grpc_transport": "grpcio" if name in WITH_GRPCIO else "auto",
    }
    cfg: dict[str, Any] = {
        "exporters": {"traces": forward, "logs": forward, "metrics": forward},
        "file": {"directory": str(OUT_DIR / "pipeline-data")},
        "log_level": "warning",
    }
    processors = SIDECAR_PROCESSORS[name]
    if processors is not None:
        cfg["processors"] = processors
    if queue_items is not None:
        cfg["queue"] = {"max_items": queue_items}
    if name in WITH_GRPCIO:
        cfg["receivers"] = {"grpc_transport": "grpcio"}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cfg_path = OUT_DIR / f"{name}-{tag}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log_path = OUT_DIR / f"{name}-{tag}.log"
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        "--config",
        str(cfg_path),
        "--otlp-grpc",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http",
        f"127.0.0.1:{http_port}",
        "--metrics",
        f"127.0.0.1:{metrics_port}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if name in WITHOUT_NATIVE:
        env["LLM_PIPELINE_NATIVE"] = "0"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=OUT_DIR,
            env=env,
            preexec_fn=(lambda: pin(core)),
        )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    _wait_ready(f"http://127.0.0.1:{metrics_port}/health", proc, log_path, name)

    def queue_size() -> float:
        return _gauge(_scrape(metrics_url), "llm_pipeline_queue_size", 'signal="traces"')

    bound = f"queue.max_items={queue_items or 'default (200000)'} spans"
    return Sut(name, proc, f"127.0.0.1:{grpc_port}", log_path, queue_size, "spans", bound)


def collector_binary(explicit: str | None) -> str:
    if explicit:
        return explicit
    env = os.environ.get("OTELCOL_BIN")
    if env:
        return env
    r = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-collector.sh")],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"scripts/build-collector.sh failed:\n{r.stderr[-3000:]}")
    return r.stdout.strip().splitlines()[-1]


def start_collector(
    binary: str,
    sink_endpoint: str,
    core: int | None,
    queue_batches: int | None,
    tag: str,
    batch_size: int = 8192,
) -> Sut:
    grpc_port, metrics_port, health_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "BENCH_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
        "BENCH_SINK_ENDPOINT": sink_endpoint,
        "BENCH_COLLECTOR_METRICS_PORT": str(metrics_port),
        "BENCH_HEALTH_ENDPOINT": f"127.0.0.1:{health_port}",
        "BENCH_COLLECTOR_BATCH_SIZE": str(batch_size),
    }
    if queue_batches is not None:
        env["BENCH_COLLECTOR_QUEUE_SIZE"] = str(queue_batches)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log_path = OUT_DIR / f"collector-{tag}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, "--config", str(COLLECTOR_CONFIG)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=OUT_DIR,
            env=env,
            preexec_fn=(lambda: pin(core)),
        )
    _wait_ready(f"http://127.0.0.1:{health_port}/", proc, log_path, "collector")
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def queue_size() -> float:
        return _gauge(_scrape(metrics_url), "otelcol_exporter_queue_size", "otlp_grpc/sink")

    bound = f"sending_queue.queue_size={queue_batches or 1000} requests"
    return Sut("collector", proc, f"127.0.0.1:{grpc_port}", log_path, queue_size, "batches", bound)


def start_system(
    name: str, sink: Sink, args: argparse.Namespace, tag: str, queue: int | None
) -> Sut:
    if name == "collector":
        return start_collector(
            args.collector_bin, sink.endpoint, args.sut_core, queue, tag, args.collector_batch_size
        )
    return start_sidecar(name, sink.endpoint, args.sut_core, queue, tag)


# ------------------------------------------------------------------------------------------
# Ramp


def sleep_until(t: float) -> None:
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


@dataclass
class Rig:
    """One system under test with its sink and senders."""

    sut: Sut
    sink: Sink
    senders: Senders

    def load_pids(self) -> list[int]:
        pids = [os.getpid(), self.sink.pid]
        pids += [p.pid for p in self.senders.procs if p.pid is not None]
        return pids

    def load_cpu_s(self) -> float:
        total = 0.0
        for pid in self.load_pids():
            with contextlib.suppress(OSError):
                total += proc_cpu_s(pid)
        return total

    def close(self) -> None:
        self.senders.close()
        self.sut.stop()
        self.sink.close()


def open_rig(
    name: str,
    args: argparse.Namespace,
    pool_path: Path,
    tag: str,
    queue: int | None,
    track_ids: bool = False,
) -> Rig:
    sink = Sink(track_ids=track_ids, core=args.load_core)
    try:
        sut = start_system(name, sink, args, tag, queue)
    except BaseException:
        sink.close()
        raise
    try:
        senders = Senders(args.senders, sut.endpoint, pool_path, args.load_core)
    except BaseException:
        sut.stop()
        sink.close()
        raise
    return Rig(sut, sink, senders)


def run_step(rig: Rig, rate: float, args: argparse.Namespace) -> StepResult:
    """One rate step: warm up, then measure `args.step_seconds`."""
    sut, senders = rig.sut, rig.senders
    start = time.monotonic() + 0.3
    measure_from = start + args.warmup
    end = measure_from + args.step_seconds
    senders.step(start, measure_from, end, rate, args.call_timeout)
    sleep_until(measure_from)
    cpu0, cores0, wall0 = proc_cpu_s(sut.pid), cores_busy(), time.monotonic()
    load0, sink0 = rig.load_cpu_s(), rig.sink.stats()["spans"]
    sleep_until(end)
    cpu1, cores1, wall1 = proc_cpu_s(sut.pid), cores_busy(), time.monotonic()
    load1, sink1 = rig.load_cpu_s(), rig.sink.stats()["spans"]
    rss_mb = proc_status_kb(sut.pid, "VmRSS") / 1024
    parts = senders.collect(args.call_timeout + 30)
    # Counts are of calls started in [measure_from, end); CPU and the sink are read around the
    # same window (a few ms late when the load core is busy): rates per its own length.
    window = args.step_seconds
    wall = wall1 - wall0
    lat = [x for p in parts for x in p.latencies_ms]
    ok_spans = sum(p.ok_spans for p in parts)
    attempted = sum(p.attempted for p in parts)
    rejected = sum(p.rejected for p in parts)
    errors: Counter[str] = Counter()
    for p in parts:
        errors.update(p.errors)
    cpu = cpu1 - cpu0
    util = cpu / wall
    accepted = ok_spans / window
    forwarded = (sink1 - sink0) / wall
    sut_core = core_util(cores0, cores1, args.sut_core) if args.sut_core is not None else 0.0
    load_core = core_util(cores0, cores1, args.load_core) if args.load_core is not None else 0.0
    load_util = (load1 - load0) / wall
    p99 = percentile(lat, 99)
    verdict = "ok"
    if not sut.alive():
        verdict = "SUT died"
    elif accepted < 0.97 * rate:
        verdict = f"accepted {accepted / rate:.0%} of offered"
    elif (accepted * window - forwarded * wall) > max(0.05 * accepted * window, 10_000):
        # the export falls behind: a queue fills up (the Collector forwards in batches of up to
        # 8192 spans, hence the absolute allowance)
        verdict = f"forwarded {forwarded / accepted:.0%} of accepted (backlog grows)"
    elif p99 > args.p99_limit_ms:
        verdict = f"p99 {p99:.0f} ms > {args.p99_limit_ms:.0f} ms"
    elif errors:
        verdict = "errors"
    return StepResult(
        system=sut.name,
        offered_spans_s=rate,
        attempted_spans_s=attempted * SPANS_PER_BATCH / window,
        accepted_spans_s=accepted,
        forwarded_spans_s=forwarded,
        rejected=rejected,
        errors=dict(errors),
        cpu_s=cpu,
        cpu_util=util,
        cpu_us_per_span=util * 1e6 / accepted if accepted else math.nan,
        p50_ms=percentile(lat, 50),
        p90_ms=percentile(lat, 90),
        p99_ms=p99,
        max_ms=max(lat) if lat else math.nan,
        rss_mb=rss_mb,
        sut_core_other_util=max(0.0, sut_core - util),
        load_core_util=load_core,
        load_gen_util=load_util,
        load_core_other_util=max(0.0, load_core - load_util),
        window_s=wall,
        passed=verdict == "ok",
        verdict=verdict,
    )


def summarize(res: SystemResult, sut: Sut) -> None:
    res.peak_rss_mb = proc_status_kb(sut.pid, "VmHWM") / 1024
    passing = [s for s in res.steps if s.passed]
    if passing:
        best = max(passing, key=lambda s: s.accepted_spans_s)
        res.max_sustained_spans_s = best.accepted_spans_s
        res.cpu_util_at_max = best.cpu_util
        res.cpu_us_per_span_at_max = best.cpu_us_per_span
        res.spans_s_per_core = 1e6 / best.cpu_us_per_span if best.cpu_us_per_span else 0.0
        res.p50_ms_at_max = best.p50_ms
        res.p99_ms_at_max = best.p99_ms
    last = res.steps[-1] if res.steps else None
    if last is None:
        res.limited_by = "no steps"
    elif last.passed:
        res.limited_by = "not reached (ran out of rate steps)"
    elif last.cpu_util >= 0.9:
        res.limited_by = f"SUT CPU ({last.cpu_util:.0%} of its core): {last.verdict}"
    elif last.cpu_util + last.sut_core_other_util >= 0.9:
        res.limited_by = (
            f"SUT core shared: SUT {last.cpu_util:.0%}, other processes "
            f"{last.sut_core_other_util:.0%}: {last.verdict}"
        )
    elif last.load_core_util >= 0.85:
        res.limited_by = (
            f"load core saturated ({last.load_core_util:.0%}: generator "
            f"{last.load_gen_util:.0%}, other processes {last.load_core_other_util:.0%}; SUT "
            f"at {last.cpu_util:.0%}): {last.verdict}"
        )
    else:
        res.limited_by = f"{last.verdict} (SUT CPU {last.cpu_util:.0%})"


def _finish(res: SystemResult, rig: Rig) -> None:
    summarize(res, rig.sut)
    if rig.sut.alive():
        with contextlib.suppress(OSError):
            q = rig.sut.queue_size()
            res.notes.append(f"export queue at the end: {q:.0f} {rig.sut.queue_unit}")


def ramp(name: str, args: argparse.Namespace, pool_path: Path, rates: list[int]) -> SystemResult:
    """One system through the rate steps until a step is not sustained."""
    rig = open_rig(name, args, pool_path, "ramp", None)
    res = SystemResult(name)
    try:
        time.sleep(1.0)
        for rate in rates:
            step = run_step(rig, rate, args)
            res.steps.append(step)
            print_step(step)
            if not step.passed:
                break
            time.sleep(args.pause)
        _finish(res, rig)
    finally:
        rig.close()
    return res


def ramp_interleaved(
    names: list[str], args: argparse.Namespace, pool_path: Path, rates: list[int]
) -> list[SystemResult]:
    """All systems up at once (all on the SUT core, one loaded at a time), each rate step run
    for each system in turn: slow drifts of the machine's speed hit them alike, so the ratio of
    their CPU per span at a rate is a paired comparison. A system leaves at its first failed
    step (and is stopped, so its backlog does not burn the SUT core during the others' steps)."""
    results = {n: SystemResult(n) for n in names}
    rigs: dict[str, Rig] = {}
    try:
        for n in names:
            rigs[n] = open_rig(n, args, pool_path, "ramp", None)
        time.sleep(1.0)
        for rate in rates:
            for n in [n for n in names if n in rigs]:
                step = run_step(rigs[n], rate, args)
                results[n].steps.append(step)
                print_step(step)
                if not step.passed:
                    rig = rigs.pop(n)
                    _finish(results[n], rig)
                    rig.sut.proc.kill()  # no drain: the others' steps go on
                    rig.close()
                time.sleep(args.pause)
            if not rigs:
                break
        for n, rig in rigs.items():
            _finish(results[n], rig)
    finally:
        for rig in rigs.values():
            rig.close()
    return [results[n] for n in names]


# ------------------------------------------------------------------------------------------
# Ratios


def _passed_by_rate(res: SystemResult) -> dict[float, list[StepResult]]:
    out: dict[float, list[StepResult]] = {}
    for s in res.steps:
        if s.passed:
            out.setdefault(s.offered_spans_s, []).append(s)
    return out


def _paired(label: str, system: str, side: list[StepResult], col: list[StepResult]) -> Ratio:
    """The ratio at one rate: the k-th step of each ran in the same round (--repeats), so
    the rounds are paired and the median taken over their ratios."""
    pairs = list(zip(side, col, strict=False))
    rounds = [a.cpu_us_per_span / b.cpu_us_per_span for a, b in pairs]
    rate = side[0].offered_spans_s
    return Ratio(
        label,
        system,
        rate,
        statistics.median(a.cpu_us_per_span for a, _ in pairs),
        rate,
        statistics.median(b.cpu_us_per_span for _, b in pairs),
        statistics.median(rounds),
        rounds if len(rounds) > 1 else [],
    )


def ratios(results: list[SystemResult]) -> list[Ratio]:
    """Sidecar CPU us/span / Collector CPU us/span: at every rate both sustained, at a common
    moderate rate (the highest where the sidecar used <= 70% of its core), and each at its
    highest sustained rate (saturation)."""
    col = next((r for r in results if r.system == "collector"), None)
    if col is None:
        return []
    cpass = _passed_by_rate(col)
    out = []
    for side in (r for r in results if r.system != "collector"):
        spass = _passed_by_rate(side)
        common = sorted(set(cpass) & set(spass))
        for rate in common:
            out.append(_paired(f"at {rate:.0f} spans/s", side.system, spass[rate], cpass[rate]))
        if common:
            moderate = [r for r in common if max(s.cpu_util for s in spass[r]) <= 0.7] or common[:1]
            rate = moderate[-1]
            out.append(_paired("common moderate rate", side.system, spass[rate], cpass[rate]))
        if side.cpu_us_per_span_at_max and col.cpu_us_per_span_at_max:
            out.append(
                Ratio(
                    "each at its highest sustained rate",
                    side.system,
                    side.max_sustained_spans_s,
                    side.cpu_us_per_span_at_max,
                    col.max_sustained_spans_s,
                    col.cpu_us_per_span_at_max,
                    side.cpu_us_per_span_at_max / col.cpu_us_per_span_at_max,
                )
            )
    return out


# ------------------------------------------------------------------------------------------
# Profile (py-spy) and per-stage CPU


def _frame_name(frame: str) -> tuple[str, str]:
    """'func (path/to/file.py:12)' -> ('func (file.py)', 'path/to/file.py')."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", str(REPO) + "/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})", path


def parse_collapsed(
    path: Path, top: int
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]], list[tuple[str, float]]]:
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    file_c: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        total += n
        named = [_frame_name(f) for f in frames]
        self_c[named[-1][0]] += n
        file_c[named[-1][1]] += n
        for nm in {f for f, _ in named}:
            incl_c[nm] += n

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in c.most_common(top)] if total else []

    return total, pct(self_c), pct(incl_c), pct(file_c)


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """Per thread of `pid`: (name, CPU seconds)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            text = (task / "stat").read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            rest = text.rpartition(")")[2].split()
            out[int(task.name)] = (name, (int(rest[11]) + int(rest[12])) / CLK_TCK)
    return out


def run_profile(args: argparse.Namespace, pool_path: Path) -> ProfileResult | None:
    """py-spy the sidecar under steady load: where its Python CPU goes, and its threads' CPU.

    py-spy runs with --gil: a sample is taken only while some thread holds the GIL, so the
    profile is of CPU spent in Python (and in C called with the GIL held, such as protobuf),
    not of threads blocked in gRPC's C core. The per-thread CPU (from /proc) shows the rest.
    """
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        print("--profile needs py-spy: pip install py-spy", file=sys.stderr)
        return None
    rig = open_rig(args.profile_system, args, pool_path, "profile", None)
    sut, senders = rig.sut, rig.senders
    raw = OUT_DIR / "profile.txt"
    svg = OUT_DIR / "profile.svg"
    rate_hz = 200
    try:
        time.sleep(1.0)
        start = time.monotonic() + 0.3
        total = args.profile_seconds * 2 + 8
        senders.step(start, start, start + total, args.profile_rate, args.call_timeout)
        sleep_until(start + 2)
        base = ["record", "--pid", str(sut.pid), "--rate", str(rate_hz), "--nonblocking", "--gil"]
        secs = str(int(args.profile_seconds))
        threads0, cpu0, w0 = thread_cpu_s(sut.pid), proc_cpu_s(sut.pid), time.monotonic()
        for fmt, out in (("raw", raw), ("flamegraph", svg)):
            r = subprocess.run(
                [pyspy, *base, "--duration", secs, "--format", fmt, "-F", "-o", str(out)],
                capture_output=True,
                text=True,
                timeout=args.profile_seconds + 60,
            )
            if r.returncode != 0:
                print(f"py-spy failed: {r.stderr[-2000:]}", file=sys.stderr)
                return None
            if fmt == "raw":
                threads1, cpu1, w1 = thread_cpu_s(sut.pid), proc_cpu_s(sut.pid), time.monotonic()
        parts = senders.collect(total + args.call_timeout + 30)
        accepted = sum(p.ok_spans for p in parts) / total
        print(f"profile load: {accepted:.0f} spans/s accepted of {args.profile_rate:.0f}")
    finally:
        rig.close()
    wall = w1 - w0
    by_name: Counter[str] = Counter()
    for tid, (name, cpu) in threads1.items():
        by_name[name] += cpu - threads0.get(tid, (name, 0.0))[1]
    samples, top_self, top_incl, by_file = parse_collapsed(raw, args.profile_top)
    util = (cpu1 - cpu0) / wall
    return ProfileResult(
        rate_spans_s=args.profile_rate,
        accepted_spans_s=accepted,
        seconds=args.profile_seconds,
        samples=samples,
        gil_held_share=samples / (rate_hz * wall),
        cpu_util=util,
        cpu_us_per_span=util * 1e6 / accepted if accepted else math.nan,
        threads=[(n, 100 * c / wall) for n, c in by_name.most_common() if c > 0],
        raw_path=str(raw),
        svg_path=str(svg),
        top_self=top_self,
        top_inclusive=top_incl,
        by_file=by_file,
    )


def run_stages(pool: list[Payload], passes: int, gap_s: float = 0.0) -> StageResult | None:
    """CPU per stage of Service.accept, in this process, no gRPC: where a span's µs go.

    `gap_s`: idle time between batches (outside the timed sections), as the running sidecar
    has between requests; on the VMs measured, the same code costs more CPU after each idle
    gap (2 ms gaps: ~1.7x), which is most of what the running process spends beyond these
    stages."""
    from pipeline.config import Config
    from pipeline.model import TraceBatch
    from pipeline.receivers.decode import count_items, drop_invalid_spans, parse_protobuf
    from pipeline.service import Service

    cfg = Config()
    cfg.exporters.traces.protocol = "grpc"
    cfg.exporters.traces.endpoint = "127.0.0.1:9"  # never started: nothing is sent
    svc = Service(cfg)
    names = list(cfg.processors)
    cost: Counter[str] = Counter()
    spans = 0
    clock = time.thread_time
    prefix = 0
    for _ in range(passes):
        for p in pool:
            prefix += 1
            data = stamp(p, struct.pack(">Q", prefix))
            t = clock()
            req = parse_protobuf("traces", data)
            t1 = clock()
            cost["parse"] += t1 - t
            n = count_items("traces", req)
            rejected, _ = drop_invalid_spans(req, data)
            t2 = clock()
            cost["count+validate"] += t2 - t1
            batch = TraceBatch(req, raw=None if rejected else data)
            for name, step in zip(names, svc.trace_chain, strict=True):
                t = clock()
                batch = step(batch)
                cost[name] += clock() - t
            t = clock()
            out = svc._encode_traces(svc.queues["traces"], batch)
            t3 = clock()
            cost["encode"] += t3 - t
            gzip.compress(out, compresslevel=6)  # what grpc's gzip does on the way out
            cost[GZIP_STAGE] += clock() - t3
            spans += n
            if gap_s:
                time.sleep(gap_s)
    svc._stop.set()
    return StageResult(len(pool) * passes, spans, {k: v * 1e6 / spans for k, v in cost.items()})


# ------------------------------------------------------------------------------------------
# Outage


def _resume_after(timeline: list[dict[str, float]], up_t: float) -> float:
    before = [p["sink_spans"] for p in timeline if p["t"] <= up_t]
    base = before[-1] if before else 0
    for p in timeline:
        if p["t"] > up_t and p["sink_spans"] > base:
            return p["t"] - up_t
    return math.nan


def run_outage(name: str, args: argparse.Namespace, pool_path: Path) -> OutageResult:
    rig = open_rig(name, args, pool_path, "outage", args.queue_bound, track_ids=True)
    sut, sink, senders = rig.sut, rig.sink, rig.senders
    timeline: list[dict[str, float]] = []
    try:
        time.sleep(1.0)
        start = time.monotonic() + 0.3
        down_at = start + args.outage_pre
        up_at = down_at + args.outage_seconds
        end = up_at + args.outage_post
        senders.step(start, start, end, args.outage_rate, args.call_timeout)
        is_down = False
        queue_peak = 0.0
        arrived_goal: int | None = None
        parts: list[SenderStep] = []
        drained_at: float | None = None
        deadline = end + args.drain_timeout
        while True:
            now = time.monotonic()
            if not is_down and down_at <= now < up_at:
                sink.down()
                is_down = True
                print(f"  t={now - start:5.1f}s sink DOWN")
            elif is_down and now >= up_at:
                sink.up()
                is_down = False
                print(f"  t={now - start:5.1f}s sink UP")
            try:
                q = sut.queue_size()
            except OSError:
                q = math.nan
            if q == q:
                queue_peak = max(queue_peak, q)
            st = sink.stats()
            timeline.append(
                {
                    "t": round(now - start, 2),
                    "queue": q,
                    "sink_spans": st["spans"],
                    "rss_mb": proc_status_kb(sut.pid, "VmRSS") / 1024,
                }
            )
            if len(timeline) % 10 == 0:
                print(
                    f"  t={now - start:5.1f}s queue={q:.0f} {sut.queue_unit} "
                    f"sink={st['spans']} spans rss={timeline[-1]['rss_mb']:.0f} MB"
                )
            if now >= end and arrived_goal is None:
                parts = senders.collect(args.call_timeout + 30)
                arrived_goal = sum(p.ok_spans for p in parts)
            if arrived_goal is not None:
                if st["unique"] >= arrived_goal and (q == 0 or q != q):
                    drained_at = now
                    break
                if now >= deadline:
                    break
            time.sleep(0.5)
        final = sink.stats()
        lat = [x for p in parts for x in p.latencies_ms]
        errors: Counter[str] = Counter()
        for p in parts:
            errors.update(p.errors)
        sent_ok = arrived_goal or 0
        return OutageResult(
            system=name,
            rate_spans_s=args.outage_rate,
            outage_s=args.outage_seconds,
            queue_bound=sut.queue_bound,
            sent_ok_spans=sent_ok,
            rejected_batches=sum(p.rejected for p in parts),
            other_errors=dict(errors),
            arrived_spans=final["spans"],
            arrived_unique_spans=final["unique"],
            lost_spans=max(0, sent_ok - final["unique"]),
            duplicate_spans=final["spans"] - final["unique"],
            queue_peak=queue_peak,
            queue_unit=sut.queue_unit,
            rss_peak_mb=proc_status_kb(sut.pid, "VmHWM") / 1024,
            drain_s=(drained_at - up_at) if drained_at is not None else math.nan,
            resume_s=_resume_after(timeline, up_at - start),
            p99_ms=percentile(lat, 99),
            max_ms=max(lat) if lat else math.nan,
            timeline=timeline,
        )
    finally:
        rig.close()


# ------------------------------------------------------------------------------------------
# Printing


STEP_HEADER = (
    f"{'system':<20} {'offered':>8} {'sent':>8} {'accepted':>8} {'fwd':>8} {'rej':>5} "
    f"{'CPU%':>5} {'us/span':>8} {'p50ms':>7} {'p99ms':>7} {'maxms':>7} {'RSSMB':>6} "
    f"{'othSUT':>6} {'gen%':>5} {'othGen':>6}  verdict"
)
STEP_LEGEND = (
    "offered/sent/accepted/fwd: spans/s targeted, sent, answered OK, arriving at the sink; "
    "rej: batches answered UNAVAILABLE; CPU%: SUT process CPU (100 = its core); "
    "us/span: SUT CPU per accepted span; p50/p99/max: per 100-span batch round trip at the "
    "sender; othSUT: the SUT core busy with other processes (noise); gen%: load generator CPU "
    "(senders+sink); othGen: the load core busy with other processes"
)


def fmt_step(s: StepResult) -> str:
    return (
        f"{s.system:<20} {s.offered_spans_s:>8.0f} {s.attempted_spans_s:>8.0f} "
        f"{s.accepted_spans_s:>8.0f} {s.forwarded_spans_s:>8.0f} {s.rejected:>5} "
        f"{s.cpu_util * 100:>5.0f} {s.cpu_us_per_span:>8.1f} {s.p50_ms:>7.2f} {s.p99_ms:>7.2f} "
        f"{s.max_ms:>7.1f} {s.rss_mb:>6.0f} {s.sut_core_other_util * 100:>5.0f}% "
        f"{s.load_gen_util * 100:>4.0f}% {s.load_core_other_util * 100:>5.0f}%  {s.verdict}"
    )


def print_step(s: StepResult) -> None:
    print(fmt_step(s), flush=True)


def print_report(res: BenchResults, args: argparse.Namespace) -> None:
    print()
    print("=" * 100)
    print(f"command: {res.command}")
    print(f"machine: {res.machine}")
    print(f"pool:    {res.pool}")
    if res.systems:
        print()
        print(STEP_LEGEND)
        print(STEP_HEADER)
        for r in res.systems:
            for s in r.steps:
                print(fmt_step(s))
        print()
        print(
            f"{'system':<20} {'max sustained spans/s':>22} {'CPU%':>5} {'us/span':>8} "
            f"{'spans/s per core':>16} {'p50ms':>7} {'p99ms':>7} {'peak RSS MB':>11}  limited by"
        )
        for r in res.systems:
            print(
                f"{r.system:<20} {r.max_sustained_spans_s:>22.0f} {r.cpu_util_at_max * 100:>5.0f} "
                f"{r.cpu_us_per_span_at_max:>8.1f} {r.spans_s_per_core:>16.0f} "
                f"{r.p50_ms_at_max:>7.2f} {r.p99_ms_at_max:>7.2f} {r.peak_rss_mb:>11.0f}  "
                f"{r.limited_by}"
            )
            for n in r.notes:
                print(f"{'':<20} {n}")
    if res.ratios:
        print()
        print(
            "ratio = sidecar CPU us/span / Collector CPU us/span, same rate, same run (target <= 1.5)"
        )
        for side in dict.fromkeys(q.sidecar_system for q in res.ratios):
            mine = [q for q in res.ratios if q.sidecar_system == side]
            per_rate = [q for q in mine if q.label.startswith("at ")]
            print(
                f"  {side:<20} per rate: "
                + ", ".join(f"{q.sidecar_rate / 1000:.0f}k {q.ratio:.2f}" for q in per_rate)
            )
            if any(q.rounds for q in per_rate):
                print(f"  {side:<20} (medians of the rounds; each round's ratio:)")
                for q in per_rate:
                    rounds = "/".join(f"{x:.2f}" for x in q.rounds) or "(one round sustained)"
                    print(f"  {'':<20} {q.sidecar_rate / 1000:.0f}k {rounds}")
            for q in mine:
                if q.label.startswith("at "):
                    continue
                print(
                    f"  {side:<20} {q.label:<36} sidecar {q.sidecar_cpu_us_per_span:.1f} us "
                    f"@ {q.sidecar_rate:.0f}/s, collector {q.collector_cpu_us_per_span:.1f} us @ "
                    f"{q.collector_rate:.0f}/s -> ratio {q.ratio:.2f}"
                )
    for r in res.systems:
        if r.system == "collector":
            continue
        ok = [s for s in r.steps if s.passed]
        if ok:
            best = max(ok, key=lambda s: s.accepted_spans_s)
            print(
                f"targets {r.system}: p99 per 100-span batch {best.p99_ms:.2f} ms "
                f"({'<' if best.p99_ms < 5 else '>='} 5 ms) at {best.accepted_spans_s:.0f} spans/s; "
                f"peak RSS {r.peak_rss_mb:.0f} MB ({'<' if r.peak_rss_mb < 150 else '>='} 150 MB)"
            )
    for o in res.outage:
        print()
        print(
            f"outage {o.system}: {o.rate_spans_s:.0f} spans/s, sink down {o.outage_s:.0f} s, "
            f"{o.queue_bound}"
        )
        print(
            f"  sent OK {o.sent_ok_spans} spans, arrived {o.arrived_unique_spans} unique "
            f"({o.duplicate_spans} duplicates), LOST {o.lost_spans}; rejected (503/UNAVAILABLE) "
            f"{o.rejected_batches} batches; other errors {o.other_errors or 0}"
        )
        print(
            f"  queue peak {o.queue_peak:.0f} {o.queue_unit}, RSS peak {o.rss_peak_mb:.0f} MB, "
            f"first delivery {o.resume_s:.1f} s and all drained {o.drain_s:.1f} s after the sink "
            f"came back; p99 {o.p99_ms:.1f} ms, "
            f"max {o.max_ms:.0f} ms"
        )
    if res.profile is not None:
        p = res.profile
        print()
        print(
            f"profile ({args.profile_system}, py-spy --gil, {p.samples} samples over "
            f"{p.seconds:.0f} s at {p.accepted_spans_s:.0f} spans/s): {p.svg_path}"
        )
        print(
            f"  process CPU {p.cpu_util:.0%} of a core ({p.cpu_us_per_span:.1f} us/span); "
            f"GIL held {p.gil_held_share:.0%} of the time"
        )
        print(
            "  CPU by thread name (% of one core): "
            + ", ".join(f"{n} {c:.0f}%" for n, c in p.threads)
        )
        print("  top self (% of GIL-holding samples):")
        for name, pct in p.top_self:
            print(f"    {pct:5.1f}%  {name}")
        print("  top inclusive:")
        for name, pct in p.top_inclusive:
            print(f"    {pct:5.1f}%  {name}")
        print("  self by file:")
        for name, pct in p.by_file:
            print(f"    {pct:5.1f}%  {name}")
    if res.stages is not None:
        st = res.stages
        total = sum(v for k, v in st.us_per_span.items() if k != GZIP_STAGE)
        print()
        print(f"stages of Service.accept (in-process, {st.spans} spans, thread CPU us per span):")
        for k, v in sorted(st.us_per_span.items(), key=lambda kv: -kv[1]):
            print(f"    {v:7.2f} us  {100 * v / total:5.1f}%  {k}")
        print(f"    {total:7.2f} us  total (no gRPC receive/send; without the gzip line)")


# ------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="short steps, few rates (~1 min)")
    p.add_argument(
        "--systems", default="sidecar,collector", help=f"comma list of {', '.join(SYSTEMS)}"
    )
    p.add_argument("--rates", help="comma list of spans/s steps (default 2k..160k)")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each rate step this many times in a row (systems alternating within each "
        "round); per-rate ratios are the median over the paired rounds",
    )
    p.add_argument("--step-seconds", type=float, help="measured seconds per step (default 6)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds at the start of a step (2)")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between steps")
    p.add_argument(
        "--sequential",
        action="store_true",
        help="ramp one system after the other (default: all up, each step for each in turn)",
    )
    p.add_argument("--senders", type=int, default=4, help="sender processes")
    p.add_argument("--pool-batches", type=int, default=200, help="distinct 100-span payloads")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--p99-limit-ms",
        type=float,
        default=100.0,
        help="a step with a higher p99 is not sustained",
    )
    p.add_argument("--call-timeout", type=float, default=10.0, help="per Export call, seconds")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for the whole bench (SUT and load); < 0 (root) shields it from other load",
    )
    p.add_argument("--sut-core", type=int, default=1)
    p.add_argument("--load-core", type=int, default=0)
    p.add_argument(
        "--collector-bin", help="otelcol-llm binary (default: scripts/build-collector.sh)"
    )
    p.add_argument(
        "--collector-batch-size",
        type=int,
        default=8192,
        help="the Collector's batch processor send_batch_size (forwarding path)",
    )
    p.add_argument(
        "--no-ramp", action="store_true", help="skip the ramp (with --outage/--profile/--stages)"
    )
    p.add_argument("--json", action="store_true", help="write bench/results.json")
    p.add_argument("--json-path", default=str(BENCH_DIR / "results.json"))
    g = p.add_argument_group("profile")
    g.add_argument("--profile", action="store_true", help="py-spy the sidecar under load")
    g.add_argument("--profile-system", default="sidecar", choices=list(SIDECAR_PROCESSORS))
    g.add_argument("--profile-rate", type=float, default=8000.0, help="spans/s during the profile")
    g.add_argument("--profile-seconds", type=float, default=15.0)
    g.add_argument("--profile-top", type=int, default=15)
    g.add_argument("--stages", action="store_true", help="in-process CPU per Service.accept stage")
    g.add_argument("--stages-passes", type=int, default=5)
    g.add_argument(
        "--stages-gap-ms", type=float, default=0.0, help="idle ms between batches in --stages"
    )
    o = p.add_argument_group("outage")
    o.add_argument("--outage", action="store_true", help="sink down under steady load")
    o.add_argument("--outage-systems", default="sidecar", help="comma list (default sidecar)")
    o.add_argument("--outage-rate", type=float, default=2000.0, help="spans/s")
    o.add_argument("--outage-seconds", type=float, default=60.0)
    o.add_argument("--outage-pre", type=float, default=10.0, help="seconds of load before")
    o.add_argument("--outage-post", type=float, default=30.0, help="seconds of load after")
    o.add_argument("--drain-timeout", type=float, default=120.0, help="wait for the backlog")
    o.add_argument(
        "--queue-bound",
        type=int,
        help="sidecar queue.max_items (spans) / Collector queue_size (requests); default: theirs",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `llm-pipeline bench -- ARGS` passes the separator through
        argv = argv[1:]
    args = p.parse_args(argv)
    if args.quick:
        args.rates = args.rates or ",".join(str(r) for r in QUICK_RATES)
        args.step_seconds = args.step_seconds or 3.0
        args.warmup = args.warmup if args.warmup is not None else 1.0
        args.pool_batches = min(args.pool_batches, 100)
        args.pause = min(args.pause, 0.5)
    args.rates = [int(float(r)) for r in (args.rates or ",".join(map(str, FULL_RATES))).split(",")]
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.rates = [r for r in args.rates for _ in range(args.repeats)]
    args.step_seconds = args.step_seconds or 6.0
    args.warmup = 2.0 if args.warmup is None else args.warmup
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.outage_systems = [s.strip() for s in args.outage_systems.split(",") if s.strip()]
    for s in (*args.systems, *args.outage_systems):
        if s not in SYSTEMS:
            p.error(f"unknown system {s!r}; known: {', '.join(SYSTEMS)}")
    if os.cpu_count() is not None and os.cpu_count() < 2:  # type: ignore[operator]
        args.sut_core = args.load_core = None
    return args


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "sut_core": args.sut_core,
        "load_core": args.load_core,
        "loadavg_1m_5m_at_start": [round(load1, 2), round(load5, 2)],
        "python": sys.version.split()[0],
        "nice": args.nice,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nice:
        os.nice(args.nice)  # inherited by the SUT, the senders and the sink
    pin(args.load_core)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    wants_ramp = not args.no_ramp
    if "collector" in (args.systems if wants_ramp else []) + (
        args.outage_systems if args.outage else []
    ):
        args.collector_bin = collector_binary(args.collector_bin)
    command = "python bench/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(
        f"building the payload pool ({args.pool_batches} x {SPANS_PER_BATCH} spans) ...", flush=True
    )
    pool, pool_info = build_pool(args.pool_batches, args.seed)
    print(f"pool: {pool_info}", flush=True)
    path = pool_file(pool)
    res = BenchResults(
        command=command.strip(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=machine_info(args),
        settings={k: v for k, v in vars(args).items() if k not in ("json", "json_path")},
        pool=pool_info,
    )
    try:
        if wants_ramp:
            print()
            print(STEP_HEADER)
            if args.sequential:
                for name in args.systems:
                    res.systems.append(ramp(name, args, path, args.rates))
            else:
                res.systems = ramp_interleaved(args.systems, args, path, args.rates)
            res.ratios = ratios(res.systems)
        if args.stages:
            print("\nstages: timing Service.accept in-process ...", flush=True)
            res.stages = run_stages(pool, args.stages_passes, args.stages_gap_ms / 1000)
        if args.profile:
            print(
                f"\nprofile: {args.profile_system} at {args.profile_rate:.0f} spans/s ...",
                flush=True,
            )
            res.profile = run_profile(args, path)
        if args.outage:
            for name in args.outage_systems:
                print(f"\noutage: {name} ...", flush=True)
                res.outage.append(run_outage(name, args, path))
    finally:
        path.unlink(missing_ok=True)
    res.machine["loadavg_1m_5m_at_end"] = [round(x, 2) for x in os.getloadavg()[:2]]
    print_report(res, args)
    if args.json:
        Path(args.json_path).write_text(json.dumps(asdict(res), indent=2, default=str) + "\n")
        print(f"\nwrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
