"""The sending queue: order, retries, backpressure, accounting, shutdown, and the spool."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.exporters.queue import (
    PermanentError,
    QueueFull,
    QueueStats,
    RetryableError,
    SendingQueue,
)
from pipeline.exporters.spool import Spool


class Recorder:
    """A destination: records what it accepted; `down` makes it refuse (retryably)."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.attempts = 0
        self.down = False
        self.script: list[BaseException | None] = []  # per-attempt outcomes, then normal
        self.lock = threading.Lock()

    def __call__(self, data: bytes) -> None:
        with self.lock:
            self.attempts += 1
            if self.script:
                outcome = self.script.pop(0)
                if outcome is not None:
                    raise outcome
            elif self.down:
                raise RetryableError("down")
            self.got.append(data)


class Stats:
    def __init__(self) -> None:
        self.exported = 0
        self.failures = 0
        self.dropped: Counter[str] = Counter()

    def queue_stats(self) -> QueueStats:
        def exported(n: int) -> None:
            self.exported += n

        def failed() -> None:
            self.failures += 1

        def dropped(n: int, reason: str) -> None:
            self.dropped[reason] += n

        return QueueStats(exported, failed, dropped)


def _queue(
    sender: Callable[[bytes], None],
    stats: Stats,
    max_items: int = 1000,
    spool: Spool | None = None,
    **kw: float,
) -> SendingQueue:
    return SendingQueue(
        "test/traces",
        sender,
        max_items,
        retry_initial_s=kw.get("retry_initial_s", 0.01),
        retry_max_s=kw.get("retry_max_s", 0.05),
        max_elapsed_s=kw.get("max_elapsed_s", 0.0),
        stats=stats.queue_stats(),
        spool=spool,
        max_bytes=int(kw.get("max_bytes", 0)),
    )


def _send(q: SendingQueue, data: bytes, items: int = 1) -> None:
    q.reserve(items)
    q.put(data, items)


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder()


def test_in_order_with_retries_and_exact_accounting(recorder: Recorder) -> None:
    stats = Stats()
    recorder.script = [RetryableError("x"), ConnectionError("reset"), None, RetryableError("y")]
    q = _queue(recorder, stats)
    q.start()
    for i in range(5):
        _send(q, f"p{i}".encode(), i + 1)
    _wait(lambda: q.size == 0)
    assert recorder.got == [f"p{i}".encode() for i in range(5)]
    assert stats.exported == 15
    assert stats.failures == 3
    assert not stats.dropped
    assert q.shutdown(1.0) == 0


def test_full_queue_refuses_with_a_retry_hint_and_recovers(recorder: Recorder) -> None:
    stats = Stats()
    recorder.down = True
    q = _queue(recorder, stats, max_items=10, retry_initial_s=2.0, retry_max_s=4.0)
    q.start()
    _send(q, b"a", 6)
    _send(q, b"b", 4)
    _wait(lambda: recorder.attempts >= 1)
    with pytest.raises(QueueFull) as e:
        q.reserve(1)
    assert 1.0 <= e.value.retry_after_s <= 4.0  # the backoff in force, at least a second
    assert q.size == 10
    recorder.down = False
    q.shutdown(5.0)  # shutdown cuts the backoff short and drains
    assert recorder.got == [b"a", b"b"]
    assert stats.exported == 10


def test_an_oversized_request_fits_an_empty_queue_only(recorder: Recorder) -> None:
    q = _queue(recorder, Stats(), max_items=10)
    q.reserve(50)  # empty queue: taken, or a big request could never get in
    with pytest.raises(QueueFull):
        q.reserve(1)
    q.release(50)
    q.reserve(10)
    assert q.size == 10


