"""The `budgets:` config: a spend limit in USD over a calendar period, per label selector."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIODS = ("day", "week", "month")
# Labels every cost series has; a configured attribution dimension's label is allowed too.
BASE_SELECTOR_LABELS = ("service_name", "gen_ai_request_model", "gen_ai_provider_name")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass
class BudgetConfig:
    name: str
    amount_usd: float
    period: str = "month"  # day | week (from Monday) | month
    timezone: str = "UTC"  # IANA name; where the period starts at local midnight
    # label -> exact value over gen_ai_client_cost_usd_total; empty: all spend
    selector: dict[str, str] = field(default_factory=dict)
    warn_levels: list[float] = field(default_factory=lambda: [50.0, 80.0, 100.0])  # percent
    forecast_hours: float = 24.0  # alert when the current burn exhausts it sooner than this
    # spend-anomaly alert: the last hour's spend above this many times the mean of the same
    # hour on the previous 7 days (at least anomaly_min_days of them), and above a floor
    anomaly_factor: float = 3.0
    anomaly_min_days: int = 3
    anomaly_min_usd_per_hour: float = 0.0

    def validate(self, dimension_labels: tuple[str, ...] = ()) -> None:
        where = f"budgets.{self.name}"
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"budgets: name {self.name!r}: 1-63 letters, digits, '_', '.', '-'")
        if not self.amount_usd > 0 or self.amount_usd == float("inf"):
            raise ValueError(f"{where}.amount_usd must be a positive number")
        if self.period not in PERIODS:
            raise ValueError(f"{where}.period: expected day, week or month, got {self.period!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"{where}.timezone: unknown IANA time zone {self.timezone!r}") from e
        allowed = (*BASE_SELECTOR_LABELS, *dimension_labels)
        for label, value in self.selector.items():
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"{where}.selector: {label!r} is not a label name")
            if label not in allowed:
                raise ValueError(
                    f"{where}.selector: {label!r} is not a cost label; one of {', '.join(allowed)}"
                )
            if not value:
                raise ValueError(f"{where}.selector.{label}: the value must not be empty")
        if not self.warn_levels or any(not 0 < w <= 1000 for w in self.warn_levels):
            raise ValueError(f"{where}.warn_levels: percentages in (0, 1000]")
        if len(set(self.warn_levels)) != len(self.warn_levels):
            raise ValueError(f"{where}.warn_levels: each level once")
        if not 0 < self.forecast_hours <= 24 * 31:
            raise ValueError(f"{where}.forecast_hours must be in (0, 744]")
        if not self.anomaly_factor > 1:
            raise ValueError(f"{where}.anomaly_factor must be > 1")
        if not 1 <= self.anomaly_min_days <= 7:
            raise ValueError(f"{where}.anomaly_min_days must be 1..7")
        if self.anomaly_min_usd_per_hour < 0:
            raise ValueError(f"{where}.anomaly_min_usd_per_hour must be >= 0")


def validate_budgets(budgets: list[BudgetConfig], dimension_labels: tuple[str, ...] = ()) -> None:
    names = [b.name for b in budgets]
    if len(set(names)) != len(names):
        raise ValueError("budgets: each name once")
    for b in budgets:
        b.validate(dimension_labels)
