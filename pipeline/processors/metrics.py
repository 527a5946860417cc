"""metrics: aggregate each counted LLM call into the gen_ai_* families (README contract).

Every observation carries an exemplar with the span's trace and span IDs, so a slow bucket in
Grafana links to the trace that fell into it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..aggregation import (
    DURATION_BUCKETS,
    TIME_PER_CHUNK_BUCKETS,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    Aggregation,
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
        base = (
            call.service_name,
            call.operation,
            call.provider,
            call.request_model,
            call.response_model,
        )
        if call.server_side:
            if (v := call.server_ttft_s) is not None:
                self.server_ttft.observe(base, v, (tid, sid, v, now))
            d = call.server_duration_s if call.server_duration_s is not None else call.duration_s
            self.server_duration.observe((*base, call.error_type), d, (tid, sid, d, now))
        else:
            d = call.duration_s
            self.duration.observe((*base, call.error_type), d, (tid, sid, d, now))
            if call.streaming and (v := call.ttft_s) is not None:
                self.ttft.observe(base, v, (tid, sid, v, now))
                if (v := call.time_per_chunk_s) is not None:
                    self.time_per_chunk.observe(base, v, (tid, sid, v, now))
        # One key and exemplar per token type serve both token families (same value).
        for token_type, n in (("input", call.input_tokens), ("output", call.output_tokens)):
            if n is not None:
                key, ex = (*base, token_type), (tid, sid, n, now)
                self.token_usage.observe(key, n, ex)
                if n:
                    self.tokens.add(key, n, ex)
        for token_type, value in (
            ("cache_read", call.cache_read_tokens),
            ("cache_creation", call.cache_creation_tokens),
            ("reasoning", call.reasoning_tokens),
        ):
            if value:
                self.tokens.add((*base, token_type), value, (tid, sid, value, now))
        if (c := call.cost_usd) is not None:
            self.cost.add(base, c, (tid, sid, c, now))

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        if not batch.calls:
            return batch
        now = time.time()
        with self.agg.lock:
            for call in batch.calls:
                if call.counted:
                    self.record(call, now)
        return batch
