"""Implausible values kept out of the gen_ai_* metrics (the span is forwarded as received).

A TTFT of 1e9 s on a 1.5 s span, 2^63-1 tokens, an end before the start or an 18e9 s duration
are not measurements: one such value would own a histogram's sum and a counter's rate for good.
The metrics processor records such a call with the value clamped (durations: the call still
counts) or left out (TTFT, token counts, the cost priced from them), and counts each in
`llm_pipeline_implausible_values{reason}`, logged at most once a minute per reason.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import structlog

from ..aggregation import Aggregation
from ..model import LLMCall
from .normalize import TOKEN_FIELDS

log = structlog.get_logger("pipeline.metrics")

MAX_DURATION_S = 86_400.0  # a day: longer is clamped to it (the call still counts)
MAX_TOKENS = 10**9  # per count and call; the largest context windows hold ~10^7
MAX_COST_USD = 1e6  # per call
# A TTFT measured apart from the span (an attribute, another timer) may exceed its duration
# by a little; by more than this it is not the same call's.
TTFT_SLACK_S = 1.0
MAX_DURATION_NS = int(MAX_DURATION_S * 1e9)
REASONS = (
    "end_before_start",
    "duration_too_long",
    "ttft_after_end",
    "tokens_too_large",
    "cost_too_large",
)


def suspect(call: LLMCall) -> bool:
    """A cheap first look (every call takes it): whether `check` may have anything to do."""
    d_ns = call.end_ns - call.start_ns
    if not 0 <= d_ns <= MAX_DURATION_NS:
        return True
    if (t := call.ttft_s) is not None and t > d_ns / 1e9 + TTFT_SLACK_S:
        return True
    if (c := call.cost_usd) is not None and c > MAX_COST_USD:
        return True
    n = (call.input_tokens or 0) + (call.output_tokens or 0)
    n += (call.cache_read_tokens or 0) + (call.cache_creation_tokens or 0)
    n += call.reasoning_tokens or 0
    if n > MAX_TOKENS:
        return True
    if not call.server_side:  # the server latencies are read for server spans only
        return False
    sd, st = call.server_duration_s, call.server_ttft_s
    if sd is not None and sd > MAX_DURATION_S:
        return True
    return st is not None and st > (sd if sd is not None else d_ns / 1e9) + TTFT_SLACK_S


class Plausibility:
    """Registers `llm_pipeline_implausible_values` and corrects calls for the metrics."""

    def __init__(self, agg: Aggregation) -> None:
        self.implausible = agg.counter(
            "llm_pipeline_implausible_values",
            "Values left out of (or clamped in) the gen_ai_* metrics as implausible, by reason.",
            ("reason",),
        )
        self._logged: dict[str, float] = {}

    def check(self, call: LLMCall) -> LLMCall:
        """The call, or a copy with its implausible values clamped or left out (counted).
        The caller holds the aggregation's lock."""
        reasons: list[str] = []
        changes: dict[str, Any] = {}
        d_ns = call.end_ns - call.start_ns
        if d_ns < 0:
            reasons.append("end_before_start")
            changes["end_ns"] = call.start_ns
            d_ns = 0
        elif d_ns > MAX_DURATION_NS:
            reasons.append("duration_too_long")
            changes["end_ns"] = call.start_ns + MAX_DURATION_NS
            d_ns = MAX_DURATION_NS
        ttft = call.ttft_s
        if ttft is not None and not call.server_side and ttft > d_ns / 1e9 + TTFT_SLACK_S:
            reasons.append("ttft_after_end")
            changes["ttft_s"] = changes["time_per_token_s"] = None
        for field in TOKEN_FIELDS:
            n = getattr(call, field)
            if n is not None and n > MAX_TOKENS:
                reasons.append("tokens_too_large")
                changes[field] = changes["time_per_token_s"] = None
        cost = call.cost_usd
        if cost is not None and (cost > MAX_COST_USD or "tokens_too_large" in reasons):
            reasons.append("cost_too_large")  # reported so, or priced from such tokens
            changes["cost_usd"] = None
        if call.server_side:
            sd = call.server_duration_s
            if sd is not None and sd > MAX_DURATION_S:
                reasons.append("duration_too_long")
                changes["server_duration_s"] = sd = MAX_DURATION_S
            st = call.server_ttft_s
            if st is not None and st > (sd if sd is not None else d_ns / 1e9) + TTFT_SLACK_S:
                reasons.append("ttft_after_end")
                changes["server_ttft_s"] = None
        if not reasons:
            return call
        for reason in reasons:
            self.implausible.add((reason,), 1)
        self._log(reasons, call)
        return dataclasses.replace(call, **changes)

    def _log(self, reasons: list[str], call: LLMCall) -> None:
        now = time.monotonic()
        for reason in dict.fromkeys(reasons):
            if now - self._logged.get(reason, -60.0) >= 60.0:  # once a minute per reason
                self._logged[reason] = now
                log.warning(
                    "implausible value left out of the metrics (span forwarded as is)",
                    reason=reason,
                    service=call.service_name,
                    model=call.request_model,
                    trace_id=call.trace_id.hex(),
                )
