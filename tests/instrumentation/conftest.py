"""Fixtures for the tests that drive real instrumentation libraries.

One fake LLM server per session (tests/fakellm.py). Each setup of scenarios.SETUPS runs once,
in its own subprocess (`runner.capture`), the first time a test asks for it; its scenarios'
spans come back as OTLP protobuf and are read by the sidecar's processors here.

The libraries come from tests/requirements-instrumentation.txt; a test whose library is not
installed is skipped, unless LLM_PIPELINE_REQUIRE_INSTRUMENTATION=1 (CI) makes that an error.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.model import LLMCall, TraceBatch
from tests.fakellm import FakeLLM
from tests.instrumentation.otlp import run_chain
from tests.instrumentation.runner import capture

# setup -> the modules it imports
MODULES = {
    "openai_v2": ["openai", "opentelemetry.instrumentation.openai_v2"],
    "openllmetry": ["openai", "opentelemetry.instrumentation.openai"],
    "openinference": ["openai", "openinference.instrumentation.openai"],
    "litellm": ["openai", "litellm"],
}
REQUIRE_ENV = "LLM_PIPELINE_REQUIRE_INSTRUMENTATION"


def _missing(setup: str) -> list[str]:
    parts = setup.removesuffix("_latest").split("+")
    mods = [m for p in parts for m in MODULES[p]]
    return [m for m in mods if not _has(m)]


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class Scenario:
    """One scenario's spans, read by normalize -> dedupe -> ttft."""

    def __init__(self, raw: bytes, client_error: str) -> None:
        self.raw = raw
        self.client_error = client_error
        self.batch: TraceBatch = run_chain(raw)

    @property
    def calls(self) -> list[LLMCall]:
        return self.batch.calls


Captured = dict[str, Scenario]


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
        yield llm


@pytest.fixture(scope="session")
def captured(
    fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Captured]:
    cache: dict[str, Captured] = {}
    tmp = tmp_path_factory.mktemp("instrumentation")

    def get(setup: str) -> Captured:
        if setup not in cache:
            missing = _missing(setup)
            if missing:
                msg = f"{setup}: not installed: {missing} (tests/requirements-instrumentation.txt)"
                if os.environ.get(REQUIRE_ENV) == "1":
                    pytest.fail(msg)
                pytest.skip(msg)
            raw = capture(setup, fake_llm.base_url, Path(tmp))
            cache[setup] = {name: Scenario(b, err) for name, (b, err) in raw.items()}
        return cache[setup]

    return get
