"""Small file-system helpers shared by the spool, the Maildir writer and the metrics."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "unlink_quietly", "write_all"]


def fsync_dir(path: Path) -> None:
    """Flush a directory, making the renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (it may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def unlink_quietly(path: Path) -> None:
    """Remove a file if it is there; cleanup must not hide the error being handled."""
    try:
        os.unlink(path)
    except OSError:
        pass
