"""Fixtures for tests on the real trace and log backends (helpers in _backends.py).

Jaeger and VictoriaLogs come from scripts/build-jaeger.sh and scripts/build-victorialogs.sh
(cached per version; scripts/setup.sh builds them). A cold build takes minutes, longer than a
test's timeout, so when the selected tests need them they are built right after collection,
outside any test's timer. LLM_PIPELINE_SKIP_BACKENDS=1 skips those tests (not under CI=1, where a
missing backend is a failure).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends._backends import (
    SKIP_ENV,
    Jaeger,
    VictoriaLogs,
    build_backend,
)
from tests.helpers.process import start_on_free_ports

_FIXTURES = {"jaeger_binary": "jaeger", "victorialogs_binary": "victorialogs"}


def _skip() -> bool:
    return os.environ.get(SKIP_ENV) == "1" and not os.environ.get("CI")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _skip() or config.option.collectonly:
        return
    wanted = {f for item in items for f in getattr(item, "fixturenames", ()) if f in _FIXTURES}
    for fixture in sorted(wanted):  # one at a time: a cold Jaeger build takes ~2 GB
        with contextlib.suppress(Exception):  # raised again by the fixture, in each test
            build_backend(_FIXTURES[fixture])


def _binary(name: str) -> Path:
    if _skip():
        pytest.skip(f"{SKIP_ENV}=1")
    return build_backend(name)


@pytest.fixture(scope="session")
def jaeger_binary() -> Path:
    return _binary("jaeger")


@pytest.fixture(scope="session")
def victorialogs_binary() -> Path:
    return _binary("victorialogs")


@pytest.fixture
def jaeger(jaeger_binary: Path, tmp_path: Path) -> Iterator[Jaeger]:
    j = start_on_free_ports(lambda: Jaeger(jaeger_binary, tmp_path / "jaeger"))
    yield j
    j.stop()


@pytest.fixture
def victorialogs(victorialogs_binary: Path, tmp_path: Path) -> Iterator[VictoriaLogs]:
    v = start_on_free_ports(lambda: VictoriaLogs(victorialogs_binary, tmp_path / "victorialogs"))
    yield v
    v.stop()
