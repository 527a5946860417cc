"""Reading the sidecar's /metrics exposition in tests."""

from __future__ import annotations

from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def samples(text: str) -> list[Any]:
    """Every sample (name, labels, value, exemplar) of an OpenMetrics exposition."""
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for s in samples(text):
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def find(text: str, name: str, **labels: str) -> list[Any]:
    return [
        s
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
