"""Fixtures of the interop tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.interop.capture import Capture


@pytest.fixture
def capture() -> Iterator[Capture]:
    c = Capture()
    yield c
    c.close()
