"""Queue ids: 16 base-32 characters, sortable by arrival and not guessable.

A 48-bit millisecond clock then 32 random bits, so ids sort by arrival and do
not collide across hosts sharing a volume. Segment names are ids too.
"""

from __future__ import annotations

import base64
import os
import threading
import time

__all__ = ["new_queue_id"]

# Queue ids and segment names take their 32 random bits from the OS's CSPRNG: an
# id is shown to the client (``250 ... queued as <id>``) and names files, so the
# next one must not be guessable from the last (a seeded ``random.Random`` is).
# os.urandom per message (a syscall that releases the GIL) cost 12% of the event
# loop's time, so the bytes are drawn 4 KiB at a time (1,024 ids per syscall)
# into a pool per thread, which a forked child starts afresh.
_POOL_BYTES = 4096


class _Pool(threading.local):
    def __init__(self) -> None:
        self.buffer = b""
        self.used = 0


_pool = _Pool()
os.register_at_fork(after_in_child=lambda: _pool.__init__())


def _random32() -> bytes:
    pool = _pool
    used = pool.used
    if used + 4 > len(pool.buffer):
        pool.buffer, used = os.urandom(_POOL_BYTES), 0
    pool.used = used + 4
    return pool.buffer[used:used + 4]


def new_queue_id(now: float | None = None) -> str:
    """A sortable, unguessable queue id (16 characters of base 32).

    48 bits of millisecond clock then 32 bits from the OS's CSPRNG; also the
    name of the segment file a batch of messages is written to.
    """
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    raw = millis.to_bytes(6, "big") + _random32()
    return base64.b32encode(raw).decode("ascii").rstrip("=")
