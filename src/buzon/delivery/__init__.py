"""Everything after the queue: transforms, retries and the failure policy, Maildir writing.

:mod:`~buzon.delivery.policy` decides (a pure state table),
:mod:`~buzon.delivery.pipeline` does the I/O of each state, and
:mod:`~buzon.delivery.writer` writes batches into Maildirs on delivery threads.
"""

from buzon.delivery.pipeline import DeliveryPipeline, failure_header
from buzon.delivery.policy import Rules

__all__ = ["DeliveryPipeline", "Rules", "failure_header"]
