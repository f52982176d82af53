"""STARTTLS (RFC 3207) and implicit TLS (RFC 8314) on aiosmtpd's TLS machinery.

Theory of operation
-------------------
aiosmtpd does STARTTLS itself: ``smtp_STARTTLS`` answers ``220``, slides an
``asyncio.sslproto.SSLProtocol`` between the TCP transport and the session,
swaps ``self.transport`` for the SSL protocol's transport, and, once the
handshake is done, the SSL protocol calls ``connection_made`` a second time.
That second call resets the session as RFC 3207 §4.2 asks (HELO/EHLO and the
envelope are forgotten, cleartext bytes pipelined after ``STARTTLS`` are
dropped); :class:`~buzon.smtp.session.BuzonSMTP` sees ``self.transport`` already
set and so neither admits nor counts the connection again. After it,
``self.transport.get_extra_info("ssl_object")`` is the ``ssl.SSLObject``.

:class:`StartTls` adds what aiosmtpd lacks:

* the context is the one current when the client asks (``Hub.tls.current()``,
  which reloads renewed files), not the one of the session's start;
* each completed handshake counts once in ``counters.tls_sessions``;
* EHLO lists neither AUTH (which does not exist here) nor STARTTLS under TLS;
* ``STARTTLS`` in a TLS session gets ``503 5.5.1`` (aiosmtpd would start a
  second handshake inside the first);
* a failed handshake (garbage, a client that gives up, a timeout) ends the
  session quietly with one log line: aiosmtpd would pass it to the handler's
  ``handle_exception`` and log a traceback. asyncio's SSL protocol never tells
  the session of a connection lost before the handshake completed, so the
  session calls its own ``connection_lost`` here, once, or it would stay
  counted as open forever;
* a connection already in TLS when it arrives (the implicit-TLS listener:
  :func:`implicit_tls` wraps the session in the same SSL protocol before the
  greeting) is treated as if STARTTLS had been done: nothing to advertise,
  nothing to require;
* ``_over_ssl``: asyncio's ``StreamReaderProtocol`` must answer EOF with False
  under TLS (it learns that only in its own first ``connection_made``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, TLSSetupException

from buzon.smtp import replies

__all__ = ["StartTls", "implicit_tls"]

log = logging.getLogger("buzon.smtp.tls")


class StartTls(SMTP):
    """The TLS part of a Buzón session; mixed into :class:`~buzon.smtp.session.BuzonSMTP`."""

    hub: Any
    _tls_active = False  # a handshake completed on this connection
    _peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._tls_active or transport.get_extra_info("ssl_object") is None:
            return
        self._tls_active = True
        self._over_ssl = True  # asyncio.StreamReaderProtocol's flag: EOF closes the TLS transport
        if self._original_transport is None:  # implicit TLS: in TLS from the first byte
            self.tls_context = None
            self.require_starttls = False
        self.hub.counters.tls_sessions += 1

    @property
    def tls_active(self) -> bool:
        """True once a TLS handshake completed on this connection (STARTTLS or implicit)."""
        return self._tls_active

    async def smtp_EHLO(self, hostname: str) -> None:
        # aiosmtpd lists AUTH once TLS is up, but AUTH is out of our command table
        # (commands.drop_auth); and it must not offer STARTTLS in a TLS session. Its
        # EHLO reads both from _tls_protocol and tls_context, hidden for the call.
        protocol, context = self._tls_protocol, self.tls_context
        self._tls_protocol = None
        if self._tls_active:
            self.tls_context = None
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._tls_protocol, self.tls_context = protocol, context

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_active:
            await self.push(replies.TLS_ACTIVE)
            return
        tls = self.hub.tls
        if tls is not None and not arg:
            self.tls_context = tls.current()  # renewed files count from this session on
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as error:
            self._tls_failed(error.__cause__)
            return
        if self._tls_protocol is not None and not self._tls_active:
            # The connection went away during the handshake without an error.
            self._tls_failed(None)

    def _tls_failed(self, cause: BaseException | None) -> None:
        log.info("TLS handshake with %s failed: %s", self._peer,
                 cause or "connection closed during the handshake")
        transport = self.transport
        if transport is not None:
            transport.close()
        self.connection_lost(cause if isinstance(cause, Exception) else None)


def implicit_tls(
    factory: Callable[[], asyncio.Protocol],
    current: Callable[[], ssl.SSLContext],
    handshake_timeout: float,
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for the implicit-TLS listener (RFC 8314 §3.3).

    Each connection gets the session ``factory`` makes, behind the same SSL
    protocol STARTTLS uses, with the context current at accept time. The session
    sees ``connection_made`` when the handshake is done, so a client that never
    completes it is never admitted, counted or greeted; it is dropped after
    ``handshake_timeout`` seconds.
    """

    def make() -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        return sslproto.SSLProtocol(
            loop, factory(), current(), None, server_side=True,
            ssl_handshake_timeout=handshake_timeout,
        )

    return make
