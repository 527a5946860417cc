"""A bounded sending queue with retries, in front of one destination.

Capacity is counted in items (spans, log records, points), reserved *before* a request is
processed: a full queue makes the receiver answer 503/UNAVAILABLE without touching the
metrics, so the sender's retry is not counted twice. One worker thread delivers batches in
order; a retryable failure keeps the batch at the head and backs off exponentially (or as the
destination's Retry-After says), so an outage fills the queue and backpressure reaches the
senders. Nothing is dropped silently: every give-up is counted.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("pipeline.exporters")


class QueueFull(Exception):
    """No room for the request's items; the receiver answers 503/UNAVAILABLE."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("sending queue is full")
        self.retry_after_s = retry_after_s


class RetryableError(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(Exception):
    """The destination refused the data for good (e.g. HTTP 400): dropped and counted."""


@dataclass(slots=True)
class Payload:
    data: bytes  # wire bytes for the sender (protobuf, or a JSON line for the file sink)
    items: int
    enqueued_at: float


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
    ) -> None:
        self.name = name
        self._send = sender
        self.max_items = max_items
        self._initial = retry_initial_s
        self._max = retry_max_s
        self._max_elapsed = max_elapsed_s
        self.stats = stats or QueueStats()
        self._q: deque[Payload] = deque()
        self._items = 0  # queued + reserved
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

    def reserve(self, items: int) -> None:
        """Claim room for `items` or raise QueueFull (before any processing happens)."""
        with self._cv:
            if self._stopping:
                raise QueueFull(1.0)
            if self._items + items > self.max_items and self._items > 0:
                wait = max(1.0, self._backoff_until - time.monotonic())
                raise QueueFull(min(wait, self._max))
            self._items += items

    def release(self, items: int) -> None:
        """Give back a reservation that will not be used (processing failed)."""
        with self._cv:
            self._items -= items
            self._cv.notify_all()

    def put(self, data: bytes, items: int) -> None:
        """Enqueue a reserved payload."""
        with self._cv:
            self._q.append(Payload(data, items, time.monotonic()))
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._stopping:
                    self._cv.wait()
                if not self._q:
                    return
                p = self._q[0]
            self._deliver(p)
            with self._cv:
                self._q.popleft()
                self._items -= p.items
                self._cv.notify_all()

    def _deliver(self, p: Payload) -> None:
        attempt = 0
        while True:
            try:
                self._send(p.data)
            except PermanentError as e:
                self.stats.on_failure()
                self.stats.on_dropped(p.items, "rejected")
                log.warning(
                    "export rejected, dropped", queue=self.name, items=p.items, error=str(e)
                )
                return
            except Exception as e:  # retryable, including network errors we did not classify
                self.stats.on_failure()
                attempt += 1
                hint = e.retry_after_s if isinstance(e, RetryableError) else None
                delay = min(self._max, self._initial * 2 ** (attempt - 1))
                delay = hint if hint is not None else delay * random.uniform(0.8, 1.2)
                elapsed = time.monotonic() - p.enqueued_at
                if self._max_elapsed and elapsed + delay > self._max_elapsed:
                    self.stats.on_dropped(p.items, "retries_exhausted")
                    log.error("export gave up", queue=self.name, items=p.items, error=str(e))
                    return
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
                        self.stats.on_dropped(p.items, "shutdown")
                        return
                    time.sleep(min(delay, remaining))
                else:
                    self._stop.wait(delay)  # shutdown cuts the wait short
                continue
            self.stats.on_exported(p.items)
            return

    def shutdown(self, timeout_s: float) -> int:
        """Drain for at most `timeout_s`; returns the items still queued (counted as dropped)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            self._drain_deadline = deadline
            self._stopping = True
            self._stop.set()
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + 0.5)
        with self._cv:
            left = sum(p.items for p in self._q)
            if left:
                self.stats.on_dropped(left, "shutdown")
                self._q.clear()
                self._items = 0
        return left
