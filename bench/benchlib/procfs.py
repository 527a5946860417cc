"""Readings from /proc (process CPU and memory, per-core busy time), core pinning and the
small statistics the measurements share."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .common import CLK_TCK


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
