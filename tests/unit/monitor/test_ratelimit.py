"""The failed-authentication token bucket, on a hand-driven clock."""

from __future__ import annotations

import pytest

from buzon.monitor.ratelimit import FailureLimiter


def _spend(limiter: FailureLimiter, source: str, times: int, now: float) -> list[bool]:
    return [limiter.record_failure(source, now) for _ in range(times)]


def test_a_new_address_is_not_blocked() -> None:
    assert FailureLimiter(5).blocked("a", now=0.0) is False


def test_the_budget_is_a_burst_of_per_minute_failures() -> None:
    limiter = FailureLimiter(5)
    assert _spend(limiter, "a", 4, 0.0) == [False] * 4
    assert limiter.blocked("a", 0.0) is False
    # The fifth failure uses the last token: reported once, as the transition.
    assert limiter.record_failure("a", 0.0) is True
    assert limiter.blocked("a", 0.0) is True
    assert limiter.record_failure("a", 0.0) is False


def test_the_bucket_refills_at_per_minute_over_sixty_seconds() -> None:
    limiter = FailureLimiter(6)  # one token every 10 s
    _spend(limiter, "a", 6, 100.0)
    assert limiter.blocked("a", 109.99) is True
    assert limiter.blocked("a", 110.0) is False
    limiter.record_failure("a", 110.0)
    assert limiter.blocked("a", 110.0) is True


def test_refill_is_capped_at_the_burst() -> None:
    limiter = FailureLimiter(3)
    limiter.record_failure("a", 0.0)
    # An hour idle buys no more than the 3-failure burst.
    assert _spend(limiter, "a", 3, 3600.0) == [False, False, True]
    assert limiter.blocked("a", 3600.0) is True


def test_addresses_are_independent() -> None:
    limiter = FailureLimiter(2)
    _spend(limiter, "a", 2, 0.0)
    assert limiter.blocked("a", 0.0) is True
    assert limiter.blocked("b", 0.0) is False


def test_a_clock_stepping_back_does_not_drain_or_fill() -> None:
    limiter = FailureLimiter(2)
    _spend(limiter, "a", 2, 50.0)
    assert limiter.blocked("a", 10.0) is True


def test_memory_is_bounded_by_evicting_the_oldest() -> None:
    limiter = FailureLimiter(1, max_tracked=3)
    for i, source in enumerate("abcd"):
        limiter.record_failure(source, float(i) * 0.001)
    assert len(limiter) == 3
    # "a" was the oldest: forgotten, so it has a fresh budget; "b".."d" remain blocked.
    assert limiter.blocked("a", 0.01) is False
    assert [limiter.blocked(s, 0.01) for s in "bcd"] == [True, True, True]


def test_a_repeat_offender_is_kept_over_older_entries() -> None:
    limiter = FailureLimiter(1, max_tracked=2)
    limiter.record_failure("a", 0.0)
    limiter.record_failure("b", 0.1)
    limiter.record_failure("a", 0.2)  # "a" is now the most recent
    limiter.record_failure("c", 0.3)  # evicts "b"
    assert limiter.blocked("a", 0.3) is True
    assert limiter.blocked("b", 0.3) is False


def test_refilled_entries_are_forgotten() -> None:
    limiter = FailureLimiter(60)  # one per second
    limiter.record_failure("a", 0.0)
    assert len(limiter) == 1
    assert limiter.blocked("a", 1.0) is False
    assert len(limiter) == 0


@pytest.mark.parametrize("kwargs", [{"per_minute": 0}, {"per_minute": 5, "max_tracked": 0}])
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FailureLimiter(**kwargs)
