"""Hand freed message buffers back to the kernel at once (glibc's ``mallopt``).

Theory of operation
-------------------
A message body passes through buffers of hundreds of KB to MB: DATA's pieces
(256 KB), a large message read back for delivery (up to the size limit). glibc
serves allocations over ``M_MMAP_THRESHOLD`` (128 KiB at start) with their own
``mmap`` and unmaps them on ``free``; but by default the threshold *rises* to
the size of each such buffer freed (up to 32 MiB), after which buffers of that
size come from the heap and stay with the process when freed. So a burst of
large messages left the server's RSS at its peak, and each burst raised the
peak: 100 sessions of 10 MB at once gave 219, then 264 MB in two runs of
``scripts/bench.py --only 10m --repeat 2``; with the threshold fixed, 191 and
193 MB. Setting the threshold explicitly (as ``MALLOC_MMAP_THRESHOLD_=131072``
would) turns the rise off. Small objects are untouched: CPython's own allocator
serves them from its arenas.

Only on glibc; elsewhere (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["release_large_buffers"]

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_THRESHOLD = 128 * 1024  # glibc's own starting value: only the dynamic rise is turned off


def release_large_buffers() -> bool:
    """Fix glibc's mmap threshold at 128 KiB; False where there is no ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
