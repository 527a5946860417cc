"""The outage mode: the sink down for a while under steady load; what was lost, duplicated,
queued, and how long the backlog took to drain."""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from pathlib import Path

from .load import SenderStep
from .measure import open_rig
from .procfs import percentile, proc_status_kb
from .results import OutageResult


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
