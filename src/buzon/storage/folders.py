"""Mailbox folders on disk: ``<root>/<domain>/<local>``, opened and created through no link.

The descriptor walk of :mod:`buzon.storage.maildir` (its docstring tells why):
each level is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to the one
above, and created 0700 the same way; the mail root alone is taken as
configured. Also the ext4 placement hint (``chattr +T``) for the mail root and
each domain folder.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import re
import stat
from pathlib import Path

from buzon.storage.mailbox import check_mailbox

__all__ = [
    "UnsafePath",
    "check_folder",
    "create_maildir",
    "mailbox_path",
    "open_dir",
    "open_folder",
    "open_mailbox",
    "open_maildir",
    "split_mailbox",
]

_SUBDIRS = ("tmp", "new", "cur")
# A Maildir++ folder below a mailbox (".Junk"): a dot, then a name that is one path
# component and needs no quoting anywhere (Dovecot's folder names are wider).
_FOLDER = re.compile(r"\.[A-Za-z][A-Za-z0-9_-]{0,63}")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# linux/fs.h: the inode flags ioctls and the "top of directory hierarchy" flag.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000
_topdir_tried: set[Path] = set()  # folders already handled in this process


class UnsafePath(OSError):
    """A mailbox path that would leave the mail root or go through a symlink."""


def split_mailbox(mailbox: str) -> tuple[str, str]:
    """``(domain, local)`` of a vetted mailbox name.

    Raises:
        UnsafePath: the name fails :func:`buzon.storage.mailbox.check_mailbox`.
    """
    try:
        check_mailbox(mailbox)
    except ValueError as error:
        raise UnsafePath(f"unsafe mailbox name {mailbox!r}: {error}") from None
    domain, _, local = mailbox.partition("/")
    return domain, local


def mailbox_path(root: Path, mailbox: str) -> Path:
    """The folder of ``mailbox`` (``<root>/<domain>/<local>``), checked to stay inside ``root``.

    Raises:
        UnsafePath: the name is not a vetted mailbox name, or the domain folder or
            the mailbox folder exists as a symlink or a non-directory.
    """
    domain, local = split_mailbox(mailbox)
    for path in (root / domain, root / domain / local):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            break
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{path} is not a directory (symlink or file)")
    return root / domain / local


def spread_mailboxes(root: Path) -> None:
    """Mark ``root`` ``+T`` so ext4 places new folders under it in uncrowded groups.

    See the module docstring. Called for the mail root (before its first
    domain folder) and for each domain folder (before its first mailbox). Any
    failure (not ext2/3/4, not our directory, an old kernel) leaves the folder
    as it was: only the placement of folders is at stake, never mail.
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


def open_dir(name: str | Path, dir_fd: int | None = None) -> int:
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


def open_mailbox(root: Path, domain: str, local: str) -> int:
    """A descriptor of ``<root>/<domain>/<local>``, each level opened through no link.

    The root is taken as configured (links and all); the domain folder is
    opened relative to it and the mailbox folder relative to that.

    Raises:
        UnsafePath: the domain or mailbox folder is a symlink or not a directory.
        FileNotFoundError: something is missing.
    """
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        folder = open_dir(domain, top)
    finally:
        os.close(top)
    try:
        return open_dir(local, folder)
    finally:
        os.close(folder)


def create_maildir(root: Path, domain: str, local: str) -> None:
    """Create what is missing of ``<root>/<domain>/<local>/{tmp,new,cur}``: 0700, through no link."""
    os.makedirs(root, exist_ok=True)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not os.path.lexists(root / domain):
            spread_mailboxes(root)
        with contextlib.suppress(FileExistsError):
            os.mkdir(domain, 0o700, dir_fd=top)
        folder = open_dir(domain, top)
    finally:
        os.close(top)
    try:
        if not os.path.lexists(root / domain / local):
            spread_mailboxes(root / domain)
        with contextlib.suppress(FileExistsError):
            os.mkdir(local, 0o700, dir_fd=folder)
        box = open_dir(local, folder)
    finally:
        os.close(folder)
    try:
        for sub in _SUBDIRS:
            with contextlib.suppress(FileExistsError):
                os.mkdir(sub, 0o700, dir_fd=box)
    finally:
        os.close(box)


def check_folder(folder: str) -> str:
    """Check a Maildir++ folder name (``""`` is the inbox, ``.Junk`` a folder).

    Raises:
        UnsafePath: anything else (a path, a dot name, a name needing quotes).
    """
    if folder and not _FOLDER.fullmatch(folder):
        raise UnsafePath(f"unsafe Maildir++ folder name {folder[:70]!r}")
    return folder


def _create_folder(box: int, folder: str) -> None:
    """Create the Maildir++ ``folder`` inside the open mailbox ``box``, 0700, through no link.

    With the ``maildirfolder`` marker file that the Maildir++ convention (and
    Dovecot) puts in every folder below the inbox.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700, dir_fd=box)
    sub = open_dir(folder, box)
    try:
        for name in _SUBDIRS:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=sub)
        with contextlib.suppress(FileExistsError):
            os.close(os.open("maildirfolder", os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=sub))
    finally:
        os.close(sub)


def open_folder(root: Path, mailbox: str, folder: str = "") -> int:
    """A descriptor of the mailbox's folder (the mailbox itself for ``""``), through no link.

    Raises:
        UnsafePath: see :func:`open_mailbox` and :func:`check_folder`.
        FileNotFoundError: something is missing.
    """
    check_folder(folder)
    box = open_mailbox(root, *split_mailbox(mailbox))
    if not folder:
        return box
    try:
        return open_dir(folder, box)
    finally:
        os.close(box)


def open_maildir(root: Path, mailbox: str, create: bool, folder: str = "") -> tuple[int, int]:
    """Descriptors of the ``tmp/`` and ``new/`` of the mailbox (or of its Maildir++ folder).

    Created if ``create``; a folder below the inbox is created with the inbox.

    Raises:
        UnsafePath: see :func:`mailbox_path` and :func:`check_folder`; also a
            symlinked folder, ``tmp/`` or ``new/``.
        FileNotFoundError: something is missing and ``create`` is false (or it
            vanished again while being created).
    """
    domain, local = split_mailbox(mailbox)
    check_folder(folder)
    for last in (not create, True):
        try:
            holder = open_folder(root, mailbox, folder)
            try:
                tmp = open_dir("tmp", holder)
                try:
                    return tmp, open_dir("new", holder)
                except BaseException:
                    os.close(tmp)
                    raise
            finally:
                os.close(holder)
        except FileNotFoundError:
            if last:
                raise
            create_maildir(root, domain, local)
            if folder:
                box = open_mailbox(root, domain, local)
                try:
                    _create_folder(box, folder)
                finally:
                    os.close(box)
    raise AssertionError("unreachable")
