"""What a run measures: one dataclass per kind of result (a step, a system's ramp, a
ratio, an outage, a profile, the stages), written as bench/results.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepResult:
    system: str
    offered_spans_s: float  # the target rate
    attempted_spans_s: float  # what the senders managed to send (falls short when blocked)
    accepted_spans_s: float  # OK responses x 100 per second
    forwarded_spans_s: float  # arriving at the sink
    rejected: int  # UNAVAILABLE / RESOURCE_EXHAUSTED answers (backpressure)
    errors: dict[str, int]  # other gRPC status codes
    cpu_s: float  # SUT process CPU over the measured window
    cpu_util: float  # cpu_s / wall (1.0 = one core)
    cpu_us_per_span: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    rss_mb: float
    sut_core_other_util: float  # the SUT's core busy with anything but the SUT
    load_core_util: float  # the load generator's core, all processes
    load_gen_util: float  # senders + sink + this process
    load_core_other_util: float  # the load core busy with anything but the load generator
    window_s: float
    passed: bool
    verdict: str  # "ok" or why the step is not sustained


@dataclass
class SystemResult:
    system: str
    steps: list[StepResult] = field(default_factory=list)
    max_sustained_spans_s: float = 0.0  # highest accepted rate of a passing step
    cpu_util_at_max: float = 0.0
    cpu_us_per_span_at_max: float = 0.0
    spans_s_per_core: float = 0.0  # 1e6 / cpu_us_per_span at the highest passing step
    p50_ms_at_max: float = 0.0
    p99_ms_at_max: float = 0.0
    peak_rss_mb: float = 0.0  # VmHWM at the end of the ramp
    limited_by: str = ""  # what stopped the ramp
    notes: list[str] = field(default_factory=list)


@dataclass
class Ratio:
    label: str
    sidecar_system: str
    sidecar_rate: float
    sidecar_cpu_us_per_span: float
    collector_rate: float
    collector_cpu_us_per_span: float
    ratio: float
    # the ratio of each round at this rate (k-th step of each system: the same round), when a
    # rate was run more than once; `ratio` and the µs are then their medians
    rounds: list[float] = field(default_factory=list)
    # what `collector_*` is: the Collector, or the forwarding sidecar (the file sink's ratio)
    baseline: str = "collector"


@dataclass
class OutageResult:
    system: str
    rate_spans_s: float
    outage_s: float
    queue_bound: str
    sent_ok_spans: int
    rejected_batches: int
    other_errors: dict[str, int]
    arrived_spans: int  # at the sink, counting duplicates
    arrived_unique_spans: int
    lost_spans: int  # sent OK but never arrived
    duplicate_spans: int
    queue_peak: float
    queue_unit: str
    rss_peak_mb: float
    drain_s: float  # from the sink's return until everything sent OK had arrived (or gave up)
    resume_s: float  # from the sink's return until the first span arrived again (retry backoff)
    p99_ms: float
    max_ms: float
    timeline: list[dict[str, float]] = field(default_factory=list)


@dataclass
class ProfileResult:
    rate_spans_s: float
    accepted_spans_s: float
    seconds: float
    samples: int
    gil_held_share: float  # of wall time, from the --gil sample count
    cpu_util: float  # process CPU over the raw profile window
    cpu_us_per_span: float
    threads: list[tuple[str, float]]  # CPU % of one core per thread name
    raw_path: str
    svg_path: str
    top_self: list[tuple[str, float]]
    top_inclusive: list[tuple[str, float]]
    by_file: list[tuple[str, float]]


@dataclass
class StageResult:
    batches: int
    spans: int
    us_per_span: dict[str, float]


@dataclass
class GateRate:
    rate_spans_s: float
    sidecar_us: list[float]  # CPU us per span of each round both sustained
    collector_us: list[float]
    ratios: list[float]  # sidecar / collector, round by round
    median_ratio: float
    threshold: float
    failed_rounds: list[str]  # a step not sustained (system, round, verdict)
    passed: bool


@dataclass
class BenchResults:
    command: str
    started: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    pool: dict[str, Any]
    systems: list[SystemResult] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    outage: list[OutageResult] = field(default_factory=list)
    profile: ProfileResult | None = None
    stages: StageResult | None = None
    gate: list[GateRate] = field(default_factory=list)
