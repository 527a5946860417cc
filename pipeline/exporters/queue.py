"""A bounded sending queue with retries, in front of one destination.

Capacity is counted in items (spans, log records, points) and, in memory, in payload bytes
(`max_bytes`, what bounds the RSS), reserved *before* a request is processed: a full queue
makes the receiver answer 503/UNAVAILABLE without touching the metrics, so the sender's retry is not counted twice. One worker thread delivers batches in
order; a retryable failure keeps the batch at the head and backs off exponentially (or as the
destination's Retry-After says), so an outage fills the queue and backpressure reaches the
senders. Nothing is dropped silently: every give-up is counted.

The payloads wait in a store (queue_store.py): in memory, or with a `Spool` on disk, where the
worker reads them in order and acks what it delivered (or gave up on), and what is still there
at shutdown stays for the next start (not dropped). Capacity then counts the spooled items, and
the spool's byte bound is enforced at admission too. When to retry is the `RetryPolicy`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from .queue_store import MemoryStore, Payload, QueueStore, SpoolStore
from .retry import PermanentError, RetryableError, RetryPolicy
from .spool import Spool

__all__ = [
    "PermanentError",
    "QueueFull",
    "QueueStats",
    "RetryableError",
    "Sender",
    "SendingQueue",
]

log = structlog.get_logger("pipeline.exporters")


class QueueFull(Exception):
    """No room for the request's items; the receiver answers 503/UNAVAILABLE."""

    reason = "queue_full"  # as counted in llm_pipeline_rejected_items_total{reason}

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("sending queue is full")
        self.retry_after_s = retry_after_s


Sender = Callable[[bytes], None]  # raises RetryableError / PermanentError


@dataclass
class QueueStats:
    on_exported: Callable[[int], None] = lambda n: None
    on_failure: Callable[[], None] = lambda: None
    on_dropped: Callable[[int, str], None] = lambda n, reason: None


