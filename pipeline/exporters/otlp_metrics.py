"""An OTLP ExportMetricsServiceRequest built from a snapshot of the aggregation.

Names and units: the semconv families go out under their semantic-conventions names
(`gen_ai.client.token.usage`, `{token}`; `gen_ai.client.operation.duration`, `s`; ...), so an
OTLP backend sees what the conventions define, and a Prometheus-compatible one translates them
back to the names /metrics serves (`gen_ai_client_operation_duration_seconds`, counters with
`_total`). The project's own families (`gen_ai_client_tokens`, `gen_ai_client_cost_usd`,
`llm_pipeline_*`) keep their Prometheus names, with the unit split off (`_seconds` -> `s`) so the
translation gives the same name back. Label names become the conventions' attribute keys
(`gen_ai_provider_name` -> `gen_ai.provider.name`).

Histograms are explicit-bucket histograms with the semconv bounds; every bucket's latest
exemplar (trace and span id) goes along. Temporality is cumulative (start time: the exporter's
start; the series are never reset while the process runs) or delta (the change since the last
request built, series without change left out).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from ..aggregation import Exemplar
from ..telemetry import __version__
from .snapshot import FamilySnapshot, Snapshot

CUMULATIVE = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
SCOPE = "llm-otel-pipeline"

# Prometheus family name -> (OTLP name, UCUM unit) for the semconv-defined families
# (semantic-conventions v1.41.1 docs/gen-ai/gen-ai-metrics.md, and semantic-conventions-genai
# for the `development` names).
_SEMCONV: dict[str, tuple[str, str]] = {
    "gen_ai_client_operation_duration_seconds": ("gen_ai.client.operation.duration", "s"),
    "gen_ai_client_token_usage": ("gen_ai.client.token.usage", "{token}"),
    "gen_ai_client_operation_time_to_first_chunk_seconds": (
        "gen_ai.client.operation.time_to_first_chunk",
        "s",
    ),
    "gen_ai_client_operation_time_per_output_chunk_seconds": (
        "gen_ai.client.operation.time_per_output_chunk",
        "s",
    ),
    "gen_ai_server_request_duration_seconds": ("gen_ai.server.request.duration", "s"),
    "gen_ai_server_time_to_first_token_seconds": ("gen_ai.server.time_to_first_token", "s"),
    "gen_ai_server_time_per_output_token_seconds": ("gen_ai.server.time_per_output_token", "s"),
    "gen_ai_client_inference_duration_seconds": ("gen_ai.client.inference.duration", "s"),
    "gen_ai_client_inference_time_to_first_chunk_seconds": (
        "gen_ai.client.inference.time_to_first_chunk",
        "s",
    ),
    "gen_ai_client_inference_time_per_output_chunk_seconds": (
        "gen_ai.client.inference.time_per_output_chunk",
        "s",
    ),
    "gen_ai_client_embeddings_duration_seconds": ("gen_ai.client.embeddings.duration", "s"),
    "gen_ai_client_embeddings_operation_input_tokens": (
        "gen_ai.client.embeddings.operation.input_tokens",
        "{token}",
    ),
    **{
        f"gen_ai_client_inference_operation_{k}": (
            f"gen_ai.client.inference.operation.{k}",
            "{token}",
        )
        for k in ("input_tokens", "output_tokens")
    },
    **{
        f"gen_ai_client_inference_usage_{k}": (f"gen_ai.client.inference.usage.{k}", "{token}")
        for k in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_write_input_tokens",
            "reasoning_output_tokens",
        )
    },
    # the project's own: Prometheus names, with a unit that the translation does not append
    "gen_ai_client_tokens": ("gen_ai_client_tokens", "{token}"),
    "gen_ai_client_cost_usd": ("gen_ai_client_cost_usd", "{USD}"),
}
_UNIT_SUFFIXES = (("_seconds", "s"), ("_bytes", "By"))

LABEL_KEYS = {
    "service_name": "service.name",
    "gen_ai_operation_name": "gen_ai.operation.name",
    "gen_ai_provider_name": "gen_ai.provider.name",
    "gen_ai_request_model": "gen_ai.request.model",
    "gen_ai_response_model": "gen_ai.response.model",
    "gen_ai_token_type": "gen_ai.token.type",
    "gen_ai_token_modality": "gen_ai.token.modality",
    "error_type": "error.type",
}


def otlp_name(prom_name: str) -> tuple[str, str]:
    """The OTLP metric name and unit of a family exposed as `prom_name`."""
    known = _SEMCONV.get(prom_name)
    if known is not None:
        return known
    for suffix, unit in _UNIT_SUFFIXES:
        if prom_name.endswith(suffix):
            return prom_name.removesuffix(suffix), unit
    return prom_name, ""


def resource_attributes(service_name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The sidecar's own resource: who pushed the metrics (not the apps they describe, whose
    `service.name` is a data point attribute)."""
    attrs = {
        "service.name": service_name,
        "service.version": __version__,
        "service.instance.id": str(uuid.uuid4()),
        "host.name": socket.gethostname(),
        "process.pid": str(os.getpid()),
    }
    attrs.update(extra or {})
    return attrs


