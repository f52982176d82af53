"""The delivery state table and the retry/failure policy: pure, the clock passed in."""

from __future__ import annotations

import pytest

from buzon.delivery.policy import (
    MAX_BACKOFF,
    POLICY,
    TABLE,
    BadTransition,
    Outcome,
    Retries,
    Rules,
    State,
    Step,
    backoff,
    decide,
)

RULES = Rules(retry_window=600.0, failure_policy="deliver", first_backoff=1.0)
HOLD = Rules(retry_window=600.0, failure_policy="hold", first_backoff=1.0)
FRESH = Retries()

# (state, outcome, retries, facts, now, rules) -> expected step
CASES: list[tuple[State, Outcome, Retries, dict[str, bool], float, Rules, Step]] = [
    # the happy paths
    (State.QUEUED, Outcome.DELIVER, FRESH, {}, 0.0, RULES, Step(State.DELIVERING, FRESH)),
    (State.QUEUED, Outcome.TRANSFORM, FRESH, {}, 0.0, RULES, Step(State.TRANSFORMING, FRESH)),
    (State.TRANSFORMING, Outcome.TRANSFORMED, FRESH, {}, 0.0, RULES,
     Step(State.DELIVERING, FRESH)),
    (State.DELIVERING, Outcome.DELIVERED, FRESH, {}, 0.0, RULES, Step(State.DONE, FRESH)),
    # a record gone or unreadable goes on to the writer, which reports it
    (State.TRANSFORMING, Outcome.GONE, FRESH, {}, 0.0, RULES, Step(State.DELIVERING, FRESH)),
    # a delivery failure waits with backoff, without starting the transform window
    (State.DELIVERING, Outcome.FAILED, FRESH, {}, 5.0, RULES,
     Step(State.WAITING, Retries(1, None), delay=1.0)),
    (State.DELIVERING, Outcome.FAILED, Retries(3, None), {}, 5.0, RULES,
     Step(State.WAITING, Retries(4, None), delay=8.0)),
    # retries come back to queued
    (State.WAITING, Outcome.RETRY, Retries(2, 1.0), {}, 9.0, RULES,
     Step(State.QUEUED, Retries(2, 1.0))),
    (State.HELD, Outcome.RETRY, Retries(9, 1.0), {}, 9.0, HOLD,
     Step(State.QUEUED, Retries(9, 1.0))),
    # a transform failure inside the window: waiting; the window starts now
    (State.TRANSFORMING, Outcome.FAILED, FRESH, {"transform_failure": True}, 100.0, RULES,
     Step(State.WAITING, Retries(1, 100.0), delay=1.0)),
    (State.TRANSFORMING, Outcome.FAILED, Retries(1, 100.0), {"transform_failure": True},
     699.9, RULES, Step(State.WAITING, Retries(2, 100.0), delay=2.0)),
    # past the window: the policy decides
    (State.TRANSFORMING, Outcome.FAILED, Retries(5, 100.0), {"transform_failure": True},
     700.0, RULES, Step(State.DELIVERING, Retries(5, 100.0), fallback=True)),
    (State.TRANSFORMING, Outcome.FAILED, Retries(5, 100.0), {"transform_failure": True},
     700.0, HOLD, Step(State.HELD, Retries(6, 100.0), delay=32.0)),
    # a failure that waiting cannot fix goes to the policy at once
    (State.TRANSFORMING, Outcome.FAILED, FRESH,
     {"transform_failure": True, "retryable": False}, 100.0, RULES,
     Step(State.DELIVERING, Retries(0, 100.0), fallback=True)),
    (State.TRANSFORMING, Outcome.FAILED, FRESH,
     {"transform_failure": True, "retryable": False}, 100.0, HOLD,
     Step(State.HELD, Retries(1, 100.0), delay=1.0)),
    # a bug in the stage (not the transform's failure) is always retried
    (State.TRANSFORMING, Outcome.FAILED, Retries(5, 100.0), {}, 10_000.0, RULES,
     Step(State.WAITING, Retries(6, 100.0), delay=32.0)),
]


@pytest.mark.parametrize(("state", "outcome", "retries", "facts", "now", "rules", "step"), CASES)
def test_decide(state: State, outcome: Outcome, retries: Retries, facts: dict[str, bool],
                now: float, rules: Rules, step: Step) -> None:
    assert decide(state, outcome, retries, now=now, rules=rules, **facts) == step


def test_a_window_of_zero_sends_the_first_failure_to_the_policy() -> None:
    step = decide(State.TRANSFORMING, Outcome.FAILED, FRESH, now=5.0,
                  rules=Rules(retry_window=0.0), transform_failure=True)
    assert step == Step(State.DELIVERING, Retries(0, 5.0), fallback=True)


def test_every_pair_missing_from_the_table_is_refused_with_its_names() -> None:
    missing = [(s, o) for s in State for o in Outcome if o not in TABLE[s]]
    arrows = sum(len(row) for row in TABLE.values())
    assert arrows == 9 and len(missing) == len(State) * len(Outcome) - arrows
    assert (State.DONE, Outcome.RETRY) in missing
    for state, outcome in missing:
        with pytest.raises(BadTransition, match=f"message Q1: no transition from {state} on "
                                                f"{outcome}"):
            decide(state, outcome, FRESH, now=0.0, rules=RULES, queue_id="Q1")


def test_every_state_is_in_the_table_and_only_failures_go_to_the_policy() -> None:
    assert set(TABLE) == set(State)
    assert [(s, o) for s in TABLE for o, t in TABLE[s].items() if t == POLICY] == [
        (State.TRANSFORMING, Outcome.FAILED)
    ]


@pytest.mark.parametrize(
    ("attempts", "first", "delay"),
    [(1, 1.0, 1.0), (2, 1.0, 2.0), (9, 1.0, 256.0), (10, 1.0, MAX_BACKOFF),
     (10_000, 1.0, MAX_BACKOFF), (1, 0.1, 0.1), (3, 0.1, 0.4)],
)
def test_backoff_doubles_up_to_the_cap(attempts: int, first: float, delay: float) -> None:
    assert backoff(attempts, first) == pytest.approx(delay)
