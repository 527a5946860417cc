"""The performance gate (`--gate`): the sidecar's CPU per span against the Collector's, paired.

Both systems are up at once on the SUT core; each round runs every gate rate for each system
in turn (the order alternating round by round), so a drift of the machine hits both alike and
the ratio of a round is a paired figure. Per rate, the median of the rounds' ratios must stay
at or under the threshold bench/gate.json keeps (the figures measured when it was set plus a
noise margin); a rate where fewer than `min_rounds` rounds were sustained by both fails too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from .common import BENCH_DIR
from .measure import Rig, open_rig, run_step
from .report import print_step
from .results import GateRate, StepResult

GATE_FILE = BENCH_DIR / "gate.json"
SYSTEMS = ("sidecar", "collector")


def load_gate(path: Path = GATE_FILE) -> dict[str, Any]:
    """The gate's settings: rates, rounds, step timing and the threshold per rate."""
    cfg: dict[str, Any] = json.loads(path.read_text())
    rates = [str(r) for r in cfg["rates"]]
    missing = [r for r in rates if r not in cfg["max_ratio"]]
    if missing:
        raise ValueError(f"{path}: no max_ratio for rate(s) {', '.join(missing)}")
    return cfg


def judge(
    rate: float, steps: dict[str, list[StepResult]], threshold: float, min_rounds: int
) -> GateRate:
    """The gate's verdict at one rate from each system's steps, round k being the k-th."""
    side, col, failed, ratios = [], [], [], []
    for k, (a, b) in enumerate(zip(steps["sidecar"], steps["collector"], strict=True)):
        for s in (a, b):
            if not s.passed:
                failed.append(f"{s.system} round {k + 1}: {s.verdict}")
        if a.passed and b.passed:
            side.append(a.cpu_us_per_span)
            col.append(b.cpu_us_per_span)
            ratios.append(a.cpu_us_per_span / b.cpu_us_per_span)
    median = statistics.median(ratios) if ratios else float("nan")
    passed = len(ratios) >= min_rounds and median <= threshold
    return GateRate(rate, side, col, ratios, median, threshold, failed, passed)


def run_gate(args: argparse.Namespace, pool_path: Path) -> list[GateRate]:
    cfg = load_gate(Path(args.gate_file))
    rates = [float(r) for r in cfg["rates"]]
    rounds = int(cfg["rounds"])
    args.step_seconds, args.warmup = float(cfg["step_seconds"]), float(cfg["warmup"])
    args.pause = float(cfg.get("pause", 0.5))
    steps: dict[float, dict[str, list[StepResult]]] = {r: {n: [] for n in SYSTEMS} for r in rates}
    rigs: dict[str, Rig] = {}
    try:
        for n in SYSTEMS:
            rigs[n] = open_rig(n, args, pool_path, "gate", None)
        time.sleep(1.0)
        for k in range(rounds):
            order = SYSTEMS if k % 2 == 0 else SYSTEMS[::-1]
            for rate in rates:
                for n in order:
                    step = run_step(rigs[n], rate, args)
                    steps[rate][n].append(step)
                    print_step(step)
                    time.sleep(args.pause)
    finally:
        for rig in rigs.values():
            rig.close()
    min_rounds = int(cfg.get("min_rounds", (rounds + 1) // 2))
    return [judge(r, steps[r], float(cfg["max_ratio"][f"{r:.0f}"]), min_rounds) for r in rates]


def print_gate(results: list[GateRate]) -> None:
    print()
    print("gate: median over paired rounds of sidecar CPU us/span / Collector CPU us/span")
    for g in results:
        verdict = "ok" if g.passed else "FAILED"
        side = statistics.median(g.sidecar_us) if g.sidecar_us else float("nan")
        col = statistics.median(g.collector_us) if g.collector_us else float("nan")
        print(
            f"  {g.rate_spans_s:>7.0f} spans/s  sidecar {side:6.1f} us  collector {col:6.1f} us  "
            f"ratio {g.median_ratio:.2f} (rounds {'/'.join(f'{x:.2f}' for x in g.ratios)}) "
            f"<= {g.threshold:.2f}: {verdict}"
        )
        for f in g.failed_rounds:
            print(f"           not sustained: {f}")
    bad = [g for g in results if not g.passed]
    if bad:
        print(
            "gate FAILED at "
            + ", ".join(
                f"{g.rate_spans_s:.0f} spans/s (ratio {g.median_ratio:.2f} > {g.threshold:.2f}"
                f", {len(g.ratios)} rounds sustained)"
                for g in bad
            )
        )
    else:
        print("gate passed")
