"""Per-source token bucket for failed monitor authentications.

Theory of operation
-------------------
Each source address owns a bucket of ``per_minute`` tokens that refills
continuously at ``per_minute / 60`` tokens a second. A failed authentication
takes one token; an address whose bucket holds less than one token is
*blocked* until it refills. Successful requests cost nothing, so an operator
with the right token is never slowed down.

The clock is a parameter (``now``, seconds on any monotonic scale: the server
passes ``loop.time()``), so the limiter is pure and tested without sleeping.

Memory is bounded: at most ``max_tracked`` addresses are remembered, in
least-recently-failed order; a new address past the cap evicts the oldest.
An entry whose bucket has refilled is equivalent to no entry and is dropped
when next seen. Eviction is the price of the bound: an attacker who can spoof
``max_tracked`` distinct sources can flush its own entry, but each flush costs
it thousands of datagrams for another ``per_minute`` guesses, which keeps a
brute force of a 62**8 token space hopeless.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["FailureLimiter"]


class FailureLimiter:
    """Failed-authentication budget per source address (pure; time passed in)."""

    def __init__(self, per_minute: int, *, max_tracked: int = 4096) -> None:
        """Create an empty limiter.

        Args:
            per_minute: failures an address may make in a burst, and per minute
                on average afterwards.
            max_tracked: most addresses remembered at once.

        Raises:
            ValueError: a non-positive argument.
        """
        if per_minute < 1 or max_tracked < 1:
            raise ValueError("per_minute and max_tracked must be at least 1")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_tracked = max_tracked
        # source -> (tokens left, time they were counted)
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, source: Hashable, now: float) -> float:
        entry = self._buckets.get(source)
        if entry is None:
            return self.capacity
        tokens, then = entry
        # max(): a clock that steps back must not drain the bucket.
        return min(self.capacity, tokens + max(0.0, now - then) * self.rate)

    def blocked(self, source: Hashable, now: float) -> bool:
        """Whether ``source`` has used up its failure budget.

        Args:
            source: the address (any hashable key).
            now: the current time in seconds.

        Returns:
            True while the address must not be served.
        """
        tokens = self._tokens(source, now)
        if tokens >= self.capacity:
            # Fully refilled: forget it, so idle entries do not hold memory.
            self._buckets.pop(source, None)
        return tokens < 1.0

    def record_failure(self, source: Hashable, now: float) -> bool:
        """Charge one failed authentication to ``source``.

        Args:
            source: the address.
            now: the current time in seconds.

        Returns:
            True if this failure used the last of the budget (the address is
            blocked from now on), so the caller can log the transition once.
        """
        before = self._tokens(source, now)
        tokens = max(0.0, before - 1.0)
        self._buckets[source] = (tokens, now)
        self._buckets.move_to_end(source)
        while len(self._buckets) > self.max_tracked:
            self._buckets.popitem(last=False)
        return tokens < 1.0 <= before
