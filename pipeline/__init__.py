"""llm-otel-pipeline: LLM metrics, cost and TTFT from OpenTelemetry GenAI spans.

The curated public API; everything else is internal and may change.
"""

from .config import Config, ConfigError, load
from .model import LLMCall, LogBatch, MetricBatch, TraceBatch
from .service import Accepted, Service
from .telemetry import __version__

__all__ = [
    "Accepted",
    "Config",
    "ConfigError",
    "LLMCall",
    "LogBatch",
    "MetricBatch",
    "Service",
    "TraceBatch",
    "__version__",
    "load",
]
