"""The durable spool: a message is on disk before it is acknowledged (SPEC §3).

Theory of operation
-------------------
Layout under ``<data_dir>/spool``::

    incoming/<segment>   being written; never trusted (removed at start-up)
    incoming/<id>.body   a large body being received (:mod:`buzon.spool.body`); same
    queue/<segment>      complete: one or more records, each a JSON envelope line
                         ("BUZON1 {...}\n") followed by exactly ``size`` message bytes
                         (the format and its checks: :mod:`buzon.spool.record`)
    corrupt/             queue files that did not parse, kept for a human

and, apart, the *work area* of this spool (``work``, by default
``<data_dir>/work/w<N>``, a volume of its own in Compose)::

    <id>.in|out          transform input and output of a queued message

The transform sidecars share the work area and nothing else: the queue, the
Maildirs and the state stay out of their reach. Nothing in it is trusted: a
transform is re-run on every attempt (:mod:`buzon.delivery.pipeline`), so
recovery just removes what belongs to no queued message, and the work files
of the old layout (``spool/work``) are dropped with it.

Messages that finish DATA at about the same time are committed together
(group commit, see :mod:`buzon.batching`): :meth:`Spool.store_many` writes
them as records of one *segment* file in ``incoming/``, flushes it, renames it
into ``queue/`` and flushes ``queue/`` once. Only then does the SMTP side
answer ``250 ... queued as <id>``. The rename is the commit point: after a
crash a segment is either wholly in ``queue/`` (its messages will be delivered)
or absent (and its clients, who never saw 250, still have their messages).
One file and two flushes per batch instead of per message is what makes
queueing cheap (file creation is the costly part on most file systems).

A message delivered to one mailbox may be queued in a file of its own instead,
in the form its mailbox gets it, so delivery links it rather than writing it
again (:mod:`buzon.spool.files`); its record in the segment holds no bytes.

A segment is removed once every message in it has been delivered (reference
counts in memory; :meth:`Spool.release`). That needs no flush: a removal lost
in a crash resurrects messages whose recipients the delivery pipeline finds
already delivered (see :mod:`buzon.storage.maildir`), so nobody gets them
twice. Segments are capped at ``segment_bytes`` so a message held for a long
time pins little else on disk.

Queue ids (and segment names) are minted by :mod:`buzon.spool.ids`.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from buzon.fsutil import fsync_dir, unlink_quietly
from buzon.spool import files
from buzon.spool.body import SpilledBody
from buzon.spool.grouping import Item, record_line, segment_groups, write_chunks
from buzon.spool.ids import new_queue_id
from buzon.spool.record import (
    MAX_HEADER,
    Envelope,
    SpoolCorrupt,
    TruncatedRecord,
    decode_header,
    parse_segment,
)

__all__ = ["Envelope", "Item", "Location", "Spool", "SpoolCorrupt", "new_queue_id"]

log = logging.getLogger("buzon.spool")

@dataclass(frozen=True, slots=True)
class Location:
    """Where one queued message lives: a segment file and the record's offset in it."""

    segment: str
    offset: int
    """Offset of the record's envelope line."""
    queue_id: str
    file_head: int | None = None
    """The record's ``file_head``: set when the message is in a file of its own."""