def test_byte_bound_refuses_until_delivery_frees_the_bytes(recorder: Recorder) -> None:
    stats = Stats()
    recorder.down = True
    mib = 1024 * 1024
    q = _queue(recorder, stats, max_items=1000, max_bytes=mib, retry_initial_s=0.05)
    q.start()
    # Reserved at the request's size; the payload that replaces it is what stays counted.
    q.reserve(1, 600 * 1024)
    q.put(b"x" * (700 * 1024), 1, 600 * 1024)
    assert q.size_bytes == 700 * 1024
    with pytest.raises(QueueFull):
        q.reserve(1, 400 * 1024)  # items have room, bytes do not
    q.reserve(1, 300 * 1024)  # exactly at the bound: taken
    q.release(1, 300 * 1024)
    assert q.size_bytes == 700 * 1024
    recorder.down = False
    _wait(lambda: q.size == 0)
    assert q.size_bytes == 0
    q.reserve(1, 900 * 1024)  # room again
    q.release(1, 900 * 1024)
    q.shutdown(1.0)
    assert stats.exported == 1 and not stats.dropped


def test_bytes_are_counted_without_a_bound_and_not_for_a_spool(
    tmp_path: Path, recorder: Recorder
) -> None:
    recorder.down = True
    q = _queue(recorder, Stats(), retry_initial_s=0.05)  # no byte bound: still measured
    q.start()
    q.reserve(2, 100)
    q.put(b"y" * 150, 2, 100)
    assert q.size_bytes == 150
    recorder.down = False
    _wait(lambda: q.size == 0)
    assert q.size_bytes == 0
    q.shutdown(1.0)
    spooled = _queue(recorder, Stats(), spool=Spool(tmp_path / "sp", max_bytes=10_000))
    spooled.reserve(1, 300)
    assert spooled.size_bytes == 300  # held in memory until appended
    spooled.put(b"z" * 300, 1, 300)
    assert spooled.size_bytes == 0  # on disk
    spooled.shutdown(0)


def test_permanent_rejection_is_dropped_and_counted(recorder: Recorder) -> None:
    stats = Stats()
    recorder.script = [PermanentError("HTTP 400")]
    q = _queue(recorder, stats)
    q.start()
    _send(q, b"bad", 7)
    _send(q, b"good", 2)
    _wait(lambda: q.size == 0)
    assert recorder.got == [b"good"]
    assert stats.dropped == Counter(rejected=7)
    assert stats.exported == 2
    q.shutdown(1.0)


def test_retries_give_up_after_max_elapsed(recorder: Recorder) -> None:
    stats = Stats()
    recorder.down = True
    q = _queue(recorder, stats, max_elapsed_s=0.2)
    q.start()
    _send(q, b"x", 3)
    _wait(lambda: q.size == 0)
    assert stats.dropped == Counter(retries_exhausted=3)
    assert recorder.attempts >= 3  # it did retry first
    q.shutdown(0.1)


def test_an_absurd_retry_after_is_capped_not_a_give_up(recorder: Recorder) -> None:
    stats = Stats()
    recorder.script = [RetryableError("busy", retry_after_s=3600.0)]
    q = _queue(recorder, stats, retry_max_s=0.05, max_elapsed_s=5.0)
    q.start()
    _send(q, b"x")
    _wait(lambda: recorder.got == [b"x"], timeout=3)
    assert not stats.dropped
    q.shutdown(1.0)


def test_shutdown_drains_when_the_destination_is_up(recorder: Recorder) -> None:
    stats = Stats()
    q = _queue(recorder, stats)
    for i in range(100):
        _send(q, b"%d" % i)
    q.start()
    assert q.shutdown(5.0) == 0
    assert len(recorder.got) == 100 and stats.exported == 100
    with pytest.raises(QueueFull):  # no admissions once stopping
        q.reserve(1)


def test_shutdown_with_the_destination_down_ends_on_time_and_counts(recorder: Recorder) -> None:
    stats = Stats()
    recorder.down = True
    q = _queue(recorder, stats, retry_initial_s=0.05, retry_max_s=0.2)
    q.start()
    for i in range(4):
        _send(q, b"%d" % i, 5)
    t0 = time.monotonic()
    assert q.shutdown(0.5) == 20
    took = time.monotonic() - t0
    assert 0.4 <= took <= 1.2
    assert stats.dropped == Counter(shutdown=20)  # every item once, none twice
    assert stats.exported == 0 and q.size == 0


# -- with a spool ----------------------------------------------------------------------------


