"""The DATA command of a session: the memory it may hold, the body, the handler.

Theory of operation
-------------------
A mixin of :class:`buzon.smtp.session.BuzonSMTP`. ``DATA`` first reserves
memory from the process-wide budget (:class:`buzon.smtp.admission.MemoryBudget`):
the declared ``SIZE=`` capped at the maximum message size, or one 64 KB step.
Without it the reply is ``452 4.3.1`` and no ``354``. While the body arrives
(:func:`buzon.smtp.dataread.read_raw`) the reservation grows with the bytes
buffered; if the budget runs out the rest is dropped and the reply after the
terminator is ``452 4.3.1``. The reservation is given back when the command
ends, however it ends (stored, refused, the client gone).

Lines over 1,000 octets are refused (``500 5.5.2``) or kept, as the handler's
``accept_long_lines`` says (``BUZON_LONG_LINES``).

The idle timer resets on every byte of DATA, so a client dripping one byte a
minute would hold its slot forever: DATA as a whole gets ``data_timeout``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiosmtpd.smtp import SMTP

from buzon.smtp import dataread, replies

__all__ = ["DataTransfer"]

#: Bytes a DATA reserves at first without SIZE=, and its least growth step.
STEP = 64 * 1024


def _declared_size(options: list[str]) -> int:
    """The ``SIZE=`` of MAIL (already checked by parse_mail), or 0."""
    for option in options:
        if option[:5].upper() == "SIZE=":
            return int(option[5:])
    return 0


class DataTransfer(SMTP):
    """``smtp_DATA`` with a memory reservation, a whole-transfer deadline and counting."""

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
        limit = self.data_size_limit or 0
        budget = self.hub.budget
        first = min(_declared_size(self.envelope.mail_options) or STEP, limit + 5)
        if not budget.take(first):
            await self.push(replies.NO_MEMORY)  # type: ignore[arg-type]
            return
        self._held = first
        try:
            await self._receive(limit)
        finally:
            budget.give(self._held)
            self._held = 0
        if self._expired:
            self._line = None  # DATA is answered: this 421 refuses no command
            self.say_and_close(replies.SESSION_TOO_LONG.format(self.hostname))

    def _grant(self, need: int) -> int:
        """Grow this DATA's reservation to ``need`` bytes if the budget allows it."""
        extra = max(need - self._held, STEP)
        if self.hub.budget.take(extra):
            self._held += extra
        return self._held

    async def _receive(self, limit: int) -> None:
        assert self.envelope is not None
        await self.push(replies.DATA_GO)  # type: ignore[arg-type]
        timer = self.loop.call_later(self.hub.limits.data_timeout, self._data_too_long)
        self._in_data = True
        self._last_activity = time.monotonic()
        gone = False
        try:
            raw, refusal = await dataread.read_raw(self._reader, limit, self._held, self._grant)
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
        accept_long = getattr(self.event_handler, "accept_long_lines", False)
        result = (str(refusal) if refusal
                  else dataread.finish(raw, max_size=limit, accept_long_lines=accept_long))
        del raw
        # Each reply is pushed before the envelope is reset, so a refusal's
        # access-log line names the sender and recipients it refused.
        if isinstance(result, str):
            try:
                await self.push(result)
            finally:
                self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = result
        del result
        status = await self._call_handler_hook("DATA")
        if status.startswith("250"):
            self._messages += 1
        try:
            await self.push(status)
        finally:
            self._set_post_data_state()
        self._reset_timeout()  # the idle period starts after the (maybe slow) queue write
