"""The memory limiter's escape from an RSS the allocator keeps after a spike."""

from __future__ import annotations

import time

import pytest

from pipeline import memlimit
from pipeline.memlimit import MemoryLimiter


def test_above_the_soft_limit_it_refuses_while_data_is_held_and_admits_once_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memlimit, "IDLE_ADMIT_S", 0.2)
    held = [True]
    lim = MemoryLimiter(1, 80, interval_s=0.0, busy=lambda: held[0])  # 1 MiB: below any process
    assert lim.enabled
    assert not lim.ok()  # data held: waiting will free memory, so refuse
    time.sleep(0.3)
    assert not lim.ok()  # still held: still refused, however long
    held[0] = False
    assert not lim.ok()  # nothing held just now: not yet
    time.sleep(0.3)
    assert lim.ok()  # nothing held for a while: the RSS is the allocator's, let a request in
    held[0] = True
    assert not lim.ok()  # held again: refused again


def test_under_the_soft_limit_it_admits_whatever_is_held() -> None:
    lim = MemoryLimiter(1 << 20, 80, interval_s=0.0, busy=lambda: True)  # 1 TiB
    assert lim.ok()
