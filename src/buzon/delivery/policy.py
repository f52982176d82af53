"""The delivery state machine and the retry/failure policy: pure, the clock passed in.

Theory of operation
-------------------
Everything that decides where a queued message goes next lives in this file
(h11's rule for ``_state.py``). The pipeline reports what happened to a
message (an :class:`Outcome`) and :func:`decide` answers with the next
:class:`Step`: a state, how long to wait before trying again, and whether to
deliver the original with a failure header. Nothing here touches a file, a
socket, a timer or a counter, so every rule is tested as a table.

A message's queue record exists in every state but ``done``, so a crash in
any state resumes from ``queued`` at the next start::

    queued ──transform──▶ transforming ──transformed──▶ delivering ──delivered──▶ done
      │                       │  ▲                           │  ▲
      └──────deliver──────────┼──┼───────────────────────────┘  │
                              │  │ failed: the failure policy   │ failed
                              ▼  │ (POLICY below)               ▼
                     waiting / held ◀────────────────────── waiting
                              └────── retry ──────▶ queued

``POLICY`` marks the one transition that is a rule rather than a fixed
arrow, a transform failure:

* within ``retry_window`` of the message's first transform failure, and for
  a failure that waiting can fix (``retryable``): ``waiting``, retried after an
  exponential backoff;
* otherwise, with ``failure_policy = "hold"``: ``held``, retried with the same
  backoff until a transform succeeds (Postfix's ``milter_default_action =
  tempfail``);
* otherwise (``deliver``): ``delivering`` the original, with the failure
  header (``fallback``).

The backoff is ``first_backoff × 2^(attempts-1)``, capped at
:data:`MAX_BACKOFF`; ``attempts`` counts every deferral of the message, for a
transform or a delivery failure alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_BACKOFF",
    "POLICY",
    "TABLE",
    "BadTransition",
    "Outcome",
    "Retries",
    "Rules",
    "State",
    "Step",
    "backoff",
    "decide",
]

#: Longest wait between two attempts at one message, in seconds.
MAX_BACKOFF = 300.0


class State(StrEnum):
    """Where a queued message is."""

    QUEUED = "queued"
    """On disk, waiting to be dispatched (new, recovered, or a retry that came due)."""
    TRANSFORMING = "transforming"
    """In the transform stage (the switch is on and a transform is configured)."""
    DELIVERING = "delivering"
    """Handed to a Maildir batch writer."""
    WAITING = "waiting"
    """Deferred after a failure; a timer brings it back to ``queued``."""
    HELD = "held"
    """Past its retry window under the ``hold`` policy; retried like ``waiting``."""
    DONE = "done"
    """Delivered to every recipient; its queue record is released."""


class Outcome(StrEnum):
    """What the pipeline reports about a message."""

    TRANSFORM = "transform"
    """Dispatched with transforms on."""
    DELIVER = "deliver"
    """Dispatched with transforms off, or already transformed."""
    TRANSFORMED = "transformed"
    """The transform stage produced the bytes to deliver."""
    GONE = "gone"
    """The transform stage found the record missing or unreadable; the writer reports it."""
    FAILED = "failed"
    """The step failed: a transform error, an I/O error, a bug."""
    DELIVERED = "delivered"
    """Every recipient's file is in ``new/`` and flushed."""
    RETRY = "retry"
    """A deferred message's timer came due."""


POLICY = "policy"  # the failure policy decides (see the module docstring)

#: state → outcome → next state; a pair missing here is a bug (BadTransition).
TABLE: dict[State, dict[Outcome, State | str]] = {
    State.QUEUED: {Outcome.TRANSFORM: State.TRANSFORMING, Outcome.DELIVER: State.DELIVERING},
    State.TRANSFORMING: {
        Outcome.TRANSFORMED: State.DELIVERING,
        Outcome.GONE: State.DELIVERING,
        Outcome.FAILED: POLICY,
    },
    State.DELIVERING: {Outcome.DELIVERED: State.DONE, Outcome.FAILED: State.WAITING},
    State.WAITING: {Outcome.RETRY: State.QUEUED},
    State.HELD: {Outcome.RETRY: State.QUEUED},
    State.DONE: {},
}


class BadTransition(RuntimeError):
    """An outcome that the table does not allow in this state (a bug in the caller)."""


@dataclass(frozen=True, slots=True)
class Rules:
    """The operator's retry settings."""

    retry_window: float = 600.0
    """Seconds after a message's first transform failure before the failure policy applies."""
    failure_policy: str = "deliver"
    """``deliver`` the original with a header, or ``hold`` the message."""
    first_backoff: float = 1.0
    """Seconds before the first retry; doubled at each further one."""


@dataclass(frozen=True, slots=True)
class Retries:
    """What the policy remembers about one message between attempts."""

    attempts: int = 0
    """Deferrals so far (transform and delivery failures alike)."""
    first_failure: float | None = None
    """Clock reading of the first transform failure, for the retry window."""


@dataclass(frozen=True, slots=True)
class Step:
    """The answer of :func:`decide`."""

    state: State
    retries: Retries
    delay: float = 0.0
    """Seconds to wait before ``retry`` (``waiting`` and ``held`` only)."""
    fallback: bool = False
    """Deliver the original with the transform failure header."""


def decide(
    state: State,
    outcome: Outcome,
    retries: Retries,
    *,
    now: float,
    rules: Rules,
    retryable: bool = True,
    transform_failure: bool = False,
    queue_id: str = "?",
) -> Step:
    """The next step of a message in ``state`` after ``outcome``.

    Args:
        state: where the message is.
        outcome: what just happened to it.
        retries: its retry memory (returned updated in the step).
        now: the clock (seconds; only differences matter).
        rules: the retry settings.
        retryable: for ``failed``: whether waiting may fix the failure.
        transform_failure: for ``failed`` in ``transforming``: the transform
            itself failed (starts the retry window), as opposed to a bug in
            the stage, which is always retried.
        queue_id: named in the error, for the log.

    Raises:
        BadTransition: the table has no arrow for (state, outcome).
    """
    target = TABLE[state].get(outcome)
    if target is None:
        raise BadTransition(f"message {queue_id}: no transition from {state} on {outcome}")
    if target == POLICY:
        if not transform_failure:
            return _defer(State.WAITING, retries, rules)
        first = now if retries.first_failure is None else retries.first_failure
        retries = Retries(retries.attempts, first)
        if retryable and now - first < rules.retry_window:
            return _defer(State.WAITING, retries, rules)
        if rules.failure_policy == "hold":
            return _defer(State.HELD, retries, rules)
        return Step(State.DELIVERING, retries, fallback=True)
    assert isinstance(target, State)
    if target is State.WAITING:
        return _defer(target, retries, rules)
    return Step(target, retries)


def backoff(attempts: int, first_backoff: float) -> float:
    """Seconds before attempt number ``attempts`` + 1 (``attempts`` ≥ 1)."""
    if attempts > 64:  # 2**64 s is past any cap; avoid float overflow for huge counts
        return MAX_BACKOFF
    return min(first_backoff * 2 ** (attempts - 1), MAX_BACKOFF)


def _defer(state: State, retries: Retries, rules: Rules) -> Step:
    attempts = retries.attempts + 1
    return Step(state, Retries(attempts, retries.first_failure),
                delay=backoff(attempts, rules.first_backoff))
