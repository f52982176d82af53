"""The monitor's UDP listeners: a tiny asyncio adapter around :func:`respond`.

Theory of operation
-------------------
Each bound address gets a :class:`MonitorProtocol` whose ``datagram_received``
does decode → handle → encode → ``sendto`` through
:func:`buzon.monitor.handler.respond` (v0) or
:func:`buzon.monitor.handler_v1.respond_v1` (v1, told apart by the version byte:
:func:`buzon.monitor.wire_v1.is_v1`) and nothing more, with ``loop.time()`` as
the clock (and ``time.time()`` for v1's timestamps). All listeners of one server share one failure budget
(:mod:`buzon.monitor.ratelimit`, for v0 and v1 alike) and one v1 replay cache,
so IPv4 and IPv6 senders draw on the same ones. Work per datagram is a few
microseconds and never awaits, so the monitor runs on the SMTP event loop
without slowing sessions down.

Sockets come from :func:`buzon.net.bind_sockets` rather than
``create_datagram_endpoint(local_addr=)`` so that IPv6 sockets get
``IPV6_V6ONLY`` (otherwise ``::`` would claim the IPv4 port as well and collide
with the ``0.0.0.0`` listener), and so that the monitor follows the same bind
policy as every other listener.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterable
from typing import cast

from buzon.metrics.counters import Counters
from buzon.monitor.handler import TransformSwitch, respond
from buzon.monitor.handler_v1 import ReplayCache, respond_v1
from buzon.monitor.ratelimit import FailureBudget
from buzon.monitor.wire import TOKEN_SIZE
from buzon.monitor.wire_v1 import derive_key, is_v1
from buzon.net import bind_sockets, format_peer

__all__ = ["MonitorProtocol", "start_monitor"]

log = logging.getLogger("buzon.monitor")

# A burst of requests queues in the socket's receive buffer while the loop is busy
# with SMTP; the kernel charges ~1 KiB per small datagram, so the default buffer
# (~208 KiB) holds only ~200. Linux caps the request at net.core.rmem_max.
_RCVBUF = 1 << 21


class MonitorProtocol(asyncio.DatagramProtocol):
    """One UDP listener of the monitor; state is shared with its siblings."""

    def __init__(
        self,
        *,
        counters: Counters,
        token: bytes,
        switch: TransformSwitch,
        limiter: FailureBudget,
        replay: ReplayCache | None = None,
    ) -> None:
        self.counters = counters
        self.token = token
        self.key = derive_key(token)
        self.switch = switch
        self.limiter = limiter
        self.replay = replay if replay is not None else ReplayCache()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: Python 3.11's selector datagram transport does not
        # inherit from asyncio.DatagramTransport, though it implements it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        # respond() never raises by design; this guard keeps a bug in the adapter
        # itself from reaching the event loop's exception handler on every packet.
        try:
            assert self.transport is not None
            now = asyncio.get_running_loop().time()
            if is_v1(data):  # told apart by the version byte; v0 stays byte-exact
                self.counters.monitor_requests += 1
                reply = respond_v1(
                    data,
                    addr[0],
                    counters=self.counters,
                    key=self.key,
                    switch=self.switch,
                    limiter=self.limiter,
                    replay=self.replay,
                    now=now,
                    wall=time.time(),
                )
            else:
                reply = respond(
                    data,
                    addr[0],
                    counters=self.counters,
                    token=self.token,
                    switch=self.switch,
                    limiter=self.limiter,
                    now=now,
                )
            if reply is not None:
                self.transport.sendto(reply, addr)
        except Exception:
            log.exception("monitor: error handling a datagram from %s", addr[0])

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (e.g. the client already gone): not ours.
        log.debug("monitor: socket error ignored: %s", exc)


async def start_monitor(
    hosts: Iterable[str],
    port: int,
    *,
    counters: Counters,
    token: bytes,
    switch: TransformSwitch,
    failures_per_minute: int,
    address_failures_per_minute: int = 30,
) -> list[asyncio.DatagramTransport]:
    """Bind the monitor on every host and start answering.

    Args:
        hosts: addresses (or names) to bind, e.g. ``settings.monitor_hosts``.
        port: UDP port; 0 picks a free one on the first socket and reuses it for
            the others, so all listeners share one port (handy in tests).
        counters: the server's counters, read when asked and counted into.
        token: the 8-byte token (``load_or_create_token``).
        switch: the transform switch (see :class:`TransformSwitch`).
        failures_per_minute: wrong tokens allowed per minute from all source
            addresses together (also the burst).
        address_failures_per_minute: the same, for each address that recently
            presented the right token, spent before the global budget.

    Returns:
        The transports; close them (``transport.close()``) to stop the monitor.

    Raises:
        ValueError: the token is not 8 bytes.
        OSError: a host cannot be bound (the policy of :mod:`buzon.net`: an
            address this machine lacks is skipped if another one is bound).
    """
    if len(token) != TOKEN_SIZE:
        raise ValueError(f"the monitor token must be {TOKEN_SIZE} bytes")
    loop = asyncio.get_running_loop()
    limiter = FailureBudget(failures_per_minute, address_per_minute=address_failures_per_minute)
    replay = ReplayCache()  # shared by every listener, as the budget is
    sockets = bind_sockets(hosts, port, kind=socket.SOCK_DGRAM, rcvbuf=_RCVBUF)
    transports: list[asyncio.DatagramTransport] = []
    try:
        for sock in sockets:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: MonitorProtocol(
                    counters=counters, token=token, switch=switch, limiter=limiter,
                    replay=replay,
                ),
                sock=sock,
            )
            transports.append(transport)
            log.info("monitor listening on udp %s", format_peer(sock.getsockname()))
    except BaseException:
        for transport in transports:
            transport.close()
        for sock in sockets[len(transports):]:
            sock.close()
        raise
    return transports
