"""Maildir delivery (SPEC §3): ``<root>/<domain>/<local>/{tmp,new,cur}``, tmp → fsync → rename.

Theory of operation
-------------------
A message reaches ``new/`` by the standard Maildir dance (D. J. Bernstein,
"Using maildir format"): the file is written under ``tmp/`` with a name unique
across processes and hosts, flushed to disk, then renamed into ``new/``, and the
``new/`` directory itself is flushed so the rename survives a power cut. Readers
never see a partial file.

Names are *deterministic* per (queue id, recipient index):
``<received>.Q<queue id>R<index>.<host>``. The queue id carries 32 random bits
and a millisecond clock, which makes the name unique across hosts sharing the
volume, and lets recovery ask "was this recipient already delivered?" by
looking for that name in ``new/`` or ``cur/`` (a mail reader may have moved it
there and appended ``:2,S`` flags), so a crash between two recipients never
delivers twice.

Every path is built from a mailbox name ``<domain>/<local>`` vetted by
:mod:`buzon.storage.mailbox` (the one home of the naming rule), checked again
here, and is never resolved through a symbolic link: a delivery opens the
domain folder relative to the mail root, the mailbox folder relative to the
domain folder, then its ``tmp/`` and ``new/``, each with
``O_NOFOLLOW | O_DIRECTORY`` relative to the one before (``openat``), creates
the file relative to ``tmp/``'s descriptor and renames it between the two
descriptors. Missing folders are created the same way, 0700, the domain folder
included. A link planted in place of a domain folder, a mailbox,
``tmp/`` or ``new/`` (or of the file) makes the delivery fail with
:class:`UnsafePath`, whenever it appears: nothing is checked once and trusted
later, so there is no window in which a swapped link is followed. (Until 0.x a
checked folder was trusted by path for a second; the descriptors cost about as
much as the ``lstat`` calls that trust saved.) Only the mail root itself is
taken as configured, links and all.

Where the mailbox folders go on disk matters on ext4 without a journal (the
case on the benchmark machine): there, creating a file scans every inode freed
in the last 5 to 300 seconds in its directory's block group before it takes a
free one ("recently_deleted" in ext4's inode allocator), so a busy group where
other programs delete files makes each ``open(O_CREAT)`` cost 0.3-0.9 ms of CPU
instead of 0.02 ms. Before creating the first domain folder, :func:`write_tmp`
marks the mail root as the top of a directory hierarchy (``chattr +T``, the
flag ``/home`` would carry), and each domain folder before its first mailbox,
so ext4 spreads the domain and mailbox folders over the
emptiest block groups as it does users' home directories. Best effort: other
file systems, and roots we do not own, simply keep their allocation.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from buzon.fsutil import drop_pages, writev_all
from buzon.storage.folders import (
    UnsafePath,
    mailbox_path,
    open_dir,
    open_folder,
    open_maildir,
)

__all__ = [
    "Pending",
    "UnsafePath",
    "abandon",
    "already_delivered",
    "commit",
    "deliver",
    "link_new",
    "mailbox_path",
    "message_name",
    "sync_new",
    "trace_headers",
    "write_tmp",
]

_QUEUE_ID = re.compile(r"[A-Z2-7]{16}")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def message_name(received: float, queue_id: str, index: int, host: str) -> str:
    """The Maildir file name for one recipient of one queued message.

    ``/`` and ``:`` in the host name are escaped as the Maildir convention says
    (``\\057``, ``\\072``), since ``:`` separates the flags suffix.
    """
    if not _QUEUE_ID.fullmatch(queue_id):  # never a path from an unchecked field
        raise UnsafePath(f"queue id {queue_id[:40]!r} is not 16 characters of A-Z2-7")
    host = host.replace("/", "\\057").replace(":", "\\072")
    return f"{int(received)}.Q{queue_id}R{index}.{host}"


def trace_headers(*, sender: str, recipient: str) -> bytes:
    """``Return-Path`` and ``Delivered-To`` for one recipient's copy, CRLF-ended.

    ``Received:`` is not here: the SMTP side adds it when the message is queued
    (``buzon.smtp.trace``), so the transforms see it. The addresses were checked
    by the SMTP parser and the queue record (no CR, LF or other control); they
    are UTF-8 only in a SMTPUTF8 transaction (RFC 6532 §3.2).
    """
    return f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode()


@dataclass(slots=True)
class Pending:
    """A message written into ``tmp/`` (not yet flushed), waiting for :func:`commit`.

    Holds three descriptors: the file, and its mailbox's ``tmp/`` and ``new/``.
    """

    fd: int
    tmp_dir: int
    new_dir: int
    name: str
    mailbox: str
    final: Path
    """Where the file will be once committed (for messages and tests)."""
    folder: str = ""
    """The Maildir++ folder it goes to (``""``: the inbox; ``.Junk``)."""

    def _close_dirs(self) -> None:
        for fd in (self.tmp_dir, self.new_dir):
            try:
                os.close(fd)
            except OSError:
                pass

    def _unlink_tmp(self) -> None:
        try:
            os.unlink(self.name, dir_fd=self.tmp_dir)
        except OSError:
            pass


def write_tmp(
    root: Path, mailbox: str, name: str, parts: Iterable[bytes], folder: str = "",
) -> Pending:
    """First half of a delivery: create ``tmp/<name>`` and write the message into it.

    Splitting the delivery lets a batch write every file first and flush them
    afterwards, so one journal commit covers many files. The mailbox folder is
    created (0700) if it is missing, and so is the Maildir++ ``folder`` (e.g.
    ``.Junk``) when one is given.

    Raises:
        UnsafePath: see :func:`mailbox_path`; a symlinked ``tmp/``/``new/``, or a
            symlink where the file goes.
        OSError: the partial file is removed.
    """
    tmp_dir, new_dir = open_maildir(root, mailbox, create=True, folder=folder)
    try:
        try:
            fd = os.open(name, _CREATE, 0o600, dir_fd=tmp_dir)
        except FileExistsError:
            # Left by an attempt that crashed; never written through (it may be a link).
            os.unlink(name, dir_fd=tmp_dir)
            fd = os.open(name, _CREATE, 0o600, dir_fd=tmp_dir)
    except BaseException:
        os.close(tmp_dir)
        os.close(new_dir)
        raise
    final = root / mailbox / folder / "new" / name if folder else root / mailbox / "new" / name
    pending = Pending(fd, tmp_dir, new_dir, name, mailbox, final, folder)
    try:
        writev_all(fd, parts)
    except BaseException:
        abandon(pending)
        raise
    return pending


def commit(pending: Pending, *, fsync: bool = True, drop_cache: bool = False) -> None:
    """Second half: flush the file, close it, rename it from ``tmp/`` into ``new/``.

    The caller flushes ``new/`` afterwards (:func:`sync_new`), once per mailbox.
    ``drop_cache``: the file's data is on disk (flushed here or by the caller's
    ``syncfs``), so ask the kernel to drop its pages (``BUZON_DELIVERY_PAGE_CACHE``).

    Raises:
        OSError: the tmp file is removed; nothing is left in ``new/``.
    """
    try:
        try:
            if fsync:
                os.fsync(pending.fd)
            if drop_cache:
                drop_pages(pending.fd)
        finally:
            os.close(pending.fd)
        os.rename(pending.name, pending.name,
                  src_dir_fd=pending.tmp_dir, dst_dir_fd=pending.new_dir)
    except BaseException:
        pending._unlink_tmp()
        raise
    finally:
        pending._close_dirs()


def link_new(root: Path, mailbox: str, name: str, source: Path, folder: str = "") -> int:
    """Deliver a complete, already flushed file by a hard link: ``new/<name>`` becomes it.

    The other way to reach ``new/``: no ``tmp/`` step, because the file is
    whole before the link appears (the queue wrote and flushed it,
    :mod:`buzon.spool.queue`); the link, like the rename, is atomic. The
    caller flushes ``new/`` (or the file system) afterwards. The link is never
    made through a symbolic link: ``source`` itself is not followed, and what
    was linked must be a regular file or it is taken back.

    Returns:
        The device the file is on (whether one ``syncfs`` covers it).

    Raises:
        UnsafePath: see :func:`mailbox_path`; or ``source`` is not a regular file.
        OSError: ``EXDEV`` when ``source`` is on another file system (the caller
            writes a copy instead); nothing is left in ``new/``.
    """
    tmp_dir, new_dir = open_maildir(root, mailbox, create=True, folder=folder)
    try:
        try:
            os.link(source, name, dst_dir_fd=new_dir, follow_symlinks=False)
        except FileExistsError:
            # As a rename into new/ would: the earlier file is replaced, atomically.
            try:
                os.unlink(name, dir_fd=tmp_dir)
            except FileNotFoundError:
                pass
            os.link(source, name, dst_dir_fd=tmp_dir, follow_symlinks=False)
            os.rename(name, name, src_dir_fd=tmp_dir, dst_dir_fd=new_dir)
        linked = os.stat(name, dir_fd=new_dir, follow_symlinks=False)
        if not stat.S_ISREG(linked.st_mode):
            os.unlink(name, dir_fd=new_dir)
            raise UnsafePath(f"{source} is not a regular file; not delivered")
        return linked.st_dev
    finally:
        os.close(tmp_dir)
        os.close(new_dir)


def abandon(pending: Pending) -> None:
    """Drop a written-but-uncommitted file (its message failed elsewhere)."""
    try:
        os.close(pending.fd)
    except OSError:
        pass
    pending._unlink_tmp()
    pending._close_dirs()


def deliver(
    root: Path, mailbox: str, name: str, parts: Iterable[bytes], *, fsync: bool = True,
) -> Path:
    """Write one message into ``<root>/<mailbox>/new/<name>`` the Maildir way.

    ``tmp/`` → flush → rename into ``new/`` → flush ``new/``.

    Raises:
        UnsafePath: see :func:`write_tmp`.
        OSError: disk full, read-only file system, permissions: nothing is left in
            ``new/``; a partial file in ``tmp/`` is removed.
    """
    pending = write_tmp(root, mailbox, name, parts)
    commit(pending, fsync=fsync)
    if fsync:
        sync_new(root, mailbox)
    return pending.final


def sync_new(root: Path, mailbox: str, folder: str = "") -> None:
    """Flush a mailbox's (or its folder's) ``new/`` directory, making the renames durable."""
    tmp_dir, new_dir = open_maildir(root, mailbox, create=False, folder=folder)
    try:
        os.fsync(new_dir)
    finally:
        os.close(tmp_dir)
        os.close(new_dir)


def already_delivered(
    root: Path, mailbox: str, name: str, folders: Iterable[str] = ("",),
) -> bool:
    """Whether ``name`` is in ``new/`` or, flagged, in ``cur/`` of the mailbox's ``folders``.

    ``folders`` are the Maildir++ folders a delivery may have gone to (``""`` is
    the inbox): a recovered message whose first delivery was filed into
    ``.Junk`` is found there. Looked up through the same link-refusing
    descriptors as a delivery, so a planted link cannot make a recipient look
    served.
    """
    for folder in folders:
        try:
            holder = open_folder(root, mailbox, folder)
        except (FileNotFoundError, UnsafePath):
            continue
        try:
            if _in_new_or_cur(holder, name):
                return True
        finally:
            os.close(holder)
    return False


def _in_new_or_cur(holder: int, name: str) -> bool:
    for sub in ("new", "cur"):
        try:
            fd = open_dir(sub, holder)
        except (FileNotFoundError, UnsafePath):
            continue
        try:
            try:
                os.stat(name, dir_fd=fd, follow_symlinks=False)
                return True
            except FileNotFoundError:
                pass
            if sub == "cur" and any(e.startswith(name + ":") for e in os.listdir(fd)):
                return True
        finally:
            os.close(fd)
    return False
