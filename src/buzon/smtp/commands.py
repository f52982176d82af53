"""The small commands BuzónSMTP answers itself: HELO/EHLO name checks, HELP; AUTH gone.

Theory of operation
-------------------
A mixin between :class:`buzon.smtp.session.BuzonSMTP` and aiosmtpd's ``SMTP``:

* HELO/EHLO: a name with a control character (a NUL, ESC, CR) is refused with
  ``501 5.5.2`` before aiosmtpd stores it; it would reach ``Received:`` and logs.
  So is a non-ASCII name (SMTPUTF8 lets 8-bit arguments through): RFC 6531
  §3.7.1 has clients send EHLO names in ASCII, IDNs as A-labels.
* HELP (RFC 5321 §4.1.1.8): ``214`` with the commands that exist; aiosmtpd's
  answered ``250`` and, since our MAIL/RCPT/DATA lack its ``@syntax``
  decorator, left them out while listing AUTH.
* AUTH: there is no authentication, so :func:`drop_auth` takes the verb out of
  the command table: it is an unknown command (``502 5.5.2``), never half-answered.
* aiosmtpd's logger (``mail.log``) writes client words with ``%s`` (an unknown
  verb); :class:`_EscapeControls` escapes their control characters first.
"""

from __future__ import annotations

import logging
from typing import Any

from aiosmtpd.smtp import SMTP

from buzon.smtp import replies
from buzon.smtp.syntax import escape_controls, has_controls

__all__ = ["Commands", "drop_auth"]

# The commands a client can use, and their HELP syntax.
_HELP = {
    "DATA": "DATA", "EHLO": "EHLO hostname", "HELO": "HELO hostname", "HELP": "HELP [command]",
    "MAIL": "MAIL FROM:<address> [SP <mail-parameters>]", "NOOP": "NOOP [ignored]",
    "QUIT": "QUIT", "RCPT": "RCPT TO:<address>", "RSET": "RSET", "VRFY": "VRFY <address>",
}
_COMMANDS = " ".join(_HELP)


class _EscapeControls(logging.Filter):
    """Escapes control characters in the message and arguments of a log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(escape_controls(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = escape_controls(record.msg)
        return True


_ESCAPE_FILTER = _EscapeControls()
logging.getLogger("mail.log").addFilter(_ESCAPE_FILTER)  # aiosmtpd's logger; added once


def drop_auth(methods: dict[str, Any]) -> None:
    """Take AUTH out of a session's command table (aiosmtpd's ``_smtp_methods``)."""
    methods.pop("AUTH", None)


class Commands(SMTP):
    """HELO/EHLO that refuse control characters, and a HELP that tells the truth."""

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._refused_name(hostname):
            await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._refused_name(hostname):
            await super().smtp_EHLO(hostname)

    async def _refused_name(self, hostname: str) -> bool:
        """Answer a HELO/EHLO name with a control character (501) or not in ASCII
        (501, RFC 6531 §3.7.1); True when it was refused."""
        if not hostname:
            return False
        if has_controls(hostname):
            await self.push(replies.BAD_HELO)  # type: ignore[arg-type]
            return True
        if not hostname.isascii():
            await self.push(replies.HELO_NOT_ASCII)  # type: ignore[arg-type]
            return True
        return False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses VRFY's argument with the standard library's header parser
        # and catches only HeaderParseError; for "<" and a few other fragments that
        # parser raises IndexError (found by scripts/fuzz.py), which would end as a
        # 451 local error. Any failure to parse is "no address": 502 5.5.2.
        try:
            return super()._getaddr(arg)
        except Exception:  # noqa: BLE001 - a parser bug is a refused address, not ours
            return None, None

    async def smtp_HELP(self, arg: str | None) -> None:
        if not arg:
            await self.push(replies.HELP.format(_COMMANDS))
            return
        syntax = _HELP.get(arg.upper())
        if syntax is None:
            await self.push(replies.HELP_UNKNOWN.format(_COMMANDS))
        else:
            await self.push(replies.HELP_SYNTAX.format(syntax))
