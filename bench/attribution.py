"""What attribution dimensions cost per span: the default chain with and without them, in one
process, on the bench's demo pool, alternating pass by pass (thread CPU µs per span).

    python bench/attribution.py [--batches 200] [--passes 10] [--requests] [--on-calls]

The demo sets tenant.id, user.id and app.feature on each request's root span (12 tenants,
480 users, Zipf-skewed): the LLM calls below inherit them, the harder case (a call whose root
is in a later batch waits for it). Configured: `benchlib.common.DIMENSIONS`, as the main
bench's `sidecar-dims`. `--on-calls` also sets user and feature on the LLM spans themselves.
"""

from __future__ import annotations

import argparse
import gc
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import load as bench
from benchlib.common import DIMENSIONS


def on_calls(pool: list[Any], seed: int = 1) -> list[Any]:
    """The pool with user.id and app.feature on every LLM span too."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    rng = random.Random(seed)
    out = []
    for p in pool:
        req = ExportTraceServiceRequest.FromString(p.data)
        tids = set()
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    tids.add(span.trace_id)
                    if any(kv.key == "gen_ai.request.model" for kv in span.attributes):
                        for key, value in (
                            ("user.id", f"user-{rng.randrange(20)}"),
                            ("app.feature", f"feature-{rng.randrange(5)}"),
                        ):
                            kv = span.attributes.add()
                            kv.key, kv.value.string_value = key, value
        data = req.SerializeToString()
        out.append(bench.Payload(data, bench.trace_id_offsets(data, tids), p.spans))
    return out


def make_service(dimensions: bool, requests: bool) -> Any:
    from pipeline.config import Config, from_dict
    from pipeline.service import Service

    # tenants x users x features x the demo's models and token types exceed the default
    # 2000 series per family: the overflow path would be what is measured
    data: dict[str, Any] = {"metrics": {"max_series": 50_000}}
    if dimensions:
        data["dimensions"] = DIMENSIONS
        data["attribution"] = {"requests": requests}
    cfg = from_dict(Config, data)
    cfg.exporters.traces.protocol = "grpc"
    cfg.exporters.traces.endpoint = "127.0.0.1:9"  # never started: nothing is sent
    cfg.validate()
    return Service(cfg)


def one_pass(svc: Any, pool: list[Any], prefix: int) -> tuple[float, int]:
    """Thread CPU seconds for parse + chain + encode of the pool, and the spans."""
    from pipeline.model import TraceBatch
    from pipeline.receivers.decode import parse_protobuf

    clock = time.thread_time
    cpu, spans = 0.0, 0
    for i, p in enumerate(pool):
        # one stamp per pass: a trace cut by a batch boundary keeps its id in the next batch,
        # as its spans do in real traffic (its root arrives, the held calls are released)
        data = bench.stamp(p, struct.pack(">Q", prefix))
        t = clock()
        batch = TraceBatch(parse_protobuf("traces", data), raw=data)
        for step in svc.trace_chain:
            batch = step(batch)
        batch.encode()
        if i % 20 == 19 and svc._attribution is not None:  # the service's ticker, ~every second
            svc._attribution.flush()
        cpu += clock() - t
        spans += p.spans
    return cpu, spans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--requests", action="store_true", help="attribution.requests: true too")
    ap.add_argument(
        "--on-calls",
        action="store_true",
        help="user and feature on the LLM spans too (no inheritance)",
    )
    args = ap.parse_args()
    pool, _ = bench.build_pool(args.batches, 42)
    if args.on_calls:
        pool = on_calls(pool)
    systems = {"without": make_service(False, False), "with": make_service(True, args.requests)}
    gc.freeze()  # as the sidecar does at start (pipeline/cli.py)
    us: dict[str, list[float]] = {k: [] for k in systems}
    prefix = 1
    for svc in systems.values():  # warm-up
        one_pass(svc, pool, prefix := prefix + 1)
    for _ in range(args.passes):
        for name, svc in systems.items():
            cpu, spans = one_pass(svc, pool, prefix := prefix + 1)
            us[name].append(cpu * 1e6 / spans)
    for svc in systems.values():
        svc._stop.set()
    med = {k: sorted(v)[len(v) // 2] for k, v in us.items()}
    rise = med["with"] / med["without"] - 1
    print("µs/span per pass:", {k: [round(x, 2) for x in v] for k, v in us.items()})
    print(
        f"median without {med['without']:.2f}, with 3 dimensions"
        f"{' + requests' if args.requests else ''} {med['with']:.2f} µs/span: "
        f"{rise * 100:+.1f}%"
    )
    attribution = systems["with"]._attribution
    if attribution is not None:
        tracker = attribution.tracker
        print(
            "traces holding calls at the end:",
            len(attribution.held),
            "followed for requests:",
            len(tracker.traces) if tracker is not None else None,
        )


if __name__ == "__main__":
    main()
