"""Listening addresses: parse a list, bind every address in it, write ``[host]:port``.

Theory of operation
-------------------
Every listener of Buzón (SMTP, the UDP monitor, a transform sidecar) is
configured with a comma-separated list of hosts and one port, and binds them
all through :func:`bind_sockets`. One policy holds for all of them:

* each host is resolved (``getaddrinfo``, passive) and every address it gives
  is bound; an IPv6 socket is ``IPV6_V6ONLY``, as asyncio's ``create_server``
  makes it, so ``::`` never claims IPv4 beside ``0.0.0.0``;
* port 0 asks the system for a free port on the first socket, and every later
  socket reuses that port, so all listeners of one service share a port;
* an address this machine does not have (``EADDRNOTAVAIL``) or a family it
  does not support (``EAFNOSUPPORT``, also as the ``EAI_*`` resolver errors:
  no IPv6 in this container) is skipped with one warning naming it, provided
  some other host in the list is bound. The default ``0.0.0.0,::`` therefore
  starts on a host without IPv6, and a list of one bad address stops start-up;
* any other error (address in use, permission denied, a name that does not
  resolve) stops start-up.

:func:`format_address` is the one way an address is written, in start-up logs,
the access log and error details alike: ``127.0.0.1:2525``, ``[::1]:2525``.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable
from typing import Any

__all__ = [
    "bind_sockets",
    "format_address",
    "format_peer",
    "parse_address",
    "parse_listen",
    "reserve",
]

log = logging.getLogger("buzon.net")

#: Errors meaning "this machine has no such address or family", not "misconfigured".
SKIPPABLE = frozenset(
    {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}
    | {getattr(socket, name) for name in ("EAI_ADDRFAMILY", "EAI_FAMILY") if hasattr(socket, name)}
)


def parse_listen(value: str) -> tuple[str, ...]:
    """Split a comma-separated list of listen addresses (``"0.0.0.0,::"``, ``"[::1]"``).

    Raises:
        ValueError: the list names no address.
    """
    hosts = tuple(h.strip().strip("[]") for h in value.split(",") if h.strip())
    if not hosts:
        raise ValueError("must name at least one address")
    return hosts


def parse_address(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6).

    Raises:
        ValueError: no port, a port outside 1-65535, or an unbracketed IPv6 address.
    """
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [::1]:7000")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port with a port in 1-65535")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    """``127.0.0.1:2525``, ``[::1]:2525``: brackets wherever the host holds a colon."""
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def format_peer(peer: Any) -> str:
    """:func:`format_address` of a socket address tuple; anything else as ``str``."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_address(peer[0], peer[1])
    return str(peer) if peer else "?"


def bind_sockets(
    hosts: Iterable[str],
    port: int,
    *,
    kind: int = socket.SOCK_STREAM,
    reuse_port: bool = False,
    rcvbuf: int | None = None,
) -> list[socket.socket]:
    """Bind every address of ``hosts`` on ``port`` under the module's policy.

    Args:
        hosts: host names or addresses, as :func:`parse_listen` gives them.
        port: the port; 0 picks one on the first socket, reused by the others.
        kind: ``SOCK_STREAM`` (TCP, ``SO_REUSEADDR`` set) or ``SOCK_DGRAM``.
        reuse_port: set ``SO_REUSEPORT`` (SMTP worker processes sharing a port).
        rcvbuf: a receive buffer size to ask for (best effort).

    Returns:
        Bound, non-blocking sockets, not yet listening: the caller listens (or
        hands them to asyncio) and owns them.

    Raises:
        OSError: an address cannot be bound and may not be skipped, or none was bound.
    """
    hosts = tuple(hosts)
    bound: list[socket.socket] = []
    skipped: list[tuple[str, OSError]] = []
    try:
        for host in hosts:
            try:
                for family, sock_kind, proto, address in _resolve(host, port, kind):
                    sock = _bound(family, sock_kind, proto, (address[0], port, *address[2:]),
                                  reuse_port=reuse_port, rcvbuf=rcvbuf)
                    bound.append(sock)
                    port = port or sock.getsockname()[1]
            except OSError as error:
                if error.errno in SKIPPABLE and len(hosts) > 1:
                    skipped.append((host, error))
                    continue
                raise OSError(error.errno, f"cannot bind {format_address(host, port)}: "
                              f"{error.strerror or error}") from None
        if not bound:
            raise OSError(errno.EADDRNOTAVAIL,
                          f"no address could be bound among {', '.join(hosts)}")
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    for host, error in skipped:
        log.warning("cannot listen on %s (%s); skipping it", format_address(host, port),
                    error.strerror or error)
    return bound


def reserve(hosts: tuple[str, ...], port: int) -> tuple[int, list[socket.socket]]:
    """Hold ``port`` on every address of ``hosts`` for worker processes that share it.

    Each SMTP worker binds its own listening socket to the same address with
    ``SO_REUSEPORT``, and the kernel spreads connections over them by a hash of
    the connection, so every worker gets an even share. The supervisor binds
    one more socket per address with ``SO_REUSEPORT`` and never listens on it:
    it picks the port when the configured one is 0, and holds the port while
    workers restart, so no other program can take it in between (the kernel
    only lets sockets of the same user with ``SO_REUSEPORT`` join, and sends
    connections only to listening ones).

    Returns:
        The port and the sockets, to keep open as long as the workers serve.
    """
    held = bind_sockets(hosts, port, reuse_port=True)
    return held[0].getsockname()[1], held


def _resolve(host: str, port: int, kind: int) -> list[tuple[int, int, int, tuple]]:
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise OSError(error.errno, error.strerror) from None
    seen: set[tuple] = set()
    unique = []
    for family, sock_kind, proto, _, address in infos:
        if (family, address) not in seen:
            seen.add((family, address))
            unique.append((family, sock_kind, proto, address))
    return unique


def _bound(family: int, kind: int, proto: int, address: tuple, *, reuse_port: bool,
           rcvbuf: int | None) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if rcvbuf is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            except OSError:  # a smaller buffer only means fewer datagrams queued
                pass
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
