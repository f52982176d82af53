"""Whether the queue can take mail: the ``/readyz`` check of the queue directories.

It writes nothing (a probe file in ``queue/`` would be read back as a segment,
and a check every few seconds must not wear the disk): each directory must be
on a file system mounted read-write, writable by this process (``access(2)``,
which also reports ``EROFS`` to root), and the file system must have room for
one message of the largest size the server accepts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["queue_problem"]


def queue_problem(dirs: Iterable[Path], min_free: int) -> str | None:
    """None when every directory in ``dirs`` can take a ``min_free``-byte message.

    Returns:
        One line naming the first directory that cannot, and why.
    """
    for path in dirs:
        try:
            stats = os.statvfs(path)
        except OSError as error:
            return f"queue directory {path}: {error.strerror or error}"
        if stats.f_flag & os.ST_RDONLY:
            return f"queue directory {path} is on a read-only file system"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"queue directory {path} is not writable"
        free = stats.f_bavail * stats.f_frsize
        if free < min_free:
            return f"queue directory {path} has {free} bytes free, less than one message"
    return None