class Spool:
    """File operations on the spool; blocking, so callers run them on a thread."""

    def __init__(self, root: Path, *, fsync: bool = True, segment_bytes: int = 4 << 20,
                 work: Path | None = None, drop_cache: bool = False) -> None:
        """Args:
        root: the spool directory (queue, incoming, corrupt).
        work: the work area for transform files (default ``root/work``).
        drop_cache: drop the pages of message files once flushed (:mod:`buzon.spool.files`).
        """
        self.root = root
        self.fsync = fsync
        self.drop_cache = drop_cache
        self.segment_bytes = segment_bytes
        self.incoming = root / "incoming"
        self.queue = root / "queue"
        self.work = root / "work" if work is None else work
        self.corrupt = root / "corrupt"
        for path in (self.incoming, self.queue, self.work, self.corrupt):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        # segment -> messages in it not yet released; segments to quarantine at zero
        self._refs: dict[str, int] = {}
        self._damaged: dict[str, str] = {}  # segment -> its first fault
        self._damaged_files: set[str] = set()  # message files to set aside, not remove
        #: Called (segment, reason) from whichever thread moved a segment to
        #: corrupt/; the delivery pipeline counts it (``spool_quarantined``).
        self.on_quarantine: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------
    def store(self, envelope: Envelope, content: bytes) -> Location:
        """Queue one message durably (see :meth:`store_many`)."""
        (result,) = self.store_many([(envelope, content)])
        if isinstance(result, OSError):
            raise result
        return result

    def store_many(self, items: Sequence[Item]) -> list[Location | OSError]:
        """Queue messages durably, as few segment files as ``segment_bytes`` allows.

        An item with a delivery head (a third element that is not None) is
        written to a file of its own, the head in front (see the module
        docstring); its record in the segment holds no message bytes.

        Returns:
            For each item, its :class:`Location` once it is safely queued, else the
            OSError (disk full, read-only file system...; ``EINVAL`` for an
            envelope :func:`~buzon.spool.record.encode` refuses, which could not
            be read back): then nothing of it is left in ``queue/``.
        """
        results: list[Location | OSError] = []
        committed: list[tuple[str, list[Location]]] = []  # (segment, its message files)
        for group in segment_groups(items, self.segment_bytes):
            segment = new_queue_id()
            locations: list[Location | OSError] = []
            offset = 0
            chunks: list[bytes] = []
            own: list[Location] = []  # records whose bytes are in a file of their own
            fds: list[int] = []
            for envelope, content, *rest in group:
                head = rest[0] if rest else None
                try:
                    line = record_line(envelope, len(content), head)
                except OSError as error:
                    locations.append(error)
                    continue
                where = Location(segment, offset, envelope.queue_id, envelope.file_head)
                if head is not None:
                    try:
                        fds.append(files.write(self.message_file(where), head, content))
                    except OSError as error:
                        locations.append(error)
                        continue
                    own.append(where)
                    chunks.append(line)
                    offset += len(line)
                else:
                    chunks += (line, content)
                    offset += len(line) + len(content)
                locations.append(where)
            if not chunks:
                results += locations
                continue
            try:
                try:
                    if fds and self.fsync:
                        files.flush(self.queue, fds, drop=self.drop_cache)
                finally:
                    for fd in fds:
                        os.close(fd)
                self.write_segment(segment, partial(write_chunks, chunks=chunks))
            except OSError as error:
                self._remove_message_files(own)
                results += [error if isinstance(r, Location) else r for r in locations]
                continue
            with self._lock:
                self._refs[segment] = len(own) + (len(chunks) - len(own)) // 2
            committed.append((segment, own))
            results += locations
        return self.flush_queue(committed, results)

    def flush_queue(self, committed: Sequence[tuple[str, Sequence[Location]]],
                    results: list[Location | OSError]) -> list[Location | OSError]:
        """Flush ``queue/`` once for the segments just renamed into it (and their files).

        Returns:
            ``results``, or if the flush failed, every location in it replaced by
            that error: the durability of the renames is unknown, so they are all
            refused (4xx) and the segments and files taken back, so that nothing
            is delivered behind a refusal.
        """
        if not committed or not self.fsync:
            return results
        try:
            fsync_dir(self.queue)
        except OSError as error:
            for segment, own in committed:
                unlink_quietly(self.queue / segment)
                self._remove_message_files(own)
                self.forget(segment)
            return [error if isinstance(r, Location) else r for r in results]
        return results

    def _remove_message_files(self, own: Sequence[Location]) -> None:
        for where in own:
            unlink_quietly(self.message_file(where))

    def message_file(self, where: Location) -> Path:
        """Path of the file of a message queued in a file of its own (``where.file_head``)."""
        return self.queue / files.file_name(where.segment, where.queue_id)

    def write_segment(self, segment: str, write: Callable[[int], None]) -> None:
        """Create ``incoming/<segment>``, ``write(fd)`` it, flush it, rename it into ``queue/``.

        ``queue/`` itself is not flushed: the caller does that once per batch.

        Raises:
            OSError: nothing of the segment is left (neither in incoming/ nor queue/).
        """
        tmp = self.incoming / segment
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                write(fd)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.queue / segment)
        except OSError:
            unlink_quietly(tmp)
            raise

    def spill(self, queue_id: str) -> SpilledBody:
        """A new file in ``incoming/`` for the body of a large message (:mod:`buzon.spool.body`)."""
        return SpilledBody(self.incoming / f"{queue_id}.body")

    def hold(self, segment: str, records: int) -> None:
        """Count the records of a segment just committed (released one by one)."""
        with self._lock:
            self._refs[segment] = records

    def forget(self, segment: str) -> None:
        """Drop a committed segment's count (its commit was taken back)."""
        with self._lock:
            self._refs.pop(segment, None)

    # -- reading -------------------------------------------------------------------------
    def load(self, where: Location, *, content: bool = True) -> tuple[Envelope, bytes]:
        """Read one queued message back: its envelope and its bytes.

        Args:
            content: False to read only the envelope (the bytes returned are empty).

        Raises:
            SpoolCorrupt: no valid record at that place, or its own file is short.
            FileNotFoundError: the segment is gone (delivered and removed), or the
                message's own file is (released, its segment not yet removed).
        """
        with open(self.queue / where.segment, "rb") as handle:
            handle.seek(where.offset)
            envelope = decode_header(handle.readline(MAX_HEADER + 1))
            if envelope.queue_id != where.queue_id:
                raise SpoolCorrupt(
                    f"record at {where.offset} in {where.segment} is {envelope.queue_id},"
                    f" not {where.queue_id}"
                )
            if not content:
                return envelope, b""
            if envelope.file_head is None:
                data = handle.read(envelope.size)
        if envelope.file_head is not None:
            try:
                data = files.read(self.message_file(where), envelope.file_head, envelope.size)
            except ValueError as error:
                raise SpoolCorrupt(f"{where.queue_id} in {where.segment}: {error}") from None
        if len(data) != envelope.size:
            raise TruncatedRecord(f"record {where.queue_id} in {where.segment} is truncated")
        return envelope, data

    def _records(self, segment: str) -> tuple[list[Location], SpoolCorrupt | None]:
        """Parse a segment: the records found, and the fault that stopped it (or None)."""
        records, fault = parse_segment((self.queue / segment).read_bytes())
        return [Location(segment, at, e.queue_id, e.file_head) for at, e in records], fault

    def recover(self) -> list[Location]:
        """At start-up: drop half-written files; return every queued message, oldest first.

        A segment that does not parse is quarantined in ``corrupt/`` once the
        records read from it before the damage are delivered (at once if none).
        """
        for path in self.incoming.iterdir():
            path.unlink(missing_ok=True)
        found: list[Location] = []
        message_files: list[tuple[Path, str]] = []  # (path, its segment)
        for path in sorted(self.queue.iterdir()):
            if path.name.startswith(".link-probe-"):  # fsutil.can_link's, left by a crash
                path.unlink(missing_ok=True)
            if path.name.startswith("."):
                continue
            if path.is_dir():
                log.error("queue/%s is a directory, not a queue file; left alone", path.name)
                continue
            segment = files.segment_of(path.name)
            if segment is not None:
                message_files.append((path, segment))
                continue
            records, fault = self._records(path.name)
            if fault is not None:
                self._damaged[path.name] = f"{type(fault).__name__}: {fault}"
            if not records:
                self.quarantine(path.name)
                continue
            with self._lock:
                self._refs[path.name] = len(records)
            found += records
        files.sort_leftovers(self.queue, self.corrupt, message_files,
                             {files.file_name(w.segment, w.queue_id)
                              for w in found if w.file_head is not None})
        # Transform leftovers of messages no longer queued (a crash mid-transform
        # can leave <id>.out.tmp or a chain's <id>.out.stageN).
        queued = {where.queue_id for where in found}
        for path in self.work.iterdir():
            if path.name.split(".", 1)[0] not in queued and not path.is_dir():
                path.unlink(missing_ok=True)
        old = self.root / "work"
        if old != self.work and old.is_dir():
            # The old layout's work files: never trusted, re-made by the transform.
            shutil.rmtree(old, ignore_errors=True)
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
            for suffix in ("in", "out", "out.tmp"):
                unlink_quietly(self.work / f"{where.queue_id}.{suffix}")
        if where.file_head is not None:
            # First the file, then the count: a crash between the two leaves a record
            # whose file is gone, which delivery takes as released.
            if self.message_file(where).name in self._damaged_files:
                files.set_aside(self.message_file(where), self.corrupt)
            else:
                unlink_quietly(self.message_file(where))
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

    def mark_damaged(self, where: Location, reason: str = "a record did not read back") -> None:
        """Quarantine this message's segment (and own file) instead of removing them."""
        self._damaged.setdefault(where.segment, reason)
        if where.file_head is not None:
            self._damaged_files.add(self.message_file(where).name)

    def quarantine(self, segment: str) -> Path:
        """Move an unreadable queue file to ``corrupt/`` for a human; log and count it."""
        reason = self._damaged.pop(segment, "no record in it reads back")
        target = self.corrupt / segment
        os.replace(self.queue / segment, target)
        log.error("queue segment %s moved to corrupt/: %s", segment, reason)
        if self.on_quarantine is not None:
            self.on_quarantine(segment, reason)
        return target

    def work_path(self, queue_id: str, suffix: str) -> Path:
        return self.work / f"{queue_id}.{suffix}"

    def clear_work(self, queue_id: str) -> None:
        """Remove whatever a previous attempt (or anyone) left as this message's files."""
        for suffix in ("in", "out", "out.tmp"):
            unlink_quietly(self.work / f"{queue_id}.{suffix}")
