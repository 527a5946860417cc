"""The on-disk spool: order, acks, replay after a restart, torn and corrupt data, disk bounds."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pipeline.exporters.spool import Spool, SpoolLocked


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


def _drain(sp: Spool) -> list[tuple[bytes, int]]:
    out = []
    while (rec := sp.peek()) is not None:
        out.append((rec.data, rec.items))
        sp.ack(rec)
    return out


def test_fifo_with_peek_until_ack(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s", fsync_interval_s=0)
    for i in range(5):
        sp.append(f"payload-{i}".encode(), i + 1)
    assert (sp.pending_items, sp.pending_records) == (15, 5)
    assert sp.pending_bytes == sum(12 + len(f"payload-{i}") for i in range(5))
    first = sp.peek()
    assert first is not None and first.data == b"payload-0" and first.items == 1
    again = sp.peek()  # not acked: the same record again
    assert again == first
    sp.ack(first)
    sp.ack(first)  # a second ack of the same record changes nothing
    assert (sp.pending_items, sp.pending_records) == (14, 4)
    assert _drain(sp) == [(f"payload-{i}".encode(), i + 1) for i in range(1, 5)]
    assert (sp.pending_items, sp.pending_bytes, sp.pending_records) == (0, 0, 0)
    assert sp.peek() is None
    sp.close()


def test_restart_replays_only_what_was_not_acked(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = Spool(d)
    for i in range(10):
        sp.append(bytes([i]) * 100, 3)
    for _ in range(4):
        rec = sp.peek()
        assert rec is not None
        sp.ack(rec)
    sp.close()

    sp2 = Spool(d)
    assert (sp2.pending_items, sp2.pending_records, sp2.recovered_records) == (18, 6, 6)
    assert sp2.pending_bytes == 6 * 112
    sp2.append(b"new", 1)  # appends go after the replayed records
    got = _drain(sp2)
    assert got == [(bytes([i]) * 100, 3) for i in range(4, 10)] + [(b"new", 1)]
    sp2.close()
    sp3 = Spool(d)
    assert sp3.pending_records == 0 and sp3.peek() is None
    sp3.close()


def test_segments_rotate_and_acked_ones_are_deleted(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = Spool(d, segment_bytes=1000, fsync_interval_s=0)
    for i in range(30):
        sp.append(bytes([i]) * 188, 1)  # 200 bytes a record: 5 per segment
    assert len(_segments(d)) == 6
    for _ in range(12):
        rec = sp.peek()
        assert rec is not None
        sp.ack(rec)
    # Segments 1 and 2 are behind the cursor and gone; the cursor is inside the third.
    assert _segments(d)[0].name == "0000000000000003.seg"
    assert len(_segments(d)) == 4
    sp.close()
    sp = Spool(d, segment_bytes=1000)
    assert sp.pending_records == 18
    assert [r[0][0] for r in _drain(sp)] == list(range(12, 30))
    sp.append(b"x", 1)  # writing goes on in the last segment (or a new one), never an old one
    rec = sp.peek()
    assert rec is not None and rec.data == b"x"
    sp.ack(rec)
    assert len(_segments(d)) <= 2
    sp.close()


def test_torn_tail_is_cut_off_and_appends_continue(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = Spool(d)
    for i in range(3):
        sp.append(f"r{i}".encode(), 1)
    sp.close()
    [seg] = _segments(d)
    good = seg.stat().st_size
    with open(seg, "ab") as f:  # a crash in the middle of an append: header and half a body
        f.write((1000).to_bytes(4, "little") + (7).to_bytes(4, "little") + b"\0" * 4 + b"abc")
    sp = Spool(d)
    assert (sp.pending_records, sp.pending_items) == (3, 3)
    assert sp.discarded_bytes == 15
    assert seg.stat().st_size == good
    sp.append(b"after", 2)
    assert _drain(sp) == [(b"r0", 1), (b"r1", 1), (b"r2", 1), (b"after", 2)]
    sp.close()


def test_corrupt_record_in_an_older_segment_loses_only_its_segment(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = Spool(d, segment_bytes=100)
    for i in range(6):
        sp.append(bytes([65 + i]) * 38, 1)  # 50 bytes a record: 2 per segment
    sp.close()
    segs = _segments(d)
    assert len(segs) == 3
    raw = bytearray(segs[0].read_bytes())
    raw[50 + 12 + 5] ^= 0xFF  # flip a payload byte of the second record of segment 1
    segs[0].write_bytes(bytes(raw))
    sp = Spool(d, segment_bytes=100)
    assert sp.pending_records == 5
    assert sp.discarded_bytes == 50
    assert [r[0][0] for r in _drain(sp)] == [65, 67, 68, 69, 70]
    sp.close()


def test_corruption_found_while_reading_is_skipped_and_recounted(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = Spool(d, segment_bytes=100, fsync_interval_s=0)
    for i in range(4):
        sp.append(bytes([65 + i]) * 38, 2)
    seg1 = _segments(d)[0]
    with open(seg1, "r+b") as f:  # the disk rots under a running spool
        f.seek(12)
        f.write(b"\xff\xff")
    assert sp.peek() is None  # unreadable: the rest of segment 1 is skipped...
    assert (sp.pending_records, sp.pending_items) == (2, 4)  # ...and what is left recounted
    assert [r[0][0] for r in _drain(sp)] == [67, 68]
    sp.close()


def test_corrupt_cursor_replays_from_the_oldest_segment(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = Spool(d)
    for i in range(3):
        sp.append(f"r{i}".encode(), 1)
    rec = sp.peek()
    assert rec is not None
    sp.ack(rec)
    sp.close()
    cursor = d / "cursor"
    raw = bytearray(cursor.read_bytes())
    raw[0] ^= 0x01
    cursor.write_bytes(bytes(raw))
    sp = Spool(d)
    # At-least-once: the acked record comes again rather than anything being lost.
    assert [r[0] for r in _drain(sp)] == [b"r0", b"r1", b"r2"]
    sp.close()


def test_cursor_past_a_deleted_segment_moves_to_the_next(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = Spool(d, segment_bytes=30)
    for i in range(4):
        sp.append(f"rec-{i}".encode() * 2, 1)  # 22 bytes: 2 per segment
    sp.close()
    _segments(d)[0].unlink()  # removed by hand while the cursor points at it
    sp = Spool(d, segment_bytes=30)
    assert [r[0] for r in _drain(sp)] == [b"rec-2rec-2", b"rec-3rec-3"]
    sp.close()


def test_one_owner_per_directory(tmp_path: Path) -> None:
    d = tmp_path / "s"
    sp = Spool(d)
    with pytest.raises(SpoolLocked, match="in use by another process"):
        Spool(d)
    sp.close()
    sp.close()  # idempotent
    Spool(d).close()


def test_closed_spool_refuses_appends_and_ignores_acks(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s")
    sp.append(b"a", 1)
    rec = sp.peek()
    assert rec is not None
    sp.close()
    with pytest.raises(OSError, match="closed"):
        sp.append(b"b", 1)
    sp.ack(rec)  # a worker finishing after shutdown: the record stays for the next start
    assert sp.peek() is None
    sp = Spool(tmp_path / "s")
    assert sp.pending_records == 1
    sp.close()


def test_background_fsync_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    sp = Spool(tmp_path / "s", fsync_interval_s=0.02)
    sp.append(b"a", 1)
    assert synced == []  # not on the append itself...
    import time

    deadline = time.monotonic() + 5
    while not synced and time.monotonic() < deadline:
        time.sleep(0.01)
    assert synced  # ...but within the interval
    sp.close()


class SpoolMachine(RuleBasedStateMachine):
    """Random appends, deliveries and restarts against a plain deque as the model."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name) / "spool"
        self.spool = Spool(self.dir, segment_bytes=256, fsync_interval_s=0)
        self.model: deque[tuple[bytes, int]] = deque()

    @rule(data=st.binary(max_size=120), items=st.integers(min_value=0, max_value=1000))
    def append(self, data: bytes, items: int) -> None:
        self.spool.append(data, items)
        self.model.append((data, items))

    @precondition(lambda self: bool(self.model))
    @rule()
    def deliver(self) -> None:
        rec = self.spool.peek()
        assert rec is not None
        assert (rec.data, rec.items) == self.model.popleft()
        self.spool.ack(rec)

    @rule()
    def restart(self) -> None:
        self.spool.close()
        self.spool = Spool(self.dir, segment_bytes=256, fsync_interval_s=0)

    @invariant()
    def counts_match(self) -> None:
        assert self.spool.pending_records == len(self.model)
        assert self.spool.pending_items == sum(i for _, i in self.model)
        assert self.spool.pending_bytes == sum(12 + len(d) for d, _ in self.model)
        # Disk follows what is pending: at most one segment of already-acked records.
        on_disk = sum(p.stat().st_size for p in _segments(self.dir))
        assert on_disk <= self.spool.pending_bytes + 256 + 12 + 120

    def teardown(self) -> None:
        self.spool.close()
        self.tmp.cleanup()


TestSpoolMachine = SpoolMachine.TestCase
TestSpoolMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
