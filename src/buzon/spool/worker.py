"""The delivery worker: queued message → (transforms) → every recipient's Maildir.

Theory of operation
-------------------
A message moves through these states; the queue file in ``spool/queue`` exists
for all of them except the last, so a crash anywhere resumes from ``queued``::

    queued ──▶ transforming ──ok──▶ delivering ──▶ done (queue file removed)
      ▲            │ fails                │ OSError
      └─ deferred ◀┴──────────────────────┘   (retried with backoff)

* ``transforming`` only when the switch is on and a transform is configured.
  Its output is kept in ``work/<id>.out`` so a crash after it reuses the same
  bytes and every recipient gets the same message.
* A failing transform (down, slow, non-zero exit, oversized output: whatever
  the runner raises) defers the message with exponential backoff. Once the
  first failure is older than ``retry_window`` the failure policy decides:
  ``deliver`` the original with an ``X-Buzon-Transform`` header, or ``hold`` it
  and keep retrying at the longest backoff.
* ``delivering`` writes one Maildir file per distinct mailbox. Names are
  deterministic (see :mod:`buzon.storage.maildir`); after a crash or an earlier
  failed attempt each recipient is first looked up, so nobody gets a message twice.

Blocking file work runs in the default thread pool; the event loop only
schedules, so SMTP sessions never wait on a delivery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from buzon.metrics.counters import Counters
from buzon.spool.queue import Spool, SpoolCorrupt
from buzon.storage import maildir

__all__ = ["DeliveryWorker", "Transform"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 300.0


class Transform(Protocol):
    """What the worker needs of a transform (see :mod:`buzon.transform.runner`)."""

    async def run(self, src: Path, dst: Path) -> None: ...


class Switch(Protocol):
    @property
    def enabled(self) -> bool: ...


@dataclass(slots=True)
class _Attempts:
    count: int = 0
    first_failure: float = 0.0
    transform_failed: bool = False


def _failure_header(error: BaseException) -> bytes:
    kind = getattr(error, "kind", type(error).__name__)
    detail = " ".join(str(error).split())[:200].encode("ascii", "replace").decode()
    return f"X-Buzon-Transform: failed; kind={kind}; {detail}\r\n".encode("ascii")


class DeliveryWorker:
    """Takes queue ids, delivers them, retries what fails; owns no socket."""

    def __init__(
        self,
        spool: Spool,
        mail_root: Path,
        *,
        hostname: str,
        counters: Counters,
        transform: Transform | None = None,
        switch: Switch | None = None,
        retry_window: float = 600.0,
        failure_policy: str = "deliver",
        first_backoff: float = 1.0,
        concurrency: int = 4,
        fsync: bool = True,
        clock: Any = time.time,
    ) -> None:
        self.spool = spool
        self.mail_root = mail_root
        self.hostname = hostname
        self.counters = counters
        self.transform = transform
        self.switch = switch
        self.retry_window = retry_window
        self.failure_policy = failure_policy
        self.first_backoff = first_backoff
        self.fsync = fsync
        self._clock = clock
        self._concurrency = concurrency
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._attempts: dict[str, _Attempts] = {}
        self._recovered: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0

    # -- lifecycle -------------------------------------------------------------------
    def start(self, recovered: list[str]) -> None:
        """Start the worker tasks; ``recovered`` ids are checked for past deliveries."""
        self._recovered.update(recovered)
        for queue_id in recovered:
            self.submit(queue_id)
        for n in range(self._concurrency):
            self._tasks.append(asyncio.create_task(self._run(), name=f"delivery-{n}"))

    async def stop(self) -> None:
        """Cancel waiting retries and the workers; a delivery in a thread runs to its end."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def submit(self, queue_id: str) -> None:
        """Hand a newly queued (or recovered) message to the workers."""
        self._idle.clear()
        self._queue.put_nowait(queue_id)

    @property
    def pending(self) -> int:
        """Messages queued, deferred or being delivered right now."""
        return self._queue.qsize() + len(self._timers) + self._busy

    async def wait_idle(self) -> None:
        """Wait until nothing is queued, deferred or in progress (tests, shutdown)."""
        while self.pending:
            self._idle.clear()
            await self._idle.wait()

    # -- the work --------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            queue_id = await self._queue.get()
            self._busy += 1
            try:
                await self._process(queue_id)
            except Exception:
                # One message's bug must not stop deliveries: defer and say so.
                log.exception("delivery of %s failed unexpectedly", queue_id)
                self._defer(queue_id)
            finally:
                self._busy -= 1
                if not self.pending:
                    self._idle.set()

    async def _process(self, queue_id: str) -> None:
        try:
            envelope, content = await asyncio.to_thread(self.spool.load, queue_id)
        except FileNotFoundError:
            return
        except SpoolCorrupt as error:
            where = await asyncio.to_thread(self.spool.quarantine, queue_id)
            log.error("queue file %s is corrupt (%s); moved to %s", queue_id, error, where)
            return
        attempts = self._attempts.get(queue_id)
        if self.transform is not None and self.switch is not None and self.switch.enabled:
            transformed = await self._transform(queue_id, content, attempts)
            if transformed is None:
                return
            content = transformed
        check = queue_id in self._recovered or attempts is not None
        try:
            await asyncio.to_thread(self._deliver_all, envelope, content, check)
        except OSError as error:
            log.warning("delivery of %s deferred: %s", queue_id, error)
            self._defer(queue_id)
            return
        await asyncio.to_thread(self.spool.remove, queue_id)
        self._attempts.pop(queue_id, None)
        self._recovered.discard(queue_id)
        log.info("delivered %s to %d mailbox(es)", queue_id, len(set(envelope.mailboxes)))

    async def _transform(
        self, queue_id: str, content: bytes, attempts: _Attempts | None
    ) -> bytes | None:
        """The transformed message, the original under the policy, or None (deferred)."""
        assert self.transform is not None
        out = self.spool.work_path(queue_id, "out")
        if out.exists():  # a previous run finished the transform before a crash
            return await asyncio.to_thread(out.read_bytes)
        src = self.spool.work_path(queue_id, "in")
        await asyncio.to_thread(_write_file, src, content, self.fsync)
        try:
            await self.transform.run(src, out)
        except Exception as error:  # any failure of the stage is a transform failure
            self.counters.transform_failed += 1
            now = self._clock()
            state = attempts or self._attempts.setdefault(queue_id, _Attempts())
            if not state.transform_failed:
                state.transform_failed, state.first_failure = True, now
            if now - state.first_failure < self.retry_window or self.failure_policy == "hold":
                log.warning("transform of %s failed (%s); will retry", queue_id, error)
                self.counters.transform_retried += 1
                self._defer(queue_id)
                return None
            log.warning("transform of %s failed past the retry window; delivering original: %s",
                        queue_id, error)
            self.counters.transform_fallback += 1
            return _failure_header(error) + content
        self.counters.transform_ok += 1
        return await asyncio.to_thread(out.read_bytes)

    def _deliver_all(self, envelope: Any, content: bytes, check: bool) -> None:
        seen: set[str] = set()
        index = 0
        for address, mailbox in zip(envelope.recipients, envelope.mailboxes, strict=True):
            if mailbox in seen:  # RCPT TO the same mailbox twice: one copy, like Postfix
                continue
            seen.add(mailbox)
            name = maildir.message_name(envelope.received, envelope.queue_id, index, self.hostname)
            index += 1
            if check and maildir.already_delivered(self.mail_root, mailbox, name):
                continue
            headers = maildir.trace_headers(
                sender=envelope.sender,
                recipient=address,
                helo=envelope.helo,
                peer=envelope.peer,
                host=self.hostname,
                queue_id=envelope.queue_id,
                esmtp=envelope.esmtp,
                received=envelope.received,
            )
            maildir.deliver(self.mail_root, mailbox, name, (headers, content), fsync=self.fsync)

    def _defer(self, queue_id: str) -> None:
        state = self._attempts.setdefault(queue_id, _Attempts())
        state.count += 1
        delay = min(self.first_backoff * 2 ** (state.count - 1), _MAX_BACKOFF)
        loop = asyncio.get_running_loop()

        def _again() -> None:
            self._timers.pop(queue_id, None)
            self._queue.put_nowait(queue_id)

        self._timers[queue_id] = loop.call_later(delay, _again)


def _write_file(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
