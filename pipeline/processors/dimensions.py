"""dimensions: the `dimensions:` and `attribution:` config, and a dimension value -> its label.

A dimension (`tenant`, `user`, `team`, `feature`, ...) is a Prometheus label whose value is
read from an ordered list of sources, span attributes (`span:user.id`) or resource attributes
(`resource:tenant.id`): the first with a value wins. Before a value becomes a label it is
checked (`Labeler`): longer than 128 characters or not printable -> `__invalid__`; a value the
redactor would change (a secret, an email) or one it already changed -> `__redacted__`; beyond
the top-k values by cost (`heavy.HeavyHitters`) -> `__other__`. A missing value is "".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .heavy import OTHER, HeavyHitters

if TYPE_CHECKING:
    from .redact import Redactor

INVALID = "__invalid__"
REDACTED = "__redacted__"
MAX_VALUE_LEN = 128
_REDACTION_MARK = "[REDACTED:"
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
SOURCE_KINDS = ("span", "resource")
# The families a dimension can be put on, by config name (metrics.py maps them to families).
METRIC_CHOICES = ("tokens", "token_usage", "cost", "duration")
DEFAULT_METRICS = ("tokens", "cost")
# Labels the metric families have already: a dimension must not take one of their names.
RESERVED_LABELS = frozenset(
    {
        "service_name",
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
        "gen_ai_token_modality",
        "error_type",
        "root_span_name",
        "gen_ai_agent_name",
        "dimension",
        "reason",
        "le",
    }
)
_MAX_CACHED = 4096


@dataclass
class DimensionConfig:
    name: str = ""
    sources: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))

    def parsed_sources(self) -> list[tuple[str, str]]:
        """(kind, attribute key) per source, in order."""
        return [tuple(s.split(":", 1)) for s in self.sources]  # type: ignore[misc]

    def validate(self) -> None:
        if not _NAME.match(self.name or ""):
            raise ValueError(f"name {self.name!r}: expected letters, digits and _")
        if self.name in RESERVED_LABELS or self.name.startswith("__"):
            raise ValueError(f"name {self.name!r}: a label the metrics already use")
        if not self.sources:
            raise ValueError(f"{self.name}: sources: expected at least one source")
        for s in self.sources:
            kind, _, key = s.partition(":")
            if kind not in SOURCE_KINDS or not key:
                raise ValueError(
                    f"{self.name}: source {s!r}: expected span:<attribute> or resource:<attribute>"
                )
        unknown = sorted(set(self.metrics) - set(METRIC_CHOICES))
        if unknown:
            raise ValueError(
                f"{self.name}: metrics: unknown {unknown}; known: {', '.join(METRIC_CHOICES)}"
            )


@dataclass
class AttributionConfig:
    top_k: int = 100  # values per dimension with their own series; the rest fold to __other__
    idle_s: float = 30.0  # how long a trace's calls wait for ancestors (and for its root)
    max_open_traces: int = 10_000  # traces held at once; the oldest is given up beyond
    requests: bool = False  # per request / agent run / conversation cost, span rollups

    def validate(self) -> None:
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if not 0 < self.idle_s <= 3600:
            raise ValueError("idle_s must be > 0 and <= 3600")
        if self.max_open_traces < 1:
            raise ValueError("max_open_traces must be >= 1")


def validate_dimensions(dims: Sequence[DimensionConfig]) -> None:
    seen: set[str] = set()
    for i, d in enumerate(dims):
        try:
            d.validate()
        except ValueError as e:
            raise ValueError(f"[{i}] {e}") from e
        if d.name in seen:
            raise ValueError(f"[{i}] name {d.name!r} given twice")
        seen.add(d.name)


class Labeler:
    """One dimension's values -> labels, with its heavy-hitters sketch."""

    def __init__(self, name: str, top_k: int, redactor: Redactor | None = None) -> None:
        self.name = name
        self.heavy = HeavyHitters(top_k)
        self._redactor = redactor
        self._checked: dict[str, str] = {}  # value -> "" (fine) or INVALID / REDACTED

    def _check(self, value: str) -> str:
        verdict = self._checked.get(value)
        if verdict is None:
            if len(value) > MAX_VALUE_LEN or not value.isprintable():
                verdict = INVALID
            elif _REDACTION_MARK in value or (
                self._redactor is not None and self._redactor.redact_text(value, {}) != value
            ):
                verdict = REDACTED
            else:
                verdict = ""
            if len(self._checked) >= _MAX_CACHED:  # values come from the spans: bounded
                self._checked.clear()
            self._checked[value] = verdict
        return verdict

    def label(self, value: str, weight: float) -> str:
        """The label for `value` ("" when there is none) counting `weight` (USD) for it."""
        if not value:
            return ""
        verdict = self._check(value)
        if verdict:
            return verdict
        return self.heavy.add(value, weight)

    def label_all(self, weights: dict[str, float]) -> dict[str, str]:
        """`label` for each value with its weight; "" -> "" always."""
        return self.heavy.label_all(weights, self._checked, self._check)


__all__ = ["INVALID", "OTHER", "REDACTED", "AttributionConfig", "DimensionConfig", "Labeler"]
