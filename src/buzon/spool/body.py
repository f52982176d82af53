"""Large message bodies written to the spool as they arrive, then queued without a copy in memory.

Theory of operation
-------------------
A message up to ``BUZON_DATA_SPILL_SIZE`` is held in memory until DATA ends
and queued with the others of its batch (:mod:`buzon.spool.queue`). Past
that size the SMTP side keeps only the first part in memory (its header
block gets ``Received:`` and the rest of :mod:`buzon.smtp.headers`) and writes
everything after it here, piece by piece, as it comes off the socket: a
:class:`SpilledBody`, the file ``incoming/<queue id>.body``. Memory per
session is then bounded by a piece, not by the message.

When DATA ends and the message is accepted, :func:`store_spilled` makes the
queue record: a new segment in ``incoming/`` gets the record's header line and
the in-memory part, then the spilled bytes are copied in by the kernel
(``copy_file_range``: no pass through Python), the segment is flushed and
renamed into ``queue/``, and ``queue/`` is flushed once for the batch. The
record format does not change: a reader cannot tell a spilled message from
another. Then the ``.body`` file is removed. A message for one mailbox is
copied the same way into a file of its own instead (:mod:`buzon.spool.files`),
which delivery links into the Maildir: a 10 MB message is then never read
back into memory at all.

A ``.body`` file is never trusted after a crash: like every file in
``incoming/`` it is removed at start-up (:meth:`Spool.recover
<buzon.spool.queue.Spool.recover>`); its client never saw a 250. One that is
refused (size, line length, queue full) or whose client hangs up is removed
at once with :meth:`SpilledBody.discard`.

Everything here blocks: callers run it on a thread.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from buzon.fsutil import unlink_quietly, write_all
from buzon.spool import files
from buzon.spool.grouping import record_line
from buzon.spool.record import Envelope

if TYPE_CHECKING:
    from buzon.spool.queue import Location, Spool

__all__ = ["Spilled", "SpilledBody", "store_spilled"]

_COPY_STEP = 1 << 30  # copy_file_range may copy less than asked; it is called until done


class SpilledBody:
    """The part of one message's body past what is held in memory, in ``incoming/``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        #: Bytes written so far.
        self.size = 0
        #: The start of the message, kept in memory and queued in front of the file's
        #: bytes; set by the SMTP side once it has the final header block.
        self.head = b""

    def write(self, data: bytes) -> None:
        """Append ``data`` (not flushed: the queue record is flushed when it is made)."""
        assert self._fd is not None, "write to a discarded body"
        write_all(self._fd, data)
        self.size += len(data)

    def discard(self) -> None:
        """Close and remove the file (refused, abandoned, or copied into the queue)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        unlink_quietly(self.path)

    def copy_to(self, out: int) -> None:
        """Append every byte written to the file descriptor ``out``."""
        assert self._fd is not None
        offset = 0
        while offset < self.size:
            try:
                copied = os.copy_file_range(self._fd, out, min(self.size - offset, _COPY_STEP),
                                            offset)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self._copy_by_reading(out, offset)
                return
            if copied == 0:
                raise OSError(errno.EIO, f"{self.path} is shorter than the {self.size} bytes "
                              "written to it")
            offset += copied

    def _copy_by_reading(self, out: int, offset: int) -> None:
        # File systems without copy_file_range (or across devices): 1 MB at a time.
        assert self._fd is not None
        while offset < self.size:
            chunk = os.pread(self._fd, min(1 << 20, self.size - offset), offset)
            if not chunk:
                raise OSError(errno.EIO, f"{self.path} is shorter than expected")
            write_all(out, chunk)
            offset += len(chunk)


#: One spilled message to queue: its envelope, its body, and optionally a delivery
#: head; with a head it goes to a file of its own (:mod:`buzon.spool.files`).
Spilled = tuple[Envelope, SpilledBody] | tuple[Envelope, SpilledBody, bytes | None]


def store_spilled(spool: Spool, items: Sequence[Spilled]) -> list[Location | OSError]:
    """Queue spilled messages durably, one segment each (see the module docstring).

    An item with a delivery head (a third element that is not None) goes to a
    file of its own, the head in front (:mod:`buzon.spool.files`), and its
    segment holds only its record line.

    Returns:
        For each item, its location once it is safely queued, else the OSError;
        then nothing of it is left in ``queue/``. The ``.body`` files are removed
        either way.
    """
    from buzon.spool.queue import Location, new_queue_id

    results: list[Location | OSError] = []
    committed: list[tuple[str, list[Location]]] = []  # (segment, its message file)
    try:
        for envelope, body, *rest in items:
            delivery_head = rest[0] if rest else None
            try:
                header = record_line(envelope, len(body.head) + body.size, delivery_head)
            except OSError as error:
                results.append(error)
                continue
            where = Location(new_queue_id(), 0, envelope.queue_id, envelope.file_head)
            try:
                if delivery_head is None:
                    spool.write_segment(where.segment, partial(_record, header, body))
                else:
                    _write_own_file(spool, where, delivery_head, body)
                    try:
                        spool.write_segment(where.segment, partial(write_all, data=header))
                    except OSError:
                        unlink_quietly(spool.message_file(where))
                        raise
            except OSError as error:
                results.append(error)
                continue
            spool.hold(where.segment, 1)
            committed.append((where.segment, [] if delivery_head is None else [where]))
            results.append(where)
        return spool.flush_queue(committed, results)
    finally:
        for item in items:
            item[1].discard()


def _record(header: bytes, body: SpilledBody, fd: int) -> None:
    """Write a whole record: its line, the in-memory start, then the spilled bytes."""
    write_all(fd, header + body.head)
    body.copy_to(fd)  # in the kernel: the spilled bytes never enter Python


def _write_own_file(spool: Spool, where: Location, delivery_head: bytes,
                    body: SpilledBody) -> None:
    """The message's own file: head, in-memory start, spilled bytes; flushed.

    Raises:
        OSError: nothing of it is left.
    """
    path = spool.message_file(where)
    fd = files.write(path, delivery_head, body.head)
    try:
        body.copy_to(fd)
        if spool.fsync:
            files.flush(spool.queue, [fd], drop=spool.drop_cache)
    except BaseException:
        unlink_quietly(path)
        raise
    finally:
        os.close(fd)
