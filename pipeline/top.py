"""llm-pipeline top: a live terminal view of a sidecar's /metrics.

Two scrapes make a window (the oldest scrape kept, up to `WINDOW_S` back, and the newest):
rates are counter deltas over it, p50/p95 come from the histograms' bucket deltas with
Prometheus' `histogram_quantile` interpolation, error and fallback rates are shares of the calls
in it; "$ total" is the counter itself. Rows are (service, requested model), or with
`--by DIMENSION` (service, that label's value): an attribution dimension (`tenant`, `user`,
...) is on the token and cost counters only, so those rows show tokens, $/h and $ total. Works against any
sidecar's /metrics (text format), also behind the compose stack's port mapping.
"""

from __future__ import annotations

import math
import os
import select
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

DEFAULT_URL = "http://127.0.0.1:9464/metrics"
WINDOW_S = 60.0
DURATION = "gen_ai_client_operation_duration_seconds"
TTFT = "gen_ai_client_operation_time_to_first_chunk_seconds"
Key = tuple[str, str]  # (service, requested model)


@dataclass
class Hist:
    """Cumulative bucket counts by upper bound (+Inf included)."""

    buckets: dict[float, float] = field(default_factory=dict)

    def add(self, le: float, count: float) -> None:
        self.buckets[le] = self.buckets.get(le, 0.0) + count

    def minus(self, old: Hist | None) -> list[tuple[float, float]]:
        prev = old.buckets if old else {}
        return sorted((le, c - prev.get(le, 0.0)) for le, c in self.buckets.items())


@dataclass
class Counts:
    calls: float = 0.0
    errors: float = 0.0
    tokens: float = 0.0  # input (cache included, per semconv) + output
    cost: float = 0.0
    fallbacks: float = 0.0
    duration: Hist = field(default_factory=Hist)
    ttft: Hist = field(default_factory=Hist)


@dataclass
class Snapshot:
    t: float
    groups: dict[Key, Counts]
    received: float = 0.0
    refused: float = 0.0  # items rejected (any reason) + connections refused
    dropped: float = 0.0
    queues: dict[str, tuple[float, float]] = field(default_factory=dict)  # signal: size, cap
    unprocessed: float = 0.0
    version: str = ""


def parse(text: str, t: float, by: str = "") -> Snapshot:
    """One /metrics exposition (Prometheus text format) as the figures `top` shows; rows by
    (service, requested model), or by (service, label `by`) of the series that have it."""
    groups: dict[Key, Counts] = defaultdict(Counts)
    snap = Snapshot(t, groups)
    queue_size: dict[str, float] = defaultdict(float)
    queue_cap: dict[str, float] = defaultdict(float)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name, lb, v = s.name, s.labels, float(s.value)
            if by and by not in lb and name.startswith("gen_ai_client_"):
                continue  # a family without the dimension (latency: by default none)
            key = (lb.get("service_name", ""), lb.get(by or "gen_ai_request_model", ""))
            if name == DURATION + "_count":
                groups[key].calls += v
                if lb.get("error_type"):
                    groups[key].errors += v
            elif name == DURATION + "_bucket":
                groups[key].duration.add(float(lb["le"]), v)
            elif name == TTFT + "_bucket":
                groups[key].ttft.add(float(lb["le"]), v)
            elif name == "gen_ai_client_tokens_total":
                if lb.get("gen_ai_token_type") in ("input", "output"):
                    groups[key].tokens += v
            elif name == "gen_ai_client_cost_usd_total":
                groups[key].cost += v
            elif name == "gen_ai_client_fallbacks_total":
                groups[(lb.get("service_name", ""), lb.get("from_model", ""))].fallbacks += v
            elif name == "llm_pipeline_received_items_total":
                snap.received += v
            elif name in (
                "llm_pipeline_rejected_items_total",
                "llm_pipeline_refused_connections_total",
            ):
                snap.refused += v
            elif name == "llm_pipeline_dropped_items_total":
                snap.dropped += v
            elif name == "llm_pipeline_queue_size":
                queue_size[lb.get("signal", "")] += v
            elif name == "llm_pipeline_queue_capacity":
                queue_cap[lb.get("signal", "")] += v
            elif name == "llm_pipeline_unprocessed_requests":
                snap.unprocessed += v
            elif name == "llm_pipeline_build_info":
                snap.version = lb.get("version", "")
    snap.queues = {sig: (queue_size[sig], queue_cap[sig]) for sig in sorted(queue_cap)}
    return snap


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over (upper bound, cumulative count), sorted by bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if math.isinf(le):  # in the +Inf bucket: the highest finite bound
                return lower
            return lower + (le - lower) * ((rank - below) / (cum - below) if cum > below else 0)
        lower, below = le, cum
    return lower


@dataclass
class Row:
    service: str
    model: str
    calls_s: float
    tokens_s: float
    cost_h: float
    cost_total: float
    ttft_p50: float | None
    ttft_p95: float | None
    lat_p50: float | None
    lat_p95: float | None
    error_rate: float | None  # share of the window's calls
    fallback_rate: float | None


