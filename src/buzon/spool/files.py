"""Messages queued in a file of their own, in the form their mailbox gets them.

Theory of operation
-------------------
Most messages are queued as records of a shared segment file
(:mod:`buzon.spool.queue`). A message the delivery side will put in exactly
one mailbox, untransformed (large ones: :meth:`MaildirWriter.file_head
<buzon.delivery.writer.MaildirWriter.file_head>` decides), is written instead
to ``queue/<segment>.<queue id>.msg``: its *delivery head* (the trace lines
that mailbox's copy starts with), then the message. Its record in the segment
has ``file_head`` (the head's length) and no message bytes
(:mod:`buzon.spool.record`). Delivery then links this file into the Maildir
(:func:`buzon.storage.maildir.link_new`) rather than writing the same bytes a
second time; the queue's link is removed when the message is released.

Why: on the benchmark machine the kernel copying message bytes into the page
cache was 36-39 % of the server's CPU with 100 KB messages, and a file that
stays (a Maildir copy) costs far more than one removed a second later (a
segment), whose pages the next writes reuse. Writing the bytes once, into the
file that stays, halves the bytes written and flushed.

Durability is unchanged: the files of a batch are flushed (one ``syncfs``
where the system has it, else one ``fsync`` each) *before* their segment is
written, flushed and renamed into ``queue/``. The rename stays the one commit
point. After a crash, :func:`sort_leftovers` removes a file whose segment is
not in ``queue/`` (never acknowledged) and moves one that no readable record
names to ``corrupt/``, beside its damaged segment, for a human.

Page cache (``BUZON_DELIVERY_PAGE_CACHE``, :mod:`buzon.config.queue`): with
``drop`` each file's pages are dropped once it is on disk. Nothing here reads
them again unless a transform or a fallback copy does, and then from disk.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from buzon.fsutil import drop_pages, sync_filesystem, unlink_quietly, writev_all

__all__ = [
    "SUFFIX", "check", "file_name", "flush", "read", "segment_of", "set_aside", "sort_leftovers",
    "write",
]

log = logging.getLogger("buzon.spool")

SUFFIX = ".msg"
_NAME = re.compile(r"([A-Z2-7]{16})\.([A-Z2-7]{16})\.msg")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def file_name(segment: str, queue_id: str) -> str:
    """The file's name in ``queue/``: its segment first, so recovery can pair them."""
    return f"{segment}.{queue_id}{SUFFIX}"


def segment_of(name: str) -> str | None:
    """The segment a message file belongs to; None if ``name`` is not a message file's."""
    named = _NAME.fullmatch(name)
    return None if named is None else named.group(1)


def write(path: Path, head: bytes, content: bytes) -> int:
    """Create ``path`` holding ``head`` then ``content``; its descriptor, open, not flushed.

    Raises:
        OSError: nothing is left at ``path``.
    """
    fd = os.open(path, _CREATE, 0o600)
    try:
        writev_all(fd, (head, content))
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    return fd


def flush(directory: Path, fds: Sequence[int], *, drop: bool) -> None:
    """Make the files durable: one ``syncfs`` of ``directory``'s file system, or an
    ``fsync`` each where there is none; then drop their pages if ``drop``.

    Raises:
        OSError: the flush failed (the caller closes ``fds``).
    """
    holder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        synced = sync_filesystem(holder)
    finally:
        os.close(holder)
    if not synced:
        for fd in fds:
            os.fsync(fd)
    if drop:
        for fd in fds:
            drop_pages(fd)


def read(path: Path, head: int, size: int) -> bytes:
    """The ``size`` message bytes after the ``head`` bytes of a message file.

    Raises:
        FileNotFoundError: it is gone (released).
        ValueError: it holds more bytes than that (the caller names the damage);
            fewer are returned as they are, for the caller's length check.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        handle.seek(head)
        data = handle.read(size + 1)
    if len(data) > size:
        raise ValueError(f"{path.name} holds more than the {size} bytes its record says")
    return data


def check(path: Path, head: int, size: int) -> int:
    """Before a link: that ``path`` is a regular file of ``head + size`` bytes; its link count.

    What is linked into a mailbox is never read, so it is checked here: a file
    cut short (a crash with ``BUZON_FSYNC=false``, a damaged disk) or replaced by
    a symbolic link is refused, not delivered.

    Raises:
        FileNotFoundError: it is gone.
        ValueError: not a regular file, or not that long.
    """
    found = os.stat(path, follow_symlinks=False)
    if not stat.S_ISREG(found.st_mode):
        raise ValueError(f"{path.name} is not a regular file")
    if found.st_size != head + size:
        raise ValueError(f"{path.name} holds {found.st_size} bytes, its record says "
                         f"{head} + {size}")
    return found.st_nlink


def set_aside(path: Path, corrupt: Path) -> None:
    """Move a damaged message file to ``corrupt/`` for a human (it may be gone already)."""
    try:
        os.replace(path, corrupt / path.name)
    except FileNotFoundError:
        return
    log.error("message file %s moved to corrupt/", path.name)


def sort_leftovers(queue: Path, corrupt: Path, found: Iterable[tuple[Path, str]],
                   named: set[str]) -> None:
    """At start-up: keep the message files that queued records name; settle the others.

    Args:
        found: every message file in ``queue/``, with its segment.
        named: the names of the files that readable records refer to.
    """
    for path, segment in found:
        if path.name in named:
            continue
        if (queue / segment).exists() or (corrupt / segment).exists():
            # Its segment was committed, but no readable record names it: damage.
            os.replace(path, corrupt / path.name)
            log.error("message file %s is named by no readable record of its segment;"
                      " moved to corrupt/", path.name)
        else:
            path.unlink(missing_ok=True)  # its segment was never committed: never a 250
