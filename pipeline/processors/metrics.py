"""metrics: aggregate each counted LLM call into the gen_ai_* families (README contract).

Every observation carries an exemplar with the span's trace and span IDs, so a slow bucket in
Grafana links to the trace that fell into it.

`metrics.semconv` picks the names: `v1.41` (default) those of semantic-conventions v1.41.1
(`gen_ai.client.operation.*`, `gen_ai.client.token.usage`), `development` those of
semantic-conventions-genai (`gen_ai.client.inference.*` for inference,
`gen_ai.client.embeddings.*` for embeddings, token counters by `gen_ai.token.modality`),
`both` the two.
The server metrics, the project's own families and the cost are the same in every mode.
Implausible values (an end before the start, a TTFT past the end, ...) are clamped or left
out here, counted in `llm_pipeline_implausible_values{reason}`; the span is forwarded as is.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ..aggregation import (
    DURATION_BUCKETS,
    EXEMPLAR_WINDOW_S,
    SERVER_TTFT_BUCKETS,
    TIME_PER_CHUNK_BUCKETS,
    TIME_PER_TOKEN_BUCKETS,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    Aggregation,
    CounterFamily,
    Exemplar,
    HistogramFamily,
)
from ..model import LLMCall, TraceBatch
from .cost import COST_DIGITS
from .plausible import (
    MAX_COST_USD,
    MAX_DURATION_NS,
    MAX_TOKENS,
    TTFT_SLACK_S,
    Plausibility,
    suspect,
)

SEMCONV_MODES = ("v1.41", "development", "both")

BASE_LABELS = (
    "service_name",
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
)
_KEEP = ("gen_ai_token_type", "error_type")
_KEEP_MODALITY = ("gen_ai_token_modality", "error_type")
# The providers' usage fields say nothing of modality: every count is `unknown` (the
# conventions' value when the modality cannot be determined).
_MODALITY = "unknown"

# Per label set (the base labels and error type), the series each family updates for it:
# looked up once through the family (which creates it, or folds it into the overflow series
# past max_series), then updated in place. Series are never removed, so a kept one stays
# valid; a folded one is not kept, so every observation of it goes through the family (which
# counts the overflow). Bounded: label sets come from the spans.
# After the slots, the label-value prefixes of four families (see record) and the cell blocks
# of the tokens and cost series (CounterSeries.cells: their numbers, updated in place).
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
    _TPT,
    _SERVER_TPOT,
) = range(15)
_N_SLOTS = 15
_TOK_CELLS, _COST_CELLS = _N_SLOTS + 4, _N_SLOTS + 5
# The tokens family's last label, in the order of its series in a label set's block
_TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation", "reasoning")


@dataclass
class MetricsConfig:
    max_series: int = 2000
    semconv: str = "v1.41"  # v1.41 | development | both
    # Attribution dimensions (processors/dimensions.py): all their names in config order, and
    # per family choice (tokens, token_usage, cost, duration) the names it carries.
    dimensions: tuple[str, ...] = ()
    dimension_metrics: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def validate(self) -> None:
        if self.max_series < 1:
            raise ValueError("metrics.max_series must be >= 1")
        if self.semconv not in SEMCONV_MODES:
            raise ValueError(f"metrics.semconv must be one of {', '.join(SEMCONV_MODES)}")


def chunk_intervals(call: LLMCall) -> Iterator[float]:
    """Seconds from each streamed chunk to the next, for the chunks up to the call's end: the
    time-per-output-chunk observations (one per chunk after the first)."""
    end = call.end_ns
    for prev, t in pairwise(call.chunk_ns or ()):
        if t > end:
            return
        yield (t - prev) / 1e9


class LLMMetrics:
    """The gen_ai_* metric families, registered in an `Aggregation`."""

    def __init__(self, agg: Aggregation, config: MetricsConfig | None = None) -> None:
        self.agg = agg
        cfg = config or MetricsConfig()
        cfg.validate()
        self.semconv = cfg.semconv
        n = cfg.max_series
        h, c = agg.histogram, agg.counter
        self.v141 = cfg.semconv != "development"
        self.development = cfg.semconv != "v1.41"
        dims = self._dimension_labels(cfg)
        if self.v141:
            self.duration = h(
                "gen_ai_client_operation_duration_seconds",
                "GenAI operation duration.",
                (*BASE_LABELS, *dims["duration"], "error_type"),
                DURATION_BUCKETS,
                n,
                _KEEP,
            )
            self.token_usage = h(
                "gen_ai_client_token_usage",
                "Number of input and output tokens used per call.",
                (*BASE_LABELS, *dims["token_usage"], "gen_ai_token_type"),
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
                "Time per output chunk: one observation per streamed chunk after the first, "
                "the interval since the previous one.",
                BASE_LABELS,
                TIME_PER_CHUNK_BUCKETS,
                n,
            )
        self.tokens = c(
            "gen_ai_client_tokens",
            "Tokens used, by type (input includes cache_read and cache_creation).",
            (*BASE_LABELS, *dims["tokens"], "gen_ai_token_type"),
            n,
            _KEEP,
            exemplar_window_s=EXEMPLAR_WINDOW_S,
            block_labels=_TOKEN_TYPES,
        )
        self._in_at = self.tokens.block_offset("input")
        self._out_at = self.tokens.block_offset("output")
        self.cost = c(
            "gen_ai_client_cost_usd",
            "Cost of GenAI calls in USD.",
            (*BASE_LABELS, *dims["cost"]),
            n,
            digits=COST_DIGITS,
            exemplar_window_s=EXEMPLAR_WINDOW_S,
        )
        self.cache_savings = c(
            "llm_pipeline_cache_savings_usd",
            "Not a semconv metric: USD saved by prompt-cache reads, (input price - cache-read "
            "price) x cache-read tokens.",
            ("service_name", "gen_ai_provider_name", "gen_ai_request_model"),
            n,
            digits=COST_DIGITS,
        )
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
            SERVER_TTFT_BUCKETS,
            n,
        )
        self._slots: dict[tuple[tuple[str, ...], str], _Slots] = {}
        # with dimensions, per (base, error type) the slots of each label set seen: the label
        # sets' tuples hold the labelers' own str objects, so the inner lookup compares by
        # identity and touches little besides its slots (a flat key read several cold objects)
        self._dim_slots: dict[tuple[tuple[str, ...], str], dict[tuple[str, ...], _Slots]] = {}
        self._n_dim_slots = 0
        self._max_slots = 4 * n
        self.server_duration = h(
            "gen_ai_server_request_duration_seconds",
            "Server-side request duration (model servers such as vLLM).",
            (*BASE_LABELS, "error_type"),
            DURATION_BUCKETS,
            n,
            _KEEP,
        )
        self.server_tpot = h(
            "gen_ai_server_time_per_output_token_seconds",
            "Server-side time per output token after the first, of successful requests "
            "(request duration - time to first token) / (output tokens - 1).",
            BASE_LABELS,
            TIME_PER_TOKEN_BUCKETS,
            n,
        )
        self.time_per_token = h(
            "llm_pipeline_time_per_output_token_seconds",
            "Not a semconv metric: a streamed call's average time per output token after the "
            "first, (end - first chunk) / (output tokens - 1).",
            BASE_LABELS,
            TIME_PER_TOKEN_BUCKETS,
            n,
        )
        self.plausibility = Plausibility(agg)
        if self.development:
            self._development_families(n)

    def _dimension_labels(self, cfg: MetricsConfig) -> dict[str, tuple[str, ...]]:
        """Per family choice, the dimension labels it carries; and the positions in
        `LLMCall.dimensions` each takes them from (None: all, in order; the common case)."""
        self.dimension_names = cfg.dimensions
        self._no_dims = ("",) * len(cfg.dimensions)
        out: dict[str, tuple[str, ...]] = {}
        self._dim_pick: dict[str, tuple[int, ...] | None] = {}
        for family in ("tokens", "token_usage", "cost", "duration"):
            names = tuple(d for d in cfg.dimensions if d in cfg.dimension_metrics.get(family, ()))
            out[family] = names
            idx = tuple(cfg.dimensions.index(d) for d in names)
            self._dim_pick[family] = None if names == cfg.dimensions else idx
        return out

    def _bases(self, base: tuple[str, ...], dims: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        """The label-value prefix of the duration, token-usage, tokens and cost families: the
        base labels and the dimensions each carries."""
        out = []
        for family in ("duration", "token_usage", "tokens", "cost"):
            pick = self._dim_pick[family]
            out.append((*base, *dims) if pick is None else (*base, *(dims[i] for i in pick)))
        return tuple(out)

    def _development_families(self, n: int) -> None:
        h, c = self.agg.histogram, self.agg.counter
        err = (*BASE_LABELS, "error_type")
        self.inference_duration = h(
            "gen_ai_client_inference_duration_seconds",
            "GenAI client inference operation duration.",
            err,
            DURATION_BUCKETS,
            n,
            _KEEP,
        )
        self.inference_ttft = h(
            "gen_ai_client_inference_time_to_first_chunk_seconds",
            "Time to receive the first chunk of a streamed response.",
            BASE_LABELS,
            TTFT_BUCKETS,
            n,
        )
        self.inference_tpc = h(
            "gen_ai_client_inference_time_per_output_chunk_seconds",
            "Time per output chunk, for each streamed chunk after the first.",
            BASE_LABELS,
            TIME_PER_CHUNK_BUCKETS,
            n,
        )
        by_modality = (*BASE_LABELS, "gen_ai_token_modality")
        self.usage: dict[str, CounterFamily] = {
            kind: c(
                f"gen_ai_client_inference_usage_{kind}",
                doc,
                by_modality,
                n,
                _KEEP_MODALITY,
            )
            for kind, doc in (
                ("input_tokens", "Input tokens used, including cached tokens."),
                ("output_tokens", "Output tokens used, including reasoning tokens."),
                ("cache_read_input_tokens", "Input tokens served from a provider cache."),
                ("cache_write_input_tokens", "Input tokens written to a provider cache."),
                ("reasoning_output_tokens", "Output tokens used for reasoning."),
            )
        }
        self.operation_tokens: dict[str, HistogramFamily] = {
            kind: h(
                f"gen_ai_client_inference_operation_{kind}",
                f"{doc} tokens used per inference operation.",
                err,
                TOKEN_BUCKETS,
                n,
                _KEEP,
            )
            for kind, doc in (("input_tokens", "Input"), ("output_tokens", "Output"))
        }
        self.embeddings_duration = h(
            "gen_ai_client_embeddings_duration_seconds",
            "GenAI client embeddings operation duration.",
            err,
            DURATION_BUCKETS,
            n,
            _KEEP,
        )
        self.embeddings_input_tokens = h(
            "gen_ai_client_embeddings_operation_input_tokens",
            "Input tokens used per embeddings operation.",
            err,
            TOKEN_BUCKETS,
            n,
            _KEEP,
        )

    def record(self, call: LLMCall, now: float) -> None:
        d_ns = call.end_ns - call.start_ns
        ttft, n_in, n_out, cost = call.ttft_s, call.input_tokens, call.output_tokens, call.cost_usd
        # A first look for implausible values, on what is read anyway (plausible.suspect is its
        # reference; a function call per call cost ~15% of this method): `check` decides.
        if (
            not 0 <= d_ns <= MAX_DURATION_NS
            or (ttft is not None and ttft > d_ns / 1e9 + TTFT_SLACK_S)
            or (n_in is not None and n_in > MAX_TOKENS)
            or (n_out is not None and n_out > MAX_TOKENS)
            or (cost is not None and cost > MAX_COST_USD)
            or (call.cache_read_tokens or 0) + (call.cache_creation_tokens or 0) > MAX_TOKENS
            or (call.reasoning_tokens or 0) > MAX_TOKENS
            or (call.server_side and suspect(call))
        ):
            checked = self.plausibility.check(call)
            if checked is not call:
                self.record(checked, now)
                return
        tid, sid = call.trace_id, call.span_id
        error_type = call.error_type
        base = (
            call.service_name,
            call.operation,
            call.provider,
            call.request_model,
            call.response_model,
        )
        # The series a call with these labels updates, found once per label set (see _Slots);
        # after them, the label-value prefixes of the duration, token-usage, tokens and cost
        # families (the base labels and the dimensions each carries), built once per set.
        if self.dimension_names:  # attribution's labels: slots per label set with them
            dims = call.dimensions or self._no_dims
            by_dims = self._dim_slots.get((base, error_type))
            slots = by_dims.get(dims) if by_dims is not None else None
            if slots is None:
                slots = self._dimension_slots(base, error_type, dims)
        elif (found := self._slots.get((base, error_type))) is not None:
            slots = found
        else:
            if len(self._slots) >= self._max_slots:
                self._slots.clear()
            slots = self._slots[(base, error_type)] = [None] * _N_SLOTS
            slots += (base, base, base, base, None, None)
        b_dur, b_use, b_tok, b_cost, tok_cells, cost_cells = slots[_N_SLOTS:]
        hist, add = self._hist, self._add
        v141 = self.v141
        window = EXEMPLAR_WINDOW_S  # the tokens and cost families' (CounterSeries.offer)
        # Each update goes to the series kept in the slot; the key (`base` plus one label, or
        # `base`) is built only for a slot without its series (tests/processors/test_metrics.py
        # holds this equal to observing through the families).
        if call.server_side:
            st = call.server_ttft_s
            if st is not None:
                hist(slots, _SERVER_TTFT, self.server_ttft, base, None, st, (tid, sid, st, now))
            d = call.server_duration_s if call.server_duration_s is not None else call.duration_s
            ex = (tid, sid, d, now)
            hist(slots, _SERVER_DURATION, self.server_duration, base, error_type, d, ex)
            out = call.output_tokens
            if st is not None and not error_type and out is not None and out > 1 and d >= st:
                tpot = (d - st) / (out - 1)
                ex = (tid, sid, tpot, now)
                hist(slots, _SERVER_TPOT, self.server_tpot, base, None, tpot, ex)
        else:
            d = max(0, d_ns) / 1e9
            if v141:
                hist(slots, _DURATION, self.duration, b_dur, error_type, d, (tid, sid, d, now))
            if call.streaming and (v := ttft) is not None:
                if v141:
                    hist(slots, _TTFT, self.ttft, base, None, v, (tid, sid, v, now))
                if (v := call.time_per_token_s) is not None:
                    hist(slots, _TPT, self.time_per_token, base, None, v, (tid, sid, v, now))
                chunks = call.chunk_ns
                if v141 and chunks is not None and len(chunks) > 1:
                    # chunk_intervals, inline: ~15% of this method on the demo's streams
                    end, after = call.end_ns, iter(chunks)
                    prev = next(after)
                    for t in after:
                        if t > end:
                            break
                        v = (t - prev) / 1e9
                        prev = t
                        hist(slots, _TPC, self.time_per_chunk, base, None, v, (tid, sid, v, now))
        # One exemplar per token type serves both token families (same value).
        for n, usage_slot, tokens_slot, token_type, at in (
            (n_in, _IN_USAGE, _IN_TOKENS, "input", self._in_at),
            (n_out, _OUT_USAGE, _OUT_TOKENS, "output", self._out_at),
        ):
            if n is None:
                continue
            ex = (tid, sid, n, now)
            if v141:
                hist(slots, usage_slot, self.token_usage, b_use, token_type, n, ex)
            if n:  # CounterFamily.update and CounterSeries.offer, inline on the block
                if (c := slots[tokens_slot]) is None:
                    add(slots, tokens_slot, self.tokens, b_tok, token_type, n, ex, _TOK_CELLS)
                else:
                    tok_cells[at] += n
                    if n > tok_cells[at + 1] or now - tok_cells[at + 2] >= window:
                        tok_cells[at + 1], tok_cells[at + 2] = n, now
                        c.exemplar = ex
        if n := call.cache_read_tokens:
            ex = (tid, sid, n, now)
            add(slots, _CACHE_READ, self.tokens, b_tok, "cache_read", n, ex, _TOK_CELLS)
        if n := call.cache_creation_tokens:
            ex = (tid, sid, n, now)
            add(slots, _CACHE_CREATION, self.tokens, b_tok, "cache_creation", n, ex, _TOK_CELLS)
        if n := call.reasoning_tokens:
            ex = (tid, sid, n, now)
            add(slots, _REASONING, self.tokens, b_tok, "reasoning", n, ex, _TOK_CELLS)
        if (v := cost) is not None:
            if (c := slots[_COST]) is None:
                add(slots, _COST, self.cost, b_cost, None, v, (tid, sid, v, now), _COST_CELLS)
            else:  # a cost series stands alone (no block labels): its numbers from 0
                cost_cells[0] += v
                if v > cost_cells[1] or now - cost_cells[2] >= window:
                    cost_cells[1], cost_cells[2] = v, now
                    c.exemplar = (tid, sid, v, now)
        if (saved := call.cache_savings_usd) is not None:
            self.cache_savings.add(
                (call.service_name, call.provider, call.request_model),
                saved,
                (tid, sid, saved, now),
            )
        if self.development and not call.server_side:
            self.record_development(call, base, now)

    def _dimension_slots(
        self, base: tuple[str, ...], error_type: str, dims: tuple[str, ...]
    ) -> _Slots:
        """The slots of a label set not seen yet (record looks up the others inline)."""
        if self._n_dim_slots >= self._max_slots:
            self._dim_slots.clear()
            self._n_dim_slots = 0
        by_dims = self._dim_slots.setdefault((base, error_type), {})
        slots: _Slots = [None] * _N_SLOTS
        slots += (*self._bases(base, dims), None, None)
        by_dims[dims] = slots
        self._n_dim_slots += 1
        return slots

    def record_development(self, call: LLMCall, base: tuple[str, ...], now: float) -> None:
        """The semantic-conventions-genai families (through the families: not the default)."""
        tid, sid = call.trace_id, call.span_id
        key = (*base, call.error_type)
        d = max(0, call.end_ns - call.start_ns) / 1e9
        if call.operation == "embeddings":
            self.embeddings_duration.observe(key, d, (tid, sid, d, now))
            if (n := call.input_tokens) is not None:
                self.embeddings_input_tokens.observe(key, n, (tid, sid, n, now))
            return
        self.inference_duration.observe(key, d, (tid, sid, d, now))
        if call.streaming and (v := call.ttft_s) is not None:
            self.inference_ttft.observe(base, v, (tid, sid, v, now))
            for v in chunk_intervals(call):
                self.inference_tpc.observe(base, v, (tid, sid, v, now))
        modality = (*base, _MODALITY)
        # recorded for every inference, failed ones too: 0 when no usage came back
        for kind, count in (
            ("input_tokens", call.input_tokens),
            ("output_tokens", call.output_tokens),
        ):
            n = count or 0
            self.operation_tokens[kind].observe(key, n, (tid, sid, n, now))
            self.usage[kind].add(modality, n, (tid, sid, n, now))
        for kind, count in (
            ("cache_read_input_tokens", call.cache_read_tokens),
            ("cache_write_input_tokens", call.cache_creation_tokens),
            ("reasoning_output_tokens", call.reasoning_tokens),
        ):
            if count is not None:
                self.usage[kind].add(modality, count, (tid, sid, count, now))

    @staticmethod
    def _hist(
        slots: _Slots,
        slot: int,
        family: HistogramFamily,
        base: tuple[str, ...],
        label: str | None,
        value: float,
        exemplar: Exemplar,
    ) -> None:
        s = slots[slot]
        if s is None:  # first time for this label set, or its series folded into overflow
            key = base if label is None else (*base, label)
            family.observe(key, value, exemplar)
            slots[slot] = family.series.get(key)  # its own series (None while folded)
            return
        # HistogramSeries.observe, inline: calling it here measured +12% on this processor
        i = bisect_left(family.bounds, value)
        s.counts[i] += 1
        s.total += value
        s.exemplars[i] = exemplar

    @staticmethod
    def _add(
        slots: _Slots,
        slot: int,
        family: CounterFamily,
        base: tuple[str, ...],
        label: str | None,
        amount: float,
        exemplar: Exemplar,
        cells_slot: int,
    ) -> None:
        s = slots[slot]
        if s is None:
            key = base if label is None else (*base, label)
            family.add(key, amount, exemplar)
            slots[slot] = s = family.series.get(key)
            if s is not None:  # its own series (None while folded): its block at hand
                slots[cells_slot] = s.cells
            return
        family.update(s, amount, exemplar)

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        if not batch.calls:
            return batch
        now = time.time()
        record = self.record
        with self.agg.lock:
            for call in batch.calls:
                if call.counted:
                    record(call, now)
        return batch
