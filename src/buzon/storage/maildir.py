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
:func:`buzon.storage.mailbox.mailbox_name`; :func:`mailbox_path` checks it again and
refuses a mailbox folder that is a symbolic link, so nothing is ever written
outside the mail root even if someone plants a link there. A caller that
delivers many messages may pass a ``known`` map to :func:`write_tmp`: a mailbox
checked is then trusted for :data:`TRUST_SECONDS`, or until an operation on it
fails, which saves three ``lstat`` calls per delivery to a busy mailbox
(measured ~20 µs of the ~300 µs a 1 KB delivery costs). A link put in place of
a mailbox folder that already exists is thus noticed within a second, rather
than between the ``lstat`` and the ``open`` of one delivery (which a planted
link racing us could also slip through).

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
import fcntl
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from buzon.fsutil import fsync_dir, unlink_quietly
from buzon.storage.mailbox import check_mailbox

__all__ = [
    "UnsafePath",
    "Pending",
    "abandon",
    "already_delivered",
    "commit",
    "deliver",
    "write_tmp",
    "mailbox_path",
    "message_name",
    "sync_new",
    "trace_headers",
]

_SUBDIRS = ("tmp", "new", "cur")
TRUST_SECONDS = 1.0
"""How long a checked mailbox folder is trusted without checking it again."""
_KNOWN_MAX = 100_000  # trusted mailbox names kept at most (then the map starts over)

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
    host = host.replace("/", "\\057").replace(":", "\\072")
    return f"{int(received)}.Q{queue_id}R{index}.{host}"


def mailbox_path(root: Path, mailbox: str) -> Path:
    """The folder of ``mailbox`` under ``root``, checked to stay inside it.

    Raises:
        UnsafePath: the name is not a vetted mailbox name, or the folder exists as
            a symlink or a non-directory.
    """
    try:
        check_mailbox(mailbox)
    except ValueError as error:
        raise UnsafePath(f"unsafe mailbox name {mailbox!r}: {error}") from None
    path = root / mailbox
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a directory (symlink or file)")
    return path


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)  # lstat: a symlink is not a real dir
    except FileNotFoundError:
        return False


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


def _ensure_maildir(path: Path) -> None:
    if _is_real_dir(path / "new") and _is_real_dir(path / "tmp"):
        return
    if not _is_real_dir(path):
        _spread_mailboxes(path.parent)
    for sub in _SUBDIRS:
        try:
            os.makedirs(path / sub, mode=0o700, exist_ok=True)
        except FileExistsError:
            raise UnsafePath(f"{path / sub} exists and is not a directory") from None
    if os.path.islink(path / "new") or os.path.islink(path / "tmp"):
        raise UnsafePath(f"{path} has a symlinked tmp/ or new/")


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
        f"Received: from {helo_clean} ({peer})\r\n\tby {host} (Buzon) with {proto} id {queue_id}"
        f"\r\n\tfor <{recipient}>; {date}",
    )
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


@dataclass(slots=True)
class Pending:
    """A message written into ``tmp/`` (not yet flushed), waiting for :func:`commit`."""

    fd: int
    tmp: Path
    final: Path
    mailbox: str


def _checked_folder(root: Path, mailbox: str, known: dict[str, float] | None) -> Path:
    folder = mailbox_path(root, mailbox)
    _ensure_maildir(folder)
    if known is not None:
        if len(known) >= _KNOWN_MAX:
            known.clear()
        known[mailbox] = time.monotonic() + TRUST_SECONDS
    return folder


def write_tmp(
    root: Path, mailbox: str, name: str, parts: Iterable[bytes], *,
    known: dict[str, float] | None = None,
) -> Pending:
    """First half of a delivery: create ``tmp/<name>`` and write the message into it.

    Splitting the delivery lets a batch write every file first and flush them
    afterwards, so one journal commit covers many files.

    Args:
        known: mailbox name -> ``time.monotonic()`` until which its folder is
            trusted; updated here. A trusted mailbox is not checked again; if
            creating the file in it fails, it is forgotten and checked (and
            created) again before one more try, so a folder removed meanwhile is
            made anew. Callers forget a mailbox when a later step on it fails.

    Raises:
        UnsafePath: see :func:`mailbox_path`.
        OSError: the partial file is removed.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    if known is not None and known.get(mailbox, 0.0) > time.monotonic():
        folder = root / mailbox
        tmp = folder / "tmp" / name
        try:
            fd = os.open(tmp, flags, 0o600)
        except OSError:
            known.pop(mailbox, None)  # another thread may have dropped it too
            folder = _checked_folder(root, mailbox, known)
            fd = os.open(tmp, flags, 0o600)
    else:
        folder = _checked_folder(root, mailbox, known)
        tmp = folder / "tmp" / name
        fd = os.open(tmp, flags, 0o600)
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
        os.close(fd)
        unlink_quietly(tmp)
        raise
    return Pending(fd, tmp, folder / "new" / name, mailbox)


def commit(pending: Pending, *, fsync: bool = True) -> None:
    """Second half: flush the file, close it, rename it into ``new/``.

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
        os.rename(pending.tmp, pending.final)
    except BaseException:
        unlink_quietly(pending.tmp)
        raise


def abandon(pending: Pending) -> None:
    """Drop a written-but-uncommitted file (its message failed elsewhere)."""
    try:
        os.close(pending.fd)
    except OSError:
        pass
    unlink_quietly(pending.tmp)


def deliver(
    root: Path, mailbox: str, name: str, parts: Iterable[bytes], *, fsync: bool = True,
) -> Path:
    """Write one message into ``<root>/<mailbox>/new/<name>`` the Maildir way.

    ``tmp/`` → flush → rename into ``new/`` → flush ``new/``.

    Raises:
        UnsafePath: see :func:`mailbox_path`.
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
    fsync_dir(root / mailbox / "new")


def already_delivered(root: Path, mailbox: str, name: str) -> bool:
    """Whether ``name`` is in the mailbox's ``new/`` or, flagged, in ``cur/``."""
    folder = root / mailbox
    if (folder / "new" / name).exists() or (folder / "cur" / name).exists():
        return True
    try:
        return any(entry.startswith(name + ":") for entry in os.listdir(folder / "cur"))
    except OSError:
        return False
