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

A message queued in a file of its own (:mod:`buzon.spool.queue`: one mailbox,
at least :data:`LINK_MIN_SIZE` bytes, spool and Maildirs on one file system)
already holds exactly the bytes its mailbox gets, delivery head included, and
was flushed before its 250. Unless a transform changed it, it is delivered by
linking that file into ``new/`` (:func:`~buzon.storage.maildir.link_new`):
no bytes written a second time, only the link made durable, by the batch's
second ``syncfs`` or by flushing ``new/``. Where the link cannot be made
(``EXDEV``: the mail root moved to another file system since), it is
written like any other.

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

import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from buzon.delivery import junk
from buzon.delivery.job import Job
from buzon.fsutil import HAS_SYNCFS, can_link, sync_filesystem
from buzon.spool import Envelope, Location, Spool, SpoolCorrupt
from buzon.spool.files import check as check_message_file
from buzon.storage import maildir

__all__ = ["LINK_MIN_SIZE", "MaildirWriter"]

log = logging.getLogger("buzon.delivery")

# Written-but-uncommitted files held open by one batch; each holds three
# descriptors (the file, its tmp/ and its new/).
_MAX_OPEN_FILES = 256
# Where a copy may have gone: the inbox, or the Junk folder (delivery/junk.py).
_FOLDERS = ("", junk.JUNK_FOLDER)
Route = junk.Route
#: Smallest message queued in a file of its own, to be linked into its mailbox.
#: Below it the bytes copied twice cost less than a file of its own in the queue
#: (small messages share one segment file per batch).
LINK_MIN_SIZE = 32 << 10


class _Done(Exception):
    """A job needs no write: counted as done (and released) without one."""