class SendingQueue:
    def __init__(
        self,
        name: str,
        sender: Sender,
        max_items: int,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        max_elapsed_s: float = 300.0,
        stats: QueueStats | None = None,
        spool: Spool | None = None,
        max_bytes: int = 0,
    ) -> None:
        self.name = name
        # Bound on the in-memory bytes (payloads queued + reservations), 0 = none; a spool has
        # its own bound on disk, and a spooled payload holds no memory once appended.
        self.max_bytes = max_bytes if spool is None else 0
        self._bytes = 0
        self._send = sender
        self.max_items = max_items
        self.retry = RetryPolicy(retry_initial_s, retry_max_s, max_elapsed_s)
        self.stats = stats or QueueStats()
        self.spool = spool
        self._store: QueueStore = SpoolStore(spool) if spool is not None else MemoryStore()
        self._items = self._store.pending_items  # queued + reserved
        self._cv = threading.Condition()
        self._stopping = False
        self._backoff_until = 0.0
        self._stop = threading.Event()
        self._drain_deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"export-{name}", daemon=True)

    @property
    def size(self) -> int:
        return self._items

    def start(self) -> None:
        self._thread.start()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def reserve(self, items: int, nbytes: int = 0) -> None:
        """Claim room for `items` (and `nbytes` of payload) or raise QueueFull (before any
        processing happens)."""
        with self._cv:
            if self._stopping:
                raise QueueFull(1.0)
            full = self._items + items > self.max_items
            if self.max_bytes and self._bytes + nbytes > self.max_bytes:
                full = True
            if self._store.full():
                full = True
            if full and self._items > 0:
                wait = max(1.0, self._backoff_until - time.monotonic())
                raise QueueFull(min(wait, self.retry.max_s))
            self._items += items
            self._bytes += nbytes

    def release(self, items: int, nbytes: int = 0) -> None:
        """Give back a reservation that will not be used (processing failed)."""
        with self._cv:
            self._items -= items
            self._bytes -= nbytes
            self._cv.notify_all()

    def put(self, data: bytes, items: int, reserved_bytes: int = 0) -> None:
        """Enqueue a reserved payload; QueueFull (reservation released) if the spool fails."""
        try:
            self._store.push(data, items)
        except OSError as e:
            log.error("spool write failed", queue=self.name, items=items, error=str(e))
            self.release(items, reserved_bytes)
            raise QueueFull(self.retry.initial_s) from e
        with self._cv:
            # The reservation was the request's size; from now on the payload's counts (none
            # once it is on disk).
            self._bytes += (0 if self._store.durable else len(data)) - reserved_bytes
            self._cv.notify_all()

    def _next(self) -> Payload | None:
        """The payload at the head (read from the spool when there is one)."""
        p, lost = self._store.head()
        if lost > 0:
            self.stats.on_dropped(lost, "spool_corrupt")
            with self._cv:
                self._items -= lost
                self._cv.notify_all()
        return p

    def _done(self, p: Payload) -> None:
        """The head was delivered or given up on: remove it."""
        removed = self._store.pop(p)
        with self._cv:
            if not removed:
                return
            if not self._store.durable:
                self._bytes -= len(p.data)
            self._items -= p.items
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._store.waiting() and not self._stopping:
                    self._cv.wait()
                if not self._store.waiting():
                    return
                if self._stopping and time.monotonic() >= self._drain_deadline:
                    return  # out of time: what is left is shutdown's to count (or keep)
            try:
                p = self._next()
            except OSError as e:  # the spool's disk failed under us: try again shortly
                log.error("spool read failed", queue=self.name, error=str(e))
                if self._stop.wait(1.0):
                    return
                continue
            if p is None:
                continue
            if not self._deliver(p):
                return  # shutting down and out of time: the rest stays queued
            self._done(p)

    def _deliver(self, p: Payload) -> bool:
        """Send with retries; False when shutdown's deadline passed first (p is not done)."""
        attempt = 0
        while True:
            try:
                self._send(p.data)
            except Exception as e:  # retryable, including network errors we did not classify
                self.stats.on_failure()
                if not self.retry.retryable(e):
                    self.stats.on_dropped(p.items, "rejected")
                    log.warning(
                        "export rejected, dropped", queue=self.name, items=p.items, error=str(e)
                    )
                    return True
                attempt += 1
                delay = self.retry.delay(attempt, e)
                if self.retry.gives_up(time.monotonic() - p.enqueued_at, delay):
                    self.stats.on_dropped(p.items, "retries_exhausted")
                    log.error("export gave up", queue=self.name, items=p.items, error=str(e))
                    return True
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(
                        "export failed, retrying",
                        queue=self.name,
                        attempt=attempt,
                        delay_s=round(delay, 2),
                        error=str(e),
                    )
                self._backoff_until = time.monotonic() + delay
                if self._stop.is_set():
                    remaining = self._drain_deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    time.sleep(min(delay, remaining))
                else:
                    self._stop.wait(delay)  # shutdown cuts the wait short
                continue
            self.stats.on_exported(p.items)
            return True

    def shutdown(self, timeout_s: float) -> int:
        """Drain (see `_drain`), then close the sender: the queue owns its destination."""
        left = self._drain(timeout_s)
        close = getattr(self._send, "close", None)
        if close is not None:
            close()
        return left

    def _drain(self, timeout_s: float) -> int:
        """Drain for at most `timeout_s`; returns the items still queued.

        In memory they are counted as dropped; in a spool they stay for the next start.
        """
        deadline = time.monotonic() + timeout_s
        with self._cv:
            self._drain_deadline = deadline
            self._stopping = True
            self._stop.set()
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + 0.5)
        if self._store.durable:
            left = self._store.close()
            if left:
                log.warning(
                    "undelivered items kept in the spool for the next start",
                    queue=self.name,
                    items=left,
                    spool=self._store.where(),
                )
            return left
        with self._cv:
            left = self._store.close()
            if left:
                self.stats.on_dropped(left, "shutdown")
                log.warning("undelivered items dropped at shutdown", queue=self.name, items=left)
                self._items = 0
                self._bytes = 0
        return left
