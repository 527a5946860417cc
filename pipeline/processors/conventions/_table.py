"""The shape of a convention table: attribute key -> canonical field, as data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Transform = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Mapping:
    key: str  # the span attribute key as the library writes it
    field: str  # a name from pipeline.model.FIELDS
    transform: Transform | None = None  # value -> canonical value; None keeps it


@dataclass(frozen=True, slots=True)
class Convention:
    """One instrumentation's way of writing LLM spans.

    `priority` decides which value wins when two conventions on one span give the same field
    (e.g. OpenLLMetry writes both `gen_ai.usage.prompt_tokens` and `llm.usage.total_tokens`):
    the current OTel semantic conventions rank highest.
    """

    name: str
    priority: int
    mappings: tuple[Mapping, ...]
    # Span event names that mark a streamed chunk; the first one gives TTFT.
    chunk_events: tuple[str, ...] = ()
    # Attribute (key, value) pairs that mark a span as an LLM call even without a provider.
    llm_markers: tuple[tuple[str, str], ...] = ()


def to_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v == v and abs(v) < 2**63 else None
    if isinstance(v, str):
        try:
            return int(float(v))
        except ValueError:
            return None
    return None


def to_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        f = float(v)
        return f if f == f and f not in (float("inf"), float("-inf")) else None
    if isinstance(v, str):
        try:
            return to_float(float(v))
        except ValueError:
            return None
    return None


def to_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def to_str(v: Any) -> str:
    if isinstance(v, list):
        return str(v[0]) if v else ""
    return "" if v is None else str(v)
