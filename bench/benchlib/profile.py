"""Where the sidecar's CPU goes: py-spy under load (--profile) and the in-process CPU per
stage of Service.accept (--stages)."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import math
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .common import CLK_TCK, DIMENSIONS, GZIP_STAGE, OUT_DIR, REPO, WITH_DIMENSIONS
from .load import Payload, stamp
from .measure import open_rig, sleep_until
from .procfs import proc_cpu_s
from .results import ProfileResult, StageResult


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


def run_stages(
    pool: list[Payload], passes: int, gap_s: float = 0.0, system: str = "sidecar"
) -> StageResult | None:
    """CPU per stage of Service.accept, in this process, no gRPC: where a span's µs go.

    `system`: `sidecar` (the default chain) or `sidecar-dims` (with the three attribution
    dimensions, as that variant runs). Each pass over the pool stamps its own trace ids, as the
    senders do, so a trace cut by a batch boundary completes in the next batch. With more than
    one pass, the first is a warm-up, not timed (the series and label sets are made there).

    `gap_s`: idle time between batches (outside the timed sections), as the running sidecar
    has between requests; on the VMs measured, the same code costs more CPU after each idle
    gap (2 ms gaps: ~1.7x), which is most of what the running process spends beyond these
    stages."""
    from pipeline.config import Config, from_dict
    from pipeline.model import TraceBatch
    from pipeline.receivers.decode import count_items, drop_invalid_spans, parse_protobuf
    from pipeline.service import Service

    data: dict[str, object] = {}
    if system in WITH_DIMENSIONS:
        data = {"dimensions": DIMENSIONS, "metrics": {"max_series": 50_000}}
    cfg = from_dict(Config, data)
    cfg.exporters.traces.protocol = "grpc"
    cfg.exporters.traces.endpoint = "127.0.0.1:9"  # never started: nothing is sent
    svc = Service(cfg)
    names = list(cfg.processors)
    cost: Counter[str] = Counter()
    spans = 0
    clock = time.thread_time
    for n_pass in range(passes):
        prefix = struct.pack(">Q", n_pass + 1)
        if n_pass == 1:  # the first pass was the warm-up
            cost.clear()
            spans = 0
        for p in pool:
            data = stamp(p, prefix)
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
            out = batch.encode()
            t3 = clock()
            cost["encode"] += t3 - t
            gzip.compress(out, compresslevel=6)  # what grpc's gzip does on the way out
            cost[GZIP_STAGE] += clock() - t3
            spans += n
            if gap_s:
                time.sleep(gap_s)
    svc._stop.set()
    timed = len(pool) * (passes - 1 if passes > 1 else 1)
    return StageResult(timed, spans, {k: v * 1e6 / spans for k, v in cost.items()})
