"""`promtool test rules` cases for the generated budget rules, with synthetic cost series.

promtool's clock starts at 1970-01-01T00:00Z; each budget gets four test groups:
  burn       a steady burn from time 0 that passes every warn level within the period: spend
             and percent used exact at two instants, every level's alert firing, the levels
             silent just below the lowest, the forecast firing before exhaustion and silent
             after it, and spend back near zero an hour into the next period (day, week)
  quiet      no spend on the selected series (other series spend heavily): all alerts silent
  anomaly    7 days of steady spend, then a spike: silent before it, firing in it; a spike on
             series outside the selector an hour earlier stays silent
  boundaries the period index and seconds left at the first period boundary after time 0
Expected values come from Python's own calendar arithmetic, not from the rules' PromQL.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from . import periods
from .config import BudgetConfig
from .rules import ALERTS, COST_METRIC, _num, _quote

EPOCH = datetime(1970, 1, 1)
_MIN = 60
_5M = 300


def _labels(b: BudgetConfig, other: bool = False) -> str:
    """A cost series matching the budget's selector (or, `other`, missing it by one label)."""
    base = {
        "service_name": "svc",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "m",
        "gen_ai_operation_name": "chat",
        "gen_ai_response_model": "m",
    }
    base.update(b.selector)
    if other:
        k = sorted(b.selector)[0]
        base[k] = b.selector[k] + "-other"
    return COST_METRIC + "{" + ", ".join(f"{k}={_quote(v)}" for k, v in base.items()) + "}"


def _dur(seconds: int) -> str:
    assert seconds % _MIN == 0, seconds
    return f"{seconds // _MIN}m"


def _near(expr: str, value: float, b: BudgetConfig) -> dict[str, Any]:
    """`expr` equals `value` within 1e-6 relative (promtool compares exactly)."""
    tol = max(abs(value) * 1e-6, 1e-12)
    return {
        "expr": f"abs(sum({expr}) - {value!r}) <= bool {tol!r}",
        "exp_samples": [{"labels": "{}", "value": 1}],
    }


def _alerts(name: str, b: BudgetConfig, at: int, levels: list[float] | None) -> dict[str, Any]:
    """An alert_rule_test case: firing for each level (None: one alert without a level)."""
    rule = next(a for a in ALERTS if a["alert"] == name)
    exp = []
    for level in levels if levels is not None else [None]:
        labels = {"budget": b.name, **rule["labels"]}
        if level is not None:
            labels["level"] = _num(level)
        ann = {
            k: v.replace("{{ $labels.budget }}", b.name).replace(
                "{{ $labels.level }}", labels.get("level", "")
            )
            for k, v in rule["annotations"].items()
        }
        exp.append({"exp_labels": labels, "exp_annotations": ann})
    return {"eval_time": _dur(at), "alertname": name, "exp_alerts": exp}


def _silent(name: str, at: int) -> dict[str, Any]:
    return {"eval_time": _dur(at), "alertname": name, "exp_alerts": []}


def _utc(local: datetime, offset: int) -> int:
    return int((local - EPOCH).total_seconds()) - offset


def _local(ts: int, offset: int) -> datetime:
    return EPOCH + timedelta(seconds=ts + offset)


def _index(period: str, local: datetime) -> int:
    if period == "day":
        return (local.date() - EPOCH.date()).days
    if period == "week":
        return (local.date() - datetime(1969, 12, 29).date()).days // 7
    return local.year * 12 + local.month


def _ceil5(t: float) -> int:
    return math.ceil(t / _5M) * _5M


