"""The failed-authentication budget, on a hand-driven clock."""

from __future__ import annotations

from itertools import pairwise

import pytest

from buzon.monitor.ratelimit import FailureBudget

OPERATOR = "192.0.2.1"


def _spend(budget: FailureBudget, source: str, times: int, now: float) -> list[bool]:
    return [budget.record_failure(source, now) for _ in range(times)]


def _stranger(i: int) -> str:
    return f"198.51.100.{i}"


def test_a_full_budget_admits_anyone() -> None:
    budget = FailureBudget(5)
    assert budget.admits("a", now=0.0) is True
    assert budget.exhausted(0.0) is False


def test_the_global_budget_is_a_burst_of_per_minute_failures() -> None:
    budget = FailureBudget(5)
    assert _spend(budget, "a", 4, 0.0) == [False] * 4
    assert budget.admits("a", 0.0) is True
    # The fifth failure spends the last token: reported once, as the transition.
    assert budget.record_failure("a", 0.0) is True
    assert budget.exhausted(0.0) is True
    assert budget.admits("a", 0.0) is False
    assert budget.record_failure("a", 0.0) is False


def test_a_flood_is_reported_once_a_minute_not_at_every_refill() -> None:
    budget = FailureBudget(60)  # one a second
    spent = []
    for step in range(1300):  # 10 a second for 130 s: spent again at every refill
        now = step / 10
        if budget.admits("a", now) and budget.record_failure("a", now):
            spent.append(now)
    # Spent first after 6.5 s (60 + 6.5 refilled = 65 failures), then again at
    # nearly every whole second; reported only once each 60 s.
    assert spent[0] == 6.5
    assert len(spent) == 3
    assert all(60.0 <= later - earlier < 61.0 for earlier, later in pairwise(spent))


def test_rotating_addresses_shares_one_budget() -> None:
    budget = FailureBudget(10)
    admitted = 0
    for i in range(1000):
        source = _stranger(i % 250)
        if budget.admits(source, 0.0):
            budget.record_failure(source, 0.0)
            admitted += 1
    assert admitted == 10


def test_guesses_per_minute_stay_bounded_over_time() -> None:
    budget = FailureBudget(60)  # one a second after the burst
    admitted = 0
    for step in range(6000):  # 100 datagrams a second for a minute, 300 sources
        now, source = step / 100, _stranger(step % 300)
        if budget.admits(source, now):
            budget.record_failure(source, now)
            admitted += 1
    assert 60 + 59 <= admitted <= 60 + 60


def test_the_global_bucket_refills_at_per_minute_over_sixty_seconds() -> None:
    budget = FailureBudget(6)  # one token every 10 s
    _spend(budget, "a", 6, 100.0)
    assert budget.admits("b", 109.99) is False
    assert budget.admits("b", 110.0) is True
    budget.record_failure("b", 110.0)
    assert budget.admits("a", 110.0) is False


def test_refill_is_capped_at_the_burst() -> None:
    budget = FailureBudget(3)
    budget.record_failure("a", 0.0)
    # An hour idle buys no more than the 3-failure burst.
    assert _spend(budget, "a", 3, 3600.0) == [False, False, True]
    assert budget.exhausted(3600.0) is True


def test_a_clock_stepping_back_does_not_drain_or_fill() -> None:
    budget = FailureBudget(2)
    _spend(budget, "a", 2, 50.0)
    assert budget.exhausted(10.0) is True
    assert budget.exhausted(50.0) is True


def test_a_proven_address_is_admitted_while_the_global_budget_is_spent() -> None:
    budget = FailureBudget(3, address_per_minute=2)
    budget.record_success(OPERATOR, 0.0)
    _spend(budget, _stranger(1), 3, 0.0)
    assert budget.admits(_stranger(2), 0.0) is False
    assert budget.admits(OPERATOR, 0.0) is True
    assert len(budget) == 1


def test_failures_from_a_proven_address_spend_its_own_bucket_first() -> None:
    budget = FailureBudget(3, address_per_minute=2)
    budget.record_success(OPERATOR, 0.0)
    _spend(budget, OPERATOR, 2, 0.0)  # forged or not: its own bucket
    assert budget.exhausted(0.0) is False
    assert budget.admits(_stranger(1), 0.0) is True


def test_a_spent_proven_address_falls_back_to_the_global_budget_not_a_block() -> None:
    budget = FailureBudget(3, address_per_minute=2)
    budget.record_success(OPERATOR, 0.0)
    _spend(budget, OPERATOR, 4, 0.0)  # 2 of its own, then 2 of the global 3
    assert budget.admits(OPERATOR, 0.0) is True  # one global failure left
    budget.record_failure(OPERATOR, 0.0)
    assert budget.admits(OPERATOR, 0.0) is False
    # Either bucket refilling a whole failure admits it again: its own in 30 s.
    assert budget.admits(OPERATOR, 19.9) is False
    assert budget.admits(OPERATOR, 20.0) is True  # global: 3 a minute


def test_a_success_does_not_refill_the_own_bucket() -> None:
    budget = FailureBudget(1, address_per_minute=2)
    budget.record_success(OPERATOR, 0.0)
    _spend(budget, OPERATOR, 3, 0.0)
    budget.record_success(OPERATOR, 0.0)
    assert budget.admits(OPERATOR, 0.0) is False


def test_proof_expires() -> None:
    budget = FailureBudget(1, proven_for=100.0)
    budget.record_success(OPERATOR, 0.0)
    budget.record_failure(_stranger(1), 0.0)
    assert budget.admits(OPERATOR, 99.0) is True
    budget.record_success(OPERATOR, 99.0)  # refreshed
    assert budget.admits(OPERATOR, 198.0) is True
    assert budget.admits(OPERATOR, 199.0) is True  # the global one has long refilled
    budget.record_failure(_stranger(1), 199.0)
    assert budget.admits(OPERATOR, 199.0) is False
    assert len(budget) == 0


def test_memory_is_bounded_by_evicting_the_least_recently_proven() -> None:
    budget = FailureBudget(1, max_proven=2)
    for i, source in enumerate("abc"):
        budget.record_success(source, float(i))
    budget.record_success("b", 3.0)
    budget.record_success("d", 4.0)  # evicts "c"
    assert len(budget) == 2
    budget.record_failure(_stranger(1), 4.0)
    assert [budget.admits(s, 4.0) for s in "abcd"] == [False, True, False, True]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"per_minute": 0},
        {"per_minute": 5, "address_per_minute": 0},
        {"per_minute": 5, "max_proven": 0},
        {"per_minute": 5, "proven_for": 0.0},
    ],
)
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FailureBudget(**kwargs)
