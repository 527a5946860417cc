"""bench/benchlib's helpers run: payload pool, trace-id stamping, percentiles, py-spy parsing.

The benchmark itself is a script (bench/README.md); this only keeps its pieces from rotting.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench() -> SimpleNamespace:
    """The names of bench/benchlib's modules, as one namespace."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    names: dict[str, Any] = {}
    for mod in ("results", "procfs", "load", "measure", "profile", "gate"):
        names.update(vars(importlib.import_module(f"benchlib.{mod}")))
    return SimpleNamespace(**names)


def _ids(data: bytes) -> list[tuple[bytes, bytes]]:
    req = ExportTraceServiceRequest.FromString(data)
    return [
        (s.trace_id, s.span_id)
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def test_pool_and_stamp(bench: SimpleNamespace) -> None:
    pool, info = bench.build_pool(3, seed=1)
    assert len(pool) == 3 and info["batches"] == 3
    for p in pool:
        ids = _ids(p.data)
        assert len(ids) == p.spans == 100
        assert len(p.trace_id_offsets) == 100  # one trace id per span
        stamped = _ids(bench.stamp(p, b"\xbe\x00\x00\x01\x00\x00\x00\x07"))
        assert [t[:8] for t, _ in stamped] == [b"\xbe\x00\x00\x01\x00\x00\x00\x07"] * 100
        # the rest of each id is untouched, so traces stay traces
        assert [(t[8:], s) for t, s in stamped] == [(t[8:], s) for t, s in ids]
    assert info["llm_call_share"] > 0.2


def test_percentile(bench: SimpleNamespace) -> None:
    values = list(range(1, 101))
    assert bench.percentile(values, 50) == 50
    assert bench.percentile(values, 99) == 99
    assert bench.percentile([3.0], 99) == 3.0


def test_parse_collapsed(bench: SimpleNamespace, tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text(
        "run (threading.py:1);accept (pipeline/service.py:10);normalize (pipeline/n.py:5) 3\n"
        "run (threading.py:1);accept (pipeline/service.py:10) 1\n"
    )
    total, top_self, top_incl, by_file = bench.parse_collapsed(raw, 5)
    assert total == 4
    assert top_self[0] == ("normalize (pipeline/n.py)", 75.0)
    assert ("accept (pipeline/service.py)", 100.0) in top_incl
    assert by_file[0] == ("pipeline/n.py", 75.0)


def test_proc_readings(bench: SimpleNamespace) -> None:
    import os

    assert bench.proc_cpu_s(os.getpid()) > 0
    assert bench.proc_status_kb(os.getpid(), "VmHWM") > 0
    assert bench.cores_busy()


def test_ratios_pair_the_rounds_of_a_repeated_rate(bench: SimpleNamespace) -> None:
    def step(system: str, rate: float, us: float, util: float = 0.3) -> Any:
        return bench.StepResult(
            system, rate, rate, rate, rate, 0, {}, 1.0, util, us, 1.0, 1.0, 2.0, 3.0, 50.0,
            0.0, 0.5, 0.5, 0.0, 6.0, True, "ok",
        )  # fmt: skip

    side = bench.SystemResult("sidecar")
    col = bench.SystemResult("collector")
    # three rounds at 10k (round k: the k-th step of each), one at 20k
    for s_us, c_us in ((30.0, 20.0), (24.0, 12.0), (26.0, 20.0)):
        side.steps.append(step("sidecar", 10000, s_us))
        col.steps.append(step("collector", 10000, c_us))
    side.steps.append(step("sidecar", 20000, 21.0, util=0.9))
    col.steps.append(step("collector", 20000, 14.0))
    got = {q.label: q for q in bench.ratios([side, col])}
    at10 = got["at 10000 spans/s"]
    assert at10.rounds == [1.5, 2.0, 1.3]  # paired per round, not median/median
    assert at10.ratio == 1.5
    assert (at10.sidecar_cpu_us_per_span, at10.collector_cpu_us_per_span) == (26.0, 20.0)
    assert got["at 20000 spans/s"].ratio == 1.5 and got["at 20000 spans/s"].rounds == []
    # the moderate rate is the highest where the sidecar stayed <= 70% of its core
    assert got["common moderate rate"].sidecar_rate == 10000


def test_a_variant_is_paired_with_the_default_sidecar(bench: SimpleNamespace) -> None:
    def step(system: str, rate: float, us: float, ok: bool = True) -> Any:
        return bench.StepResult(
            system, rate, rate, rate, rate, 0, {}, 1.0, 0.3, us, 1.0, 1.0, 2.0, 3.0, 50.0,
            0.0, 0.5, 0.5, 0.0, 6.0, ok, "ok" if ok else "accepted 90% of offered",
        )  # fmt: skip

    side, dims = bench.SystemResult("sidecar"), bench.SystemResult("sidecar-dims")
    for s_us, d_us in ((30.0, 33.0), (20.0, 24.0), (25.0, 26.0)):
        side.steps.append(step("sidecar", 10000, s_us))
        dims.steps.append(step("sidecar-dims", 10000, d_us))
    side.steps.append(step("sidecar", 20000, 20.0))
    dims.steps.append(step("sidecar-dims", 20000, 30.0, ok=False))  # not sustained: no pair
    got = bench.ratios([side, dims])
    assert [(q.label, q.sidecar_system, q.baseline) for q in got] == [
        ("at 10000 spans/s", "sidecar-dims", "sidecar")
    ]
    assert got[0].rounds == pytest.approx([1.1, 1.2, 1.04])
    assert got[0].ratio == pytest.approx(1.1)


def test_the_gate_judges_the_median_of_paired_rounds(bench: SimpleNamespace) -> None:
    def step(system: str, us: float, verdict: str = "ok") -> Any:
        return bench.StepResult(
            system, 5000, 5000, 5000, 5000, 0, {}, 1.0, 0.2, us, 1.0, 1.0, 2.0, 3.0, 50.0,
            0.0, 0.5, 0.5, 0.0, 4.0, verdict == "ok", verdict,
        )  # fmt: skip

    steps = {
        "sidecar": [step("sidecar", 30.0), step("sidecar", 20.0), step("sidecar", 45.0)],
        "collector": [step("collector", 20.0), step("collector", 10.0), step("collector", 15.0)],
    }
    ok = bench.judge(5000, steps, threshold=2.0, min_rounds=2)
    assert ok.ratios == [1.5, 2.0, 3.0] and ok.median_ratio == 2.0 and ok.passed
    assert not bench.judge(5000, steps, threshold=1.9, min_rounds=2).passed
    # a round one system did not sustain is not paired, and is named
    steps["collector"][2] = step("collector", 15.0, "accepted 80% of offered")
    short = bench.judge(5000, steps, threshold=5.0, min_rounds=3)
    assert short.ratios == [1.5, 2.0] and not short.passed
    assert short.failed_rounds == ["collector round 3: accepted 80% of offered"]


def test_the_gate_file_names_a_threshold_per_rate(bench: SimpleNamespace, tmp_path: Path) -> None:
    cfg = bench.load_gate()  # the repository's bench/gate.json
    assert set(cfg["max_ratio"]) == {str(r) for r in cfg["rates"]}
    bad = tmp_path / "gate.json"
    bad.write_text('{"rates": [5000, 9000], "rounds": 3, "max_ratio": {"5000": 2.0}}')
    with pytest.raises(ValueError, match="9000"):
        bench.load_gate(bad)
