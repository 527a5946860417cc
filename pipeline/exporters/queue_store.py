"""Where a sending queue's payloads wait, in order: in memory, or on disk in a `Spool`.

One producer side (`push`, from the processing thread) and one consumer (the queue's worker:
`head`, then `pop` once the head was delivered or given up on). The queue keeps the item and
byte accounting and the admission bounds; a store says what it holds and what its own bound is.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from .spool import Record, Spool


@dataclass(slots=True)
class Payload:
    data: bytes  # wire bytes for the sender (protobuf, or a JSON line for the file sink)
    items: int
    enqueued_at: float


class QueueStore(Protocol):
    # True: what is left at shutdown stays for the next start (else it is dropped); and the
    # payloads do not hold memory once pushed (the queue's `max_bytes` does not bound them).
    durable: bool

    @property
    def pending_items(self) -> int:
        """Items held (at start: what a spool kept from the previous run)."""
        ...

    def full(self) -> bool:
        """The store's own bound is reached (a spool's bytes on disk)."""
        ...

    def push(self, data: bytes, items: int) -> None:
        """Append a payload; OSError when the disk refuses it."""
        ...

    def waiting(self) -> bool: ...

    def head(self) -> tuple[Payload | None, int]:
        """The payload at the head (None: none, or unreadable and skipped) and the items lost
        skipping unreadable ones; OSError when the disk fails."""
        ...

    def pop(self, p: Payload) -> bool:
        """Remove the head `p`; False when it was already gone (dropped at shutdown)."""
        ...

    def close(self) -> int:
        """At shutdown: the items left (kept when durable, else dropped here)."""
        ...

    def where(self) -> str: ...


class MemoryStore:
    durable = False

    def __init__(self) -> None:
        self._q: deque[Payload] = deque()
        self._lock = threading.Lock()

    @property
    def pending_items(self) -> int:
        with self._lock:
            return sum(p.items for p in self._q)

    def full(self) -> bool:
        return False  # bounded by the queue's items and bytes

    def push(self, data: bytes, items: int) -> None:
        with self._lock:
            self._q.append(Payload(data, items, time.monotonic()))

    def waiting(self) -> bool:
        return bool(self._q)

    def head(self) -> tuple[Payload | None, int]:
        with self._lock:
            return (self._q[0] if self._q else None), 0

    def pop(self, p: Payload) -> bool:
        with self._lock:
            if not self._q or self._q[0] is not p:
                return False  # shutdown gave up on the queue while this send was under way
            self._q.popleft()
            return True

    def close(self) -> int:
        with self._lock:
            left = sum(p.items for p in self._q)
            self._q.clear()
        return left

    def where(self) -> str:
        return "memory"


class SpoolStore:
    durable = True

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._head: Record | None = None  # the spooled record being delivered

    @property
    def pending_items(self) -> int:
        return self.spool.pending_items

    def full(self) -> bool:
        return self.spool.pending_bytes >= self.spool.max_bytes

    def push(self, data: bytes, items: int) -> None:
        self.spool.append(data, items)

    def waiting(self) -> bool:
        return self.spool.pending_records > 0

    def head(self) -> tuple[Payload | None, int]:
        before = self.spool.pending_items
        rec = self.spool.peek()
        if rec is None:  # unreadable: the spool skipped it and recounted
            return None, max(0, before - self.spool.pending_items)
        self._head = rec
        return Payload(rec.data, rec.items, time.monotonic()), 0

    def pop(self, p: Payload) -> bool:
        if self._head is not None:
            self.spool.ack(self._head)  # a no-op once shutdown closed the spool
            self._head = None
        return True

    def close(self) -> int:
        left = self.spool.pending_items
        self.spool.close()
        return left

    def where(self) -> str:
        return str(self.spool.directory)