@dataclass
class Health:
    window_s: float
    received_s: float
    refused_s: float
    refused: float
    dropped_s: float
    dropped: float
    queues: dict[str, tuple[float, float]]
    unprocessed: float


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _total(groups: Iterable[Counts]) -> Counts:
    t = Counts()
    for c in groups:
        t.calls, t.errors, t.tokens = t.calls + c.calls, t.errors + c.errors, t.tokens + c.tokens
        t.cost, t.fallbacks = t.cost + c.cost, t.fallbacks + c.fallbacks
        for mine, theirs in ((t.duration, c.duration), (t.ttft, c.ttft)):
            for le, n in theirs.buckets.items():
                mine.add(le, n)
    return t


def total(old: Snapshot, new: Snapshot) -> Row:
    """All services and models as one row (the histograms share their bounds)."""
    a = Snapshot(old.t, {("all", ""): _total(old.groups.values())})
    b = Snapshot(new.t, {("all", ""): _total(new.groups.values())})
    return rows(a, b, keep_idle=True)[0]


def rows(old: Snapshot, new: Snapshot, keep_idle: bool = False) -> list[Row]:
    """Per (service, model): the window's rates and quantiles, and the running cost."""
    dt = max(new.t - old.t, 1e-9)
    out = []
    for key, c in new.groups.items():
        if c.calls == 0 and c.tokens == 0 and c.cost == 0 and not keep_idle:
            continue
        o = old.groups.get(key, Counts())
        calls = c.calls - o.calls
        dur, ttft = c.duration.minus(o.duration), c.ttft.minus(o.ttft)
        out.append(
            Row(
                service=key[0],
                model=key[1],
                calls_s=calls / dt,
                tokens_s=(c.tokens - o.tokens) / dt,
                cost_h=(c.cost - o.cost) / dt * 3600,
                cost_total=c.cost,
                ttft_p50=quantile(0.5, ttft),
                ttft_p95=quantile(0.95, ttft),
                lat_p50=quantile(0.5, dur),
                lat_p95=quantile(0.95, dur),
                error_rate=_share(c.errors - o.errors, calls),
                fallback_rate=_share(c.fallbacks - o.fallbacks, calls),
            )
        )
    return out


def health(old: Snapshot, new: Snapshot) -> Health:
    dt = max(new.t - old.t, 1e-9)
    return Health(
        window_s=new.t - old.t,
        received_s=(new.received - old.received) / dt,
        refused_s=(new.refused - old.refused) / dt,
        refused=new.refused,
        dropped_s=(new.dropped - old.dropped) / dt,
        dropped=new.dropped,
        queues=new.queues,
        unprocessed=new.unprocessed,
    )


# --- formatting (the tests format their own figures with these) ---------------------------
def fmt_rate(v: float) -> str:
    return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"


def fmt_usd(v: float) -> str:
    return f"${v:,.4f}" if v < 10 else f"${v:,.2f}"