class MaildirWriter:
    """Writes jobs into Maildirs; blocking, for a delivery thread."""

    def __init__(
        self, spool: Spool, mail_root: Path, *, hostname: str, fsync: bool = True,
        junk_rule: junk.JunkRule | None = None, sync: str = "batch", drop_cache: bool = False,
    ) -> None:
        self.spool = spool
        self.mail_root = mail_root
        self.hostname = hostname
        self.fsync = fsync
        self.junk_rule = junk_rule
        #: ``batch``: one syncfs per phase; ``file``: fsync per file and per new/.
        self.batch_sync = fsync and sync == "batch"
        #: Drop each file's pages once it is on disk (``BUZON_DELIVERY_PAGE_CACHE=drop``).
        self.drop_cache = drop_cache
        self._root_dev: int | None = None
        self._can_link: bool | None = None

    def file_head(self, envelope: Envelope, size: int) -> bytes | None:
        """The delivery head to queue a message with, in a file of its own; None: in a segment.

        Only for a message of ``size`` ≥ :data:`LINK_MIN_SIZE` bytes whose
        recipients all have one mailbox, when a file of the queue can be linked
        into the mail root (one file system and one mount: tried once, see
        :func:`~buzon.fsutil.can_link`; in the Compose stack they are two
        volumes, so it cannot). The head is what :meth:`_write_one` puts in
        front of that mailbox's copy.
        """
        if size < LINK_MIN_SIZE:
            return None
        first = envelope.mailboxes[0]
        if any(mailbox != first for mailbox in envelope.mailboxes):
            return None
        if not self.links():
            return None
        return maildir.trace_headers(sender=envelope.sender, recipient=envelope.recipients[0])

    def links(self) -> bool:
        """Whether queue files can be linked into the mail root; tried once, then kept.

        Blocking (a probe file is made and linked): the server asks once at start-up,
        on a thread, so that :meth:`file_head` on the event loop finds the answer.
        """
        if self._can_link is None:
            try:
                self.mail_root.mkdir(parents=True, exist_ok=True)
            except OSError:
                return False  # tried again next time
            self._can_link = can_link(self.spool.queue, self.mail_root)
            log.info("large messages to one mailbox are %s", "linked from the queue into it"
                     if self._can_link else "copied (the queue cannot link into the mail root)")
        return self._can_link

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
                    maildir.commit(file, fsync=self.fsync and not by_syncfs,
                                   drop_cache=self.drop_cache and (self.fsync or by_syncfs))
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
            # Its own file is what the mailbox gets, unless a transform changed it.
            linkable = job.where.file_head is not None and not job.transformed
            if envelope is None or (content is None and not linkable):
                try:
                    envelope, content = self._read(job.where, content=not linkable)
                except _Done:
                    continue
                except OSError as error:
                    results[index] = error
                    continue
                job.received = envelope.received  # for the delivery-delay histogram
            if linkable and len(set(envelope.mailboxes)) == 1:
                job.route = Route.INBOX
                try:
                    by_syncfs = self._link_one(envelope, job.where, job.check)
                except _Done:
                    continue
                except OSError as error:
                    if error.errno != errno.EXDEV:
                        results[index] = error
                        continue
                    # The mail root is on another file system now: written below.
                else:
                    if by_syncfs:
                        synced.add(index)
                    elif by_syncfs is False:
                        touched.setdefault((envelope.mailboxes[0], ""), set()).add(index)
                    continue
            if content is None:
                try:
                    envelope, content = self._read(job.where)
                except _Done:
                    continue
                except OSError as error:
                    results[index] = error
                    continue
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

    def _link_one(self, envelope: Envelope, where: Location, check: bool) -> bool | None:
        """Link a message's own queue file into its one mailbox's ``new/``.

        Returns:
            True: linked, to be made durable by the batch's ``syncfs``; False:
            linked, its ``new/`` to be flushed; None: delivered before (recovered).

        Raises:
            _Done: the queue file is gone (released by an earlier run) or not what its
                record says (set aside with its segment); never linked.
            OSError: not linked (``EXDEV``: another file system, write it instead).
        """
        assert where.file_head is not None
        mailbox = envelope.mailboxes[0]
        name = maildir.message_name(envelope.received, envelope.queue_id, 0, self.hostname)
        if check and maildir.already_delivered(self.mail_root, mailbox, name, _FOLDERS):
            return None
        source = self.spool.message_file(where)
        try:
            links = check_message_file(source, where.file_head, envelope.size)
        except FileNotFoundError:
            log.warning("file of queued message %s is gone: taken as delivered and released"
                        " by an earlier run", where.queue_id)
            raise _Done from None
        except ValueError as error:
            self._damaged(where, SpoolCorrupt(str(error)))
            raise _Done from None
        if links > 1:
            if check:
                return None  # linked by an earlier run, and moved since by a mail reader
            self._damaged(where, SpoolCorrupt(f"{source.name} has {links} links; a queue file"
                                              " has one"))
            raise _Done
        device = maildir.link_new(self.mail_root, mailbox, name, source)
        if self._root_dev is None:
            self._root_dev = os.stat(self.mail_root).st_dev
        return self.batch_sync and HAS_SYNCFS and device == self._root_dev

    def _read(self, where: Location, *, content: bool = True) -> tuple[Envelope, bytes]:
        """A queued message (or only its envelope) read back for delivery.

        Raises:
            _Done: nothing to deliver: its segment or own file is gone (delivered and
                released by an earlier run), or it is corrupt (set aside).
            OSError: not readable now; retried.
        """
        try:
            return self.spool.load(where, content=content)
        except FileNotFoundError:
            raise _Done from None
        except SpoolCorrupt as error:
            self._damaged(where, error)
            raise _Done from None

    def _damaged(self, where: Location, error: SpoolCorrupt) -> None:
        # Counted as done: the segment (and the message's own file) go to corrupt/
        # when its last good record is delivered, for a human to look at.
        log.error("queued message %s in segment %s is corrupt, to be moved to corrupt/: %s",
                  where.queue_id, where.segment, error)
        self.spool.mark_damaged(where, f"{type(error).__name__}: {error}")

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
