"""Counting delivered files in the Maildirs, cheaply and often.

Theory of operation
-------------------
A delivered message is a file in a ``new`` (or ``cur``) folder of a mailbox:
``<root>/<domain>/<local>`` for Buzón, ``<root>/<local>`` for the benchmark's
Postfix. The tree is walked two levels deep on every count, since mailboxes
appear as mail arrives; a mailbox's files are counted with ``os.listdir``
(names only: no ``DirEntry`` per file, no ``stat``), which is what a count of
hundreds of thousands of files costs. :meth:`DeliveryCounter.sweep` counts
and removes what is in ``new/``, as a mail reader would: a ten-minute soak
then counts only what arrived since the last sweep, and does not fill the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

__all__ = ["DeliveryCounter", "count_delivered", "wait_delivered"]

_GONE = (FileNotFoundError, NotADirectoryError)


class DeliveryCounter:
    """The delivered files under one mail root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mailboxes(self) -> list[str]:
        """Every directory one or two levels under the root (a mailbox or a domain)."""
        try:
            top = [e.path for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]
        except _GONE:
            return []
        found = list(top)
        for path in top:
            with contextlib.suppress(*_GONE):
                found.extend(e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
        return found

    def count(self) -> int:
        """Files now in every ``new/`` and ``cur/``."""
        total = 0
        for box in self.mailboxes():
            for sub in ("new", "cur"):
                with contextlib.suppress(*_GONE):
                    total += len(os.listdir(os.path.join(box, sub)))
        return total

    def sweep(self) -> int:
        """Remove the files in every ``new/``; returns how many there were.

        Every ``new/`` is listed before any file is removed, so the count is of one
        moment, however long the removals take.
        """
        listed = []
        for box in self.mailboxes():
            folder = os.path.join(box, "new")
            with contextlib.suppress(*_GONE):
                listed.append((folder, os.listdir(folder)))
        for folder, names in listed:
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
        return sum(len(names) for _, names in listed)


def count_delivered(root: Path) -> int:
    """Files in every ``new`` and ``cur`` folder of ``<root>/<domain>/<local>`` (Buzón)
    or ``<root>/<local>`` (the benchmark's Postfix)."""
    return DeliveryCounter(root).count()


async def wait_delivered(
    root: Path, target: int, started: float, timeout: float
) -> tuple[int, float]:
    """Poll until ``target`` files are in the Maildirs; returns (count, seconds since started)."""
    counter = DeliveryCounter(root)
    deadline = time.perf_counter() + timeout
    count = counter.count()
    while count < target and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        count = counter.count()
    return count, time.perf_counter() - started
