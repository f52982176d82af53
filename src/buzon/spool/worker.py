"""The delivery worker: queued message → (transforms) → every recipient's Maildir.

Theory of operation
-------------------
A message moves through these states; its queue file in ``spool/queue``
exists in all of them but the last, so a crash anywhere resumes from ``queued``::

    queued ──▶ transforming ──ok──▶ delivering ──▶ done (queue file removed)
      ▲            │ fails                │ OSError
      └─ deferred ◀┴──────────────────────┘   (retried with backoff)

* ``transforming`` only when the switch is on and a transform is configured.
  Its output is kept in ``work/<id>.out`` so a crash after it reuses the same
  bytes and every recipient gets the same message.
* A failing transform (down, slow, non-zero exit, oversized output: whatever
  the runner raises) defers the message with exponential backoff. Once the
  first failure is older than ``retry_window`` the failure policy decides:
  ``deliver`` the original with an ``X-Buzon-Transform`` header, or ``hold`` it
  and keep retrying at the longest backoff.
* ``delivering`` runs on one :class:`~buzon.spool.disk.BatchThread`: a batch
  writes and flushes every message's files, flushes each touched ``new/``
  directory once, and only then removes the queue files. Maildir names are
  deterministic (see :mod:`buzon.storage.maildir`); a message that was
  recovered after a crash or failed before is checked recipient by recipient,
  so nobody gets it twice.

The bytes of a freshly queued message are handed over in memory (up to
``max_cached_bytes`` in total); past that, and for recovered or retried
messages, they are read back from the queue file.

Per-message work the hot path skips, because it cannot find anything:

* the "already delivered?" lookups, for a message neither recovered nor failed
  before (``_Item.check``): its names are new, since a queue id is minted once,
  when the message is queued, and nothing else writes those names;
* removing ``work/<id>.in|out``, for a message that never went through the
  transform stage in this process and was not recovered (``_Item.work``);
* checking a mailbox folder checked less than a second ago (see ``known`` in
  :func:`buzon.storage.maildir.write_tmp`); a mailbox is forgotten, and so
  checked again, as soon as any operation on it fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from buzon.metrics.counters import Counters
from buzon.spool.disk import BatchThread
from buzon.spool.queue import Envelope, Location, Spool, SpoolCorrupt
from buzon.storage import maildir

__all__ = ["DeliveryWorker", "Transform"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 300.0
_MAX_OPEN_FILES = 512  # written-but-uncommitted files held open by one batch


class Transform(Protocol):
    """What the worker needs of a transform (see :mod:`buzon.transform.runner`)."""

    async def run(self, src: Path, dst: Path) -> None: ...


class Switch(Protocol):
    @property
    def enabled(self) -> bool: ...


@dataclass(slots=True)
class _Item:
    where: Location
    envelope: Envelope | None = None
    content: bytes | None = None
    check: bool = False
    """Look for earlier deliveries first (recovered after a crash, or retried)."""
    work: bool = False
    """May have transform files in ``work/`` (recovered, or transformed here)."""
    transformed: bool = False
    attempts: int = 0
    first_failure: float | None = None
    """When the transform first failed (for the retry window)."""
    cached: int = 0
    """Bytes of this item counted against the worker's in-memory budget."""


def _failure_header(error: BaseException) -> bytes:
    kind = getattr(error, "kind", type(error).__name__)
    detail = str(getattr(error, "detail", error))
    detail = " ".join(detail.split())[:200].encode("ascii", "replace").decode()
    return f"X-Buzon-Transform: failed; kind={kind}; {detail}\r\n".encode("ascii")


