"""An on-disk spool behind a sending queue: payloads survive a destination outage *and* a restart.

Layout of a spool directory (one per sending queue):

    0000000000000001.seg   segment files: records appended in order
    0000000000000002.seg
    cursor                 where the first unacknowledged record starts (segment, offset)
    lock                   flock()ed while a sidecar owns the directory

A record is a 12-byte header, little endian `length:u32 items:u32 crc32:u32`, then `length`
bytes of payload; the CRC covers the length, the item count and the payload, so a torn or
corrupted record is recognised. Records are appended with one `write()` (in the page cache at
once, so a killed process loses nothing); the segment is fsynced every `fsync_interval_s` by a
background thread, or after every append when it is 0. The writer starts a new segment once the
current one passes `segment_bytes`.

The queue's worker reads the record at the cursor (`peek`), delivers it, then `ack`s it: the
cursor moves past it (a 20-byte `pwrite`, CRC-protected) and segments wholly behind the cursor
are deleted, so disk use follows what is still undelivered. On open, segments are scanned from
the cursor: pending items and bytes are counted, and a torn tail (a crash mid-append) is cut
off. Delivery is at-least-once: a record delivered but not yet acked when the process died (or
whose cursor update was lost with the machine's power) is sent again on the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("pipeline.exporters")

_HEADER = struct.Struct("<III")  # length, items, crc32
_LEN_ITEMS = struct.Struct("<II")
_CURSOR = struct.Struct("<QQI")  # segment, offset, crc32 of the first 16 bytes
_SUFFIX = ".seg"
MAX_RECORD_BYTES = 1 << 30  # a larger length in a header means the header is garbage


class SpoolLocked(OSError):
    """Another process owns the spool directory."""


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled payload, as read from disk by `peek`."""

    data: bytes
    items: int
    segment: int
    offset: int  # where the record starts in its segment
    end: int  # where the next record starts


def _crc(data: bytes, items: int) -> int:
    return zlib.crc32(data, zlib.crc32(_LEN_ITEMS.pack(len(data), items)))


def _seg_name(seq: int) -> str:
    return f"{seq:016d}{_SUFFIX}"


