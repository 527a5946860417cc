"""`llm-pipeline top` against a real sidecar fed by the demo: every figure it shows equals the
one computed here from the same two /metrics scrapes."""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from pipeline import top
from pipeline.demo import run_demo
from tests.helpers.otlp_sink import free_port
from tests.helpers.sidecar import SidecarProcess, start_sidecar

REPO = Path(__file__).resolve().parents[1]
DUR = "gen_ai_client_operation_duration_seconds"
TTFT = "gen_ai_client_operation_time_to_first_chunk_seconds"


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SidecarProcess, dict[str, Any]]]:
    """A sidecar with the demo running; two text scrapes taken while calls were arriving."""
    sc = start_sidecar(tmp_path_factory.mktemp("top"), {"fallback": {"window_s": 0.5}})
    stop = threading.Event()
    demo = threading.Thread(
        target=run_demo,
        kwargs=dict(
            endpoint=f"http://{sc.grpc_endpoint}",
            rate=25,
            duration=60,
            seed=7,
            stop=stop,
            schedule_delay_ms=200,
        ),
    )
    demo.start()
    scrapes: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            a = (_text(sc), time.monotonic())
            time.sleep(2.0)
            b = (_text(sc), time.monotonic())
            if _calls(b[0]) > _calls(a[0]) > 0:
                scrapes = {"a": a, "b": b}
                break
        assert scrapes, "no calls counted between two scrapes: " + sc.logs()[-2000:]
    finally:
        stop.set()
        demo.join(30)
    time.sleep(1.5)  # the fallback window flushes what the demo sent last
    yield sc, scrapes
    sc.stop()


def _text(sc: SidecarProcess) -> str:
    return httpx.get(sc.metrics_url, headers={"Accept": "text/plain"}, timeout=5).text


@functools.cache
def _samples(text: str) -> list[Any]:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def _calls(text: str) -> float:
    return sum(s.value for s in _samples(text) if s.name == DUR + "_count")


def _by_row(text: str, name: str, keep: Any = lambda lb: True) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = defaultdict(float)
    for s in _samples(text):
        if s.name == name and keep(s.labels):
            out[(s.labels["service_name"], s.labels["gen_ai_request_model"])] += s.value
    return out


def _buckets(text: str, name: str) -> dict[tuple[str, str], dict[float, float]]:
    out: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for s in _samples(text):
        if s.name == name + "_bucket":
            key = (s.labels["service_name"], s.labels["gen_ai_request_model"])
            out[key][float(s.labels["le"])] += s.value
    return out


def _hq(q: float, a: dict[float, float], b: dict[float, float]) -> float | None:
    """histogram_quantile as Prometheus documents it, over the increase from a to b."""
    les = sorted(b)
    cum = [b[le] - a.get(le, 0.0) for le in les]
    if not cum or cum[-1] == 0:
        return None
    rank = q * cum[-1]
    i = next(i for i, c in enumerate(cum) if c >= rank)
    if math.isinf(les[i]):
        return les[i - 1]
    lo, below = (les[i - 1], cum[i - 1]) if i else (0.0, 0.0)
    return lo + (les[i] - lo) * (rank - below) / (cum[i] - below)


def _cells(screen: str) -> dict[tuple[str, str], list[str]]:
    """The rendered table's rows by (service, model)."""
    out = {}
    for line in screen.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 2 + len(top.COLUMNS) and cells[1] and "model" not in cells[1]:
            out[(cells[0], cells[1])] = cells[2:]
    return out


