"""enrich: write what the chain derived back into the LLM spans, never overwriting.

Adds `gen_ai.usage.cost` (USD), the current-convention names when the span used deprecated or
other conventions' names, and `gen_ai.response.time_to_first_chunk` when it came from events.
Only spans it changes mark the batch modified, so unchanged requests are forwarded as received.
"""

from __future__ import annotations

from typing import Any

from ..model import LLMCall, TraceBatch, set_any_value
from .conventions import COST_ATTRIBUTE, CURRENT_NAMES, TTFT_ATTRIBUTE


def _add(span: Any, present: frozenset[str], key: str, value: Any) -> bool:
    # The keys written here are distinct and enrich runs once per batch (config.validate), so
    # one call never writes a key twice.
    if key in present or value is None or value == "":
        return False
    kv = span.attributes.add()
    kv.key = key
    set_any_value(kv.value, value)
    return True


def enrich_call(call: LLMCall) -> bool:
    span, present = call.span, call.present
    changed = False
    if call.cost_usd is not None:
        changed |= _add(span, present, COST_ATTRIBUTE, float(call.cost_usd))
    if call.ttft_derived and call.ttft_s is not None:
        changed |= _add(span, present, TTFT_ATTRIBUTE, float(call.ttft_s))
    for field, key in CURRENT_NAMES.items():
        if key not in present:
            value = getattr(call, field)
            if field == "provider" and value == "unknown":
                continue
            changed |= _add(span, present, key, value)
    return changed


def enrich(batch: TraceBatch) -> TraceBatch:
    for call in batch.calls:
        if enrich_call(call):
            batch.modified = True
    return batch
