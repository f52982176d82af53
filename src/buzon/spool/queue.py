"""The durable spool: a message is on disk before it is acknowledged (SPEC §3).

Theory of operation
-------------------
Layout under ``<data_dir>/spool``::

    incoming/<segment>   being written; never trusted (removed at start-up)
    queue/<segment>      complete: one or more records, each a JSON envelope line
                         ("BUZON1 {...}\n") followed by exactly ``size`` message bytes
                         (the format and its checks: :mod:`buzon.spool.record`)
    work/<id>.in|out     transform input and output of a queued message
    corrupt/             queue files that did not parse, kept for a human

Messages that finish DATA at about the same time are committed together
(group commit, see :mod:`buzon.batching`): :meth:`Spool.store_many` writes
them as records of one *segment* file in ``incoming/``, flushes it, renames it
into ``queue/`` and flushes ``queue/`` once. Only then does the SMTP side
answer ``250 ... queued as <id>``. The rename is the commit point: after a
crash a segment is either wholly in ``queue/`` (its messages will be delivered)
or absent (and its clients, who never saw 250, still have their messages).
One file and two flushes per batch instead of per message is what makes
queueing cheap (file creation is the costly part on most file systems).

A segment is removed once every message in it has been delivered (reference
counts in memory; :meth:`Spool.release`). That needs no flush: a removal lost
in a crash resurrects messages whose recipients the delivery pipeline finds
already delivered (see :mod:`buzon.storage.maildir`), so nobody gets them
twice. Segments are capped at ``segment_bytes`` so a message held for a long
time pins little else on disk.

Queue ids are 16 base-32 characters: a 48-bit millisecond clock then 32 random
bits, so they sort by arrival and do not collide across hosts sharing a volume.
"""

from __future__ import annotations

import base64
import errno
import os
import random
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from buzon.fsutil import fsync_dir, unlink_quietly, write_all
from buzon.spool.record import (
    MAX_HEADER,
    Envelope,
    SpoolCorrupt,
    TruncatedRecord,
    decode_header,
    encode,
    parse_segment,
)

__all__ = ["Envelope", "Location", "Spool", "SpoolCorrupt", "new_queue_id"]

# A PRNG seeded from the OS once per process: the ids need unpredictable-enough
# uniqueness across hosts, not secrecy, and os.urandom per message (a syscall that
# releases the GIL) cost 12% of the event loop's time.
_random = random.Random(secrets.randbits(128))


def new_queue_id(now: float | None = None) -> str:
    """A sortable, collision-resistant queue id (16 characters of base 32)."""
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    raw = millis.to_bytes(6, "big") + _random.getrandbits(32).to_bytes(4, "big")
    return base64.b32encode(raw).decode("ascii").rstrip("=")


@dataclass(frozen=True, slots=True)
class Location:
    """Where one queued message lives: a segment file and the record's offset in it."""

    segment: str
    offset: int
    """Offset of the record's envelope line."""
    queue_id: str


def _write_chunks(fd: int, chunks: list[bytes]) -> None:
    # One write for a batch of small messages; big ones are not copied into a join.
    if sum(map(len, chunks)) <= 1 << 20:
        write_all(fd, b"".join(chunks))
    else:
        for chunk in chunks:
            write_all(fd, chunk)


