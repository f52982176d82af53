"""The DATA command of a session: the memory it may hold, the body, the handler.

Theory of operation
-------------------
A mixin of :class:`buzon.smtp.session.BuzonSMTP`. The body comes off the
socket in pieces (:func:`buzon.smtp.dataread.read_pieces`), each checked and
dot-unstuffed as it arrives (:class:`buzon.smtp.unstuff.Unstuffer`: the size
limit, ``552 5.3.4``; lines over 1,000 octets, ``500 5.5.2`` or kept as the
handler's ``accept_long_lines`` says). Once refused, the rest is read and
dropped, and the refusal is the reply after the terminator.

The message is kept in memory up to the handler's ``spill_size``
(``BUZON_DATA_SPILL_SIZE``); past it, what comes next is written to the spool
as it arrives (:meth:`buzon.spool.Intake.spill`), and only the first part, where
the header block is, stays in memory. So a session holds at most about
``spill_size`` plus two pieces, whatever the message's size, and 100 sessions
sending 10 MB each do not need a gigabyte.

What is held in memory is reserved from the process-wide budget
(:class:`buzon.smtp.admission.MemoryBudget`): the declared ``SIZE=`` capped at
``spill_size``, or one 64 KB step, before the ``354``; without it the reply is
``452 4.3.1``. When the budget cannot grow, the body goes to disk early
instead. The reservation and an unfinished spill file are given back when the
command ends, however it ends (stored, refused, the client gone).

The idle timer resets on every byte of DATA, so a client dripping one byte a
minute would hold its slot forever: DATA as a whole gets ``data_timeout``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiosmtpd.smtp import SMTP

from buzon.smtp import dataread, replies
from buzon.smtp.unstuff import Unstuffer
from buzon.spool import SpilledBody, new_queue_id

__all__ = ["DataTransfer"]

#: Bytes a DATA reserves at first without SIZE=, and its least growth step.
STEP = 64 * 1024
#: Without a handler that says otherwise (tests of the session alone).
DEFAULT_SPILL = 128 * 1024


def _declared_size(options: list[str]) -> int:
    """The ``SIZE=`` of MAIL (already checked by parse_mail), or 0."""
    for option in options:
        if option[:5].upper() == "SIZE=":
            return int(option[5:])
    return 0


class _Body:
    """One DATA's message as it arrives: in memory, then (past the spill size) on disk."""

    __slots__ = ("file", "kept", "parts", "queue_id")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.kept = 0  # bytes in parts
        self.file: SpilledBody | None = None
        self.queue_id: str | None = None

    def discard(self) -> None:
        self.parts.clear()
        if self.file is not None:
            self.file.discard()
            self.file = None


class DataTransfer(SMTP):
    """``smtp_DATA`` with a memory reservation, a streamed body, a deadline and counting."""

    hub: Any
    _held: int
    _in_data: bool
    _last_activity: float
    _messages: int
    _expired: bool
    _line: bytes | None

    def say_and_close(self, line: str) -> None:
        raise NotImplementedError

    def _data_too_long(self) -> None:
        # The line is formatted only if it is sent, not once per message.
        self.say_and_close(replies.DATA_TIMEOUT.format(self.hostname))

    async def smtp_DATA(self, arg: str) -> None:
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT)  # type: ignore[arg-type]
            return
        if arg:
            await self.push(replies.DATA_SYNTAX)  # type: ignore[arg-type]
            return
        spill = getattr(self.event_handler, "spill_size", DEFAULT_SPILL)
        budget = self.hub.budget
        first = min(_declared_size(self.envelope.mail_options) or STEP, spill + STEP)
        if not budget.take(first):
            await self.push(replies.NO_MEMORY)  # type: ignore[arg-type]
            return
        self._held = first
        body = _Body()
        try:
            await self._receive(body, spill)
        finally:
            body.discard()  # a no-op once handed to the queue
            budget.give(self._held)
            self._held = 0
        if self._expired:
            self._line = None  # DATA is answered: this 421 refuses no command
            self.say_and_close(replies.SESSION_TOO_LONG.format(self.hostname))

    def _grant(self, need: int) -> bool:
        """Grow this DATA's reservation to ``need`` bytes if the budget allows it."""
        if need <= self._held:
            return True
        extra = max(need - self._held, STEP)
        if self.hub.budget.take(extra):
            self._held += extra
            return True
        return False

    async def _receive(self, body: _Body, spill: int) -> None:
        assert self.envelope is not None
        accept_long = getattr(self.event_handler, "accept_long_lines", False)
        check = Unstuffer(max_size=self.data_size_limit or 0, accept_long_lines=accept_long)
        failure: str | None = None  # the reply when the spool could not take the body

        async def consume(piece: bytes, stuffed: bool) -> None:
            nonlocal failure
            content = check.feed(piece, stuffed)
            if not content or failure is not None:
                if check.refusal is not None:
                    body.discard()  # refused: nothing more is kept
                return
            if body.file is None:
                # Memory first, up to the spill size (or what the budget grants: at
                # least the first reservation, so the header block stays in memory).
                want = min(spill, body.kept + len(content))
                room = max(0, min(want if self._grant(want) else self._held, spill) - body.kept)
                if room:
                    body.parts.append(content if room >= len(content) else content[:room])
                    body.kept += min(room, len(content))
                    if room >= len(content):
                        return
                    content = content[room:]
            try:
                if body.file is None:
                    body.queue_id = new_queue_id()
                    body.file = await self.event_handler.intake.spill(body.queue_id)
                await asyncio.to_thread(body.file.write, content)
            except OSError as error:
                failure = self.event_handler.storage_reply(error, self)
                body.discard()

        await self.push(replies.DATA_GO)  # type: ignore[arg-type]
        timer = self.loop.call_later(self.hub.limits.data_timeout, self._data_too_long)
        self._in_data = True
        self._last_activity = time.monotonic()
        gone = False
        try:
            await dataread.read_pieces(self._reader, consume)
        except asyncio.IncompleteReadError:
            gone = True
        finally:
            self._in_data = False
            timer.cancel()
            # The timer re-armed during DATA must not cut the next idle period short.
            self._reset_timeout()
        if gone:
            # The client went away mid-DATA: end the session quietly, nothing stored.
            # Raised outside the except clause, so it carries no context.
            raise asyncio.CancelledError
        refusal = str(check.refusal) if check.refusal is not None else failure
        # Each reply is pushed before the envelope is reset, so a refusal's
        # access-log line names the sender and recipients it refused.
        if refusal is not None:
            try:
                await self.push(refusal)
            finally:
                self._set_post_data_state()
            return
        content = body.parts[0] if len(body.parts) == 1 else b"".join(body.parts)
        body.parts.clear()
        envelope: Any = self.envelope
        envelope.content = envelope.original_content = content
        envelope.spilled, envelope.queue_id = body.file, body.queue_id
        body.file = None  # the handler owns it now: queued or discarded there
        del content
        status = await self._call_handler_hook("DATA")
        if status.startswith("250"):
            self._messages += 1
        try:
            await self.push(status)
        finally:
            self._set_post_data_state()
        self._reset_timeout()  # the idle period starts after the (maybe slow) queue write