def _kv(attrs: Iterable[tuple[str, str]]) -> list[KeyValue]:
    out = []
    for k, v in attrs:
        kv = KeyValue(key=k)
        kv.value.string_value = v
        out.append(kv)
    return out


def _exemplar(e: Exemplar) -> pb.Exemplar:
    trace_id, span_id, value, ts = e
    return pb.Exemplar(
        time_unix_nano=int(ts * 1e9), as_double=value, trace_id=trace_id, span_id=span_id
    )


@dataclass
class MetricsEncoder:
    """Turns snapshots into requests; keeps what delta temporality needs between them."""

    resource: dict[str, str]
    start_time_unix_nano: int
    temporality: str = "cumulative"  # cumulative | delta
    # family -> key -> the cumulative state last sent: (counts, sum, count) or value
    _last: dict[str, dict[tuple[str, ...], tuple[list[int], float, int] | float]] = field(
        default_factory=dict
    )
    _last_time: int = 0

    def save(self) -> tuple[dict[str, dict[tuple[str, ...], Any]], int]:
        """The delta state, to `restore` when a request was not sent (a full queue)."""
        if self.temporality != "delta":
            return {}, self._last_time  # cumulative keeps nothing between requests
        return {k: dict(v) for k, v in self._last.items()}, self._last_time

    def restore(self, saved: tuple[dict[str, dict[tuple[str, ...], Any]], int]) -> None:
        self._last, self._last_time = saved

    def encode(self, snap: Snapshot) -> tuple[ExportMetricsServiceRequest, int]:
        """The request and its data point count (0: nothing to send)."""
        req = ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        rm.resource.attributes.extend(_kv(sorted(self.resource.items())))
        sm = rm.scope_metrics.add()
        sm.scope.name = SCOPE
        sm.scope.version = __version__
        delta = self.temporality == "delta"
        start = self.start_time_unix_nano
        if delta and self._last_time:
            start = self._last_time
        points = 0
        for fam in snap.families:
            points += self._family(sm, fam, snap.time_unix_nano, start, delta)
        self._last_time = snap.time_unix_nano
        return req, points

    @staticmethod
    def _attrs(label_names: tuple[str, ...], key: tuple[str, ...]) -> list[tuple[str, str]]:
        return [(LABEL_KEYS.get(n, n), v) for n, v in zip(label_names, key, strict=True)]

    def _family(
        self, sm: pb.ScopeMetrics, fam: FamilySnapshot, now: int, start: int, delta: bool
    ) -> int:
        last = self._last.setdefault(fam.name, {})
        since = start / 1e9  # exemplars newer than the last request (delta)
        name, unit = otlp_name(fam.name)
        temporality = DELTA if delta else CUMULATIVE
        m: pb.Metric | None = None
        points = 0
        if fam.bounds is not None:
            for row in fam.histograms:
                counts, total, count = row.counts, row.total, row.count
                if delta:
                    prev = last.get(row.key)
                    last[row.key] = (counts, total, count)
                    if isinstance(prev, tuple):
                        if count == prev[2]:
                            continue
                        counts = [a - b for a, b in zip(counts, prev[0], strict=True)]
                        total, count = total - prev[1], count - prev[2]
                if m is None:
                    m = sm.metrics.add(name=name, description=fam.documentation, unit=unit)
                    m.histogram.aggregation_temporality = temporality
                dp = m.histogram.data_points.add(
                    start_time_unix_nano=start,
                    time_unix_nano=now,
                    count=count,
                    sum=total,
                    bucket_counts=counts,
                    explicit_bounds=fam.bounds,
                )
                dp.attributes.extend(_kv(self._attrs(fam.label_names, row.key)))
                dp.exemplars.extend(
                    _exemplar(e)
                    for e in row.exemplars
                    if e is not None and (not delta or e[3] >= since)
                )
                points += 1
            return points
        for crow in fam.counters:
            value = crow.value
            if delta:
                prev_v = last.get(crow.key)
                last[crow.key] = value
                if isinstance(prev_v, float):
                    if value == prev_v:
                        continue
                    value -= prev_v
            if m is None:
                m = sm.metrics.add(name=name, description=fam.documentation, unit=unit)
                m.sum.aggregation_temporality = temporality
                m.sum.is_monotonic = True
            dp = m.sum.data_points.add(
                start_time_unix_nano=start, time_unix_nano=now, as_double=value
            )
            dp.attributes.extend(_kv(self._attrs(fam.label_names, crow.key)))
            ex = crow.exemplar
            if ex is not None and (not delta or ex[3] >= since):
                dp.exemplars.append(_exemplar(ex))
            points += 1
        return points