def fmt_secs(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


COLUMNS: list[tuple[str, Callable[[Row], Any], Callable[[Row], str]]] = [
    ("calls/s", lambda r: r.calls_s, lambda r: fmt_rate(r.calls_s)),
    ("tokens/s", lambda r: r.tokens_s, lambda r: fmt_rate(r.tokens_s)),
    ("$/hour", lambda r: r.cost_h, lambda r: fmt_usd(r.cost_h)),
    ("$ total", lambda r: r.cost_total, lambda r: fmt_usd(r.cost_total)),
    ("TTFT p50", lambda r: r.ttft_p50 or 0, lambda r: fmt_secs(r.ttft_p50)),
    ("TTFT p95", lambda r: r.ttft_p95 or 0, lambda r: fmt_secs(r.ttft_p95)),
    ("latency p50", lambda r: r.lat_p50 or 0, lambda r: fmt_secs(r.lat_p50)),
    ("latency p95", lambda r: r.lat_p95 or 0, lambda r: fmt_secs(r.lat_p95)),
    ("errors", lambda r: r.error_rate or 0, lambda r: fmt_pct(r.error_rate)),
    ("fallbacks", lambda r: r.fallback_rate or 0, lambda r: fmt_pct(r.fallback_rate)),
]
SORT_KEYS = ["calls", "tokens", "cost", "total", "ttft", "latency", "errors", "fallbacks"]
_SORT_COLUMN = {"calls": 0, "tokens": 1, "cost": 2, "total": 3, "ttft": 5, "latency": 7}
_SORT_COLUMN |= {"errors": 8, "fallbacks": 9}


def render(
    url: str,
    rs: Iterable[Row],
    h: Health,
    sort: str,
    note: str = "",
    all_row: Row | None = None,
    keys_hint: bool = True,
    by: str = "",
) -> RenderableType:
    col = _SORT_COLUMN[sort]
    ordered = sorted(rs, key=lambda r: (-COLUMNS[col][1](r), r.service, r.model))
    t = Table(
        title=f"llm-pipeline top · {url} · window {h.window_s:.0f} s · sorted by {sort}",
        caption="s: next sort column · q: quit" if keys_hint else None,
        show_footer=all_row is not None,
    )
    foot = [f(all_row) for _, _, f in COLUMNS] if all_row else [""] * len(COLUMNS)
    t.add_column("service", footer="all" if all_row else "")
    t.add_column(by or "model")
    for i, (name, _, _) in enumerate(COLUMNS):
        t.add_column(name + (" ▼" if i == col else ""), justify="right", footer=foot[i])
    for r in ordered:
        t.add_row(r.service, r.model, *(f(r) for _, _, f in COLUMNS))
    hl = Table(title="pipeline health", show_header=True)
    for name in ("received/s", "refused/s", "refused", "dropped/s", "dropped", "unprocessed"):
        hl.add_column(name, justify="right")
    for sig in h.queues:
        hl.add_column(f"{sig} queue", justify="right")
    queues = [
        f"{size:,.0f}/{cap:,.0f} ({size / cap * 100 if cap else 0:.1f}%)"
        for size, cap in h.queues.values()
    ]
    hl.add_row(
        fmt_rate(h.received_s),
        fmt_rate(h.refused_s),
        f"{h.refused:,.0f}",
        fmt_rate(h.dropped_s),
        f"{h.dropped:,.0f}",
        f"{h.unprocessed:,.0f}",
        *queues,
    )
    parts: list[RenderableType] = [t, hl]
    if note:
        parts.insert(0, Text(note, style="bold red"))
    return Group(*parts)


def scrape(url: str, timeout: float = 3.0) -> str:
    req = urllib.request.Request(url, headers={"Accept": "text/plain"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body: bytes = r.read()
    return body.decode()


class Top:
    def __init__(
        self, url: str, sort: str = "calls", window_s: float = WINDOW_S, by: str = ""
    ) -> None:
        self.url, self.sort, self.window_s, self.by = url, sort, window_s, by
        self.snaps: deque[Snapshot] = deque()
        self.error = ""

    def poll(self) -> None:
        try:
            snap = parse(scrape(self.url), time.monotonic(), self.by)
        except (OSError, urllib.error.URLError, ValueError) as e:
            reason = getattr(e, "reason", e)
            self.error = f"cannot reach {self.url}: {reason} (retrying)"
            return
        self.error = ""
        self.snaps.append(snap)
        while len(self.snaps) > 2 and snap.t - self.snaps[1].t >= self.window_s:
            self.snaps.popleft()

    def view(self, keys_hint: bool = True) -> RenderableType:
        if len(self.snaps) < 2:
            msg = self.error or f"reading {self.url} …"
            return Text(msg, style="bold red" if self.error else "")
        old, new = self.snaps[0], self.snaps[-1]
        rs, h, everything = rows(old, new), health(old, new), total(old, new)
        return render(self.url, rs, h, self.sort, self.error, everything, keys_hint, self.by)

    def next_sort(self) -> None:
        self.sort = SORT_KEYS[(SORT_KEYS.index(self.sort) + 1) % len(SORT_KEYS)]


def _keys(timeout: float) -> str:
    """Keys typed within `timeout` seconds (stdin in cbreak mode), else ''."""
    r, _, _ = select.select([sys.stdin], [], [], timeout)
    return os.read(sys.stdin.fileno(), 32).decode(errors="ignore") if r else ""


def run(
    url: str,
    interval: float,
    sort: str,
    once: bool,
    console: Console | None = None,
    by: str = "",
) -> int:
    # piped or captured (not a terminal): wide enough for every column instead of 80
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    console = console or Console(width=None if wide else 200)
    top = Top(url, sort, by=by)
    if once:  # two scrapes `interval` apart, one screen
        top.poll()
        if not top.error:
            time.sleep(interval)
            top.poll()
        if top.error:
            console.print(Text(top.error.replace(" (retrying)", ""), style="bold red"))
            return 1
        console.print(top.view(keys_hint=False))
        return 0
    tty_state = None
    if sys.stdin.isatty():
        import termios
        import tty

        tty_state = termios.tcgetattr(sys.stdin)
        tty.setcbreak(sys.stdin)
    try:
        top.poll()
        with Live(top.view(), console=console, auto_refresh=False, screen=False) as live:
            while True:
                deadline = time.monotonic() + interval
                while (left := deadline - time.monotonic()) > 0:
                    if tty_state is None:
                        time.sleep(left)
                        continue
                    keys = _keys(left)
                    if "q" in keys:
                        return 0
                    if "s" in keys:
                        top.next_sort()
                        live.update(top.view(), refresh=True)
                top.poll()
                live.update(top.view(), refresh=True)
    except KeyboardInterrupt:
        return 0
    finally:
        if tty_state is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, tty_state)
