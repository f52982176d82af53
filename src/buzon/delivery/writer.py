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

Maildir names are deterministic (see :mod:`buzon.storage.maildir`); a job that
was recovered after a crash or failed before (``check``) is checked recipient
by recipient, so nobody gets it twice.

Per-message work skipped because it cannot find anything: the "already
delivered?" look-ups for a job that was neither recovered nor failed before
(its names are new, since a queue id is minted once); removing ``work/`` files
of a job that never went through the transform stage (``Job.work``); checking
a mailbox folder checked less than a second ago (``known`` in
:func:`buzon.storage.maildir.write_tmp`), forgotten as soon as any operation on
it fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from buzon.delivery.job import Job
from buzon.spool import Envelope, Spool, SpoolCorrupt
from buzon.storage import maildir

__all__ = ["MaildirWriter"]

log = logging.getLogger("buzon.delivery")

_MAX_OPEN_FILES = 512  # written-but-uncommitted files held open by one batch


class MaildirWriter:
    """Writes jobs into Maildirs; blocking, for a delivery thread."""

    def __init__(self, spool: Spool, mail_root: Path, *, hostname: str, fsync: bool = True) -> None:
        self.spool = spool
        self.mail_root = mail_root
        self.hostname = hostname
        self.fsync = fsync
        # Mailboxes whose folders were checked recently; shared by the delivery
        # threads (dict operations are atomic under the GIL; a lost update only
        # costs one more check).
        self.known_mailboxes: dict[str, float] = {}

    def deliver_batch(self, jobs: Sequence[Job]) -> list[BaseException | None]:
        """Deliver ``jobs``; for each, None once delivered and released, or the error."""
        results: list[BaseException | None] = [None] * len(jobs)
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
                    self.known_mailboxes.pop(file.mailbox, None)
                    continue
                touched.setdefault(file.mailbox, set()).add(index)
            pending.clear()

        for index, job in enumerate(jobs):
            try:
                envelope, content = job.envelope, job.content
                if envelope is None or content is None:
                    envelope, content = self.spool.load(job.where)
                pending.extend((index, f) for f in self._write_one(envelope, content, job.check))
            except FileNotFoundError:
                pass  # the segment is gone: delivered and released by an earlier run
            except SpoolCorrupt as error:
                # Counted as done: the segment goes to corrupt/ when its last good
                # record is delivered, for a human to look at.
                log.error("queued message %s is corrupt (%s)", job.where.queue_id, error)
                self.spool.mark_damaged(job.where.segment)
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
                    self.known_mailboxes.pop(mailbox, None)
                    for i in indexes:
                        results[i] = error
        for job, result in zip(jobs, results, strict=True):
            if result is None:
                self.spool.release(job.where, work=job.work)
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
                    self.mail_root, mailbox, name, (headers, content), known=self.known_mailboxes
                ))
        except BaseException:
            for file in files:
                maildir.abandon(file)
            raise
        return files
