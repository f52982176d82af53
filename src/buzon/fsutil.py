"""Small file-system helpers shared by the spool, the Maildir writer and the metrics."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "HAS_SYNCFS", "can_link", "drop_pages", "fsync_dir", "sync_filesystem", "unlink_quietly", "write_all",
    "writev_all",
]

# syncfs(2) is Linux's (2.6.39); Python's os module has sync() for every file system
# but not this one. None where the C library lacks it: callers flush file by file.
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)
#: Whether :func:`sync_filesystem` can flush (else it returns False at once).
HAS_SYNCFS = _syncfs is not None


def fsync_dir(path: Path) -> None:
    """Flush a directory, making the renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(fd: int) -> bool:
    """Flush every written file and directory of the file system ``fd`` is on.

    One call instead of one ``fsync`` per file and per directory: what the
    Maildir writer uses to make a whole batch durable (``BUZON_DELIVERY_SYNC=batch``).
    Since Linux 5.8 it reports a write-back error of that file system as ``fsync``
    would.

    Returns:
        False when the system has no ``syncfs`` (nothing was flushed).

    Raises:
        OSError: the flush failed.
    """
    if _syncfs is None:
        return False
    if _syncfs(fd) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"syncfs: {os.strerror(error)}")
    return True


def can_link(source_dir: Path, target_dir: Path) -> bool:
    """Whether a file in ``source_dir`` can be hard-linked into ``target_dir``.

    Tried, not guessed: ``link(2)`` fails with ``EXDEV`` between two mount points
    even of one file system (two Docker volumes on one disk have the same
    ``st_dev``). A probe file is made, linked and removed again.
    """
    name = f".link-probe-{os.getpid()}-{os.urandom(4).hex()}"
    source, target = source_dir / name, target_dir / name
    try:
        os.close(os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError:
        return False
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        return False
    else:
        unlink_quietly(target)
        return True
    finally:
        unlink_quietly(source)


def drop_pages(fd: int) -> None:
    """Ask the kernel to drop a file's cached pages; clean ones (flushed) go at once.

    For files written once and not read again soon (``BUZON_DELIVERY_PAGE_CACHE``).
    """
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass  # advice only: a file system without it keeps its pages


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (it may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def writev_all(fd: int, parts: Iterable[bytes]) -> None:
    """``os.writev`` until every byte of ``parts`` is written, without joining them."""
    chunks = [memoryview(p) for p in parts]
    while chunks:
        written = os.writev(fd, chunks)
        while chunks and written >= len(chunks[0]):
            written -= len(chunks[0])
            chunks.pop(0)
        if chunks and written:
            chunks[0] = chunks[0][written:]


def unlink_quietly(path: Path) -> None:
    """Remove a file if it is there; cleanup must not hide the error being handled."""
    try:
        os.unlink(path)
    except OSError:
        pass
