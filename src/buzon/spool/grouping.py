"""How a batch of messages to queue is cut into segments, and how a segment is written.

A batch (:meth:`Spool.store_many <buzon.spool.queue.Spool.store_many>`) becomes
as few segments as the size cap allows: one file to create and flush per
segment is what makes queueing cheap. A message queued in a file of its own
(:mod:`buzon.spool.files`) adds only its record line to the segment, but its
file stays open until the segment's files are flushed together, so a segment
takes at most :data:`MAX_OWN_FILES` of them.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence

from buzon.fsutil import write_all
from buzon.spool.record import Envelope, SpoolCorrupt, encode

__all__ = ["MAX_OWN_FILES", "Item", "record_line", "segment_groups", "write_chunks"]

#: One message to queue: its envelope, its bytes, and optionally a delivery head;
#: with a head it is written to a file of its own, the head in front.
Item = tuple[Envelope, bytes] | tuple[Envelope, bytes, bytes | None]

#: Files of their own one segment's commit holds open at once (descriptors).
MAX_OWN_FILES = 64


def segment_groups(items: Sequence[Item], segment_bytes: int) -> Iterator[Sequence[Item]]:
    """Consecutive runs of ``items``, each to be one segment.

    A run ends before the message that would take the segment's bytes past
    ``segment_bytes`` (a run holds at least one message), or past
    :data:`MAX_OWN_FILES` files of their own.
    """
    start, size, own = 0, 0, 0
    for i, (_, content, *rest) in enumerate(items):
        alone = bool(rest) and rest[0] is not None
        length = 0 if alone else len(content)
        if i > start and (size + length > segment_bytes or own + alone > MAX_OWN_FILES):
            yield items[start:i]
            start, size, own = i, 0, 0
        size += length
        own += alone
    if start < len(items):
        yield items[start:]


def write_chunks(fd: int, chunks: list[bytes]) -> None:
    """Write a segment's chunks (record lines and message bytes) to ``fd``."""
    # One write for a batch of small messages; big ones are not copied into a join.
    if sum(map(len, chunks)) <= 1 << 20:
        write_all(fd, b"".join(chunks))
    else:
        for chunk in chunks:
            write_all(fd, chunk)


def record_line(envelope: Envelope, size: int, head: bytes | None) -> bytes:
    """The record line of a message of ``size`` bytes (with ``head``: in a file of its own).

    Sets the envelope's ``size`` and ``file_head`` to match.

    Raises:
        OSError: ``EINVAL``, the envelope could not be read back: it is refused
            (4xx), never queued.
    """
    envelope.size = size
    envelope.file_head = None if head is None else len(head)
    try:
        return encode(envelope)
    except SpoolCorrupt as error:
        raise OSError(errno.EINVAL, f"envelope not queueable: {error}") from None
