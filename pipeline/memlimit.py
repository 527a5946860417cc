"""A process-wide memory limiter, in the spirit of the Collector's `memory_limiter` processor.

Above the soft limit (`memory_soft_limit_percent` of `memory_limit_mib`) new requests are
refused with 503/UNAVAILABLE and a retry hint, before they are decoded; requests already in
flight finish. Crossing it runs a full garbage collection and gives freed heap back to the
system (`malloc_trim`), so a past spike does not keep refusing once its memory is free.

The resident set size is read from /proc/self/statm (one small read), at most once every
`interval_s`; between reads the last verdict stands. Where there is no /proc the limiter is off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
import time
from collections.abc import Callable

import structlog

from .exporters.queue import QueueFull

log = structlog.get_logger("pipeline")

# How long nothing admitted may be held, above the soft limit, before a request is let in.
IDLE_ADMIT_S = 5.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class MemoryLimited(QueueFull):
    """The process is above its soft memory limit: 503/UNAVAILABLE, retry later."""

    reason = "memory_limit"

    def __init__(self, retry_after_s: float = 1.0) -> None:
        super().__init__(retry_after_s)
        self.args = ("memory limit reached",)


def _trimmer() -> Callable[[], object] | None:
    """glibc's malloc_trim(0): freed heap pages go back to the system (else RSS stays)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


def rss_bytes() -> int | None:
    """This process's resident set size, from /proc/self/statm (None without /proc)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class MemoryLimiter:
    def __init__(
        self,
        limit_mib: int,
        soft_percent: int = 80,
        interval_s: float = 0.05,
        busy: Callable[[], bool] = lambda: True,
    ) -> None:
        self.limit = limit_mib * 1024 * 1024  # 0: off
        self.soft = self.limit * soft_percent // 100
        self.interval_s = interval_s
        self.enabled = limit_mib > 0 and rss_bytes() is not None
        self.rss = rss_bytes() or 0
        self._ok = True
        self._checked = 0.0
        self._collected = 0.0
        self._lock = threading.Lock()
        self._trim = _trimmer()
        # Whether admitted data is still held (being processed or queued for export). When
        # nothing is and the RSS stays above the soft limit after a collection, waiting frees
        # nothing (the allocator keeps its arenas): refusing then would refuse for ever.
        self._busy = busy
        self._idle_since: float | None = None

    def ok(self) -> bool:
        """False while the RSS is above the soft limit (sampled every `interval_s`)."""
        if not self.enabled:
            return True
        now = time.monotonic()
        if now - self._checked < self.interval_s:
            return self._ok
        with self._lock:
            if now - self._checked < self.interval_s:  # another thread just did
                return self._ok
            rss = rss_bytes() or 0
            if rss > self.soft and now - self._collected >= 1.0:
                # crossing: collect and trim (at most once a second: a full collection of a
                # large heap takes tens of ms), then judge by what is left
                self._collected = now
                gc.collect()
                if self._trim is not None:
                    self._trim()
                rss = rss_bytes() or 0
            if self._busy():
                self._idle_since = None
            elif self._idle_since is None:
                self._idle_since = now
            # above the soft limit with nothing held for a while: the RSS is the allocator's
            # (waiting frees nothing), so a request is let in, reusing that memory
            stuck = self._idle_since is not None and now - self._idle_since >= IDLE_ADMIT_S
            ok = rss <= self.soft or stuck
            if ok != self._ok:
                log.warning(
                    "memory above the soft limit: refusing new requests"
                    if not ok
                    else "memory back under the soft limit: accepting requests",
                    rss_mib=rss >> 20,
                    soft_limit_mib=self.soft >> 20,
                    limit_mib=self.limit >> 20,
                )
            self.rss, self._ok, self._checked = rss, ok, time.monotonic()
            return ok
