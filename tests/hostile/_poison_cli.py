"""The real sidecar (`pipeline.cli`) with two poisons for tests/hostile/test_poison.py.

A test cannot count on some usage data making a processor raise forever (a fix to the price
lookup makes today's poison priceable tomorrow), so the poisons are made here, in the real
chain: the cost processor raises on calls to the model `poison-model` (inside its own per-call
loop), and the ttft stage raises on a whole batch holding a call to `poison-batch`.
"""

from __future__ import annotations

import sys

import pipeline.processors.registry
from pipeline.cli import main
from pipeline.model import LLMCall, TraceBatch
from pipeline.processors.cost import CostProcessor

_price = CostProcessor.price
_ttft = pipeline.processors.registry.ttft


def price(self: CostProcessor, call: LLMCall) -> float | None:
    if call.request_model == "poison-model":
        raise ArithmeticError("poisoned price")
    return _price(self, call)


def ttft(batch: TraceBatch) -> TraceBatch:
    if any(c.request_model == "poison-batch" for c in batch.calls):
        raise KeyError("poisoned batch")
    return _ttft(batch)


CostProcessor.price = price  # type: ignore[method-assign]
pipeline.processors.registry.ttft = ttft

if __name__ == "__main__":
    sys.exit(main())