class Spool:
    """File operations on the spool; blocking, so callers run them on a thread."""

    def __init__(self, root: Path, *, fsync: bool = True, segment_bytes: int = 4 << 20) -> None:
        self.root = root
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.incoming = root / "incoming"
        self.queue = root / "queue"
        self.work = root / "work"
        self.corrupt = root / "corrupt"
        for path in (self.incoming, self.queue, self.work, self.corrupt):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        # segment -> messages in it not yet released; segments to quarantine at zero
        self._refs: dict[str, int] = {}
        self._damaged: set[str] = set()
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------
    def store(self, envelope: Envelope, content: bytes) -> Location:
        """Queue one message durably (see :meth:`store_many`)."""
        (result,) = self.store_many([(envelope, content)])
        if isinstance(result, OSError):
            raise result
        return result

    def store_many(self, items: Sequence[tuple[Envelope, bytes]]) -> list[Location | OSError]:
        """Queue messages durably, as few segment files as ``segment_bytes`` allows.

        Returns:
            For each item, its :class:`Location` once it is safely queued, else the
            OSError (disk full, read-only file system...; ``EINVAL`` for an
            envelope :func:`~buzon.spool.record.encode` refuses, which could not
            be read back): then nothing of it is left in ``queue/``.
        """
        results: list[Location | OSError] = []
        committed: list[tuple[Path, int]] = []  # (segment path, index of first result)
        for group in self._groups(items):
            first = len(results)
            segment = new_queue_id()
            tmp = self.incoming / segment
            locations: list[Location | OSError] = []
            offset = 0
            chunks: list[bytes] = []
            for envelope, content in group:
                envelope.size = len(content)
                try:
                    head = encode(envelope)
                except SpoolCorrupt as error:
                    # It could not be read back: refuse it (4xx), never queue it.
                    locations.append(OSError(errno.EINVAL, f"envelope not queueable: {error}"))
                    continue
                locations.append(Location(segment, offset, envelope.queue_id))
                chunks += (head, content)
                offset += len(head) + len(content)
            if not chunks:
                results += locations
                continue
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    _write_chunks(fd, chunks)
                    if self.fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, self.queue / segment)
            except OSError as error:
                unlink_quietly(tmp)
                results += [error] * len(group)
                continue
            with self._lock:
                self._refs[segment] = len(chunks) // 2  # a header and a body each
            committed.append((self.queue / segment, first))
            results += locations
        if committed and self.fsync:
            try:
                fsync_dir(self.queue)
            except OSError as error:
                # Durability of the renames is unknown: refuse them all (4xx) and take
                # the segments back so nothing is delivered behind a refusal.
                for path, _ in committed:
                    unlink_quietly(path)
                    with self._lock:
                        self._refs.pop(path.name, None)
                return [error if isinstance(r, Location) else r for r in results]
        return results

    def _groups(
        self, items: Sequence[tuple[Envelope, bytes]]
    ) -> Iterator[Sequence[tuple[Envelope, bytes]]]:
        start, size = 0, 0
        for i, (_, content) in enumerate(items):
            if i > start and size + len(content) > self.segment_bytes:
                yield items[start:i]
                start, size = i, 0
            size += len(content)
        if start < len(items):
            yield items[start:]

    # -- reading -------------------------------------------------------------------------
    def load(self, where: Location) -> tuple[Envelope, bytes]:
        """Read one queued message back: its envelope and its bytes.

        Raises:
            SpoolCorrupt: no valid record at that place.
            FileNotFoundError: the segment is gone (delivered and removed).
        """
        with open(self.queue / where.segment, "rb") as handle:
            handle.seek(where.offset)
            envelope = decode_header(handle.readline(MAX_HEADER + 1))
            content = handle.read(envelope.size)
        if envelope.queue_id != where.queue_id:
            raise SpoolCorrupt(
                f"record at {where.offset} in {where.segment} is {envelope.queue_id},"
                f" not {where.queue_id}"
            )
        if len(content) != envelope.size:
            raise TruncatedRecord(f"record {where.queue_id} in {where.segment} is truncated")
        return envelope, content

    def _records(self, segment: str) -> tuple[list[Location], bool]:
        """Parse a segment: the records found, and whether the whole file parsed."""
        records, fault = parse_segment((self.queue / segment).read_bytes())
        return [Location(segment, offset, e.queue_id) for offset, e in records], fault is None

    def recover(self) -> list[Location]:
        """At start-up: drop half-written files; return every queued message, oldest first.

        A segment that does not parse is quarantined in ``corrupt/`` once the
        records read from it before the damage are delivered (at once if none).
        """
        for path in self.incoming.iterdir():
            path.unlink(missing_ok=True)
        found: list[Location] = []
        for path in sorted(self.queue.iterdir()):
            if path.name.startswith("."):
                continue
            records, whole = self._records(path.name)
            if not whole:
                self._damaged.add(path.name)
            if not records:
                self.quarantine(path.name)
                continue
            with self._lock:
                self._refs[path.name] = len(records)
            found += records
        # Transform leftovers of messages no longer queued (a crash mid-transform
        # can leave <id>.out.tmp or a chain's <id>.out.stageN).
        queued = {where.queue_id for where in found}
        for path in self.work.iterdir():
            if path.name.split(".", 1)[0] not in queued:
                path.unlink(missing_ok=True)
        return found

    # -- releasing -----------------------------------------------------------------------
    def release(self, where: Location, *, work: bool = True) -> None:
        """One message of a segment is delivered; remove the segment after its last.

        Args:
            work: whether the message may have transform files in ``work/`` to
                remove. The caller passes False when it knows there are none,
                saving two failing ``unlink`` calls per message.
        """
        if work:
            for suffix in ("in", "out"):
                unlink_quietly(self.work / f"{where.queue_id}.{suffix}")
        with self._lock:
            left = self._refs.get(where.segment, 1) - 1
            if left > 0:
                self._refs[where.segment] = left
                return
            self._refs.pop(where.segment, None)
        if where.segment in self._damaged:
            self.quarantine(where.segment)
        else:
            unlink_quietly(self.queue / where.segment)

    def mark_damaged(self, segment: str) -> None:
        """Quarantine this segment instead of removing it once it is released."""
        self._damaged.add(segment)

    def quarantine(self, segment: str) -> Path:
        """Move an unreadable queue file to ``corrupt/`` for a human to look at."""
        self._damaged.discard(segment)
        target = self.corrupt / segment
        os.replace(self.queue / segment, target)
        return target

    def work_path(self, queue_id: str, suffix: str) -> Path:
        return self.work / f"{queue_id}.{suffix}"
