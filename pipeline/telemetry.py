"""The sidecar's own llm_pipeline_* metrics and the structlog setup."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import structlog

from .aggregation import Aggregation, CounterFamily

__version__ = "0.1.0"


class Telemetry:
    """Self-telemetry counters; gauges are read from their owners at scrape time."""

    def __init__(self, agg: Aggregation, max_series: int = 2000) -> None:
        self.agg = agg
        c = agg.counter
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

    def inc(self, family: CounterFamily, key: tuple[str, ...], amount: float = 1) -> None:
        with self.agg.lock:
            family.add(key, amount)

    def gauge(
        self, name: str, documentation: str, label_names: tuple[str, ...], reader: GaugeReader
    ) -> None:
        entry = self.gauges.setdefault(name, (documentation, label_names, []))
        entry[2].append(reader)


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
