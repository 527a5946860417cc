"""Measurement: one rate step (CPU per span, latency, verdict), the ramps, and the paired
ratios of the sidecars' CPU per span to the Collector's."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .common import SPANS_PER_BATCH, VARIANT_TARGETS
from .load import Senders, Sink
from .procfs import core_util, cores_busy, percentile, proc_cpu_s, proc_status_kb
from .report import print_step
from .results import Ratio, StepResult, SystemResult
from .systems import Sut, start_system


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

    def delivered(self) -> float:
        """Spans delivered so far: arrived at the sink, or counted by the file sink."""
        if self.sut.delivered is not None:
            return self.sut.delivered()
        return float(self.sink.stats()["spans"])

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
    load0, sink0 = rig.load_cpu_s(), rig.delivered()
    sleep_until(end)
    cpu1, cores1, wall1 = proc_cpu_s(sut.pid), cores_busy(), time.monotonic()
    load1, sink1 = rig.load_cpu_s(), rig.delivered()
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


def _paired(
    label: str,
    system: str,
    side: list[StepResult],
    col: list[StepResult],
    baseline: str = "collector",
) -> Ratio:
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
        baseline,
    )


def ratios(results: list[SystemResult]) -> list[Ratio]:
    """Sidecar CPU us/span / Collector CPU us/span: at every rate both sustained, at a common
    moderate rate (the highest where the sidecar used <= 70% of its core), and each at its
    highest sustained rate (saturation). And a variant's CPU us/span / the default sidecar's
    (`VARIANT_TARGETS`: the file sink, the attribution dimensions) at every rate both
    sustained, when both ran."""
    by_name = {r.system: r for r in results}
    out = []
    fwd = by_name.get("sidecar")
    for variant in (r for r in results if r.system in VARIANT_TARGETS and fwd is not None):
        assert fwd is not None
        ppass, vpass = _passed_by_rate(fwd), _passed_by_rate(variant)
        for rate in sorted(set(ppass) & set(vpass)):
            label = f"at {rate:.0f} spans/s"
            out.append(_paired(label, variant.system, vpass[rate], ppass[rate], baseline="sidecar"))
    col = by_name.get("collector")
    if col is None:
        return out
    cpass = _passed_by_rate(col)
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
