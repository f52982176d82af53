"""The durable queue: one door in (:class:`Intake`), recovery at start-up, release after delivery.

What happens to a message after it is queued lives in :mod:`buzon.delivery`.
"""

from buzon.spool.backpressure import QueueFull, QueueGate
from buzon.spool.body import SpilledBody
from buzon.spool.intake import Intake
from buzon.spool.queue import Location, Spool, new_queue_id
from buzon.spool.record import Envelope, SpoolCorrupt
from buzon.spool.shards import adopt_orphans, shard_root

__all__ = [
    "Envelope",
    "Intake",
    "Location",
    "QueueFull",
    "QueueGate",
    "SpilledBody",
    "Spool",
    "SpoolCorrupt",
    "adopt_orphans",
    "new_queue_id",
    "shard_root",
]