def test_spooled_items_survive_shutdown_and_replay_exactly_once(
    tmp_path: Path, recorder: Recorder
) -> None:
    stats = Stats()
    recorder.down = True
    q = _queue(recorder, stats, spool=Spool(tmp_path / "sp"))
    q.start()
    for i in range(20):
        _send(q, b"span-%02d" % i, 2)
    _wait(lambda: recorder.attempts >= 2)
    assert q.shutdown(0.3) == 40
    assert not stats.dropped  # kept, not dropped
    assert recorder.got == []

    up = Recorder()
    stats2 = Stats()
    q2 = _queue(up, stats2, max_items=40, spool=Spool(tmp_path / "sp"))
    assert q2.size == 40  # the replayed items count against capacity at once
    with pytest.raises(QueueFull):
        q2.reserve(1)
    q2.start()
    _wait(lambda: q2.size == 0)
    assert up.got == [b"span-%02d" % i for i in range(20)]
    assert stats2.exported == 40 and not stats2.dropped
    assert q2.shutdown(1.0) == 0
    q3 = _queue(up, Stats(), spool=Spool(tmp_path / "sp"))
    assert q3.size == 0  # nothing comes a second time
    q3.shutdown(0)


def test_spool_byte_bound_answers_queue_full(tmp_path: Path, recorder: Recorder) -> None:
    recorder.down = True
    sp = Spool(tmp_path / "sp", max_bytes=1000)
    q = _queue(recorder, Stats(), max_items=10_000, spool=sp)
    q.start()
    for _ in range(3):
        _send(q, b"x" * 400)
    assert sp.pending_bytes == 3 * 412
    with pytest.raises(QueueFull):
        q.reserve(1)
    assert q.size == 3
    q.shutdown(0)


def test_spool_write_failure_releases_the_reservation(tmp_path: Path, recorder: Recorder) -> None:
    sp = Spool(tmp_path / "sp")
    q = _queue(recorder, Stats(), spool=sp)
    q.reserve(5)

    def broken(data: bytes, items: int) -> None:
        raise OSError(28, "No space left on device")

    sp.append = broken  # type: ignore[method-assign]
    with pytest.raises(QueueFull):
        q.put(b"x", 5)
    assert q.size == 0
    q.shutdown(0)


def test_corrupt_spooled_record_is_counted_as_dropped(tmp_path: Path, recorder: Recorder) -> None:
    stats = Stats()
    sp = Spool(tmp_path / "sp", segment_bytes=40, fsync_interval_s=0)
    q = _queue(recorder, stats, spool=sp)
    _send(q, b"a" * 30, 4)  # segment 1
    _send(q, b"b" * 30, 6)  # segment 2
    seg1 = sorted((tmp_path / "sp").glob("*.seg"))[0]
    with open(seg1, "r+b") as f:
        f.seek(20)
        f.write(b"??")
    q.start()
    _wait(lambda: q.size == 0)
    assert recorder.got == [b"b" * 30]
    assert stats.dropped == Counter(spool_corrupt=4)
    assert stats.exported == 6
    q.shutdown(0.5)


# -- property: whatever the destination does, every item is accounted for exactly once -------

_OUTCOMES = st.sampled_from(["ok", "retry", "permanent", "error"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=15),
    outcomes=st.lists(_OUTCOMES, max_size=40),
    spooled=st.booleans(),
)
def test_every_item_is_exported_or_dropped_exactly_once(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    outcomes: list[str],
    spooled: bool,
) -> None:
    rec = Recorder()
    rec.script = [
        None
        if o == "ok"
        else RetryableError("r")
        if o == "retry"
        else PermanentError("p")
        if o == "permanent"
        else RuntimeError("unclassified")
        for o in outcomes
    ]
    stats = Stats()
    spool = Spool(tmp_path_factory.mktemp("sp"), fsync_interval_s=0) if spooled else None
    q = _queue(rec, stats, spool=spool, retry_initial_s=0.001, retry_max_s=0.002)
    q.start()
    for i, n in enumerate(sizes):
        _send(q, b"%d" % i, n)
    _wait(lambda: q.size == 0)
    assert q.shutdown(1.0) == 0
    delivered = [int(d) for d in rec.got]
    assert delivered == sorted(set(delivered))  # in order, none twice
    assert stats.exported == sum(sizes[i] for i in delivered)
    assert stats.exported + sum(stats.dropped.values()) == sum(sizes)
    assert set(stats.dropped) <= {"rejected"}
