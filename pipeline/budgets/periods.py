"""A budget's period in PromQL, which has no time zones: local time is UTC plus an offset.

The offset is the zone's at the evaluated instant, from a table of the zone's UTC-offset
changes between 40 days before the rules were generated (a month budget looks back 31 days)
and `HORIZON` after. Inside the table the period starts at the true local midnight across
DST changes; past its end the last offset holds, so generate the rules again within a year
(the file's header says until when they are exact).

Local time L = time() + offset. Seconds since the period's start and its index:
  day    L % 86400                                      floor(L / 86400)
  week   (L + 259200) % 604800   (1970-01-01, a Thursday, plus 3 days is a Monday)
  month  (day_of_month(L) - 1) * 86400 + L % 86400      year(L) * 12 + month(L)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

HORIZON = timedelta(days=400)
LOOKBACK = timedelta(days=40)
_HOUR = 3600

# The subquery range that holds any period of the kind.
PERIOD_RANGE = {"day": "1d", "week": "7d", "month": "31d"}


@dataclass(frozen=True)
class Offsets:
    """UTC offset (s) `first` before the first change; `changes`: (UTC epoch s, new offset)."""

    first: int
    changes: tuple[tuple[int, int], ...]
    valid_until: datetime  # the table's end (UTC)

    def at(self, ts: float) -> int:
        off = self.first
        for when, new in self.changes:
            if ts >= when:
                off = new
        return off


def _offset(zone: ZoneInfo, ts: int) -> int:
    off = datetime.fromtimestamp(ts, zone).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def offsets(timezone: str, at: datetime) -> Offsets:
    """The zone's offset changes around `at`: hourly scan, then bisection to the second."""
    zone = ZoneInfo(timezone)
    start = int((at - LOOKBACK).timestamp()) // _HOUR * _HOUR
    end = int((at + HORIZON).timestamp())
    first = prev = _offset(zone, start)
    changes = []
    for t in range(start + _HOUR, end, _HOUR):
        off = _offset(zone, t)
        if off != prev:
            lo, hi = t - _HOUR, t  # offset(lo) == prev, offset(hi) == off
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if _offset(zone, mid) == prev else (lo, mid)
            changes.append((hi, off))
            prev = off
    return Offsets(first, tuple(changes), datetime.fromtimestamp(end, ZoneInfo("UTC")))


def offset_expr(o: Offsets, t: str) -> str:
    """PromQL scalar: the offset in seconds at scalar expression `t`."""
    if not o.changes:
        return str(o.first)
    parts, before = [], o.first
    for when, new in o.changes:
        parts.append(f"(vector({before}) and on() vector({t}) < {when})")
        before = new
    parts.append(f"vector({before})")
    return "scalar(" + " or ".join(parts) + ")"


def local_expr(o: Offsets, t: str) -> str:
    """PromQL scalar: local time at `t`, as seconds since the epoch of a UTC clock."""
    return f"({t} + {offset_expr(o, t)})"


def index_expr(period: str, o: Offsets, t: str) -> str:
    """PromQL instant vector (no labels): the period's index at `t`, equal within a period."""
    loc = local_expr(o, t)
    if period == "day":
        return f"floor(vector({loc} / 86400))"
    if period == "week":
        return f"floor(vector(({loc} + 259200) / 604800))"
    return f"(year(vector({loc})) * 12 + month(vector({loc})))"


def elapsed_expr(period: str, o: Offsets, t: str) -> str:
    """PromQL instant vector (no labels): seconds since the period started, at `t`."""
    loc = local_expr(o, t)
    if period == "day":
        return f"vector({_mod(loc, 86400)})"
    if period == "week":
        return f"vector({_mod(f'({loc} + 259200)', 604800)})"
    return f"((day_of_month(vector({loc})) - 1) * 86400 + {_mod(loc, 86400)})"


def _mod(x: str, n: int) -> str:
    """x mod n in [0, n): PromQL's % keeps the dividend's sign (only before 1970 here)."""
    return f"(({x} % {n} + {n}) % {n})"


def length_expr(period: str, o: Offsets, t: str) -> str:
    """PromQL instant vector (no labels): the period's length in seconds (month: its days)."""
    if period == "day":
        return "vector(86400)"
    if period == "week":
        return "vector(604800)"
    return f"(days_in_month(vector({local_expr(o, t)})) * 86400)"


# --- the same arithmetic in Python, for the generated promtool tests ---------------------------
def local_start(period: str, local: datetime) -> datetime:
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start(period: str, local: datetime) -> datetime:
    start = local_start(period, local)
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)
