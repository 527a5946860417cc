"""The sidecar's own llm_pipeline_* metrics (through the OpenTelemetry metrics SDK) and the
structlog setup.

The counters keep running totals in plain `CounterFamily` objects (one dict update on the
hot path, under the aggregation's lock, as before); the SDK observes them at collection time
(observable counters and gauges), and `opentelemetry-exporter-prometheus` turns them into the
llm_pipeline_* families /metrics serves, on a private registry. So the SDK does what it is for
(temporality, start times, OTLP encoding for `metrics.push.self`) and the data path pays
nothing for it. Every counter sample has a `_created` sample (the process's start): the
counters start from zero at every start (nothing survives a restart), and rate() sees the
reset.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import structlog
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from .aggregation import Aggregation, CounterFamily

__version__ = "0.1.0"
METER = "llm-otel-pipeline"


class Telemetry:
    """Self-telemetry counters; gauges are read from their owners at collection time."""

    def __init__(self, agg: Aggregation, max_series: int = 2000) -> None:
        self.agg = agg
        self.counters: list[CounterFamily] = []
        self.max_series = max_series
        c = self._counter
        self.received = c(
            "llm_pipeline_received_items",
            "Spans, log records and metric data points accepted.",
            ("signal", "transport"),
        )
        self.rejected = c(
            "llm_pipeline_rejected_items",
            "Items refused, by reason.",
            ("signal", "reason"),
        )
        self.llm_spans = c(
            "llm_pipeline_llm_spans", "Spans recognised as LLM calls.", ("convention",)
        )
        self.exported = c("llm_pipeline_exported_items", "Items delivered.", ("signal", "exporter"))
        self.export_failures = c(
            "llm_pipeline_export_failures",
            "Failed export attempts (retried or not).",
            ("signal", "exporter"),
        )
        self.dropped = c(
            "llm_pipeline_dropped_items",
            "Items given up on.",
            ("signal", "exporter", "reason"),
        )
        self.unpriced = c(
            "llm_pipeline_unpriced_spans",
            "LLM spans with no known price.",
            ("gen_ai_provider_name", "gen_ai_request_model"),
            max_series,
        )
        self.processor_failures = c(
            "llm_pipeline_processor_failures",
            "Items a processor failed on (by processor and exception type): what it would have"
            " derived is missing, the items are forwarded all the same.",
            ("processor", "cause"),
        )
        self.file_deleted = c(
            "llm_pipeline_file_deleted_files",
            "Rotated files the file sink deleted to keep file.max_files (their data is gone).",
            ("signal",),
        )
        self.file_deleted_bytes = c(
            "llm_pipeline_file_deleted_bytes",
            "Bytes of the rotated files the file sink deleted.",
            ("signal",),
        )
        self.redactions = c("llm_pipeline_redactions", "Values redacted, by type.", ("type",))
        self.unreadable = c(
            "llm_pipeline_unreadable_llm_spans",
            "Spans that look like LLM calls but from which no call could be read, by scope.",
            ("scope",),
            max_series,
        )
        self.refused_connections = c(
            "llm_pipeline_refused_connections",
            "Connections closed at once because the receiver had its maximum open.",
            ("receiver",),
        )
        self.fallback_forced_closes = c(
            "llm_pipeline_fallback_forced_closes",
            "Fallback windows closed early (fallback.max_traces or max_buffered_calls reached).",
            (),
        )
        self.fallback_dropped_calls = c(
            "llm_pipeline_fallback_dropped_calls",
            "Calls fallback ignored: their trace had fallback.max_calls_per_trace already.",
            (),
        )
        # name -> (labels, value) readers, evaluated at scrape time (queue sizes etc.)
        self.gauges: dict[str, tuple[str, tuple[str, ...], list[GaugeReader]]] = {}
        self.started_s = time.time()
        self.registry = CollectorRegistry(auto_describe=False)
        self._readers: list[MetricReader] = []
        self._provider: MeterProvider | None = None
        self._start_lock = threading.Lock()
        self._meter: object = None
        self._gauges_made: set[str] = set()

    def _counter(
        self,
        name: str,
        documentation: str,
        label_names: tuple[str, ...],
        max_series: int = 2000,
    ) -> CounterFamily:
        fam = CounterFamily(name, documentation, label_names, max_series)
        self.counters.append(fam)
        return fam

    def inc(self, family: CounterFamily, key: tuple[str, ...], amount: float = 1) -> None:
        """Add to a self-telemetry counter (under the aggregation's lock, as the data path)."""
        with self.agg.lock:
            family.add(key, amount)

    def gauge(
        self, name: str, documentation: str, label_names: tuple[str, ...], reader: GaugeReader
    ) -> None:
        entry = self.gauges.setdefault(name, (documentation, label_names, []))
        entry[2].append(reader)
        if self._provider is not None:
            self._make_gauge(name)

    # -- the SDK side -----------------------------------------------------------------------

    def add_reader(self, reader: MetricReader) -> None:
        """Another SDK reader (the OTLP push of `metrics.push.self`); before `start`."""
        if self._provider is not None:
            raise RuntimeError("telemetry already started: readers are fixed by then")
        self._readers.append(reader)

    def start(self, resource: dict[str, str] | None = None) -> None:
        """Build the MeterProvider and its instruments (idempotent; a scrape starts it too)."""
        with self._start_lock:
            if self._provider is not None:
                return
            prom = PrometheusMetricReader(
                disable_target_info=True,
                scope_info_enabled=False,
                registry=self.registry,
            )
            # the families bound their own series (max_series and the overflow series): the
            # SDK's default limit (2000 a metric) must not fold them a second time
            limit = View(instrument_name="*", aggregation_cardinality_limit=self.max_series + 100)
            self._provider = MeterProvider(
                [prom, *self._readers],
                resource=Resource.create(resource or {"service.name": METER}),
                shutdown_on_exit=False,
                views=[limit],
            )
            meter = self._meter = self._provider.get_meter(METER, __version__)
            for fam in self.counters:
                meter.create_observable_counter(
                    fam.name, [self._observe_counter(fam)], description=fam.documentation
                )
            meter.create_observable_counter(
                "llm_pipeline_cardinality_overflow",
                [self._observe_overflow],
                description="Observations folded into the __other__ series by the cardinality"
                " guard.",
            )
            meter.create_observable_gauge(
                "llm_pipeline_build_info",
                [lambda _: [Observation(1.0, {"version": __version__})]],
                description="Sidecar build information.",
            )
            for name in self.gauges:
                self._make_gauge(name)

    def shutdown(self) -> None:
        """Stop the SDK (a last export by its periodic readers); the counters stay readable."""
        if self._provider is not None:
            self._provider.shutdown()

    def _observe_counter(
        self, fam: CounterFamily
    ) -> Callable[[CallbackOptions], list[Observation]]:
        names = fam.label_names

        def observe(_: CallbackOptions) -> list[Observation]:
            with self.agg.lock:
                rows = [(k, s.value) for k, s in fam.series.items()]
            return [Observation(v, dict(zip(names, k, strict=True))) for k, v in rows]

        return observe

    def _observe_overflow(self, _: CallbackOptions) -> list[Observation]:
        with self.agg.lock:
            rows = [(f.name, f.overflowed) for f in (*self.agg.families, *self.counters)]
        return [Observation(float(n), {"metric": name}) for name, n in rows if n]

    def _make_gauge(self, name: str) -> None:
        if name in self._gauges_made or self._meter is None:
            return
        self._gauges_made.add(name)
        doc, labels, readers = self.gauges[name]

        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for read in list(readers):
                for key, value in read():
                    yield Observation(value, dict(zip(labels, key, strict=True)))

        self._meter.create_observable_gauge(  # type: ignore[attr-defined]
            name, [observe], description=doc
        )

    def collect(self) -> Iterator[Metric]:
        """The llm_pipeline_* families for /metrics: the SDK's, through its Prometheus reader;
        families without samples left out, counters with `_created`."""
        self.start()
        for fam in self.registry.collect():
            if not fam.samples:
                continue
            if fam.type == "counter":
                # OpenMetrics groups a series' samples: each _created right after its _total
                grouped = []
                for smp in fam.samples:
                    grouped.append(smp)
                    if smp.name.endswith("_total"):
                        name = smp.name.removesuffix("_total") + "_created"
                        grouped.append(Sample(name, smp.labels, self.started_s))
                fam.samples = grouped
            yield fam


GaugeReader = Callable[[], list[tuple[tuple[str, ...], float]]]


def configure_logging(level: str = "info", json: bool = False) -> None:
    """structlog to stderr: key=value lines for people, JSON when asked."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
