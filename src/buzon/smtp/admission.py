"""Who may hold a session, and how much DATA all sessions may hold in memory.

Theory of operation
-------------------
Three shared limits keep one client from taking the whole server (issue 11,
finding 6); the per-session ones (messages, lifetime) live in the session.

* **Sessions per client** (:class:`Clients`): counted per key of
  :func:`client_key`: the IPv4 address, or the /64 network of an IPv6 address
  (one host commonly owns a whole /64, so counting single IPv6 addresses would
  let it open 2^64 of them); an IPv4-mapped IPv6 address counts as its IPv4
  address. Past the cap the connection gets ``421 4.7.0`` and is closed.
  Clients in the exempt networks (loopback by default, as Postfix exempts
  ``$mynetworks``) are not counted: a local relay or load test is one address.
* **DATA bytes in memory** (:class:`MemoryBudget`): a body is buffered whole
  before it is queued, so every session in DATA may hold up to the maximum
  message size. At ``DATA`` a session reserves the declared ``SIZE=`` (capped at
  the maximum) or one step; while the body arrives it grows its reservation as
  the buffered bytes pass it. A reservation that does not fit answers ``452
  4.3.1``: at ``DATA`` itself (no ``354``), or, when the budget runs out in the
  middle of a body, after its terminator (the rest is read and dropped). The
  whole reservation is returned when the DATA command ends, however it ends.
* ``_Busy``: the reply to a connection over ``max_connections``.

All three are per process; with ``BUZON_WORKERS=N`` each worker gets its share.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from buzon.metrics.counters import count_refusal

__all__ = ["Clients", "MemoryBudget", "client_key", "hang_up", "refuse"]

#: Seconds a closing connection may take to flush its last reply before it is
#: aborted: a client that never reads would otherwise hold its slot forever.
CLOSE_GRACE = 2.0


def client_key(peername: Any) -> str:
    """The key a client's sessions are counted under: IPv4 address or IPv6 /64."""
    if not isinstance(peername, tuple) or not peername:
        return "?"
    host = str(peername[0])
    if ":" not in host:
        return host
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        return host
    if packed[:12] == b"\0" * 10 + b"\xff\xff":  # ::ffff:a.b.c.d
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + b"\0" * 8) + "/64"


def _address(peername: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(str(peername[0]).partition("%")[0])
    except (TypeError, ValueError, IndexError):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(slots=True)
class Clients:
    """Open sessions per client key, capped at ``limit``; ``exempt`` networks uncounted."""

    limit: int
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    open: dict[str, int] = field(default_factory=dict)

    def admit(self, peername: Any) -> str | None:
        """Count a new session: its key ("" if exempt), or None (nothing counted) past the cap."""
        if self.exempt:
            ip = _address(peername)
            if ip is not None and any(ip in net for net in self.exempt):
                return ""
        key = client_key(peername)
        count = self.open.get(key, 0)
        if count >= self.limit:
            return None
        self.open[key] = count + 1
        return key

    def leave(self, key: str) -> None:
        if not key:
            return
        count = self.open.get(key, 0) - 1
        if count > 0:
            self.open[key] = count
        else:
            self.open.pop(key, None)


@dataclass(slots=True)
class MemoryBudget:
    """Bytes of DATA all sessions of this process may hold in memory at once."""

    total: int
    used: int = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (nothing reserved) when they do not fit."""
        if self.used + size > self.total:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


def hang_up(transport: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Close ``transport``; abort it if its last bytes are not read within CLOSE_GRACE."""
    transport.close()
    if transport.get_write_buffer_size():
        loop.call_later(CLOSE_GRACE, transport.abort)  # a no-op once it is closed


class _Busy(asyncio.Protocol):
    """Says one reply line and hangs up (RFC 5321 §3.8)."""

    def __init__(self, line: bytes, counters: Any) -> None:
        self.line = line
        self.counters = counters

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed: uvloop's TCPTransport is not an asyncio.WriteTransport subclass.
        t: Any = transport
        t.pause_reading()
        self.counters.bytes_transferred += len(self.line)
        count_refusal(self.counters, self.line)
        t.write(self.line)
        hang_up(t, asyncio.get_running_loop())


def refuse(line: str, counters: Any) -> asyncio.Protocol:
    """A protocol that answers ``line`` (a 421) to the connection and closes it."""
    return _Busy((line + "\r\n").encode("ascii", "replace"), counters)
