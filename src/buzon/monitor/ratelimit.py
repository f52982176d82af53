"""The failed-authentication budget of the v0 monitor (pure; the clock passed in).

Theory of operation
-------------------
v0 (SPEC §6) carries the token in clear and cannot authenticate a source
address: anyone may forge any source, and anyone may send from as many
addresses as they can bind. So a limit keyed on the source address alone fails
both ways: forged failures from the operator's address lock the operator out,
and a guesser rotating addresses gets one budget per address.

And in v0 *every answered token is a guess*: if a right token is answered while
wrong ones are not, the silence itself says "wrong". A request whose token is
compared is therefore charged, or refused without comparing; there is no third
way that both answers the operator and bounds guessing. The budget is:

- **one global bucket** of ``per_minute`` failures (the burst), refilling
  continuously at ``per_minute / 60`` a second, shared by every address. A
  wrong token takes one. While it holds a whole failure, any request is
  compared; once it is spent, a request is compared only if its address is
  *proven* (below). Guesses per minute are bounded by ``per_minute`` however
  many addresses send them.
- **proven addresses**: an address that presented the right token within
  ``proven_for`` seconds has its own bucket of ``address_per_minute`` failures,
  spent before the global one. A stranger cannot make an address proven (that
  takes the token), so these buckets add at most ``address_per_minute`` guesses
  a minute per address the operator actually uses, and a flood from other
  addresses, forged or rotated, never reaches them. Forging a proven address
  spends its bucket, after which it shares the global one like any address: it
  is never blocked *because of* its address, and a right token from it is
  compared again as soon as either bucket holds a failure.

So a sender can keep strangers' requests from being compared only by sending
wrong tokens faster than the global refill, for as long as it keeps doing so;
the operator's proven address stays served unless the flood forges that very
address as well. Successes cost nothing. At most ``max_proven`` addresses are
remembered (least recently proven evicted first).

The clock is a parameter (``now``, seconds on any monotonic scale; the server
passes ``loop.time()``), so every case is tested without sleeping.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["FailureBudget"]

PROVEN_FOR = 24 * 3600.0
"""Seconds an address stays proven after its last right token."""
MAX_PROVEN = 256
"""Most proven addresses remembered at once."""
REPORT_EVERY = 60.0
"""Seconds between two reports that the global budget is spent."""


@dataclass(slots=True)
class _Bucket:
    """A token bucket of failures: ``capacity`` burst, ``rate`` a second."""

    capacity: float
    rate: float
    tokens: float
    then: float

    def level(self, now: float) -> float:
        # max(): a clock that steps back must neither drain nor fill the bucket.
        return min(self.capacity, self.tokens + max(0.0, now - self.then) * self.rate)

    def take(self, now: float) -> None:
        self.tokens = max(0.0, self.level(now) - 1.0)
        self.then = max(self.then, now)


@dataclass(slots=True)
class _Proven:
    bucket: _Bucket
    until: float


class FailureBudget:
    """Failed-authentication budget: one global bucket plus one per proven address."""

    def __init__(
        self,
        per_minute: int,
        *,
        address_per_minute: int = 30,
        proven_for: float = PROVEN_FOR,
        max_proven: int = MAX_PROVEN,
    ) -> None:
        """Create a full budget.

        Args:
            per_minute: wrong tokens allowed from all addresses together, as a
                burst and per minute on average afterwards.
            address_per_minute: the same, for each proven address, spent first.
            proven_for: seconds an address stays proven after its last success.
            max_proven: most proven addresses remembered.

        Raises:
            ValueError: a non-positive argument.
        """
        if min(per_minute, address_per_minute, max_proven) < 1 or proven_for <= 0:
            raise ValueError("every limit must be positive")
        self.per_minute = per_minute
        self.address_per_minute = address_per_minute
        self.proven_for = proven_for
        self.max_proven = max_proven
        self._global = _Bucket(float(per_minute), per_minute / 60.0, float(per_minute), 0.0)
        self._proven: OrderedDict[Hashable, _Proven] = OrderedDict()
        self._reported: float | None = None

    def __len__(self) -> int:
        """How many proven addresses are remembered."""
        return len(self._proven)

    def _own(self, source: Hashable, now: float) -> _Bucket | None:
        entry = self._proven.get(source)
        if entry is None:
            return None
        if now >= entry.until:
            del self._proven[source]
            return None
        return entry.bucket

    def exhausted(self, now: float) -> bool:
        """Whether the global bucket is spent (strangers are not compared)."""
        return self._global.level(now) < 1.0

    def admits(self, source: Hashable, now: float) -> bool:
        """Whether a request from ``source`` may have its token compared now.

        Args:
            source: the sender's address (any hashable key).
            now: the current time in seconds.

        Returns:
            True when the global bucket, or ``source``'s own bucket if it is
            proven, holds a whole failure.
        """
        if not self.exhausted(now):
            return True
        own = self._own(source, now)
        return own is not None and own.level(now) >= 1.0

    def record_failure(self, source: Hashable, now: float) -> bool:
        """Charge one wrong token from an admitted ``source``.

        Args:
            source: the address.
            now: the current time in seconds.

        Returns:
            True if this failure spent the last of the global bucket and that
            was not already reported in the last ``REPORT_EVERY`` seconds, so
            the caller logs a flood once a minute, not at every refill.
        """
        own = self._own(source, now)
        if own is not None and own.level(now) >= 1.0:
            own.take(now)
            return False
        before = self._global.level(now)
        self._global.take(now)
        if not before >= 1.0 > self._global.level(now):
            return False
        if self._reported is not None and 0.0 <= now - self._reported < REPORT_EVERY:
            return False
        self._reported = now
        return True

    def record_success(self, source: Hashable, now: float) -> None:
        """Note a right token from ``source``: it is proven for ``proven_for`` s.

        A success refreshes the address's deadline but not its bucket: a guesser
        sharing the operator's address gains nothing from the operator's queries.
        """
        entry = self._proven.get(source)
        if entry is None or now >= entry.until:
            capacity = float(self.address_per_minute)
            bucket = _Bucket(capacity, self.address_per_minute / 60.0, capacity, now)
            entry = self._proven[source] = _Proven(bucket, now + self.proven_for)
        entry.until = now + self.proven_for
        self._proven.move_to_end(source)
        while len(self._proven) > self.max_proven:
            self._proven.popitem(last=False)
