"""Load generation: the payload pool, the paced sender processes and the counting sink
that stands in for Tempo / the next Collector."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import random
import signal
import statistics
import struct
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .common import EXPORT_METHOD, OUT_DIR, SPANS_PER_BATCH
from .procfs import free_port, pin


@dataclass
class Payload:
    data: bytes
    trace_id_offsets: list[int]  # where each span's trace id starts in `data`
    spans: int


def trace_id_offsets(data: bytes, trace_ids: set[bytes]) -> list[int]:
    """Where each of the trace ids starts in `data`, every occurrence, sorted."""
    offsets: list[int] = []
    for tid in trace_ids:
        at = data.find(tid)
        while at >= 0:
            offsets.append(at)
            at = data.find(tid, at + 16)
    return sorted(offsets)


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
        tids = {s.context.trace_id.to_bytes(16, "big") for s in part}
        pool.append(Payload(data, trace_id_offsets(data, tids), len(part)))
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
    # Each sender walks the pool in order from its own place, one trace-id stamp per pass: a
    # trace cut by a payload boundary keeps its id in the next payload, as an SDK's batches
    # do, so the sidecar sees its root arrive (a random pick would cut it for good).
    at = random.Random(idx).randrange(len(pool))
    passes = 0
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
            p = pool[at]
            data = stamp(p, struct.pack(">HHI", 0xBE, idx + 1, passes))
            at += 1
            if at == len(pool):
                at, passes = 0, passes + 1
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
