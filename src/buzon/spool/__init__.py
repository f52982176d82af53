"""The durable queue and its delivery worker."""

from buzon.spool.queue import Envelope, Spool, SpoolCorrupt, new_queue_id
from buzon.spool.worker import DeliveryWorker

__all__ = ["DeliveryWorker", "Envelope", "Spool", "SpoolCorrupt", "new_queue_id"]
