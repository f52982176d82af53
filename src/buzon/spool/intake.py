"""The queue's one door: "store this envelope and body, give me its id".

Theory of operation
-------------------
SMTP sessions finish DATA at about the same time under load. :class:`Intake`
hands every message to one :class:`~buzon.batching.BatchThread`, which writes
all the messages pending at that moment as one segment with
:meth:`Spool.store_many <buzon.spool.queue.Spool.store_many>` (group commit:
one file and two flushes per batch). :meth:`Intake.store` returns only once its
message is durable, so the caller may answer ``250``; then the message is
passed to ``on_stored`` (the delivery pipeline), with its bytes, so delivery
does not read back what it was just given.
"""

from __future__ import annotations

from collections.abc import Callable

from buzon.batching import BatchThread
from buzon.spool.queue import Envelope, Location, Spool

__all__ = ["Intake", "Stored"]

#: Called with each durably queued message: where it is, its envelope and its bytes.
Stored = Callable[[Location, Envelope, bytes], None]


class Intake:
    """Queues messages durably, in batches, on a thread of its own."""

    def __init__(self, spool: Spool, on_stored: Stored) -> None:
        self._on_stored = on_stored
        self._committer: BatchThread[tuple[Envelope, bytes], Location] = BatchThread(
            "queue-commit", spool.store_many
        )

    def start(self) -> None:
        """Start the commit thread (on the running event loop)."""
        self._committer.start()

    async def stop(self) -> None:
        """Finish what was submitted, then end the commit thread."""
        await self._committer.stop()

    async def store(self, envelope: Envelope, content: bytes) -> str:
        """Queue one message; its queue id once it is on disk.

        Raises:
            OSError: the queue could not be written (disk full, read-only...):
                nothing of the message is queued.
        """
        where = await self._committer.submit((envelope, content))
        self._on_stored(where, envelope, content)
        return envelope.queue_id
