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
:func:`buzon.smtp.syntax.mailbox_name`; :func:`mailbox_path` checks again and
refuses a mailbox folder that is a symbolic link, so nothing is ever written
outside the mail root even if someone plants a link there.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from buzon.smtp.syntax import mailbox_name

__all__ = [
    "UnsafePath",
    "already_delivered",
    "deliver",
    "mailbox_path",
    "message_name",
    "sync_new",
    "trace_headers",
]

_SUBDIRS = ("tmp", "new", "cur")


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
        if mailbox_name(mailbox) != mailbox:
            raise ValueError("not normalised")
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


def _ensure_maildir(path: Path) -> None:
    if os.path.isdir(path / "new") and os.path.isdir(path / "tmp"):
        if os.path.islink(path / "new") or os.path.islink(path / "tmp"):
            raise UnsafePath(f"{path} has a symlinked tmp/ or new/")
        return
    for sub in _SUBDIRS:
        try:
            os.makedirs(path / sub, mode=0o700, exist_ok=True)
        except FileExistsError:
            raise UnsafePath(f"{path / sub} exists and is not a directory") from None
    if os.path.islink(path / "new") or os.path.islink(path / "tmp"):
        raise UnsafePath(f"{path} has a symlinked tmp/ or new/")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def deliver(
    root: Path, mailbox: str, name: str, parts: Iterable[bytes], *, fsync: bool = True,
    sync_dir: bool = True,
) -> Path:
    """Write one message into ``<root>/<mailbox>/new/<name>`` the Maildir way.

    Args:
        root: the mail root.
        mailbox: a vetted mailbox name.
        name: the file name (see :func:`message_name`).
        parts: byte strings written in order (trace headers, then the message).
        fsync: flush the file before the rename (and the directory after it).
        sync_dir: flush ``new/`` here; a caller delivering many messages passes
            False and calls :func:`sync_new` once per mailbox instead.

    Returns:
        The path in ``new/``.

    Raises:
        UnsafePath: see :func:`mailbox_path`.
        OSError: disk full, read-only file system, permissions: nothing is left in
            ``new/``; a partial file in ``tmp/`` is removed.
    """
    folder = mailbox_path(root, mailbox)
    _ensure_maildir(folder)
    tmp = folder / "tmp" / name
    final = folder / "new" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync and sync_dir:
        _fsync_dir(folder / "new")
    return final


def sync_new(root: Path, mailbox: str) -> None:
    """Flush a mailbox's ``new/`` directory, making the renames into it durable."""
    _fsync_dir(root / mailbox / "new")


def already_delivered(root: Path, mailbox: str, name: str) -> bool:
    """Whether ``name`` is in the mailbox's ``new/`` or, flagged, in ``cur/``."""
    folder = root / mailbox
    if (folder / "new" / name).exists() or (folder / "cur" / name).exists():
        return True
    try:
        return any(entry.startswith(name + ":") for entry in os.listdir(folder / "cur"))
    except OSError:
        return False
