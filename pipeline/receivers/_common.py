"""What both receivers share: the OTLP response, the bearer check, counting and logging what
they refuse, and the budget of request bytes in flight."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from google.protobuf.message import Message

from .._http import Tracked
from ..service import Accepted, Service
from .decode import RESPONSE_TYPES

_REJECTED_FIELD = {
    "traces": "rejected_spans",
    "logs": "rejected_log_records",
    "metrics": "rejected_data_points",
}


def export_response(signal: str, result: Accepted) -> Message:
    """The Export*ServiceResponse, with partial_success when some items were rejected."""
    resp = RESPONSE_TYPES[signal]()
    if result.rejected:
        ps = resp.partial_success
        setattr(ps, _REJECTED_FIELD[signal], result.rejected)
        ps.error_message = result.message
    return resp


def bearer_ok(expected: str | None, header: str | bytes | None) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time. Any bytes may arrive
    (HTTP header values are latin-1, gRPC metadata may hold anything): compared as UTF-8
    bytes, so a non-ASCII value is a wrong token, not an exception."""
    if not expected:
        return True
    if not header:
        return False
    raw = header if isinstance(header, bytes) else header.encode("utf-8", "surrogateescape")
    scheme, _, token = raw.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(
        token.strip(), expected.encode("utf-8")
    )


class RateLimitedLog:
    """One warning per key per `interval_s`; the ones in between are only counted, and the
    count is reported with the next line (a flood of bad requests must not flood the log)."""

    def __init__(self, logger: Any, interval_s: float = 10.0) -> None:
        self._log = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[tuple[str, ...], float] = {}
        self._suppressed: dict[tuple[str, ...], int] = {}

    def warning(self, key: tuple[str, ...], event: str, weight: int = 1, **fields: Any) -> bool:
        """Log unless `key` was logged less than `interval_s` ago; True when logged. `weight`:
        how many refusals this one line stands for (a transport may report several at once)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + weight
                return False
            if len(self._last) > 1024:  # keys are bounded in practice; never let them grow
                self._last.clear()
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields["suppressed_since_last"] = suppressed
        self._log.warning(event, **fields)
        return True


# Refusals on every receiver: one line per (transport, signal, reason) per 10 s.
REFUSALS = RateLimitedLog(structlog.get_logger("pipeline.receivers"))


def refuse(
    service: Service,
    transport: str,
    signal: str,
    reason: str,
    detail: str,
    items: int = 0,
    **fields: Any,
) -> None:
    """Count a refusal in llm_pipeline_rejected_items_total{signal, reason} and log it
    (rate-limited) with the reason and what the sender was told."""
    service.reject(signal, reason, items)
    REFUSALS.warning(
        (transport, signal, reason),
        "request refused",
        transport=transport,
        signal=signal,
        reason=reason,
        detail=detail[:200],
        **fields,
    )


def refuse_connections(transport: str, reason: str, detail: str, count: int = 1) -> None:
    """Log (rate-limited, like `refuse`) connections a transport refused or closed: no items
    were refused, so nothing is counted in rejected_items (the caller counts connections)."""
    REFUSALS.warning(
        (transport, "", reason),
        "connections refused",
        weight=count,
        transport=transport,
        reason=reason,
        count=count,
        detail=detail[:200],
    )


class ByteBudget:
    """Bytes of request bodies (decompressed) being read or decoded at once, across
    connections. Reserved as they arrive; when there is no room, slow senders holding bytes
    may be closed for it (`reclaim`, set by the server), and the room they give back waited
    for (a second at most)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cv = threading.Condition()
        self.reclaim: Callable[[int, Tracked | None], bool] | None = None

    def try_reserve(self, n: int) -> bool:
        with self._cv:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def reserve(self, n: int, who: Tracked | None = None, take: bool = True) -> bool:
        """Reserve `n` bytes (or, `take=False`, wait until they would fit)."""
        with self._cv:
            short = self.used + n - self.limit
            if short <= 0:
                self.used += n if take else 0
                return True
        if self.reclaim is None or not self.reclaim(short, who):
            return False
        deadline = time.monotonic() + 1.0
        with self._cv:
            while self.used + n > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            self.used += n if take else 0
            return True

    def release(self, n: int) -> None:
        if n:
            with self._cv:
                self.used -= n
                self._cv.notify_all()