def _screen(renderable: Any) -> str:
    console = Console(record=True, width=250, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_every_figure_shown_is_the_one_on_metrics(
    fed: tuple[SidecarProcess, dict[str, Any]],
) -> None:
    sc, s = fed
    (ta, t0), (tb, t1) = s["a"], s["b"]
    old, new = top.parse(ta, t0), top.parse(tb, t1)
    screen = _screen(top.render(sc.metrics_url, top.rows(old, new), top.health(old, new), "calls"))
    shown = _cells(screen)
    dt = t1 - t0
    calls_a, calls_b = _by_row(ta, DUR + "_count"), _by_row(tb, DUR + "_count")
    err = lambda lb: lb.get("error_type", "") != ""  # noqa: E731
    errs_a, errs_b = _by_row(ta, DUR + "_count", err), _by_row(tb, DUR + "_count", err)
    tok = lambda lb: lb["gen_ai_token_type"] in ("input", "output")  # noqa: E731
    tok_a, tok_b = (
        _by_row(ta, "gen_ai_client_tokens_total", tok),
        _by_row(tb, "gen_ai_client_tokens_total", tok),
    )
    cost_a = _by_row(ta, "gen_ai_client_cost_usd_total")
    cost_b = _by_row(tb, "gen_ai_client_cost_usd_total")
    fb: dict[str, dict[tuple[str, str], float]] = {}
    for k, text in (("a", ta), ("b", tb)):
        fb[k] = defaultdict(float)
        for x in _samples(text):
            if x.name == "gen_ai_client_fallbacks_total":
                fb[k][(x.labels["service_name"], x.labels["from_model"])] += x.value
    dur_a, dur_b = _buckets(ta, DUR), _buckets(tb, DUR)
    ttft_a, ttft_b = _buckets(ta, TTFT), _buckets(tb, TTFT)

    assert set(shown) == {k for k, v in calls_b.items() if v > 0}
    moving = 0
    for key, cells in shown.items():
        n = calls_b[key] - calls_a.get(key, 0.0)
        moving += n > 0

        def share(x: float, y: float, n: float = n) -> float | None:
            return (x - y) / n if n else None

        want = [
            top.fmt_rate(n / dt),
            top.fmt_rate((tok_b[key] - tok_a.get(key, 0.0)) / dt),
            top.fmt_usd((cost_b[key] - cost_a.get(key, 0.0)) / dt * 3600),
            top.fmt_usd(cost_b[key]),
            top.fmt_secs(_hq(0.5, ttft_a.get(key, {}), ttft_b[key]) if key in ttft_b else None),
            top.fmt_secs(_hq(0.95, ttft_a.get(key, {}), ttft_b[key]) if key in ttft_b else None),
            top.fmt_secs(_hq(0.5, dur_a.get(key, {}), dur_b[key])),
            top.fmt_secs(_hq(0.95, dur_a.get(key, {}), dur_b[key])),
            top.fmt_pct(share(errs_b[key], errs_a.get(key, 0.0))),
            top.fmt_pct(share(fb["b"].get(key, 0.0), fb["a"].get(key, 0.0))),
        ]
        assert cells == want, (key, cells, want)
    assert moving >= 3  # the figures compared were live ones, not only zeros

    # pipeline health: received/s, refused, dropped, unprocessed, queue fill per signal
    def total(text: str, name: str, **lb: str) -> float:
        return sum(
            x.value
            for x in _samples(text)
            if x.name == name and all(x.labels.get(k) == v for k, v in lb.items())
        )

    def rate(name: str) -> float:
        return (total(tb, name) - total(ta, name)) / dt

    refused = ("llm_pipeline_rejected_items_total", "llm_pipeline_refused_connections_total")
    signals = sorted(
        {x.labels["signal"] for x in _samples(tb) if x.name == "llm_pipeline_queue_capacity"}
    )
    queues = []
    for sig in signals:
        size = total(tb, "llm_pipeline_queue_size", signal=sig)
        cap = total(tb, "llm_pipeline_queue_capacity", signal=sig)
        queues.append(f"{size:,.0f}/{cap:,.0f} ({size / cap * 100:.1f}%)")
    want_health = [
        top.fmt_rate(rate("llm_pipeline_received_items_total")),
        top.fmt_rate(sum(rate(n) for n in refused)),
        f"{sum(total(tb, n) for n in refused):,.0f}",
        top.fmt_rate(rate("llm_pipeline_dropped_items_total")),
        f"{total(tb, 'llm_pipeline_dropped_items_total'):,.0f}",
        f"{total(tb, 'llm_pipeline_unprocessed_requests'):,.0f}",
        *queues,
    ]
    assert rate("llm_pipeline_received_items_total") > 0 and signals
    rows = [
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in screen.splitlines()
        if line.count("│") == 7 + len(signals)
    ]
    assert want_health in rows, (want_health, rows)


def test_rows_sort_by_the_chosen_column(fed: tuple[SidecarProcess, dict[str, Any]]) -> None:
    sc, s = fed
    old, new = top.parse(*s["a"]), top.parse(*s["b"])
    rs, h = top.rows(old, new), top.health(old, new)
    for sort, col in (("cost", 2), ("total", 3), ("tokens", 1)):
        shown = list(_cells(_screen(top.render(sc.metrics_url, rs, h, sort))))
        want = sorted(rs, key=lambda r: (-top.COLUMNS[col][1](r), r.service, r.model))
        assert shown == [(r.service, r.model) for r in want]
        assert len({top.COLUMNS[col][1](r) for r in want}) > 1  # an order that could be wrong


def test_once_cli_shows_the_running_totals(fed: tuple[SidecarProcess, dict[str, Any]]) -> None:
    """After the demo stopped: `llm-pipeline top --once` shows no calls/s and the cost totals."""
    sc, _ = fed
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "top",
            "--once",
            "--interval",
            "0.5",
            "--metrics",
            sc.metrics_url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    after = _text(sc)
    shown = _cells(r.stdout)
    cost = _by_row(after, "gen_ai_client_cost_usd_total")
    calls = _by_row(after, DUR + "_count")
    assert set(shown) == {k for k, v in calls.items() if v > 0}
    for key, cells in shown.items():
        assert cells[0] == "0.00" and cells[2] == "$0.0000"
        assert cells[3] == top.fmt_usd(cost[key])
        assert cells[6] == "-"  # no call in the window: no latency to show
    everything = sum(cost.values())
    assert top.fmt_usd(everything) in r.stdout  # the "all" footer
    assert "s: next sort column" not in r.stdout  # no keys in --once


def test_unreachable_is_said_clearly(fed: tuple[SidecarProcess, dict[str, Any]]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "top", "--once", "--metrics", dead],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert r.returncode == 1
    assert f"cannot reach {dead}" in r.stdout + r.stderr
    # the live view keeps the last figures and says the sidecar went away
    sc, _ = fed
    live = top.Top(sc.metrics_url)
    live.poll()
    live.poll()
    live.url = dead
    live.poll()
    screen = _screen(live.view())
    assert f"cannot reach {dead}" in screen and "retrying" in screen
    assert _cells(screen)  # the table is still there


def test_quantile_interpolates_like_prometheus() -> None:
    b = [(0.1, 0.0), (0.2, 10.0), (0.4, 20.0), (math.inf, 20.0)]
    assert top.quantile(0.5, b) == pytest.approx(0.2)
    assert top.quantile(0.25, b) == pytest.approx(0.15)
    assert top.quantile(0.75, b) == pytest.approx(0.3)
    assert top.quantile(0.99, [(1.0, 1.0), (math.inf, 5.0)]) == 1.0  # in +Inf: highest bound
    assert top.quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
