"""Reporting: the step table and the summary the run prints."""

from __future__ import annotations

import argparse

from .common import GZIP_STAGE, VARIANT_TARGETS
from .results import BenchResults, StepResult

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
    variant_ratios = [q for q in res.ratios if q.baseline == "sidecar"]
    for name in dict.fromkeys(q.sidecar_system for q in variant_ratios):
        target, what = VARIANT_TARGETS[name]
        print()
        print(
            f"{name} / sidecar: CPU us/span, same rate, same run ({what}; target <= {target:.2f})"
        )
        for q in (q for q in variant_ratios if q.sidecar_system == name):
            rounds = "/".join(f"{x:.2f}" for x in q.rounds)
            print(
                f"  {q.sidecar_rate / 1000:>4.0f}k  {q.sidecar_cpu_us_per_span:6.1f} us vs "
                f"{q.collector_cpu_us_per_span:6.1f} us -> {q.ratio:.3f}"
                + (f"  (rounds {rounds})" if rounds else "")
            )
    col_ratios = [q for q in res.ratios if q.baseline == "collector"]
    if col_ratios:
        print()
        print(
            "ratio = sidecar CPU us/span / Collector CPU us/span, same rate, same run (target <= 1.5)"
        )
        for side in dict.fromkeys(q.sidecar_system for q in col_ratios):
            mine = [q for q in col_ratios if q.sidecar_system == side]
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
