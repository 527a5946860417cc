"""When a failed send is tried again: the retry policy of a sending queue.

As the Collector's exporterhelper: a sender raises `RetryableError` (the destination may take it
later; it may say when, Retry-After) or `PermanentError` (it never will: dropped and counted).
Anything else, a network error the sender did not classify, is retried. The delay grows
exponentially from `initial_s` to `max_s` with ±20% jitter, so senders that failed together do
not retry together; the destination's hint replaces it, capped at `max_s` (an absurd hint must
not make the queue give up). A payload older than `max_elapsed_s` (0: no limit) is given up on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# 2**64 times any sane initial delay is past any cap: a larger exponent after many retries of
# one payload would only risk a float overflow (2.0**1024 raises OverflowError).
_MAX_EXPONENT = 64


class RetryableError(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(Exception):
    """The destination refused the data for good (e.g. HTTP 400): dropped and counted."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    max_elapsed_s: float = 300.0

    @staticmethod
    def retryable(error: BaseException) -> bool:
        """Whether a send that raised `error` may succeed later."""
        return not isinstance(error, PermanentError)

    def delay(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait before try `attempt + 1`, after the `attempt`-th failure (from 1)."""
        hint = error.retry_after_s if isinstance(error, RetryableError) else None
        if hint is not None:
            return min(hint, self.max_s)
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        return min(self.max_s, self.initial_s * 2.0**exponent) * random.uniform(0.8, 1.2)

    def gives_up(self, elapsed_s: float, delay_s: float) -> bool:
        """True when waiting `delay_s` more would take the payload past `max_elapsed_s`."""
        return bool(self.max_elapsed_s) and elapsed_s + delay_s > self.max_elapsed_s
