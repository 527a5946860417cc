"""Fixtures for the tests that drive real instrumentation libraries.

One fake LLM server per session (tests/fakellm.py). Each setup of scenarios.SETUPS runs once,
in its own subprocess (`runner.capture`); its scenarios' spans come back as OTLP protobuf and
are read by the sidecar's processors here. Test modules name the setups they use in `SETUPS`;
the first test that asks starts all the selected tests' setups, two subprocesses at a time.

The libraries come from tests/requirements-instrumentation.txt; a test whose library is not
installed is skipped, unless LLM_PIPELINE_REQUIRE_INSTRUMENTATION=1 (CI) makes that an error.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


_WANTED = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted: list[str] = []
    for item in items:
        for setup in getattr(getattr(item, "module", None), "SETUPS", ()):
            if setup not in wanted:
                wanted.append(setup)
    config.stash[_WANTED] = wanted


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as llm:
        yield llm


@pytest.fixture(scope="session")
def captured(
    request: pytest.FixtureRequest, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Captured]]:
    tmp = tmp_path_factory.mktemp("instrumentation")
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="capture")
    futures: dict[str, Future[dict[str, tuple[bytes, str]]]] = {}

    def start(setup: str) -> None:
        if setup not in futures and not _missing(setup):
            futures[setup] = pool.submit(capture, setup, fake_llm.base_url, Path(tmp))

    cache: dict[str, Captured] = {}

    def get(setup: str) -> Captured:
        if setup not in cache:
            missing = _missing(setup)
            if missing:
                msg = f"{setup}: not installed: {missing} (tests/requirements-instrumentation.txt)"
                if os.environ.get(REQUIRE_ENV) == "1":
                    pytest.fail(msg)
                pytest.skip(msg)
            for wanted in [setup, *request.config.stash.get(_WANTED, [])]:
                start(wanted)
            raw = futures[setup].result()
            cache[setup] = {name: Scenario(b, err) for name, (b, err) in raw.items()}
        return cache[setup]

    yield get
    pool.shutdown(wait=True, cancel_futures=True)
