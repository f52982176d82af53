"""Counters shared by the supervisor and its SMTP worker processes (``BUZON_WORKERS`` > 1).

Theory of operation
-------------------
With several worker processes each one counts its own sessions, bytes and
messages, and the supervisor, which owns the monitor and the state file, must
answer with the sum at once (an operator's "messages sent" right after a 250
must already include it). So the counters live in a small file mapped into
every process (``<data_dir>/workers.counters``, created by the supervisor at
each start): a header, then one *slot* of signed 64-bit integers per worker,
one per :class:`~buzon.metrics.counters.Counters` field.

Each process writes only its own slot (a worker's event loop and its delivery
threads, under the GIL, exactly as with plain :class:`Counters`), so no lock
is needed; the supervisor reads all slots and adds its own :class:`Counters`,
which holds the totals restored from the state file and the monitor's counts.
A restarted worker keeps its slot's values (they were counted, and are still
in the totals), except the gauges ``concurrent_connections`` and
``queue_depth``, which the supervisor zeroes when the worker dies: its sessions
died with it, and its successor recounts the queue it recovers. Every slot is
a signed 64-bit word, so the monitor's v1 reads totals past 2**32 exactly.

The header also carries the transform switch, which only the supervisor
writes (on an operator's enable/disable) and every worker reads per message.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import fields
from pathlib import Path
from typing import Any

from buzon.metrics.counters import PERSISTED, Counters

__all__ = ["CounterSlot", "SharedCounters", "Totals"]

FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Counters))
_INDEX = {name: i for i, name in enumerate(FIELDS)}
_MAGIC = b"BUZONCTR"
_HEADER = struct.Struct("<8sII q")  # magic, version, slots, transform switch
_HEADER_WORDS = 4  # header padded to 32 bytes = 4 int64 words
_VERSION = 1


class SharedCounters:
    """The mapped counters file: ``slots`` worker slots and the switch."""

    def __init__(self, path: Path, slots: int, *, create: bool) -> None:
        self.path = path
        size = (_HEADER_WORDS + slots * len(FIELDS)) * 8
        if create:
            # A fresh zeroed file every start: the totals of earlier runs are in the
            # state file, not here. Written then renamed, so a worker never maps half.
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, _VERSION, slots, 0).ljust(size, b"\0"))
            os.replace(tmp, path)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != size:
                raise ValueError(f"{path} does not hold {slots} counter slots")
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        magic, version, found, _ = _HEADER.unpack_from(self._map)
        if (magic, version, found) != (_MAGIC, _VERSION, slots):
            self._map.close()
            raise ValueError(f"{path} is not a Buzón counters file for {slots} workers")
        self.slots = slots
        self._words = memoryview(self._map).cast("q")

    def slot(self, index: int) -> CounterSlot:
        """The counters worker ``index`` (0-based) writes."""
        if not 0 <= index < self.slots:
            raise IndexError(f"no worker slot {index}")
        return CounterSlot(self._words, _HEADER_WORDS + index * len(FIELDS))

    def total(self, name: str) -> int:
        """The sum of one counter over every worker slot."""
        i, step = _HEADER_WORDS + _INDEX[name], len(FIELDS)
        words = self._words
        return sum(words[i + step * k] for k in range(self.slots))

    def worker_died(self, index: int) -> None:
        """A worker's sessions died with it, and its queue is recounted by its successor."""
        slot = self.slot(index)
        slot.concurrent_connections = 0
        # Its queued messages are still on disk; the restarted worker recovers them
        # and counts them again.
        slot.queue_depth = 0

    @property
    def transform_enabled(self) -> bool:
        return bool(self._words[3])

    @transform_enabled.setter
    def transform_enabled(self, on: bool) -> None:
        self._words[3] = int(bool(on))

    def close(self) -> None:
        self._words.release()
        self._map.close()


class CounterSlot:
    """One worker's counters, read and written like :class:`Counters` attributes.

    Each counter is a property over the mapped words (added below, one per
    field), so ``slot.bytes_transferred += n`` on the SMTP hot path is two
    plain indexings, with no failed attribute lookup first.
    """

    __slots__ = ("_base", "_words")

    def __init__(self, words: memoryview, base: int) -> None:
        self._words = words
        self._base = base

    def snapshot(self) -> dict[str, int]:
        """The persisted counters (as :meth:`Counters.snapshot`), for the state file."""
        return {name: getattr(self, name) for name in PERSISTED}


def _slot_property(i: int) -> property:
    def get(self: CounterSlot) -> int:
        return int(self._words[self._base + i])

    def put(self: CounterSlot, value: int) -> None:
        self._words[self._base + i] = value

    return property(get, put)


for _i, _name in enumerate(FIELDS):
    setattr(CounterSlot, _name, _slot_property(_i))


class Totals:
    """What the monitor and the state file see: the supervisor's own counters plus every slot.

    ``own`` holds what was restored from the state file and what the supervisor
    counts itself (monitor requests). Setting a counter through this view, as
    the monitor handler does with ``totals.monitor_requests += 1``, changes
    ``own`` by the difference, so it is exact for counters the workers never
    touch (the only ones the supervisor changes).
    """

    __slots__ = ("_own", "_shared")

    def __init__(self, own: Counters, shared: SharedCounters) -> None:
        object.__setattr__(self, "_own", own)
        object.__setattr__(self, "_shared", shared)

    def __getattr__(self, name: str) -> int:
        if name not in _INDEX:
            raise AttributeError(name)
        return int(getattr(self._own, name)) + self._shared.total(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _INDEX:
            raise AttributeError(name)
        setattr(self._own, name, int(value) - self._shared.total(name))

    def snapshot(self) -> dict[str, int]:
        """The persisted counters, summed (as :meth:`Counters.snapshot`)."""
        return {name: getattr(self, name) for name in PERSISTED}
