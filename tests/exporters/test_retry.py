"""The retry policy: exponential backoff with jitter, capped; hints capped; give-up by age."""

from __future__ import annotations

import pytest

from pipeline.exporters.retry import PermanentError, RetryableError, RetryPolicy


def test_the_delay_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_s=0.1, max_s=1.0, max_elapsed_s=0)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [policy.delay(attempt, ConnectionError()) for _ in range(200)]
        assert all(0.8 * base <= d <= 1.2 * base for d in delays), attempt
        assert max(delays) - min(delays) > 0.1 * base  # jittered, not fixed


@pytest.mark.parametrize("attempt", [1025, 10_000, 10**9])
def test_many_retries_of_one_payload_do_not_overflow(attempt: int) -> None:
    # 0.5 * 2.0 ** 1024 would raise OverflowError: the exponent is capped
    delay = RetryPolicy(initial_s=0.5, max_s=30.0).delay(attempt, RetryableError("down"))
    assert 24.0 <= delay <= 36.0


def test_the_destinations_hint_replaces_the_backoff_capped() -> None:
    policy = RetryPolicy(initial_s=0.1, max_s=5.0)
    assert policy.delay(1, RetryableError("busy", retry_after_s=2.0)) == 2.0
    assert policy.delay(7, RetryableError("busy", retry_after_s=3600.0)) == 5.0


def test_what_is_retried_and_when_to_give_up() -> None:
    policy = RetryPolicy(initial_s=0.1, max_s=5.0, max_elapsed_s=10.0)
    assert policy.retryable(RetryableError("x")) and policy.retryable(OSError("reset"))
    assert not policy.retryable(PermanentError("HTTP 400"))
    assert not policy.gives_up(elapsed_s=4.0, delay_s=5.0)
    assert policy.gives_up(elapsed_s=6.0, delay_s=5.0)
    assert not RetryPolicy(max_elapsed_s=0).gives_up(elapsed_s=1e9, delay_s=30.0)
