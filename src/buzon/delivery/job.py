"""One queued message on its way through the delivery pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from buzon.delivery.junk import Route
from buzon.delivery.policy import Retries, State
from buzon.spool import Envelope, Location

__all__ = ["Job"]


@dataclass(slots=True)
class Job:
    """A message the pipeline is working on; lives in memory only.

    Its record in the queue is the truth: a crash loses the job, and recovery
    makes a new one in ``queued`` from the record.
    """

    where: Location
    envelope: Envelope | None = None
    content: bytes | None = None
    """The bytes to deliver: the queued message, or the transform's output."""
    state: State = State.QUEUED
    retries: Retries = Retries()  # frozen: one shared empty record
    check: bool = False
    """Look for earlier deliveries first (recovered after a crash, or retried)."""
    work: bool = False
    """May have transform files in ``work/`` (recovered, or transformed here)."""
    transformed: bool = False
    filtered: bool = False
    """``content`` is the transform chain's output (not the original under the
    failure policy): only then may the junk rule read its headers."""
    route: Route = Route.INBOX
    """Where the writer filed it (set on the delivery thread, counted on the loop)."""
    cached: int = 0
    """Bytes of this job counted against the pipeline's in-memory budget."""
    received: float = 0.0
    """When its 250 was sent (the envelope's ``received``); 0 until its envelope is read."""
