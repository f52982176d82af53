"""The Maildir batch writer: a batch of jobs into their recipients' ``new/`` folders.

Theory of operation
-------------------
:meth:`MaildirWriter.deliver_batch` runs on a delivery thread
(:class:`~buzon.batching.BatchThread`) and delivers a batch in phases: write
every message's files into ``tmp/``, then flush and rename them into ``new/``,
then flush each touched ``new/`` directory once. Writing all files before the
first flush lets one journal commit cover many of them. A message counts as
delivered only when all of its files are renamed and their directories
flushed; only then is its queue record released.

How the batch is made durable (``BUZON_DELIVERY_SYNC``): ``file`` flushes
each file before its rename and each touched ``new/`` after, the textbook
Maildir way: on the benchmark machine that is two flushes per 1 KB message
and 250 µs of wall time, 110 µs of CPU. ``batch`` (the default) keeps the
same order with one ``syncfs(2)`` per phase instead: every file of the batch
written into ``tmp/``, the file system flushed (their data is on disk), all
renamed into ``new/``, the file system flushed again (the renames are on
disk): 45 µs and 30 µs per message (``scripts/fsync_cost.py``). A reader still
never sees a partial file, a crash still leaves every file either complete in
``new/`` or absent, and the queue record is released only after the second
flush. A mailbox on another file system than the mail root (a mount point
inside it) is flushed file by file, since ``syncfs`` covers one file system.

Maildir names are deterministic (see :mod:`buzon.storage.maildir`); a job that
was recovered after a crash or failed before (``check``) is checked recipient
by recipient, so nobody gets it twice.

Per-message work skipped because it cannot find anything: the "already
delivered?" look-ups for a job that was neither recovered nor failed before
(its names are new, since a queue id is minted once); removing ``work/`` files
of a job that never went through the transform stage (``Job.work``).

A message is released only after a successful write. The one error that
counts as "done" without a write is a queue segment that is gone when its
record is loaded (:meth:`~buzon.spool.queue.Spool.load`: delivered and
released by an earlier run); every error from the Maildir side, a
``FileNotFoundError`` from a removed ``tmp/`` or mail root included, defers the
message for a retry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from buzon.delivery import junk
from buzon.delivery.job import Job
from buzon.fsutil import sync_filesystem
from buzon.spool import Envelope, Spool, SpoolCorrupt
from buzon.storage import maildir

__all__ = ["MaildirWriter"]

log = logging.getLogger("buzon.delivery")

# Written-but-uncommitted files held open by one batch; each holds three
# descriptors (the file, its tmp/ and its new/).
_MAX_OPEN_FILES = 256
# Where a copy may have gone: the inbox, or the Junk folder (delivery/junk.py).
_FOLDERS = ("", junk.JUNK_FOLDER)
Route = junk.Route


class MaildirWriter:
    """Writes jobs into Maildirs; blocking, for a delivery thread."""

    def __init__(
        self, spool: Spool, mail_root: Path, *, hostname: str, fsync: bool = True,
        junk_rule: junk.JunkRule | None = None, sync: str = "batch",
    ) -> None:
        self.spool = spool
        self.mail_root = mail_root
        self.hostname = hostname
        self.fsync = fsync
        self.junk_rule = junk_rule
        #: ``batch``: one syncfs per phase; ``file``: fsync per file and per new/.
        self.batch_sync = fsync and sync == "batch"
        self._root_dev: int | None = None

    def _on_root_fs(self, file: maildir.Pending) -> bool:
        """Whether ``file`` is on the mail root's file system (covered by its syncfs)."""
        if self._root_dev is None:
            self._root_dev = os.stat(self.mail_root).st_dev
        return os.fstat(file.tmp_dir).st_dev == self._root_dev

    def _sync_root(self) -> bool:
        """syncfs the mail root's file system; False if the system cannot (flush per file)."""
        fd = os.open(self.mail_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return sync_filesystem(fd)
        finally:
            os.close(fd)

    def deliver_batch(self, jobs: Sequence[Job]) -> list[BaseException | None]:
        """Deliver ``jobs``; for each, None once delivered and released, or the error."""
        results: list[BaseException | None] = [None] * len(jobs)
        pending: list[tuple[int, maildir.Pending]] = []
        touched: dict[tuple[str, str], set[int]] = {}

        synced: set[int] = set()  # indexes whose files one syncfs made durable

        def commit_pending() -> None:
            flushed = False
            if self.batch_sync and pending:
                try:
                    flushed = self._sync_root()  # phase 1: the data of every file
                except OSError as error:
                    for index, _ in pending:
                        results[index] = results[index] or error
            for index, file in pending:
                if results[index] is not None:
                    maildir.abandon(file)
                    continue
                by_syncfs = flushed and self._on_root_fs(file)
                try:
                    maildir.commit(file, fsync=self.fsync and not by_syncfs)
                except OSError as error:
                    results[index] = error
                    continue
                if by_syncfs:
                    synced.add(index)
                else:
                    touched.setdefault((file.mailbox, file.folder), set()).add(index)
            pending.clear()

        for index, job in enumerate(jobs):
            envelope, content = job.envelope, job.content
            if envelope is None or content is None:
                try:
                    envelope, content = self.spool.load(job.where)
                except FileNotFoundError:
                    # Only the queue segment itself may be missing here: it was
                    # delivered and released by an earlier run.
                    continue
                except SpoolCorrupt as error:
                    # Counted as done: the segment goes to corrupt/ when its last good
                    # record is delivered, for a human to look at.
                    log.error("queued message %s in segment %s is corrupt, to be moved to"
                              " corrupt/: %s", job.where.queue_id, job.where.segment, error)
                    self.spool.mark_damaged(job.where.segment, f"{type(error).__name__}: {error}")
                    continue
                except OSError as error:
                    results[index] = error
                    continue
                job.received = envelope.received  # for the delivery-delay histogram
            job.route = Route.INBOX
            if job.filtered and self.junk_rule is not None:
                job.route, score = junk.route(content, self.junk_rule)
                if job.route is Route.DISCARD:
                    log.info("discarded %s: %s score %s is at or above the discard threshold"
                             " %s", envelope.queue_id, self.junk_rule.header, score,
                             self.junk_rule.discard)
                    continue  # nothing to write; released below like a delivery
            try:
                pending.extend((index, f) for f in self._write_one(
                    envelope, content, job.check, job.route.value))
            except OSError as error:
                # Anything from the Maildir side (FileNotFoundError included: a
                # removed tmp/ or mail root) defers the message; never "delivered".
                results[index] = error
            if len(pending) >= _MAX_OPEN_FILES:
                commit_pending()
        commit_pending()
        if synced:
            try:
                self._sync_root()  # phase 2: every rename into new/
            except OSError as error:
                for i in synced:
                    results[i] = error
        if self.fsync:
            for (mailbox, folder), indexes in touched.items():
                try:
                    maildir.sync_new(self.mail_root, mailbox, folder)
                except OSError as error:
                    for i in indexes:
                        results[i] = error
        for job, result in zip(jobs, results, strict=True):
            if result is None:
                self.spool.release(job.where, work=job.work)
        return results

    def _write_one(
        self, envelope: Envelope, content: bytes, check: bool, folder: str,
    ) -> list[maildir.Pending]:
        """Write one message into ``tmp/`` of each distinct mailbox (not yet committed).

        ``folder`` is the Maildir++ folder of every copy (``""``: the inbox;
        ``.Junk``). A check for an earlier delivery looks in both, since a
        transform run again after a crash may score differently.
        """
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
                if check and maildir.already_delivered(self.mail_root, mailbox, name, _FOLDERS):
                    continue
                headers = maildir.trace_headers(sender=envelope.sender, recipient=address)
                files.append(maildir.write_tmp(
                    self.mail_root, mailbox, name, (headers, content), folder))
        except BaseException:
            for file in files:
                maildir.abandon(file)
            raise
        return files