class DeliveryWorker:
    """Takes queued messages, delivers them, retries what fails; owns no socket."""

    def __init__(
        self,
        spool: Spool,
        mail_root: Path,
        *,
        hostname: str,
        counters: Counters,
        transform: Transform | None = None,
        switch: Switch | None = None,
        retry_window: float = 600.0,
        failure_policy: str = "deliver",
        first_backoff: float = 1.0,
        transform_concurrency: int = 8,
        delivery_threads: int = 2,
        max_cached_bytes: int = 64 << 20,
        fsync: bool = True,
        clock: Any = time.time,
    ) -> None:
        self.spool = spool
        self.mail_root = mail_root
        self.hostname = hostname
        self.counters = counters
        self.transform = transform
        self.switch = switch
        self.retry_window = retry_window
        self.failure_policy = failure_policy
        self.first_backoff = first_backoff
        self.fsync = fsync
        self._clock = clock
        self._transform_slots = asyncio.Semaphore(transform_concurrency)
        self._max_cached = max_cached_bytes
        self._cached = 0
        self._inflight: dict[str, _Item] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Several delivery threads: creating files is kernel work that runs in
        # parallel on several cores (the GIL is released in each syscall).
        self._disks: list[BatchThread[_Item, None]] = [
            BatchThread(f"delivery-{n}", self._deliver_batch) for n in range(delivery_threads)
        ]
        self._next_disk = 0
        # Mailboxes whose folders were checked recently; shared by the delivery
        # threads (dict operations are atomic under the GIL; a lost update only
        # costs one more check).
        self._known_mailboxes: dict[str, float] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------
    def start(self, recovered: Sequence[Location]) -> None:
        """Start delivering; ``recovered`` messages are checked for past deliveries."""
        for disk in self._disks:
            disk.start()
        for where in recovered:
            self._dispatch(_Item(where, check=True, work=True))

    async def stop(self) -> None:
        """Stop retries, transforms and deliveries; the batch being written finishes."""
        self._stopping = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A backlog stays queued on disk for the next start: shutdown must be quick.
        await asyncio.gather(*(disk.stop(drain=False) for disk in self._disks))

    def submit(self, where: Location, envelope: Envelope | None = None,
               content: bytes | None = None) -> None:
        """Hand over a message just queued; its bytes are kept in memory if they fit."""
        item = _Item(where)
        if envelope is not None and content is not None and (
            self._cached + len(content) <= self._max_cached
        ):
            item.envelope, item.content, item.cached = envelope, content, len(content)
            self._cached += item.cached
        self._dispatch(item)

    @property
    def pending(self) -> int:
        """Messages being transformed or delivered, or waiting for a retry."""
        return len(self._inflight) + len(self._timers)

    async def wait_idle(self) -> None:
        """Wait until nothing is in progress or deferred (tests, benchmarks)."""
        while self.pending:
            self._idle.clear()
            await self._idle.wait()

    # -- dispatch ----------------------------------------------------------------------
    def _dispatch(self, item: _Item) -> None:
        if self._stopping:
            return  # stays queued on disk; the next start delivers it
        self._idle.clear()
        self._inflight[item.where.queue_id] = item
        wants_transform = (
            self.transform is not None and self.switch is not None and self.switch.enabled
        )
        if wants_transform and not item.transformed:
            task = asyncio.create_task(self._transform_then_deliver(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._to_disk(item)

    def _to_disk(self, item: _Item) -> None:
        disk = self._disks[self._next_disk]
        self._next_disk = (self._next_disk + 1) % len(self._disks)
        disk.submit(item).add_done_callback(
            lambda future: self._delivered(item, future)
        )

    def _release(self, item: _Item) -> None:
        self._cached -= item.cached
        item.cached = 0
        item.content = item.envelope = None
        self._inflight.pop(item.where.queue_id, None)
        if not self.pending:
            self._idle.set()

    def _delivered(self, item: _Item, future: asyncio.Future[None]) -> None:
        error = None if future.cancelled() else future.exception()
        self._release(item)
        if error is None:
            return
        log.warning("delivery of %s deferred: %s", item.where.queue_id, error)
        item.check = True  # a partial delivery may have happened
        # The transformed bytes were dropped with the item; the retry goes through
        # the transform stage again, which reuses work/<id>.out.
        item.transformed = False
        self._defer(item)

    def _defer(self, item: _Item) -> None:
        if self._stopping:
            return
        item.attempts += 1
        delay = min(self.first_backoff * 2 ** (item.attempts - 1), _MAX_BACKOFF)

        def again() -> None:
            self._timers.pop(item.where.queue_id, None)
            self._dispatch(item)

        self._timers[item.where.queue_id] = asyncio.get_running_loop().call_later(delay, again)

    # -- transforms --------------------------------------------------------------------
    async def _transform_then_deliver(self, item: _Item) -> None:
        item.work = True  # work/<id>.in and .out may exist from now on
        try:
            async with self._transform_slots:
                result = await self._transform(item)
        except Exception:
            log.exception("transform stage of %s failed unexpectedly", item.where.queue_id)
            self._release(item)
            self._defer(item)
            return
        if result is None:
            return  # deferred or gone; _transform released it
        item.content, item.transformed = result, True
        self._to_disk(item)

    async def _transform(self, item: _Item) -> bytes | None:
        """The transformed bytes, the original under the policy, or None (deferred/gone)."""
        assert self.transform is not None
        if item.content is None or item.envelope is None:
            try:
                item.envelope, item.content = await asyncio.to_thread(
                    self.spool.load, item.where
                )
            except (FileNotFoundError, SpoolCorrupt):
                # Gone, or unreadable: the delivery batch reports or quarantines it.
                item.transformed = True
                self._to_disk(item)
                return None
        out = self.spool.work_path(item.where.queue_id, "out")
        if out.exists():  # a previous run transformed it before a crash
            return await asyncio.to_thread(out.read_bytes)
        src = self.spool.work_path(item.where.queue_id, "in")
        await asyncio.to_thread(_write_file, src, item.content, self.fsync)
        try:
            await self.transform.run(src, out)
        except Exception as error:  # any failure of the stage is a transform failure
            self.counters.transform_failed += 1
            now = self._clock()
            if item.first_failure is None:
                item.first_failure = now
            # A failure that cannot get better by waiting (output over the limit,
            # program missing) goes to the policy at once.
            retryable = getattr(error, "retryable", True)
            within = retryable and now - item.first_failure < self.retry_window
            if within or self.failure_policy == "hold":
                log.warning("transform of %s failed (%s); will retry", item.where.queue_id, error)
                self.counters.transform_retried += 1
                self._release(item)
                self._defer(item)
                return None
            log.warning("transform of %s failed past the retry window; delivering the "
                        "original: %s", item.where.queue_id, error)
            self.counters.transform_fallback += 1
            return _failure_header(error) + item.content
        self.counters.transform_ok += 1
        return await asyncio.to_thread(out.read_bytes)

    # -- the disk batch (runs on the delivery thread) ---------------------------------------
    def _deliver_batch(self, items: Sequence[_Item]) -> list[BaseException | None]:
        """Deliver a batch in phases: write every file, flush and rename them, flush dirs.

        Writing all files before the first flush lets one journal commit cover
        many of them; each ``new/`` is flushed once per batch. A message counts as
        delivered only when all of its files are renamed and their directories
        flushed; only then is it released from the queue.
        """
        results: list[BaseException | None] = [None] * len(items)
        pending: list[tuple[int, maildir.Pending]] = []
        touched: dict[str, set[int]] = {}

        def commit_pending() -> None:
            for index, file in pending:
                if results[index] is not None:
                    maildir.abandon(file)
                    continue
                try:
                    maildir.commit(file, fsync=self.fsync)
                except OSError as error:
                    results[index] = error
                    self._known_mailboxes.pop(file.mailbox, None)
                    continue
                touched.setdefault(file.mailbox, set()).add(index)
            pending.clear()

        for index, item in enumerate(items):
            try:
                envelope, content = item.envelope, item.content
                if envelope is None or content is None:
                    envelope, content = self.spool.load(item.where)
                pending.extend((index, f) for f in self._write_one(envelope, content, item.check))
            except FileNotFoundError:
                pass  # the segment is gone: delivered and released by an earlier run
            except SpoolCorrupt as error:
                # Counted as done: the segment goes to corrupt/ when its last good
                # record is delivered, for a human to look at.
                log.error("queued message %s is corrupt (%s)", item.where.queue_id, error)
                self.spool.mark_damaged(item.where.segment)
            except OSError as error:
                results[index] = error
            if len(pending) >= _MAX_OPEN_FILES:
                commit_pending()
        commit_pending()
        if self.fsync:
            for mailbox, indexes in touched.items():
                try:
                    maildir.sync_new(self.mail_root, mailbox)
                except OSError as error:
                    self._known_mailboxes.pop(mailbox, None)
                    for i in indexes:
                        results[i] = error
        for item, result in zip(items, results, strict=True):
            if result is None:
                self.spool.release(item.where, work=item.work)
        return results

    def _write_one(self, envelope: Envelope, content: bytes, check: bool) -> list[maildir.Pending]:
        """Write one message into ``tmp/`` of each distinct mailbox (not yet committed)."""
        files: list[maildir.Pending] = []
        seen: set[str] = set()
        index = 0
        try:
            for address, mailbox in zip(envelope.recipients, envelope.mailboxes, strict=True):
                if mailbox in seen:  # RCPT TO the same mailbox twice: one copy, like Postfix
                    continue
                seen.add(mailbox)
                name = maildir.message_name(
                    envelope.received, envelope.queue_id, index, self.hostname
                )
                index += 1
                if check and maildir.already_delivered(self.mail_root, mailbox, name):
                    continue
                headers = maildir.trace_headers(
                    sender=envelope.sender,
                    recipient=address,
                    helo=envelope.helo,
                    peer=envelope.peer,
                    host=self.hostname,
                    queue_id=envelope.queue_id,
                    esmtp=envelope.esmtp,
                    received=envelope.received,
                )
                files.append(maildir.write_tmp(
                    self.mail_root, mailbox, name, (headers, content), known=self._known_mailboxes
                ))
        except BaseException:
            for file in files:
                maildir.abandon(file)
            raise
        return files


def _write_file(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