def _floor5(t: float) -> int:
    return int(t // _5M) * _5M


def burn_group(b: BudgetConfig, offset: int) -> dict[str, Any]:
    local0 = _local(0, offset)
    start = max(0, _utc(periods.local_start(b.period, local0), offset))
    end = _utc(periods.next_start(b.period, local0), offset)
    if end - start < 8 * 3600:  # too short a first period: test the next one
        start, end = end, _utc(periods.next_start(b.period, _local(end, offset)), offset)
    window = min(end - start, 86400)
    t_fire = start + window - 600
    top = 1.05 * max(max(b.warn_levels), 100.0)  # percent used at t_fire
    k = top / 100 * b.amount_usd / (t_fire - start)  # USD/s
    t_exhausted = start + b.amount_usd / k
    horizon = t_fire
    cases: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    me = f"{{budget={_quote(b.name)}}}"

    def spend_at(t: int, since: int = start) -> None:
        cases.append({**_near(f"llm:budget_spend_usd:period{me}", k * (t - since), b), "at": t})
        pct = k * (t - since) / b.amount_usd * 100
        cases.append({**_near(f"llm:budget_used_percent{me}", pct, b), "at": t})

    spend_at(t_fire)
    loc = _local(t_fire, offset)
    nxt = _utc(periods.next_start(b.period, loc), offset)
    for expr, value in (
        (f"llm:budget_cost_usd:rate5m{me}", k),
        (f"llm:budget_cost_usd:rate1h{me}", k),
        (f"llm:budget_amount_usd{me}", b.amount_usd),
        (f"llm:budget_period_index{me}", _index(b.period, loc)),
        (f"llm:budget_window_period_index{me}", _index(b.period, loc)),
        (f"llm:budget_period_remaining_seconds{me}", nxt - t_fire),
        (f"llm:budget_forecast_horizon_seconds{me}", b.forecast_hours * 3600),
        (f"count(llm:budget_warn_percent{me})", len(b.warn_levels)),
        (f"sum(llm:budget_warn_percent{me})", sum(b.warn_levels)),
    ):
        cases.append({**_near(expr, value, b), "at": t_fire})
    below = [lv for lv in b.warn_levels if lv < 100]
    above = [lv for lv in b.warn_levels if lv >= 100]
    for name, levels in (("LLMBudgetThresholdReached", below), ("LLMBudgetExceeded", above)):
        alerts.append(_alerts(name, b, t_fire, sorted(levels)) if levels else _silent(name, t_fire))
    alerts.append(_silent("LLMBudgetExhaustionForecast", t_fire))  # already exhausted
    t_below = _floor5(start + min(b.warn_levels) / top * (t_fire - start) * 0.9)
    if t_below - start >= _5M:
        spend_at(t_below)
        alerts += [
            _silent("LLMBudgetThresholdReached", t_below),
            _silent("LLMBudgetExceeded", t_below),
        ]
    horizon_s = b.forecast_hours * 3600
    # rate1h needs an hour of data and the alert 10 minutes of it
    t_forecast = _ceil5(max(t_exhausted - horizon_s + 900, 4200, start + 600))
    if t_forecast < t_exhausted - _5M:
        alerts.append(_alerts("LLMBudgetExhaustionForecast", b, t_forecast, None))
        left = t_exhausted - t_forecast  # (amount - spend) / burn
        cases.append({**_near(f"llm:budget_exhaustion_seconds{me}", left, b), "at": t_forecast})
    t_early = _floor5(t_exhausted - horizon_s - 600)
    if t_early >= 4200 and t_early > start:
        alerts.append(_silent("LLMBudgetExhaustionForecast", t_early))
    if end + 3600 <= 4 * 86400:
        spend_at(end + 3600, since=end)
        horizon = end + 3600
        alerts += [
            _silent("LLMBudgetThresholdReached", end + 3600),
            _silent("LLMBudgetExceeded", end + 3600),
        ]

    # traffic up to t_fire and around the period's end only: the rules' work grows with the
    # minutes that had traffic
    def active(t: int) -> bool:
        return t <= t_fire + _5M or end - 3600 <= t <= end + 3600

    steps = horizon // _MIN + 1
    ours = [k * _MIN * m if active(m * _MIN) else None for m in range(steps + 1)]
    theirs = [b.amount_usd * m if active(m * _MIN) else None for m in range(steps + 1)]
    series = [{"series": _labels(b), "values": _compress(ours)}]
    if b.selector:
        series.append({"series": _labels(b, other=True), "values": _compress(theirs)})
    return _group(f"{b.name}: burn", series, cases, alerts)


def quiet_group(b: BudgetConfig) -> dict[str, Any]:
    at = 2 * 3600 + 600
    me = f"{{budget={_quote(b.name)}}}"
    series = [{"series": _labels(b), "values": f"5+0x{at // _MIN + 1}"}]
    if b.selector:
        series.append({"series": _labels(b, other=True), "values": f"0+{b.amount_usd!r}x150"})
    cases = [
        {**_near(f"llm:budget_spend_usd:period{me}", 0.0, b), "at": at},
        {**_near(f"llm:budget_used_percent{me}", 0.0, b), "at": at},
    ]
    alerts = [_silent(a["alert"], at) for a in ALERTS]
    return _group(f"{b.name}: quiet", series, cases, alerts)


def anomaly_group(b: BudgetConfig) -> dict[str, Any]:
    day = 86400
    floor_per_min = b.anomaly_min_usd_per_hour / 60
    base = max(b.amount_usd / 1e5, floor_per_min)  # USD per minute, the usual burn
    # above factor x baseline within 15 minutes of its start: firing (for: 15m) 30 later
    spike = (4 * b.anomaly_factor + 1) * base
    # the rules' history starts at time 0: the baseline has anomaly_min_days days
    spike_from = b.anomaly_min_days * day + 10 * 3600
    spike_to = spike_from + 2 * 3600
    end = spike_to // _MIN

    def counter(rate_at: Any) -> str:
        """Traffic from 8:00 to 12:00 each day only (what the test looks at)."""
        values: list[float | None] = []
        v = 0.0
        for m in range(end + 1):
            t = m * _MIN
            values.append(v if 8 * 3600 <= t % day <= 12 * 3600 else None)
            v += rate_at(t)
        return _compress(values)

    def ours(t: int) -> float:
        return spike if spike_from <= t < spike_to else base

    def theirs(t: int) -> float:
        return 1000 * spike if spike_from - 3600 <= t < spike_from else base

    series = [{"series": _labels(b), "values": counter(ours)}]
    if b.selector:
        series.append({"series": _labels(b, other=True), "values": counter(theirs)})
    me = f"{{budget={_quote(b.name)}}}"
    before, during = spike_from, spike_from + 3600
    cases = [
        {**_near(f"llm:budget_cost_usd_per_hour:baseline{me}", base * 60, b), "at": before},
        {
            **_near(
                f"llm:budget_anomaly_threshold_usd_per_hour{me}",
                max(b.anomaly_factor * base * 60, b.anomaly_min_usd_per_hour),
                b,
            ),
            "at": before,
        },
    ]
    alerts = [
        _silent("LLMBudgetSpendAnomaly", before),
        _alerts("LLMBudgetSpendAnomaly", b, during, None),
    ]
    return _group(f"{b.name}: anomaly", series, cases, alerts)


def _compress(values: list[float | None]) -> str:
    """promtool's expanding notation for a piecewise-linear series with gaps (None):
    `a+bxn` segments and `_xn` runs."""
    out, i = [], 0
    while i < len(values):
        if values[i] is None:
            j = i
            while j + 1 < len(values) and values[j + 1] is None:
                j += 1
            out.append(f"_x{j - i + 1}")
            i = j + 1
            continue
        if i + 1 >= len(values) or values[i + 1] is None:
            out.append(f"{values[i]!r}")
            i += 1
            continue
        step = values[i + 1] - values[i]  # type: ignore[operator]
        j = i + 1
        while (
            j + 1 < len(values)
            and values[j + 1] is not None
            and math.isclose(values[j + 1] - values[j], step)  # type: ignore[operator]
        ):
            j += 1
        out.append(f"{values[i]!r}+{step!r}x{j - i}")
        i = j + 1
    return " ".join(out)


def boundaries_group(b: BudgetConfig, o: periods.Offsets, offset: int) -> dict[str, Any]:
    local0 = _local(0, offset)
    first = _utc(periods.next_start(b.period, local0), offset)
    cases = []
    for t in (first - _5M, first, first + _5M):
        loc = _local(t, offset)
        start = _utc(periods.local_start(b.period, loc), offset)
        nxt = _utc(periods.next_start(b.period, loc), offset)
        idx = periods.index_expr(b.period, o, "time()")
        left = f"{periods.length_expr(b.period, o, 'time()')}"
        left += f" - {periods.elapsed_expr(b.period, o, 'time()')}"
        cases.append({"expr": idx, "exp_samples": _one(_index(b.period, loc)), "at": t})
        cases.append({"expr": left, "exp_samples": _one(nxt - t), "at": t})
        assert start <= t < nxt
    return _group(f"{b.name}: boundaries", [], cases, [])


def _matches(b: BudgetConfig, series: str) -> bool:
    """Whether budget `b` selects an input series (its labels, as _labels writes them)."""
    return all(f"{k}={_quote(v)}" in series for k, v in b.selector.items())


def _isolate(group: dict[str, Any], b: BudgetConfig, budgets: list[BudgetConfig]) -> None:
    """When another budget also selects the group's series its alerts fire too, and an
    alert_rule_test (which compares every alert of a name) cannot hold: check this budget's
    through the ALERTS series instead."""
    others = [o for o in budgets if o.name != b.name]
    if not any(_matches(o, s["series"]) for o in others for s in group["input_series"]):
        return
    for case in group.pop("alert_rule_test", []):
        exp = [
            {
                "labels": "ALERTS{"
                + ", ".join(
                    f"{k}={_quote(v)}"
                    for k, v in sorted(
                        {
                            **a["exp_labels"],
                            "alertname": case["alertname"],
                            "alertstate": "firing",
                        }.items()
                    )
                )
                + "}",
                "value": 1,
            }
            for a in case["exp_alerts"]
        ]
        group["promql_expr_test"].append(
            {
                "expr": f'ALERTS{{alertname="{case["alertname"]}", '
                f'budget={_quote(b.name)}, alertstate="firing"}}',
                "eval_time": case["eval_time"],
                "exp_samples": exp,
            }
        )


def _one(value: float) -> list[dict[str, Any]]:
    return [{"labels": "{}", "value": value}]


def _group(
    name: str,
    series: list[dict[str, str]],
    cases: list[dict[str, Any]],
    alerts: list[dict[str, Any]],
) -> dict[str, Any]:
    exprs = [
        {"expr": c["expr"], "eval_time": _dur(c["at"]), "exp_samples": c["exp_samples"]}
        for c in cases
    ]
    g: dict[str, Any] = {"name": name, "interval": "1m", "input_series": series}
    g["promql_expr_test"] = exprs
    if alerts:
        g["alert_rule_test"] = alerts
    return g


def generate(
    budgets: list[BudgetConfig], rule_file: str, at: datetime | None = None
) -> dict[str, dict[str, Any]]:
    """The test files for `rule_file` (a path relative to them). promtool evaluates every rule
    from time 0 to a file's last instant, so each file's interval is as long as its cases
    allow: `main` (burn, quiet) every 5 minutes (the spend's step), `anomaly` every 30
    (days of history), `boundaries` once a day (it looks up to a month ahead)."""
    at = at or datetime.now(UTC)
    main, anomaly, bounds = [], [], []
    for b in budgets:
        o = periods.offsets(b.timezone, at)
        offset = o.at(0)  # what the rules apply at promtool's times
        groups = [burn_group(b, offset), quiet_group(b), anomaly_group(b)]
        for g in groups:
            _isolate(g, b, budgets)
        main += groups[:2]
        anomaly.append(groups[2])
        bounds.append(boundaries_group(b, o, offset))
    return {
        "main": {"rule_files": [rule_file], "evaluation_interval": "5m", "tests": main},
        "anomaly": {"rule_files": [rule_file], "evaluation_interval": "30m", "tests": anomaly},
        "boundaries": {"rule_files": [rule_file], "evaluation_interval": "1d", "tests": bounds},
    }