class Spool:
    """Append-only segment files with a persistent read cursor; thread-safe.

    One writer side (`append`, from the receivers' threads) and one reader side (`peek` and
    `ack`, from the queue's worker thread).
    """

    def __init__(
        self,
        directory: str | Path,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 8 << 20,
        fsync_interval_s: float = 0.2,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()
        self._closed = False
        self._dirty = False
        self.pending_items = 0
        self.pending_bytes = 0  # record bytes (headers included) not yet acked
        self.pending_records = 0
        self.recovered_records = 0  # found on open
        self.discarded_bytes = 0  # torn or corrupt bytes cut off or skipped

        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._lock_fd)
            raise SpoolLocked(
                f"spool directory {self.directory} is in use by another process"
            ) from e
        self._cursor_fd = os.open(self.directory / "cursor", os.O_RDWR | os.O_CREAT, 0o600)
        self._read_fd = -1
        self._read_seq = -1
        self._write_fd = -1
        self._recover()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if fsync_interval_s > 0:
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"spool-fsync-{self.directory.name}", daemon=True
            )
            self._flusher.start()

    # -- opening --------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        out = []
        for p in self.directory.iterdir():
            if p.name.endswith(_SUFFIX) and p.name[: -len(_SUFFIX)].isdigit():
                out.append(int(p.name[: -len(_SUFFIX)]))
        return sorted(out)

    def _path(self, seq: int) -> Path:
        return self.directory / _seg_name(seq)

    def _read_cursor(self) -> tuple[int, int] | None:
        raw = os.pread(self._cursor_fd, _CURSOR.size, 0)
        if len(raw) != _CURSOR.size:
            return None
        seq, off, crc = _CURSOR.unpack(raw)
        if zlib.crc32(raw[:16]) != crc:
            log.warning(
                "spool cursor is corrupt; replaying from the oldest segment",
                spool=str(self.directory),
            )
            return None
        return seq, off

    def _write_cursor(self) -> None:
        head = struct.pack("<QQ", self._cur_seq, self._cur_off)
        os.pwrite(self._cursor_fd, head + struct.pack("<I", zlib.crc32(head)), 0)

    def _recover(self) -> None:
        segs = self._segments()
        cursor = self._read_cursor() or (segs[0] if segs else 1, 0)
        self._cur_seq, self._cur_off = cursor
        for seq in segs:
            if seq < self._cur_seq:  # acked already; the unlink was interrupted
                self._path(seq).unlink(missing_ok=True)
        live = [s for s in segs if s >= self._cur_seq]
        if not live or live[0] != self._cur_seq:  # the cursor's segment is gone: next one
            self._cur_seq, self._cur_off = (live[0] if live else self._cur_seq), 0
        for i, seq in enumerate(live):
            size = self._path(seq).stat().st_size
            if seq == self._cur_seq:
                self._cur_off = min(self._cur_off, size)
            end = self._scan(seq, self._cur_off if seq == self._cur_seq else 0)
            if end < size:
                # The last segment's tail is torn by a crash mid-append; anywhere else the
                # rest of the segment is corrupt and lost. Either way it is cut off.
                self.discarded_bytes += size - end
                log.warning(
                    "spool: cut off a torn tail" if i == len(live) - 1 else "spool: corrupt",
                    spool=str(self.directory),
                    segment=seq,
                    at=end,
                    bytes=size - end,
                )
                with open(self._path(seq), "r+b") as f:
                    f.truncate(end)
        self.recovered_records = self.pending_records
        if live:
            self._write_seq = live[-1]
            self._write_off = self._path(live[-1]).stat().st_size
        else:
            self._write_seq, self._write_off = self._cur_seq, 0
        self._write_fd = os.open(
            self._path(self._write_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        self._write_cursor()
        if self.pending_records:
            log.info(
                "spool: replaying undelivered items from a previous run",
                spool=str(self.directory),
                items=self.pending_items,
                records=self.pending_records,
                bytes=self.pending_bytes,
            )

    def _scan(self, seq: int, start: int) -> int:
        """Count the valid records of a segment from `start`; where the valid part ends."""
        with open(self._path(seq), "rb") as f:
            f.seek(start)
            pos = start
            while True:
                head = f.read(_HEADER.size)
                if len(head) < _HEADER.size:
                    return pos
                length, items, crc = _HEADER.unpack(head)
                if length > MAX_RECORD_BYTES:
                    return pos
                data = f.read(length)
                if len(data) < length or _crc(data, items) != crc:
                    return pos
                pos += _HEADER.size + length
                self.pending_items += items
                self.pending_bytes += _HEADER.size + length
                self.pending_records += 1

    # -- writing --------------------------------------------------------------------------

    def append(self, data: bytes, items: int) -> None:
        """Append one payload; raises OSError (nothing appended) when the disk refuses it."""
        if len(data) > MAX_RECORD_BYTES:
            raise OSError(f"payload of {len(data)} bytes is too large for the spool")
        rec = _HEADER.pack(len(data), items, _crc(data, items)) + data
        with self._lock:
            if self._closed:
                raise OSError("spool is closed")
            if self._write_off >= self.segment_bytes:
                self._rotate()
            try:
                n = os.write(self._write_fd, rec)
                while n < len(rec):  # short writes: regular files rarely do this
                    n += os.write(self._write_fd, rec[n:])
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._write_fd, self._write_off)
                raise
            self._write_off += len(rec)
            self.pending_items += items
            self.pending_bytes += len(rec)
            self.pending_records += 1
            if self.fsync_interval_s <= 0:
                os.fsync(self._write_fd)
            else:
                self._dirty = True

    def _rotate(self) -> None:
        os.fsync(self._write_fd)
        os.close(self._write_fd)
        self._write_seq += 1
        self._write_off = 0
        self._write_fd = os.open(
            self._path(self._write_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync(self) -> None:
        """fsync what was appended and where the cursor is."""
        with self._lock:
            if self._closed or not self._dirty:
                return
            self._dirty = False
            os.fsync(self._write_fd)
            os.fsync(self._cursor_fd)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval_s):
            try:
                self.sync()
            except OSError as e:
                log.error("spool fsync failed", spool=str(self.directory), error=str(e))

    # -- reading --------------------------------------------------------------------------

    def _skip_finished(self) -> None:
        """Move the cursor past segments it has read to the end of; delete them."""
        while self._cur_seq < self._write_seq:
            size = self._path(self._cur_seq).stat().st_size
            if self._cur_off < size:
                return
            done = self._cur_seq
            if self._read_seq == done:
                os.close(self._read_fd)
                self._read_fd, self._read_seq = -1, -1
            self._cur_seq, self._cur_off = done + 1, 0
            self._write_cursor()
            self._path(done).unlink(missing_ok=True)

    def peek(self) -> Record | None:
        """The first unacknowledged record, or None when there is none (or it was corrupt)."""
        with self._lock:
            if self._closed or self.pending_records == 0:
                return None
            self._skip_finished()
            if self._read_seq != self._cur_seq:
                if self._read_fd >= 0:
                    os.close(self._read_fd)
                self._read_fd = os.open(self._path(self._cur_seq), os.O_RDONLY)
                self._read_seq = self._cur_seq
            head = os.pread(self._read_fd, _HEADER.size, self._cur_off)
            if len(head) == _HEADER.size:
                length, items, crc = _HEADER.unpack(head)
                if length <= MAX_RECORD_BYTES:
                    data = os.pread(self._read_fd, length, self._cur_off + _HEADER.size)
                    if len(data) == length and _crc(data, items) == crc:
                        end = self._cur_off + _HEADER.size + length
                        return Record(data, items, self._cur_seq, self._cur_off, end)
            self._corrupt()
            return None

    def _corrupt(self) -> None:
        """The record at the cursor is unreadable: skip its segment and recount what is left."""
        seq = self._cur_seq
        log.error(
            "spool: unreadable record, skipping the rest of the segment",
            spool=str(self.directory),
            segment=seq,
            at=self._cur_off,
        )
        if seq == self._write_seq:  # the segment being written: start a new one to skip to
            self._rotate()
        self._cur_seq, self._cur_off = seq + 1, 0
        self._write_cursor()
        self.pending_items = self.pending_bytes = self.pending_records = 0
        for s in self._segments():
            if s < self._cur_seq:
                self._path(s).unlink(missing_ok=True)
            else:
                self._scan(s, 0)

    def ack(self, record: Record) -> None:
        """The record was delivered (or given up on): move the cursor past it."""
        with self._lock:
            if self._closed or (record.segment, record.offset) != (self._cur_seq, self._cur_off):
                return
            self._cur_off = record.end
            self.pending_items -= record.items
            self.pending_bytes -= record.end - record.offset
            self.pending_records -= 1
            self._write_cursor()
            self._dirty = True
            self._skip_finished()

    # -- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """fsync and release the directory; later calls do nothing."""
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._write_fd, self._cursor_fd):
                with contextlib.suppress(OSError):
                    os.fsync(fd)
            for fd in (self._write_fd, self._read_fd, self._cursor_fd):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
