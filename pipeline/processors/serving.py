"""serving: where a call's time goes, how often it is rate limited, and how good it was judged.

- vLLM's server spans: `gen_ai.latency.time_in_queue`, `.time_in_model_prefill`,
  `.time_in_model_decode` (seconds, written on every `llm_request` span) as histograms, and
  the decode rate: (output tokens - 1) / decode time (the first token comes out of prefill).
- Client TTFT minus server TTFT of the same call, when both spans reach the sidecar: the
  server span is the client span's child (vLLM continues the `traceparent` it received). The
  two usually come from different processes, so different batches: each side waits for the
  other in a bounded map. The gap is the network, gateway and client-library overhead.
- Rate limits: counted calls that failed with a rate-limit error (`RateLimitError`, 429, ...),
  and the `Retry-After` the span carries (`http.response.header.retry-after`, seconds).
- Evaluations: `gen_ai.evaluation.result` events (semantic-conventions-genai), as span events
  on the evaluated span or as log records (the Logs API's events: `event_name`, or the older
  SDKs' `event.name` attribute), which the service's log chain hands to `logs`: a score
  histogram by evaluation name, model and service, and a counter by score label. A log record
  names its model only if it carries `gen_ai.request.model` itself: it is not held back
  waiting for the span it correlates with. Neither OpenInference nor OpenLLMetry writes evaluation results on
  spans (Phoenix keeps them as annotations, Traceloop in its own API), so there is nothing of
  theirs to read.

All names are the project's own (`llm_pipeline_*`): the conventions define none of these.
"""

from __future__ import annotations

import time
from typing import Any

from ..aggregation import DURATION_BUCKETS, SERVER_TTFT_BUCKETS, Aggregation
from ..model import LLMCall, LogBatch, TraceBatch, any_value, service_name_of
from .conventions._table import to_float
from .metrics import BASE_LABELS

QUEUE_KEY = "gen_ai.latency.time_in_queue"
PREFILL_KEY = "gen_ai.latency.time_in_model_prefill"
DECODE_KEY = "gen_ai.latency.time_in_model_decode"
RETRY_AFTER_KEYS = ("http.response.header.retry-after", "gen_ai.response.retry_after")
_LATENCY_KEYS = frozenset({QUEUE_KEY, PREFILL_KEY, DECODE_KEY})

EVALUATION_EVENT = "gen_ai.evaluation.result"
_EVALUATION_BYTES = EVALUATION_EVENT.encode()
# error types (after normalize's tidying) that mean the provider rate limited the call
RATE_LIMIT_ERRORS = frozenset(
    {
        "RateLimitError",
        "429",
        "rate_limit_exceeded",
        "rate_limit_error",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsError",
        "ResourceExhausted",
    }
)
# fmt: off
TOKENS_PER_SECOND_BUCKETS = (
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
)
RETRY_AFTER_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0)
# fmt: on
MAX_WAITING = 20_000  # client or server TTFTs waiting for their other half, oldest dropped
_Key = tuple[bytes, bytes]


def _str_attrs(span: Any, keys: frozenset[str] | tuple[str, ...]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in span.attributes if kv.key in keys}


def _named_event(rec: Any) -> bool:
    """An evaluation log record of an SDK older than `event_name`: the `event.name` attribute."""
    for kv in rec.attributes:
        if kv.key == "event.name":
            return bool(kv.value.string_value == EVALUATION_EVENT)
    return False


def retry_after_s(value: Any) -> float | None:
    """Seconds from a Retry-After value (a header attribute is a list of strings). An HTTP
    date is not read: providers send seconds."""
    if isinstance(value, list):
        value = value[0] if value else None
    v = to_float(value)
    return v if v is not None and 0 <= v <= 86_400 else None


