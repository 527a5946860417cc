"""The command line: arguments, and the run of the modes they ask for."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import (
    BENCH_DIR,
    FULL_RATES,
    OUT_DIR,
    QUICK_RATES,
    SIDECAR_PROCESSORS,
    SPANS_PER_BATCH,
    SYSTEMS,
)
from .gate import GATE_FILE, print_gate, run_gate
from .load import build_pool, pool_file
from .measure import ramp, ramp_interleaved, ratios
from .outage import run_outage
from .procfs import pin
from .profile import run_profile, run_stages
from .report import STEP_HEADER, print_report
from .results import BenchResults, GateRate
from .systems import collector_binary


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.py",
        description=sys.modules[__package__ or "benchlib"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument(
        "--gate",
        action="store_true",
        help="the performance gate (bench/gate.json): sidecar vs Collector, paired rounds at "
        "fixed rates; exit 1 when a median ratio exceeds its threshold (a few minutes)",
    )
    p.add_argument("--gate-file", default=str(GATE_FILE), help="the gate's settings")
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
        "--stages-system",
        default="sidecar",
        choices=["sidecar", "sidecar-dims"],
        help="the chain timed by --stages",
    )
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
    wants_ramp = not args.no_ramp and not args.gate
    if args.gate or "collector" in (args.systems if wants_ramp else []) + (
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
    gate: list[GateRate] = []
    try:
        if args.gate:
            print(f"\ngate: {args.gate_file}", flush=True)
            print(STEP_HEADER)
            gate = res.gate = run_gate(args, path)
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
            res.stages = run_stages(
                pool, args.stages_passes, args.stages_gap_ms / 1000, args.stages_system
            )
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
    if args.gate:
        print_gate(gate)
    if args.json:
        Path(args.json_path).write_text(json.dumps(asdict(res), indent=2, default=str) + "\n")
        print(f"\nwrote {args.json_path}")
    return 1 if any(not g.passed for g in gate) else 0
