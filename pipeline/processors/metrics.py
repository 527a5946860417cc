"""metrics: aggregate each counted LLM call into the gen_ai_* families (README contract).

Every observation carries an exemplar with the span's trace and span IDs, so a slow bucket in
Grafana links to the trace that fell into it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from ..aggregation import (
    DURATION_BUCKETS,
    TIME_PER_CHUNK_BUCKETS,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    Aggregation,
    CounterFamily,
    Exemplar,
    HistogramFamily,
)
from ..model import LLMCall, TraceBatch

BASE_LABELS = (
    "service_name",
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
)
_KEEP = ("gen_ai_token_type", "error_type")

# Per label set (the base labels and error type), the series each family updates for it:
# looked up once through the family (which creates it, or folds it into the overflow series
# past max_series), then updated in place. Series are never removed, so a kept one stays
# valid; a folded one is not kept, so every observation of it goes through the family (which
# counts the overflow). Bounded: label sets come from the spans.
_Slots = list[Any]  # HistogramSeries | CounterSeries | None per slot
(
    _DURATION,
    _TTFT,
    _TPC,
    _SERVER_TTFT,
    _SERVER_DURATION,
    _IN_USAGE,
    _IN_TOKENS,
    _OUT_USAGE,
    _OUT_TOKENS,
    _CACHE_READ,
    _CACHE_CREATION,
    _REASONING,
    _COST,
) = range(13)
_N_SLOTS = 13


@dataclass
class MetricsConfig:
    max_series: int = 2000

    def validate(self) -> None:
        if self.max_series < 1:
            raise ValueError("metrics.max_series must be >= 1")


class LLMMetrics:
    """The gen_ai_* metric families, registered in an `Aggregation`."""

    def __init__(self, agg: Aggregation, config: MetricsConfig | None = None) -> None:
        self.agg = agg
        cfg = config or MetricsConfig()
        cfg.validate()
        n = cfg.max_series
        h, c = agg.histogram, agg.counter
        self.duration = h(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration.",
            (*BASE_LABELS, "error_type"),
            DURATION_BUCKETS,
            n,
            _KEEP,
        )
        self.token_usage = h(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used per call.",
            (*BASE_LABELS, "gen_ai_token_type"),
            TOKEN_BUCKETS,
            n,
            _KEEP,
        )
        self.ttft = h(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time to first chunk of a streamed response.",
            BASE_LABELS,
            TTFT_BUCKETS,
            n,
        )
        self.time_per_chunk = h(
            "gen_ai_client_operation_time_per_output_chunk_seconds",
            "Time per output chunk after the first, for streamed responses.",
            BASE_LABELS,
            TIME_PER_CHUNK_BUCKETS,
            n,
        )
        self.tokens = c(
            "gen_ai_client_tokens",
            "Tokens used, by type (input includes cache_read and cache_creation).",
            (*BASE_LABELS, "gen_ai_token_type"),
            n,
            _KEEP,
        )
        self.cost = c("gen_ai_client_cost_usd", "Cost of GenAI calls in USD.", BASE_LABELS, n)
        self.fallbacks = c(
            "gen_ai_client_fallbacks",
            "Failed calls followed under the same parent by a successful call elsewhere.",
            ("service_name", "from_provider", "from_model", "to_provider", "to_model"),
            n,
        )
        self.retries = c(
            "gen_ai_client_retries",
            "Failed calls followed by a call to the same provider and model.",
            ("service_name", "gen_ai_provider_name", "gen_ai_request_model"),
            n,
        )
        self.server_ttft = h(
            "gen_ai_server_time_to_first_token_seconds",
            "Server-side time to first token (model servers such as vLLM).",
            BASE_LABELS,
            TTFT_BUCKETS,
            n,
        )
        self._slots: dict[tuple[tuple[str, ...], str], _Slots] = {}
        self._max_slots = 4 * n
        self._duration_bounds = self.duration.bounds
        self._token_bounds = self.token_usage.bounds
        self.server_duration = h(
            "gen_ai_server_request_duration_seconds",
            "Server-side request duration (model servers such as vLLM).",
            (*BASE_LABELS, "error_type"),
            DURATION_BUCKETS,
            n,
            _KEEP,
        )

    def record(self, call: LLMCall, now: float) -> None:
        tid, sid = call.trace_id, call.span_id
        error_type = call.error_type
        base = (
            call.service_name,
            call.operation,
            call.provider,
            call.request_model,
            call.response_model,
        )
        # The series a call with these labels updates, found once per label set (see _Slots).
        slots = self._slots.get((base, error_type))
        if slots is None:
            if len(self._slots) >= self._max_slots:
                self._slots.clear()
            slots = self._slots[base, error_type] = [None] * _N_SLOTS
        hist, add = self._hist, self._add
        # The common updates are inlined (HistogramFamily.observe's and CounterFamily.add's,
        # on the series kept in the slot): a call per update cost ~30% of this method. A key
        # is built only for a slot without its series (tests/processors/test_metrics.py holds
        # this equal to observing through the families).
        if call.server_side:
            if (v := call.server_ttft_s) is not None:
                hist(slots, _SERVER_TTFT, self.server_ttft, base, v, (tid, sid, v, now))
            d = call.server_duration_s if call.server_duration_s is not None else call.duration_s
            key = (*base, error_type)
            hist(slots, _SERVER_DURATION, self.server_duration, key, d, (tid, sid, d, now))
        else:
            d = max(0, call.end_ns - call.start_ns) / 1e9
            ex = (tid, sid, d, now)
            if (s := slots[_DURATION]) is None:
                hist(slots, _DURATION, self.duration, (*base, error_type), d, ex)
            else:
                i = bisect_left(self._duration_bounds, d)
                s.counts[i] += 1
                s.total += d
                s.count += 1
                s.exemplars[i] = ex
            if call.streaming and (v := call.ttft_s) is not None:
                hist(slots, _TTFT, self.ttft, base, v, (tid, sid, v, now))
                if (v := call.time_per_chunk_s) is not None:
                    hist(slots, _TPC, self.time_per_chunk, base, v, (tid, sid, v, now))
        # One exemplar per token type serves both token families (same value).
        for n, usage_slot, tokens_slot, token_type in (
            (call.input_tokens, _IN_USAGE, _IN_TOKENS, "input"),
            (call.output_tokens, _OUT_USAGE, _OUT_TOKENS, "output"),
        ):
            if n is None:
                continue
            ex = (tid, sid, n, now)
            if (s := slots[usage_slot]) is None:
                hist(slots, usage_slot, self.token_usage, (*base, token_type), n, ex)
            else:
                i = bisect_left(self._token_bounds, n)
                s.counts[i] += 1
                s.total += n
                s.count += 1
                s.exemplars[i] = ex
            if n:
                if (s := slots[tokens_slot]) is None:
                    add(slots, tokens_slot, self.tokens, (*base, token_type), n, ex)
                else:
                    s.value += n
                    s.exemplar = ex
        if n := call.cache_read_tokens:
            add(slots, _CACHE_READ, self.tokens, (*base, "cache_read"), n, (tid, sid, n, now))
        if n := call.cache_creation_tokens:
            key = (*base, "cache_creation")
            add(slots, _CACHE_CREATION, self.tokens, key, n, (tid, sid, n, now))
        if n := call.reasoning_tokens:
            add(slots, _REASONING, self.tokens, (*base, "reasoning"), n, (tid, sid, n, now))
        if (c := call.cost_usd) is not None:
            if (s := slots[_COST]) is None:
                add(slots, _COST, self.cost, base, c, (tid, sid, c, now))
            else:
                s.value += c
                s.exemplar = (tid, sid, c, now)

    @staticmethod
    def _hist(
        slots: _Slots,
        slot: int,
        family: HistogramFamily,
        key: tuple[str, ...],
        value: float,
        exemplar: Exemplar,
    ) -> None:
        s = slots[slot]
        if s is None:  # first time for this label set, or its series folded into overflow
            family.observe(key, value, exemplar)
            slots[slot] = family.series.get(key)  # its own series (None while folded)
            return
        # HistogramFamily.observe's update, inline: a shared method measured ~10% slower here
        i = bisect_left(family.bounds, value)
        s.counts[i] += 1
        s.total += value
        s.count += 1
        s.exemplars[i] = exemplar

    @staticmethod
    def _add(
        slots: _Slots,
        slot: int,
        family: CounterFamily,
        key: tuple[str, ...],
        amount: float,
        exemplar: Exemplar,
    ) -> None:
        s = slots[slot]
        if s is None:
            family.add(key, amount, exemplar)
            slots[slot] = family.series.get(key)
            return
        s.value += amount
        s.exemplar = exemplar

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        if not batch.calls:
            return batch
        now = time.time()
        with self.agg.lock:
            for call in batch.calls:
                if call.counted:
                    self.record(call, now)
        return batch