class ServingMetrics:
    """The serving processor (see the module docstring)."""

    def __init__(self, agg: Aggregation, max_series: int = 2000) -> None:
        self.agg = agg
        n = max_series
        h, c = agg.histogram, agg.counter
        self.queue = h(
            "llm_pipeline_server_queue_time_seconds",
            "Model server (vLLM) time in queue before scheduling (gen_ai.latency.time_in_queue).",
            BASE_LABELS,
            SERVER_TTFT_BUCKETS,
            n,
        )
        self.prefill = h(
            "llm_pipeline_server_prefill_time_seconds",
            "Model server (vLLM) prefill time (gen_ai.latency.time_in_model_prefill).",
            BASE_LABELS,
            SERVER_TTFT_BUCKETS,
            n,
        )
        self.decode = h(
            "llm_pipeline_server_decode_time_seconds",
            "Model server (vLLM) decode time (gen_ai.latency.time_in_model_decode).",
            BASE_LABELS,
            DURATION_BUCKETS,
            n,
        )
        self.decode_rate = h(
            "llm_pipeline_server_decode_tokens_per_second",
            "Model server (vLLM) output tokens per second over the decode window, "
            "(output tokens - 1) / decode time.",
            BASE_LABELS,
            TOKENS_PER_SECOND_BUCKETS,
            n,
        )
        self.ttft_gap = h(
            "llm_pipeline_client_server_ttft_gap_seconds",
            "Client time to first chunk minus the model server's time to first token of the "
            "same call (network, gateway and client overhead); by the client's labels.",
            BASE_LABELS,
            DURATION_BUCKETS,
            n,
        )
        rl = ("service_name", "gen_ai_provider_name", "gen_ai_request_model")
        self.rate_limited = c(
            "llm_pipeline_rate_limited_calls",
            "LLM calls that failed because the provider rate limited them (429).",
            rl,
            n,
        )
        self.retry_after = h(
            "llm_pipeline_rate_limit_retry_after_seconds",
            "Retry-After of rate-limited calls, when the span carries it.",
            rl,
            RETRY_AFTER_BUCKETS,
            n,
        )
        ev = ("service_name", "gen_ai_evaluation_name", "gen_ai_request_model")
        self.score = h(
            "llm_pipeline_evaluation_score",
            "gen_ai.evaluation.score.value of gen_ai.evaluation.result events.",
            ev,
            SCORE_BUCKETS,
            n,
        )
        self.evaluations = c(
            "llm_pipeline_evaluations",
            "gen_ai.evaluation.result events by gen_ai.evaluation.score.label.",
            (*ev, "gen_ai_evaluation_score_label"),
            n,
        )
        # (trace, client span) -> (client TTFT, labels, span id); (trace, server parent) -> TTFT
        self._clients: dict[_Key, tuple[float, tuple[str, ...], bytes]] = {}
        self._servers: dict[_Key, float] = {}

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        now = time.time()
        with self.agg.lock:
            by_span: dict[bytes, LLMCall] = {}
            for call in batch.calls:
                by_span[call.span_id] = call
                # latency whether counted or not: dedupe counts a server span, not the client
                # span above it, and the gap needs both
                if call.server_side:
                    self._server(call, now)
                elif call.streaming and call.ttft_s is not None:
                    self._client(call, now)
                if call.counted and call.error_type in RATE_LIMIT_ERRORS:
                    self._rate_limited(call, now)
            self._evaluations(batch, by_span, now)
        return batch

    @staticmethod
    def _labels(call: LLMCall) -> tuple[str, ...]:
        return (
            call.service_name,
            call.operation,
            call.provider,
            call.request_model,
            call.response_model,
        )

    def _server(self, call: LLMCall, now: float) -> None:
        tid, sid = call.trace_id, call.span_id
        a = _str_attrs(call.span, _LATENCY_KEYS)
        base = self._labels(call)
        for key, family in ((QUEUE_KEY, self.queue), (PREFILL_KEY, self.prefill)):
            v = to_float(a.get(key))
            if v is not None and v >= 0:
                family.observe(base, v, (tid, sid, v, now))
        decode = to_float(a.get(DECODE_KEY))
        if decode is not None and decode >= 0:
            self.decode.observe(base, decode, (tid, sid, decode, now))
            out = call.output_tokens
            if decode > 0 and out is not None and out > 1 and not call.error_type:
                rate = (out - 1) / decode
                self.decode_rate.observe(base, rate, (tid, sid, rate, now))
        st = call.server_ttft_s
        if st is None or not call.parent_span_id:
            return
        wait_key = (tid, call.parent_span_id)
        client = self._clients.pop(wait_key, None)
        if client is not None:
            self._gap(client, st, tid, now)
        else:
            self._wait(self._servers, wait_key, st)

    def _client(self, call: LLMCall, now: float) -> None:
        key = (call.trace_id, call.span_id)
        client = (call.ttft_s or 0.0, self._labels(call), call.span_id)
        st = self._servers.pop(key, None)
        if st is not None:
            self._gap(client, st, call.trace_id, now)
        else:
            self._wait(self._clients, key, client)

    def _gap(
        self,
        client: tuple[float, tuple[str, ...], bytes],
        server_ttft: float,
        tid: bytes,
        now: float,
    ) -> None:
        ttft, labels, sid = client
        gap = max(0.0, ttft - server_ttft)  # below 0: clock skew between the two hosts
        self.ttft_gap.observe(labels, gap, (tid, sid, gap, now))

    @staticmethod
    def _wait(waiting: dict[_Key, Any], key: _Key, value: Any) -> None:
        waiting[key] = value
        if len(waiting) > MAX_WAITING:
            del waiting[next(iter(waiting))]

    def _rate_limited(self, call: LLMCall, now: float) -> None:
        key = (call.service_name, call.provider, call.request_model)
        tid, sid = call.trace_id, call.span_id
        self.rate_limited.add(key, 1, (tid, sid, 1, now))
        a = _str_attrs(call.span, RETRY_AFTER_KEYS)
        for k in RETRY_AFTER_KEYS:
            if (v := retry_after_s(a.get(k))) is not None:
                self.retry_after.observe(key, v, (tid, sid, v, now))
                return

    def _evaluations(self, batch: TraceBatch, by_span: dict[bytes, LLMCall], now: float) -> None:
        for rs in batch.request.resource_spans:
            service = ""
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if not span.events:
                        continue
                    for ev in span.events:
                        if ev.name != EVALUATION_EVENT:
                            continue
                        if not service:
                            service = service_name_of(rs.resource)
                        self._evaluation(span, ev, service, by_span.get(span.span_id), now)

    def _evaluation(
        self, span: Any, ev: Any, service: str, call: LLMCall | None, now: float
    ) -> None:
        a = {kv.key: any_value(kv.value) for kv in ev.attributes}
        model = call.request_model if call is not None else ""
        self._evaluated(a, service, model, span.trace_id, span.span_id, now)

    def logs(self, batch: LogBatch) -> LogBatch:
        """Count the `gen_ai.evaluation.result` log records of a log request; the batch goes
        on unchanged. Most log requests hold none: one bytes search skips them unparsed."""
        raw = batch.as_received
        if raw is not None and _EVALUATION_BYTES not in raw:
            return batch
        now = time.time()
        with self.agg.lock:
            for rl in batch.request.resource_logs:
                service = ""
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        if rec.event_name != EVALUATION_EVENT and not _named_event(rec):
                            continue
                        a = {kv.key: any_value(kv.value) for kv in rec.attributes}
                        if not service:
                            service = service_name_of(rl.resource)
                        self._evaluated(a, service, "", rec.trace_id, rec.span_id, now)
        return batch

    def _evaluated(
        self, a: dict[str, Any], service: str, model: str, tid: bytes, sid: bytes, now: float
    ) -> None:
        name = str(a.get("gen_ai.evaluation.name") or "")
        if not name:
            return
        if not model:
            model = str(a.get("gen_ai.request.model") or "")
        key = (service, name, model)
        linked = len(tid) == 16 and len(sid) == 8  # a log record may name no span
        score = to_float(a.get("gen_ai.evaluation.score.value"))
        if score is not None:
            self.score.observe(key, score, (tid, sid, score, now) if linked else None)
        label = str(a.get("gen_ai.evaluation.score.label") or "")
        self.evaluations.add((*key, label), 1, (tid, sid, 1, now) if linked else None)
