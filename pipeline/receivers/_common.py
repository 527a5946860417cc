"""What both receivers share: the OTLP response, the bearer check, counting and logging what
they refuse."""

from __future__ import annotations

import hmac
import threading
import time
from typing import Any

import structlog
from google.protobuf.message import Message

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

    def warning(self, key: tuple[str, ...], event: str, **fields: Any) -> bool:
        """Log unless `key` was logged less than `interval_s` ago; True when logged."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
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
