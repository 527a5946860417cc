"""The trace chain's call-reading stages with the agents and serving processors, over real OTLP
requests, and readers of the aggregation they fill (shared by test_agents and test_serving)."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.aggregation import Aggregation, CounterFamily, HistogramFamily
from pipeline.model import TraceBatch
from pipeline.processors.agents import AgentMetrics
from pipeline.processors.cost import CostConfig, CostProcessor
from pipeline.processors.dedupe import Dedupe, DedupeConfig
from pipeline.processors.metrics import LLMMetrics, MetricsConfig
from pipeline.processors.normalize import Normalize
from pipeline.processors.serving import ServingMetrics
from pipeline.processors.ttft import ttft


class Chain:
    def __init__(self, semconv: str = "v1.41", tool_prices: dict[str, float] | None = None):
        self.agg = Aggregation()
        self.metrics = LLMMetrics(self.agg, MetricsConfig(semconv=semconv))
        self.agents = AgentMetrics(self.agg, tool_prices)
        self.serving = ServingMetrics(self.agg)
        self.steps: list[Any] = [
            Normalize(),
            self.agents,
            Dedupe(DedupeConfig()),
            ttft,
            CostProcessor(CostConfig({})),
            self.serving,
            self.metrics,
        ]

    def __call__(self, request: ExportTraceServiceRequest) -> TraceBatch:
        batch = TraceBatch(request=request, raw=request.SerializeToString())
        for step in self.steps:
            batch = step(batch)
        return batch

    def family(self, name: str) -> HistogramFamily | CounterFamily:
        for f in self.agg.families:
            if f.name == name:
                return f
        raise KeyError(name)

    def series(self, name: str, **labels: str) -> list[Any]:
        """The series of family `name` whose labels include `labels`."""
        fam = self.family(name)
        out = []
        for key, s in fam.series.items():
            have = dict(zip(fam.label_names, key, strict=True))
            if all(have.get(k) == v for k, v in labels.items()):
                out.append((have, s))
        return out

    def count(self, name: str, **labels: str) -> int:
        return sum(s.count for _, s in self.series(name, **labels))

    def total(self, name: str, **labels: str) -> float:
        rows = self.series(name, **labels)
        return sum(getattr(s, "total", None) or getattr(s, "value", 0.0) for _, s in rows)
