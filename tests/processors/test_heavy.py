"""heavy: the space-saving top-k keeps the heavy values and stays bounded under a flood."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import _native
from pipeline.aggregation import Aggregation
from pipeline.model import LLMCall
from pipeline.processors.dimensions import Labeler
from pipeline.processors.heavy import OTHER, HeavyHitters, PyHeavyHitters
from pipeline.processors.metrics import LLMMetrics, MetricsConfig


def test_the_heaviest_values_keep_their_labels_among_a_skewed_stream() -> None:
    rng = random.Random(7)
    hh = HeavyHitters(k=5, capacity=50)
    heavy = [f"big{i}" for i in range(5)]
    labels: dict[str, set[str]] = {}
    for n in range(20_000):
        value = rng.choice(heavy) if n % 4 == 0 else f"small{rng.randrange(5000)}"
        weight = 1.0 if value.startswith("big") else 0.01
        labels.setdefault(value, set()).add(hh.add(value, weight))
    assert set(hh.kept) == set(heavy)
    # each heavy value, once admitted, keeps its label
    assert all(OTHER not in labels[v] or v in labels for v in heavy)
    assert [v for v, _ in hh.top(5)] and {v for v, _ in hh.top(5)} == set(heavy)
    assert len(hh.counts) == 50
    assert hh.folds > 10_000


def test_a_value_that_outgrows_the_smallest_kept_one_takes_its_place() -> None:
    hh = HeavyHitters(k=2, capacity=4)
    assert hh.add("a", 5.0) == "a"
    assert hh.add("b", 1.0) == "b"
    assert hh.add("c", 0.5) == OTHER  # guaranteed 0.5 < b's 1.0
    assert hh.add("c", 1.0) == "c"  # guaranteed 1.5 > b's 1.0: b gives up its place
    assert set(hh.kept) == {"a", "c"}
    assert hh.add("b", 0.1) == OTHER
    assert hh.folds == 2


def test_a_million_distinct_users_bound_memory_and_series() -> None:
    """1e6 one-off users through the labeler and the cost/tokens families: the sketch holds
    10*k entries, the families a few hundred user values, and memory stays flat."""
    metrics = LLMMetrics(
        Aggregation(),
        MetricsConfig(2000, "v1.41", ("user",), {"tokens": ("user",), "cost": ("user",)}),
    )
    labeler = Labeler("user", 100)
    call = LLMCall(None, "svc", "semconv", b"\x01" * 16, b"\x02" * 8, b"", 0, 1_000_000)
    call.operation, call.provider, call.request_model = "chat", "openai", "m"
    call.input_tokens, call.output_tokens, call.cost_usd = 10, 5, 2e-5
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    after_warmup = 0
    for n in range(1_000_000):
        weight = 1.0 if n % 1000 == 0 else 2e-5  # a few heavy users among the flood
        call.dimensions = (labeler.label(f"user-{n}", weight),)
        metrics.record(call, 0.0)
        if n == 100_000:
            after_warmup = rss()
    current = rss()
    assert len(labeler.heavy.counts) == 1000
    assert len(labeler.heavy.kept) == 100
    users = {k[-1] for k in metrics.cost.series}
    # the first 100 users, then the heavy ones that displaced them (each heavy user weighs the
    # same, so once 100 are kept no other displaces them), and __other__
    assert OTHER in users and len(users) <= 100 + 100 + 1, len(users)
    assert len(metrics.tokens.series) == 2 * len(users)
    # memory after 1e6 values is that after 1e5 (the label-check cache and series bounded)
    assert current < after_warmup + 4_000_000, (current, after_warmup)
    assert labeler.heavy.folds > 900_000


def _native_sketch(k: int, capacity: int) -> Any:
    if _native.HeavyHitters is None:
        if os.environ.get("CI"):
            pytest.fail("llm_pipeline_native is not built, or without HeavyHitters")
        pytest.skip("llm_pipeline_native is not built")
    return _native.HeavyHitters(k, capacity)


# a stream of (value, weight) batches: few values, so they collide, evict and tie
_VALUE = st.sampled_from(["", "a", "b", "c", "d", "e", "f", "g", "bad", "é", "user-1"])
_WEIGHT = st.sampled_from([1e-9, 0.001, 0.5, 1.0, 2.0, 3.0])
_BATCHES = st.lists(st.dictionaries(_VALUE, _WEIGHT, max_size=6), max_size=30)


@settings(max_examples=300, deadline=None)
@given(batches=_BATCHES, k=st.integers(1, 4), capacity=st.integers(2, 7), one_by_one=st.booleans())
def test_the_native_sketch_equals_its_twin(
    batches: list[dict[str, float]], k: int, capacity: int, one_by_one: bool
) -> None:
    """Labels, folds, kept values, counts and ranking agree after every batch, through
    `label_all` (a value checked "bad" gets its verdict, uncounted) or `add` one by one."""
    native, twin = _native_sketch(k, capacity), PyHeavyHitters(k, capacity)
    assert (native.k, native.capacity) == (twin.k, twin.capacity)

    def check(value: str) -> str:
        return "__invalid__" if value == "bad" else ""

    for weights in batches:
        if one_by_one:
            got = [native.add(v, w) for v, w in weights.items() if v]
            want = [twin.add(v, w) for v, w in weights.items() if v]
        else:
            got = native.label_all(weights, {}, check)
            want = twin.label_all(weights, {}, check)
        assert got == want
        assert native.folds == twin.folds
        assert native.kept == set(twin.kept)
        assert native.counts == twin.counts
        assert native.top() == twin.top()
