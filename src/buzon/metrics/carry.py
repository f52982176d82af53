"""A replica's counters in a mapped file that outlives its process (issue 15).

Theory of operation
-------------------
The state file is written at most once a second (:mod:`.keeper`), so a
process killed outright (``docker kill``, the OOM killer) forgets the counts
of its last second. That is tolerable for one server, but a Swarm replica is
*expected* to be killed and replaced, and the monitor's total over every
replica must still equal the messages they accepted.

So a server with ``BUZON_INSTANCE`` counts straight into one slot of a small
mapped file (``<data_dir>/instances/<name>/counters``, the layout of
:mod:`.shared`). A store into a ``MAP_SHARED`` mapping is in the kernel's page
cache the moment it is made; a killed process cannot lose it, only the machine
going down can (which is what the fsynced state file is for). At start,
:func:`open_carried` maps the file as the last process left it and takes, for
each persisted counter, the larger of its value there and in the state file:
both only ever grow, the mapping is the newer unless the machine crashed, the
state file the safer when it did. The gauges start at zero: the sessions died
with the process, and the queue is recounted as it is recovered.
"""

from __future__ import annotations

from pathlib import Path

from buzon.metrics.counters import GAUGES, PERSISTED, Counters
from buzon.metrics.shared import CounterSlot, SharedCounters

__all__ = ["COUNTERS_FILE", "open_carried"]

COUNTERS_FILE = "counters"


def open_carried(path: Path, restored: Counters) -> tuple[SharedCounters, CounterSlot]:
    """Map ``path`` (one slot), keeping what a previous process counted there.

    Args:
        path: the mapped counters file; made (zeroed) if missing or not one.
        restored: the counters read from the state file.

    Returns:
        The mapping (close it at shutdown) and its slot, holding the carried totals.
    """
    try:
        shared = SharedCounters(path, 1, create=False)
    except (FileNotFoundError, ValueError):
        shared = SharedCounters(path, 1, create=True)
    slot = shared.slot(0)
    for name in PERSISTED:
        setattr(slot, name, max(getattr(slot, name), getattr(restored, name)))
    for name in GAUGES:
        setattr(slot, name, 0)
    return shared, slot
