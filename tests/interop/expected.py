"""What the sidecar must derive from scenario.json, computed here from the scenario itself.

Costs come from genai-prices' own `calc_price` (Decimal arithmetic) for the model billed (the
response model when the span names one), tokens are the scenario's integers, TTFT is the
chunk event's offset or the span's attribute, and the retry is the failed call followed, under
the same parent, by a call to the same provider and model. Nothing is read from the sidecar.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from genai_prices import Usage, calc_price

from tests.interop.clients import SCENARIO

# the semconv's chunk event (pipeline/processors/conventions/semconv.py reads it)
CHUNK_EVENT = "gen_ai.choice.chunk"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCENARIO.read_text())
    return data


def attrs(item: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: a[t] for a in item.get("attributes", []) for t in a if t != "key"}


@dataclass
class Call:
    id: str
    provider: str
    request_model: str
    response_model: str
    input_tokens: int | None
    output_tokens: int | None
    duration_s: Decimal
    ttft_s: Decimal | None
    error_type: str
    cost: Decimal | None


@dataclass
class Expected:
    calls: list[Call]
    # (provider, request model) -> the sums over its calls
    tokens: dict[tuple[str, str, str], int] = field(default_factory=dict)  # + token type
    cost: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    retries: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    ttft_count: int = 0
    ttft_sum: Decimal = Decimal(0)


def _call(c: dict[str, Any]) -> Call:
    a = attrs(c)
    provider = a.get("gen_ai.provider.name") or a["gen_ai.system"]
    request_model = a["gen_ai.request.model"]
    response_model = a.get("gen_ai.response.model", "")
    inp = a.get("gen_ai.usage.input_tokens")
    out = a.get("gen_ai.usage.output_tokens")
    ttft: Decimal | None = None
    if "gen_ai.response.time_to_first_chunk" in a:
        ttft = Decimal(str(a["gen_ai.response.time_to_first_chunk"]))
    else:
        chunks = [e["at_ms"] for e in c.get("events", []) if e["name"] == CHUNK_EVENT]
        if chunks:
            ttft = Decimal(min(chunks) - c["start_ms"]) / 1000
    cost = None
    if inp is not None or out is not None:
        usage = Usage(input_tokens=inp or 0, output_tokens=out or 0)
        cost = calc_price(usage, response_model or request_model, provider_id=provider).total_price
    raw_error = a.get("error.type", "")
    # the sidecar keeps an exception class's own name: `openai.RateLimitError` -> RateLimitError
    error_type = raw_error.rsplit(".", 1)[-1]
    return Call(
        c["id"],
        provider,
        request_model,
        response_model,
        inp,
        out,
        Decimal(c["end_ms"] - c["start_ms"]) / 1000,
        ttft,
        error_type,
        cost,
    )


def expected() -> Expected:
    sc = load()
    calls = [_call(c) for c in sc["calls"]]
    e = Expected(calls)
    for c in calls:
        key = (c.provider, c.request_model)
        for kind, n in (("input", c.input_tokens), ("output", c.output_tokens)):
            if n:
                e.tokens[(*key, kind)] = e.tokens.get((*key, kind), 0) + n
        if c.cost is not None:
            e.cost[key] = e.cost.get(key, Decimal(0)) + c.cost
        if c.error_type:
            e.errors[c.error_type] = e.errors.get(c.error_type, 0) + 1
        if c.ttft_s is not None:
            e.ttft_count += 1
            e.ttft_sum += c.ttft_s
    # all calls share the root as parent: a failed call followed (after it ended) by the next
    # call to the same provider and model is one retry
    ordered = sorted(sc["calls"], key=lambda c: c["start_ms"])
    by_id = {c.id: c for c in calls}
    for a, b in itertools.pairwise(ordered):
        ca, cb = by_id[a["id"]], by_id[b["id"]]
        same = (ca.provider, ca.request_model) == (cb.provider, cb.request_model)
        if ca.error_type and same and b["start_ms"] >= a["end_ms"]:
            key = (cb.provider, cb.request_model)
            e.retries[key] = e.retries.get(key, 0) + 1
    return e
