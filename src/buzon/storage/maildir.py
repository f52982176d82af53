"""Maildir delivery (SPEC §3): ``<root>/<mailbox>/{tmp,new,cur}``, tmp → fsync → rename.

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

Every path is built from a mailbox name vetted by
:func:`buzon.storage.mailbox.mailbox_name`, checked again here, and is never
resolved through a symbolic link: a delivery opens the mailbox folder, then its
``tmp/`` and ``new/``, each with ``O_NOFOLLOW | O_DIRECTORY`` relative to the
one before (``openat``), creates the file relative to ``tmp/``'s descriptor and
renames it between the two descriptors. A link planted in place of a mailbox,
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
instead of 0.02 ms. Before creating the first mailbox folder, :func:`write_tmp`
marks the mail root as the top of a directory hierarchy (``chattr +T``, the
flag ``/home`` would carry), so ext4 spreads the mailbox folders over the
emptiest block groups as it does users' home directories. Best effort: other
file systems, and roots we do not own, simply keep their allocation.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from buzon.storage.mailbox import check_mailbox

__all__ = [
    "Pending",
    "UnsafePath",
    "abandon",
    "already_delivered",
    "commit",
    "deliver",
    "mailbox_path",
    "message_name",
    "sync_new",
    "trace_headers",
    "write_tmp",
]

_SUBDIRS = ("tmp", "new", "cur")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_QUEUE_ID = re.compile(r"[A-Z2-7]{16}")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# linux/fs.h: the inode flags ioctls and the "top of directory hierarchy" flag.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000
_topdir_tried: set[Path] = set()  # roots already handled in this process


class UnsafePath(OSError):
    """A mailbox path that would leave the mail root or go through a symlink."""


def message_name(received: float, queue_id: str, index: int, host: str) -> str:
    """The Maildir file name for one recipient of one queued message.

    ``/`` and ``:`` in the host name are escaped as the Maildir convention says
    (``\\057``, ``\\072``), since ``:`` separates the flags suffix.
    """
    if not _QUEUE_ID.fullmatch(queue_id):  # never a path from an unchecked field
        raise UnsafePath(f"queue id {queue_id[:40]!r} is not 16 characters of A-Z2-7")
    host = host.replace("/", "\\057").replace(":", "\\072")
    return f"{int(received)}.Q{queue_id}R{index}.{host}"


def _vetted(root: Path, mailbox: str) -> Path:
    try:
        check_mailbox(mailbox)
    except ValueError as error:
        raise UnsafePath(f"unsafe mailbox name {mailbox!r}: {error}") from None
    return root / mailbox


def mailbox_path(root: Path, mailbox: str) -> Path:
    """The folder of ``mailbox`` under ``root``, checked to stay inside it.

    Raises:
        UnsafePath: the name is not a vetted mailbox name, or the folder exists as
            a symlink or a non-directory.
    """
    path = _vetted(root, mailbox)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a directory (symlink or file)")
    return path


def _spread_mailboxes(root: Path) -> None:
    """Mark ``root`` ``+T`` so ext4 places new mailbox folders in uncrowded groups.

    See the module docstring. Any failure (not ext2/3/4, not our directory, an
    old kernel) leaves the root as it was: only the placement of folders is at
    stake, never mail.
    """
    if root in _topdir_tried:
        return
    _topdir_tried.add(root)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        if not flags[0] & _FS_TOPDIR_FL:
            flags[0] |= _FS_TOPDIR_FL
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags, True)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_dir(name: str | Path, dir_fd: int | None = None) -> int:
    """Open a directory without following a link at its last component.

    Raises:
        UnsafePath: it is a symlink or not a directory.
        FileNotFoundError: it is not there.
    """
    try:
        return os.open(name, _DIR, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(f"{name} is a symlink or not a directory") from None
        raise


def _create_maildir(root: Path, mailbox: str) -> None:
    """Create what is missing of ``<root>/<mailbox>/{tmp,new,cur}``: 0700, through no link."""
    os.makedirs(root, exist_ok=True)
    if not os.path.lexists(root / mailbox):
        _spread_mailboxes(root)
    with contextlib.suppress(FileExistsError):
        os.mkdir(root / mailbox, 0o700)
    folder = _open_dir(root / mailbox)
    try:
        for sub in _SUBDIRS:
            with contextlib.suppress(FileExistsError):
                os.mkdir(sub, 0o700, dir_fd=folder)
    finally:
        os.close(folder)


def _open_maildir(root: Path, mailbox: str, create: bool) -> tuple[int, int]:
    """Descriptors of the mailbox's ``tmp/`` and ``new/`` (created if ``create``).

    Raises:
        UnsafePath: see :func:`mailbox_path`; also a symlinked ``tmp/`` or ``new/``.
        FileNotFoundError: something is missing and ``create`` is false (or it
            vanished again while being created).
    """
    path = _vetted(root, mailbox)
    for last in (not create, True):
        try:
            folder = _open_dir(path)
            try:
                tmp = _open_dir("tmp", folder)
                try:
                    return tmp, _open_dir("new", folder)
                except BaseException:
                    os.close(tmp)
                    raise
            finally:
                os.close(folder)
        except FileNotFoundError:
            if last:
                raise
            _create_maildir(root, mailbox)
    raise AssertionError("unreachable")


def trace_headers(
    *,
    sender: str,
    recipient: str,
    helo: str | None,
    peer: str,
    host: str,
    queue_id: str,
    esmtp: bool,
    received: float,
) -> bytes:
    """``Return-Path``, ``Delivered-To`` and ``Received`` (RFC 5321 §4.4), CRLF-ended.

    The HELO name is the client's word: anything but printable ASCII is dropped
    from it so it cannot inject a header.
    """
    helo_clean = "".join(c for c in (helo or "") if 0x21 <= ord(c) < 0x7F)[:255] or "unknown"
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(received))
    proto = "ESMTP" if esmtp else "SMTP"
    lines = (
        f"Return-Path: <{sender}>",
        f"Delivered-To: {recipient}",
        (f"Received: from {helo_clean} ({peer})\r\n\tby {host} (Buzon) with {proto}"
         f" id {queue_id}\r\n\tfor <{recipient}>; {date}"),
    )
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


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


def write_tmp(root: Path, mailbox: str, name: str, parts: Iterable[bytes]) -> Pending:
    """First half of a delivery: create ``tmp/<name>`` and write the message into it.

    Splitting the delivery lets a batch write every file first and flush them
    afterwards, so one journal commit covers many files. The mailbox folder is
    created (0700) if it is missing.

    Raises:
        UnsafePath: see :func:`mailbox_path`; a symlinked ``tmp/``/``new/``, or a
            symlink where the file goes.
        OSError: the partial file is removed.
    """
    tmp_dir, new_dir = _open_maildir(root, mailbox, create=True)
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
    pending = Pending(fd, tmp_dir, new_dir, name, mailbox, root / mailbox / "new" / name)
    try:
        chunks = [memoryview(p) for p in parts]
        while chunks:
            written = os.writev(fd, chunks)
            while chunks and written >= len(chunks[0]):
                written -= len(chunks[0])
                chunks.pop(0)
            if chunks and written:
                chunks[0] = chunks[0][written:]
    except BaseException:
        abandon(pending)
        raise
    return pending


def commit(pending: Pending, *, fsync: bool = True) -> None:
    """Second half: flush the file, close it, rename it from ``tmp/`` into ``new/``.

    The caller flushes ``new/`` afterwards (:func:`sync_new`), once per mailbox.

    Raises:
        OSError: the tmp file is removed; nothing is left in ``new/``.
    """
    try:
        try:
            if fsync:
                os.fsync(pending.fd)
        finally:
            os.close(pending.fd)
        os.rename(pending.name, pending.name,
                  src_dir_fd=pending.tmp_dir, dst_dir_fd=pending.new_dir)
    except BaseException:
        pending._unlink_tmp()
        raise
    finally:
        pending._close_dirs()


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


def sync_new(root: Path, mailbox: str) -> None:
    """Flush a mailbox's ``new/`` directory, making the renames into it durable."""
    tmp_dir, new_dir = _open_maildir(root, mailbox, create=False)
    try:
        os.fsync(new_dir)
    finally:
        os.close(tmp_dir)
        os.close(new_dir)


def already_delivered(root: Path, mailbox: str, name: str) -> bool:
    """Whether ``name`` is in the mailbox's ``new/`` or, flagged, in ``cur/``.

    Looked up through the same link-refusing descriptors as a delivery, so a
    planted link cannot make a recipient look served.
    """
    try:
        folder = _open_dir(_vetted(root, mailbox))
    except (FileNotFoundError, UnsafePath):
        return False
    try:
        for sub in ("new", "cur"):
            try:
                fd = _open_dir(sub, folder)
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
    finally:
        os.close(folder)
