"""The delivery pipeline: queued message → (transforms) → every recipient's Maildir.

Theory of operation
-------------------
The spool's intake hands each message over as soon as it is durable
(:meth:`DeliveryPipeline.submit`), with its bytes while they fit in
``max_cached_bytes``; recovered and retried messages are read back from the
queue. Each message becomes a :class:`~buzon.delivery.job.Job` that moves
through the states of :mod:`buzon.delivery.policy`; this module does the I/O
of each state and asks :func:`~buzon.delivery.policy.decide` for the next one:

* ``transforming`` (only when the switch is on and a transform is
  configured), at most ``transform_concurrency`` at a time. Every attempt runs
  the transform afresh: it first removes the message's files from the work
  area, writes ``<id>.in`` as a new file and reads ``<id>.out`` only after
  this run reported success. A leftover ``<id>.out`` is never reused, because
  the work area is shared with the sidecars and nothing there proves who wrote
  it (a planted one once let a message skip the spam filter). Re-running costs
  one transform per crash or failed delivery, which are rare; a message a crash
  interrupted mid-delivery may reach its remaining recipients with a freshly
  transformed copy (identical for a deterministic transform).
* ``delivering`` on one of ``delivery_threads`` Maildir batch writers
  (:mod:`buzon.delivery.writer`): creating files is kernel work, and the GIL
  is released in each system call, so two threads overlap.
* ``waiting``/``held``: a timer on the event loop; at its end, ``queued``
  again. A shutdown cancels the timers: the message stays queued on disk for
  the next start.

Counters: ``transform_ok``, ``transform_failed`` (every failed attempt),
``transform_retried`` (failed and deferred) and ``transform_fallback``
(delivered without the transform under the ``deliver`` policy); ``deliveries``
(messages released after reaching every recipient) and the gauge ``queue_depth``
(messages handed over or recovered and not yet delivered). Every message
that leaves the queue is also reported to the intake's back-pressure gate
(:mod:`buzon.spool.backpressure`), which lets the next waiting message in.

Observations (:mod:`buzon.metrics.histograms`, when given a slot): the delay
from the 250 (the envelope's ``received``) to the message's files renamed into
``new/``, observed on the event loop when its batch is done; each transform
stage's duration and health (:mod:`buzon.delivery.timing`); and once a second
the time the oldest message this pipeline holds was received.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from buzon.batching import BatchThread
from buzon.delivery.job import Job
from buzon.delivery.junk import JunkRule, Route
from buzon.delivery.policy import Outcome, Rules, Step, decide
from buzon.delivery.timing import timed
from buzon.delivery.writer import MaildirWriter
from buzon.metrics.counters import Counters
from buzon.metrics.histograms import Histogram, ObservationSlot
from buzon.spool import Envelope, Location, QueueGate, Spool, SpoolCorrupt
from buzon.transform import Transform

__all__ = ["DeliveryPipeline"]

log = logging.getLogger("buzon.delivery")


class Switch(Protocol):
    """The transform switch as the pipeline reads it (:mod:`buzon.transform.switch`)."""

    @property
    def enabled(self) -> bool: ...


def failure_header(error: BaseException) -> bytes:
    """The ``X-Buzon-Transform`` header put on an original delivered after a failure."""
    kind = getattr(error, "kind", type(error).__name__)
    detail = str(getattr(error, "detail", error))
    detail = " ".join(detail.split())[:200].encode("ascii", "replace").decode()
    return f"X-Buzon-Transform: failed; kind={kind}; {detail}\r\n".encode("ascii")


class DeliveryPipeline:
    """Takes queued messages, delivers them, retries what fails; owns no socket."""

    def __init__(
        self,
        spool: Spool,
        mail_root: Path,
        *,
        hostname: str,
        counters: Counters,
        transform: Transform | None = None,
        switch: Switch | None = None,
        rules: Rules = Rules(),  # noqa: B008 - frozen
        transform_concurrency: int = 8,
        delivery_threads: int = 2,
        max_cached_bytes: int = 64 << 20,
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
        observations: ObservationSlot | None = None,
        junk_rule: JunkRule | None = None,
        gate: QueueGate | None = None,
        maildir_sync: str = "batch",
        drop_cache: bool = False,
    ) -> None:
        self.spool = spool
        #: The intake's back-pressure gate: told of every message that leaves the queue.
        self.gate = gate
        self.counters = counters
        self.observations = observations
        self._delay: Histogram | None = None
        if observations is not None:
            self._delay = observations.delay
            if transform is not None:
                transform = timed(transform, observations.stages)
        self.transform = transform
        self.switch = switch
        self.rules = rules
        self.fsync = fsync
        self.writer = MaildirWriter(spool, mail_root, hostname=hostname, fsync=fsync,
                                    junk_rule=junk_rule, sync=maildir_sync,
                                    drop_cache=drop_cache)
        spool.on_quarantine = self._quarantined
        self._clock = clock
        self._transform_slots = asyncio.Semaphore(transform_concurrency)
        self._max_cached = max_cached_bytes
        self._cached = 0
        self._inflight: dict[str, Job] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._waiting: dict[str, Job] = {}  # the jobs of _timers
        self._gauge: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._disks: list[BatchThread[Job, None]] = [
            BatchThread(f"delivery-{n}", self.writer.deliver_batch)
            for n in range(delivery_threads)
        ]
        self._next_disk = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------
    def start(self, recovered: Sequence[Location]) -> None:
        """Start delivering; ``recovered`` messages are checked for past deliveries."""
        for disk in self._disks:
            disk.start()
        if self.gate is not None:
            self.gate.add(len(recovered))
        for where in recovered:
            self.counters.queue_depth += 1
            self._dispatch(Job(where, check=True, work=True))
        if self.observations is not None:
            self._gauge = asyncio.create_task(self._oldest_gauge(), name="oldest-queued")

    async def stop(self) -> None:
        """Stop retries, transforms and deliveries; the batch being written finishes."""
        self._stopping = True
        if self._gauge is not None:
            self._gauge.cancel()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A backlog stays queued on disk for the next start: shutdown must be quick.
        await asyncio.gather(*(disk.stop(drain=False) for disk in self._disks))

    def file_head(self, envelope: Envelope, size: int) -> bytes | None:
        """For the intake: queue this message in a file of its own, with this head, to be
        linked into its mailbox? None: no (see :meth:`MaildirWriter.file_head`).

        Not while a transform is on: its output is written anyway.
        """
        if self._wants_transform():
            return None
        return self.writer.file_head(envelope, size)

    def submit(self, where: Location, envelope: Envelope | None = None,
               content: bytes | None = None) -> None:
        """Hand over a message just queued; its bytes are kept in memory if they fit."""
        self.counters.queue_depth += 1
        job = Job(where)
        if envelope is not None:
            job.received = envelope.received
            if where.file_head is not None and not self._wants_transform():
                job.envelope = envelope  # linked from its own file: the bytes are not needed
        if envelope is not None and content is not None and job.envelope is None and (
            self._cached + len(content) <= self._max_cached
        ):
            job.envelope, job.content, job.cached = envelope, content, len(content)
            self._cached += job.cached
        self._dispatch(job)

    def _wants_transform(self) -> bool:
        return self.transform is not None and self.switch is not None and self.switch.enabled

    @property
    def pending(self) -> int:
        """Messages being transformed or delivered, or waiting for a retry."""
        return len(self._inflight) + len(self._timers)

    async def wait_idle(self) -> None:
        """Wait until nothing is in progress or deferred (tests, benchmarks)."""
        while self.pending:
            self._idle.clear()
            await self._idle.wait()

    def oldest_received(self) -> float | None:
        """When the oldest message held here was received (None: none, or none read yet)."""
        times = [job.received for jobs in (self._inflight, self._waiting)
                 for job in jobs.values() if job.received]
        return min(times) if times else None

    async def _oldest_gauge(self, interval: float = 1.0) -> None:
        assert self.observations is not None
        while True:
            self.observations.set_oldest(self.oldest_received())
            await asyncio.sleep(interval)

    def _quarantined(self, segment: str, reason: str) -> None:
        # From recovery's or a delivery thread: one increment under the GIL, as
        # the delivery threads already do with the shared worker counters.
        self.counters.spool_quarantined += 1

    # -- state changes -----------------------------------------------------------------
    def _step(self, job: Job, outcome: Outcome, **facts: bool) -> Step:
        step = decide(job.state, outcome, job.retries, now=self._clock(), rules=self.rules,
                      queue_id=job.where.queue_id, **facts)
        job.state, job.retries = step.state, step.retries
        return step

    def _dispatch(self, job: Job) -> None:
        if self._stopping:
            return  # stays queued on disk; the next start delivers it
        self._idle.clear()
        self._inflight[job.where.queue_id] = job
        if self._wants_transform() and not job.transformed:
            self._step(job, Outcome.TRANSFORM)
            task = asyncio.create_task(self._transform_then_deliver(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._step(job, Outcome.DELIVER)
            self._to_disk(job)

    def _to_disk(self, job: Job) -> None:
        disk = self._disks[self._next_disk]
        self._next_disk = (self._next_disk + 1) % len(self._disks)
        disk.submit(job).add_done_callback(lambda future: self._delivered(job, future))

    def _release(self, job: Job) -> None:
        self._cached -= job.cached
        job.cached = 0
        job.content = job.envelope = None
        self._inflight.pop(job.where.queue_id, None)
        if not self.pending:
            self._idle.set()

    def _delivered(self, job: Job, future: asyncio.Future[None]) -> None:
        error = None if future.cancelled() else future.exception()
        self._release(job)
        if error is None:
            self._step(job, Outcome.DELIVERED)
            self.counters.queue_depth -= 1
            if self.gate is not None:
                self.gate.leave()
            if job.route is Route.DISCARD:
                self.counters.spam_discarded += 1
                return
            self.counters.deliveries += 1
            if job.route is Route.JUNK:
                self.counters.spam_junked += 1
            if self._delay is not None and job.received:
                self._delay.observe(self._clock() - job.received)
            return
        log.warning("delivery of %s deferred: %s", job.where.queue_id, error)
        job.check = True  # a partial delivery may have happened
        # The transformed bytes were dropped with the job; the retry runs the
        # transform again (a file left in the work area is never trusted).
        job.transformed = job.filtered = False
        self._wait(job, self._step(job, Outcome.FAILED))

    def _wait(self, job: Job, step: Step) -> None:
        if self._stopping:
            return

        def again() -> None:
            self._timers.pop(job.where.queue_id, None)
            self._waiting.pop(job.where.queue_id, None)
            self._step(job, Outcome.RETRY)
            self._dispatch(job)

        self._waiting[job.where.queue_id] = job
        self._timers[job.where.queue_id] = asyncio.get_running_loop().call_later(step.delay, again)

    # -- transforms --------------------------------------------------------------------
    async def _transform_then_deliver(self, job: Job) -> None:
        job.work = True  # work/<id>.in and .out may exist from now on
        try:
            async with self._transform_slots:
                content = await self._transform(job)
        except Exception:
            log.exception("transform stage of %s failed unexpectedly", job.where.queue_id)
            self._release(job)
            self._wait(job, self._step(job, Outcome.FAILED))
            return
        if content is None:
            return  # deferred; _transform released it
        job.content, job.transformed = content, True
        self._to_disk(job)

    async def _transform(self, job: Job) -> bytes | None:
        """The bytes to deliver next (transformed, or the original under the policy).

        None when the job was deferred. A record that is gone or unreadable goes
        on to the writer untransformed, which reports or quarantines it.
        """
        assert self.transform is not None
        if job.content is None or job.envelope is None:
            try:
                job.envelope, job.content = await asyncio.to_thread(self.spool.load, job.where)
                job.received = job.envelope.received
            except (FileNotFoundError, SpoolCorrupt):
                self._step(job, Outcome.GONE)
                job.transformed = True
                self._to_disk(job)
                return None
        out = self.spool.work_path(job.where.queue_id, "out")
        src = self.spool.work_path(job.where.queue_id, "in")
        try:
            # Whatever is there (a crash's leftover, or planted) goes first: only
            # what this run writes is read back.
            await asyncio.to_thread(self.spool.clear_work, job.where.queue_id)
            await asyncio.to_thread(_write_new, src, job.content, self.fsync)
            await self.transform.run(src, out)
            content = await asyncio.to_thread(_read_regular, out)
        except Exception as error:  # noqa: BLE001 - any failure of the stage is a transform failure
            self.counters.transform_failed += 1
            step = self._step(job, Outcome.FAILED, transform_failure=True,
                              retryable=getattr(error, "retryable", True))
            if not step.fallback:
                log.warning("transform of %s failed (%s); will retry", job.where.queue_id, error)
                self.counters.transform_retried += 1
                self._release(job)
                self._wait(job, step)
                return None
            log.warning("transform of %s failed past the retry window; delivering the "
                        "original: %s", job.where.queue_id, error)
            self.counters.transform_fallback += 1
            return failure_header(error) + job.content
        self.counters.transform_ok += 1
        self._step(job, Outcome.TRANSFORMED)
        job.filtered = True
        return content


def _write_new(path: Path, data: bytes, fsync: bool) -> None:
    """Create ``path`` (never through a symlink, never over a file planted since)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with open(fd, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def _read_regular(path: Path) -> bytes:
    """Read the output, refusing a symlink (it could point at any file smtp may read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        return handle.read()
