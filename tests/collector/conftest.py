"""Fixtures for tests that run the real otelcol-llm Collector (helpers live in _helpers.py).

The binary comes from scripts/build-collector.sh (cached by manifest hash). A cold build takes
minutes, longer than a test's timeout, so when the selected tests use ``otelcol_binary`` it is
built once right after collection, outside any test's timer. LLM_PIPELINE_SKIP_COLLECTOR=1 skips
those tests; otherwise a failed build is an error in each of them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.collector._helpers import (
    SKIP_ENV,
    CollectorPorts,
    OtlpGrpcSink,
    OtlpHttpSink,
    Sinks,
    build_collector,
)


def _skip_collector() -> bool:
    return os.environ.get(SKIP_ENV) == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _skip_collector() or config.option.collectonly:
        return
    if any("otelcol_binary" in getattr(item, "fixturenames", ()) for item in items):
        # a failure is remembered and raised by the fixture, in each test that needs it
        with contextlib.suppress(Exception):
            build_collector()


@pytest.fixture(scope="session")
def otelcol_binary() -> Path:
    if _skip_collector():
        pytest.skip(f"{SKIP_ENV}=1")
    return build_collector()


@pytest.fixture
def collector_ports() -> CollectorPorts:
    return CollectorPorts()


@pytest.fixture
def sinks() -> Iterator[Sinks]:
    """Sidecar and Tempo (gRPC) and Loki and Prometheus (HTTP) stand-ins, all running."""
    s = Sinks(
        sidecar=OtlpGrpcSink().start(),
        tempo=OtlpGrpcSink().start(),
        loki=OtlpHttpSink("/otlp").start(),
        prometheus=OtlpHttpSink("/api/v1/otlp").start(),
    )
    yield s
    for sink in (s.sidecar, s.tempo, s.loki, s.prometheus):
        sink.stop()
