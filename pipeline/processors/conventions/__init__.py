"""Convention tables, one module per instrumentation, compiled into one lookup.

Each table maps the attribute keys an instrumentation writes to canonical fields
(`pipeline.model.FIELDS`). `LOOKUP` merges them so normalize walks a span's attributes once,
one dict lookup per attribute, whatever convention wrote the span.
"""

from __future__ import annotations

from ._table import Convention, Mapping
from .litellm import LITELLM, LITELLM_FALLBACK
from .openinference import OPENINFERENCE, OPENINFERENCE_FALLBACK
from .openllmetry import OPENLLMETRY
from .semconv import (
    COST_AMOUNT_ATTRIBUTE,
    COST_ATTRIBUTE,
    COST_ATTRIBUTES,
    COST_CURRENCY_ATTRIBUTE,
    COST_SOURCE_ATTRIBUTE,
    CURRENT,
    CURRENT_NAMES,
    DEPRECATED,
    TTFT_ATTRIBUTE,
    normalize_provider,
)
from .vllm import VLLM, VLLM_FALLBACK

# Highest priority first (the order is informational: `priority` decides).
CONVENTIONS: tuple[Convention, ...] = (
    CURRENT,  # 100
    DEPRECATED,  # 90
    OPENLLMETRY,  # 80
    VLLM,  # 75
    LITELLM,  # 70
    OPENINFERENCE,  # 60
    OPENINFERENCE_FALLBACK,  # 55
    LITELLM_FALLBACK,  # 20
    VLLM_FALLBACK,  # 5
)


def _compile(
    conventions: tuple[Convention, ...],
) -> dict[str, tuple[Mapping, int, str]]:
    lookup: dict[str, tuple[Mapping, int, str]] = {}
    for conv in conventions:
        for m in conv.mappings:
            prev = lookup.get(m.key)
            if prev is None or prev[1] < conv.priority:
                lookup[m.key] = (m, conv.priority, conv.name)
    return lookup


LOOKUP = _compile(CONVENTIONS)
CHUNK_EVENTS: frozenset[str] = frozenset(e for c in CONVENTIONS for e in c.chunk_events)
LLM_MARKERS: dict[str, frozenset[str]] = {}
for _c in CONVENTIONS:
    for _k, _v in _c.llm_markers:
        LLM_MARKERS[_k] = LLM_MARKERS.get(_k, frozenset()) | {_v}

__all__ = [
    "CHUNK_EVENTS",
    "CONVENTIONS",
    "COST_AMOUNT_ATTRIBUTE",
    "COST_ATTRIBUTE",
    "COST_ATTRIBUTES",
    "COST_CURRENCY_ATTRIBUTE",
    "COST_SOURCE_ATTRIBUTE",
    "CURRENT_NAMES",
    "LLM_MARKERS",
    "LOOKUP",
    "TTFT_ATTRIBUTE",
    "Convention",
    "Mapping",
    "normalize_provider",
]
