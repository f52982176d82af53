"""Which command a reply answers, and the access-log line for a refused one.

Theory of operation
-------------------
A mixin of :class:`buzon.smtp.session.BuzonSMTP`. aiosmtpd's command loop
reads a line with ``reader.readuntil``, dispatches it, and awaits each reply
through ``push``; so the line last returned by ``readuntil`` is the command a
reply answers, until the loop asks for the next line. The session's reader is
wrapped (:meth:`Refusals._cb_client_connected`) to keep that line, and to
forget it while waiting: a reply sent then (an idle timeout's ``421``) answers
no command. DATA's body is read from the buffer directly
(:mod:`buzon.smtp.dataread`), not through ``readuntil``, so during and after
the body the line is still ``DATA``.

A line longer than the reader's limit arrives as ``LimitOverrunError`` and is
then consumed in pieces; its first bytes are kept at the first overrun, so the
``500 5.5.2`` that follows names the verb the client sent, not a tail.

``BuzonSMTP.push`` and ``say_and_close`` call :meth:`Refusals._refused` for a
``4xx``/``5xx`` line while a command is held. That is rare, so the work is done
there: the verb, and for MAIL/RCPT the address the argument names. Only the
verb of a command is logged, never its argument (an ``AUTH`` line carries a
secret); the address of ``MAIL``/``RCPT`` is the one exception.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.smtp import SMTP

from buzon.metrics.counters import count_refusal

__all__ = ["Refusals"]

#: Bytes of an overlong line kept to name its verb.
_HEAD = 64


def _verb(line: bytes) -> str:
    return line.split(b" ", 1)[0].rstrip(b"\r\n").decode("ascii", "replace").upper()


def _address(line: bytes) -> str | None:
    """The ``<address>`` a MAIL FROM or RCPT TO line names, or None."""
    _, colon, arg = line.rstrip(b"\r\n").partition(b":")
    start, end = arg.find(b"<"), arg.rfind(b">")
    if not colon or start < 0 or end < start:
        return None
    return arg[start + 1 : end].decode("utf-8", "replace")  # UTF-8 under SMTPUTF8


class Refusals(SMTP):
    """Keeps the command being answered; logs each refusal of one."""

    hub: Any
    _peer: str
    _line: bytes | None = None  # the command being answered; None while reading
    _head: bytes | None = None  # the start of an overlong line being skipped

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super()._cb_client_connected(reader, writer)
        read_line = reader.readuntil

        async def readuntil(separator: bytes = b"\n") -> bytes:
            self._line = None
            try:
                line = await read_line(separator)
            except asyncio.IncompleteReadError:
                # EOF after the last complete line: end the session the way
                # aiosmtpd ends it on a reset (its handlers expect a cancel).
                raise asyncio.CancelledError from None
            except asyncio.LimitOverrunError:
                if self._head is None:
                    self._head = bytes(reader._buffer[:_HEAD])  # type: ignore[attr-defined]
                raise
            if self._head is not None:  # the tail of an overlong line: name its head
                self._line, self._head = self._head, None
            else:
                self._line = line
            return line

        reader.readuntil = readuntil  # type: ignore[method-assign]

    def _refused(self, data: bytes) -> None:
        """Count the 4xx/5xx reply ``data`` by its code; log it with the command in ``self._line``."""
        count_refusal(self.hub.counters, data)
        line = self._line
        if line is None:
            return
        verb = _verb(line)
        envelope = self.envelope
        sender = envelope.mail_from if envelope is not None else None
        recipients = list(envelope.rcpt_tos) if envelope is not None else []
        addr = _address(line) if verb in ("MAIL", "RCPT") else None
        reply = data.split(b"\r\n", 1)[0].decode("ascii", "replace")
        self.hub.access.refused(self._peer, verb, reply, sender, recipients, addr)
