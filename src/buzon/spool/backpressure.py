"""Back-pressure: intake slows down, then refuses, when delivery falls behind.

Theory of operation
-------------------
A queue that takes mail faster than delivery empties it grows without end: the
backlog costs memory, every full garbage collection walks it, and a message
accepted at minute 50 waits behind all the others. So intake is tied to
delivery (issue 16). :class:`QueueGate` counts the messages this process's
queue holds (admitted and not yet delivered, recovered ones included) and
decides, just before a received message is stored:

=================================  ===========================================================
depth < ``delay_at``, nobody        store now
waiting
depth >= ``delay_at`` (or others    wait, first come first served, until delivery takes the
already waiting)                    depth below ``delay_at``; at most ``max_delay`` seconds.
                                    Woken: store. Timed out: store if depth < ``limit``,
                                    else refuse
depth >= ``limit``                  refuse at once
=================================  ===========================================================

A refusal is ``452 4.3.1`` (the client keeps the message and retries later:
RFC 5321 §4.5.3.1.9); a delay is time before the ``250``, which every SMTP
client waits out (§4.5.3.2.6 gives the final reply 10 minutes). Each message
delivered wakes at most one waiter and reserves its place at once, so the
rate of ``250`` answers follows the rate of deliveries instead of overshooting
by the number of sessions.

A place is reserved when :meth:`admit` says yes and given back with
:meth:`leave`: by the delivery pipeline when the message leaves the queue, or
by the intake when storing it failed. The gate is per process, like the
queue shard it guards (``BUZON_WORKERS`` processes each have one).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

__all__ = ["QueueFull", "QueueGate"]


class QueueFull(Exception):
    """The queue is at its limit: the message is refused with a 4xx, not stored."""


class QueueGate:
    """Counts queued messages; makes new ones wait, or refuses them, past the marks."""

    def __init__(self, *, limit: int = 0, delay_at: int = 0, max_delay: float = 30.0,
                 on_delay: Callable[[], None] | None = None) -> None:
        """Args:
        limit: depth at which a message is refused (0: never).
        delay_at: depth from which a message waits for room (0: never waits).
        max_delay: seconds a message waits at most before it is stored or refused.
        on_delay: called for each message that has to wait (the ``queue_delayed`` count).
        """
        self.limit = limit
        self.delay_at = delay_at
        self.max_delay = max_delay
        self.depth = 0
        self._on_delay = on_delay
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def _full(self) -> bool:
        return bool(self.limit) and self.depth >= self.limit

    def _crowded(self) -> bool:
        return bool(self.delay_at) and self.depth >= self.delay_at

    async def admit(self) -> None:
        """Reserve a place for one message, waiting if the queue is crowded.

        Raises:
            QueueFull: the queue is at ``limit`` (at once, or after the wait).
        """
        if self._full():
            raise QueueFull
        if not self._waiters and not self._crowded():
            self.depth += 1
            return
        if self._on_delay is not None:
            self._on_delay()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.max_delay)
            return  # leave() reserved the place when it woke us
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # woken and cancelled together: give the place back
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
                self._waiters.remove(waiter)
        if waiter.done() and not waiter.cancelled():
            return  # woken in the same turn as the timeout
        if self._full():
            raise QueueFull
        self.depth += 1

    def add(self, count: int = 1) -> None:
        """Count messages queued without admission (recovered at start-up)."""
        self.depth += count

    def leave(self) -> None:
        """A message left the queue (delivered, or never stored): wake the next waiter."""
        self.depth -= 1
        while self._waiters and not self._crowded():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.depth += 1
                waiter.set_result(None)

    @property
    def waiting(self) -> int:
        """Messages waiting for room now."""
        return len(self._waiters)
