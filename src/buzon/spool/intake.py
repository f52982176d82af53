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
does not read back what it was just given. A large message arrives already
written to disk (:meth:`Intake.spill`, :mod:`buzon.spool.body`) and is committed
by a second thread, one segment each, so copying megabytes never delays the
small messages' batches.

A message the delivery side will link into its one mailbox instead of writing
it again (``file_head``, :meth:`DeliveryPipeline.file_head
<buzon.delivery.pipeline.DeliveryPipeline.file_head>`) is queued in a file of
its own with the head it gives, so that file is exactly the mailbox's copy.

Before a message is stored, the intake's :class:`~buzon.spool.backpressure.QueueGate`
reserves it a place in the queue, waiting while delivery is behind and
refusing (:class:`~buzon.spool.backpressure.QueueFull`) past the limit; the
delivery pipeline gives the place back when the message leaves the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from buzon.batching import BatchThread
from buzon.spool.backpressure import QueueFull, QueueGate
from buzon.spool.body import Spilled, SpilledBody, store_spilled
from buzon.spool.queue import Envelope, Item, Location, Spool

__all__ = ["FileHead", "Intake", "QueueFull", "QueueGate", "SpilledBody", "Stored"]

#: Called with each durably queued message: where it is, its envelope and its bytes
#: (None for a spilled one: delivery reads it back from the queue).
Stored = Callable[[Location, Envelope, bytes | None], None]
#: Given an envelope and the message's size: the delivery head to queue it with in a
#: file of its own, or None to queue it in a segment with others.
FileHead = Callable[[Envelope, int], bytes | None]


class Intake:
    """Queues messages durably, in batches, on a thread of its own."""

    def __init__(self, spool: Spool, on_stored: Stored, gate: QueueGate | None = None,
                 file_head: FileHead | None = None) -> None:
        self._on_stored = on_stored
        self._file_head = file_head
        self.gate = gate or QueueGate()
        self._spool = spool
        self._committer: BatchThread[Item, Location] = BatchThread(
            "queue-commit", spool.store_many
        )
        self._large: BatchThread[Spilled, Location] = BatchThread(
            "queue-commit-large", partial(store_spilled, spool)
        )

    def start(self) -> None:
        """Start the commit thread (on the running event loop)."""
        self._committer.start()
        self._large.start()

    async def stop(self) -> None:
        """Finish what was submitted, then end the commit thread."""
        await self._committer.stop()
        await self._large.stop()

    async def spill(self, queue_id: str) -> SpilledBody:
        """A file in the spool for the body of a large message as it arrives.

        Raises:
            OSError: it could not be created (disk full, read-only...).
        """
        return await asyncio.to_thread(self._spool.spill, queue_id)

    async def store(self, envelope: Envelope, content: bytes,
                    body: SpilledBody | None = None) -> str:
        """Queue one message; its queue id once it is on disk.

        ``content`` is the whole message, or with ``body`` its start, the rest
        being in ``body`` (removed once queued, or refused).

        Raises:
            QueueFull: the queue is at its limit (after waiting for room).
            OSError: the queue could not be written (disk full, read-only...):
                nothing of the message is queued.
        """
        try:
            await self.gate.admit()
        except BaseException:
            if body is not None:
                body.discard()  # a close and an unlink: also safe while being cancelled
            raise
        try:
            size = len(content) + (0 if body is None else body.size)
            head = None if self._file_head is None else self._file_head(envelope, size)
            if body is None:
                where = await self._committer.submit((envelope, content, head))
            else:
                body.head = content
                where = await self._large.submit((envelope, body, head))
        except BaseException:
            # Not stored (or, if cancelled at shutdown, stored for the next start's
            # recovery, which counts it again): its place goes back either way.
            self.gate.leave()
            raise
        self._on_stored(where, envelope, content if body is None else None)
        return envelope.queue_id
