"""Every span the real instrumentations write is either read as a call or not LLM-looking: the
unreadable-span count (pipeline/processors/unreadable.py) stays at zero for each setup, from the
received bytes as the sidecar reads them, so a non-zero count means something changed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.model import TraceBatch
from pipeline.processors.normalize import normalize
from tests.instrumentation import scenarios as sc
from tests.instrumentation.conftest import Captured

SETUPS = list(sc.SETUPS)  # see conftest.captured


@pytest.mark.parametrize("setup", SETUPS)
def test_no_span_of_a_real_instrumentation_is_unreadable(
    captured: Callable[[str], Captured], setup: str
) -> None:
    for name, scenario in captured(setup).items():
        req = ExportTraceServiceRequest.FromString(scenario.raw)
        found: dict[str, int] = {}
        batch = normalize(TraceBatch(request=req, raw=scenario.raw), found)
        assert batch.calls, name
        assert found == {}, name
