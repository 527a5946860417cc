"""aggregation + exposition: cumulative buckets, exemplars, the cardinality guard."""

from __future__ import annotations

from pipeline.aggregation import OTHER, Aggregation
from pipeline.exporters.prometheus import AggregationCollector, render
from pipeline.telemetry import Telemetry
from tests.helpers.metrics import find, value

OM = "application/openmetrics-text; version=1.0.0"


def test_histogram_buckets_are_cumulative_with_exemplars() -> None:
    agg = Aggregation()
    h = agg.histogram("t_seconds", "doc", ("m",), (0.1, 1.0, 10.0))
    for v, tid in (
        (0.05, b"\xaa" * 16),
        (0.1, b"\xbb" * 16),
        (0.5, b"\xcc" * 16),
        (50.0, b"\xdd" * 16),
    ):
        h.observe(("x",), v, (tid, b"\x11" * 8, v, 1700000000.0))
    body, ctype = render(AggregationCollector(agg), OM)
    text = body.decode()
    assert ctype.startswith("application/openmetrics-text")
    assert value(text, "t_seconds_bucket", m="x", le="0.1") == 2  # 0.1 is inclusive
    assert value(text, "t_seconds_bucket", m="x", le="1.0") == 3
    assert value(text, "t_seconds_bucket", m="x", le="+Inf") == 4
    assert value(text, "t_seconds_count", m="x") == 4
    assert value(text, "t_seconds_sum", m="x") == 50.65
    [b] = find(text, "t_seconds_bucket", m="x", le="1.0")
    assert b.exemplar.labels["trace_id"] == "cc" * 16 and b.exemplar.value == 0.5
    assert b.exemplar.labels["span_id"] == "11" * 8


def test_text_format_without_exemplars_for_plain_scrapers() -> None:
    agg = Aggregation()
    agg.counter("c", "doc", ("m",)).add(("x",), 3, (b"\xaa" * 16, b"\x11" * 8, 3, 1.0))
    body, ctype = render(AggregationCollector(agg), "text/plain")
    assert ctype.startswith("text/plain")
    assert 'c_total{m="x"} 3.0' in body.decode()
    assert "trace_id" not in body.decode()


def test_cardinality_guard_folds_and_counts() -> None:
    agg = Aggregation()
    tel = Telemetry(agg)
    c = agg.counter(
        "tok",
        "doc",
        ("model", "gen_ai_token_type"),
        max_series=3,
        keep_on_overflow=("gen_ai_token_type",),
    )
    for i in range(1000):
        c.add((f"m{i}", "input"), 1)
        c.add((f"m{i}", "output"), 2)
    assert len(c.series) <= 5  # 3 real + the two folded token types
    assert c.series[(OTHER, "input")].value == 1000 - 2
    assert c.series[(OTHER, "output")].value == 2 * (1000 - 1)
    text = render(AggregationCollector(agg, tel), OM)[0].decode()
    assert value(text, "llm_pipeline_cardinality_overflow_total", metric="tok") == c.overflowed
    assert c.overflowed == 2000 - 3


def test_cost_is_exposed_without_float_noise() -> None:
    from pipeline.processors.cost import tidy
    from pipeline.processors.metrics import LLMMetrics

    assert repr(0.0003 + 0.00006) == "0.00035999999999999997"  # the noise in question
    assert repr(tidy(0.0003 + 0.00006)) == "0.00036"
    assert tidy(1234.5678901234567) == 1234.56789012
    agg = Aggregation()
    m = LLMMetrics(agg)
    for usd in (0.0003, 0.00006):
        m.cost.add(("svc", "chat", "openai", "gpt-4o", "gpt-4o"), usd)
    text = render(AggregationCollector(agg), "text/plain")[0].decode()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("gen_ai_client_cost_usd_total{")]
    assert line.endswith(" 0.00036")
    m.tokens.add(("svc", "chat", "openai", "gpt-4o", "gpt-4o", "input"), 1234567890123456)
    text = render(AggregationCollector(agg), "text/plain")[0].decode()
    assert "1.234567890123456e+15" in text  # counts keep every digit


def test_a_windowed_counter_keeps_the_largest_exemplar_of_its_window() -> None:
    """The exemplar is the largest amount's until the window has passed since it was taken;
    then the next amount's, whatever its size. The value counts every amount."""
    c = Aggregation().counter("c", "doc", ("m",), exemplar_window_s=30.0)

    def add(amount: float, at: float, tid: int) -> bytes:
        c.add(("x",), amount, (bytes([tid]) * 16, b"\x11" * 8, amount, at))
        ex = c.series[("x",)].exemplar
        assert ex is not None
        return ex[0][:1]

    assert add(5, 100.0, 1) == b"\x01"
    assert add(2, 110.0, 2) == b"\x01"  # smaller, within the window
    assert add(5, 120.0, 3) == b"\x01"  # equal: the one taken first stays
    assert add(9, 125.0, 4) == b"\x04"  # larger
    assert add(1, 150.0, 5) == b"\x04"  # 25 s after the 9: still its window
    assert add(1, 155.0, 6) == b"\x06"  # 30 s after: the window starts again
    assert c.series[("x",)].value == 23
    # without a window, the last exemplar wins
    plain = Aggregation().counter("p", "doc", ("m",))
    plain.add(("x",), 9, (b"\x01" * 16, b"\x11" * 8, 9, 100.0))
    plain.add(("x",), 1, (b"\x02" * 16, b"\x11" * 8, 1, 101.0))
    assert plain.series[("x",)].exemplar == (b"\x02" * 16, b"\x11" * 8, 1, 101.0)


def test_series_differing_in_their_last_label_share_one_block() -> None:
    """With block_labels, the series of one prefix keep their numbers side by side in one
    array (each at its label's offset); other keys, the overflow's too, keep their own. The
    values and exemplars are each series' own whatever the layout."""
    c = Aggregation().counter(
        "c",
        "doc",
        ("m", "t"),
        max_series=3,
        keep_on_overflow=("t",),
        exemplar_window_s=30.0,
        block_labels=("a", "b"),
    )
    c.add(("x", "b"), 2, (b"\x01" * 16, b"\x11" * 8, 2, 100.0))
    c.add(("x", "a"), 5, (b"\x02" * 16, b"\x11" * 8, 5, 100.0))
    c.add(("x", "z"), 7)  # not a block label: on its own
    c.add(("y", "a"), 1)  # a fourth series: folds into (__other__, a), a block of its own
    c.add(("x", "b"), 3, (b"\x03" * 16, b"\x11" * 8, 3, 101.0))
    xa, xb, xz = c.series[("x", "a")], c.series[("x", "b")], c.series[("x", "z")]
    assert xa.cells is xb.cells and (xa.at, xb.at) == (c.block_offset("a"), c.block_offset("b"))
    assert xa.at != xb.at and xz.cells is not xa.cells and xz.at == 0
    folded = c.series[(OTHER, "a")]
    assert folded.cells is not xa.cells and folded.value == 1
    assert (xa.value, xb.value, xz.value) == (5, 5, 7)
    assert xb.exemplar is not None and xb.exemplar[0][:1] == b"\x03"  # larger than the 2
    assert xa.exemplar is not None and xa.exemplar[0][:1] == b"\x02"
    assert (xb.kept_amount, xb.kept_at) == (3, 101.0)
