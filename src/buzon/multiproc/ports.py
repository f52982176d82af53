"""Port reservation for SMTP workers that share one port through ``SO_REUSEPORT``.

Each worker binds its own listening socket to the same address with
``SO_REUSEPORT``, and the kernel spreads incoming connections over them by a
hash of the connection, so every worker gets an even share (a single listening
socket shared by all would let the least busy worker take a whole burst, up to
its file-descriptor limit).

The supervisor binds one more socket per address with ``SO_REUSEPORT`` and
never listens on it: it picks the port when the configured one is 0, and holds
the port while workers restart, so no other program can take it in between
(the kernel only lets sockets of the same user with ``SO_REUSEPORT`` join, and
sends connections only to listening ones).
"""

from __future__ import annotations

import errno
import logging
import socket

__all__ = ["reserve"]

log = logging.getLogger("buzon.supervisor")

_SKIPPABLE = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


def reserve(hosts: tuple[str, ...], port: int) -> tuple[int, list[socket.socket]]:
    """Bind (without listening) every address of ``hosts`` on ``port``.

    Returns:
        The port (the one picked by the first bind when ``port`` is 0) and the
        sockets, to keep open as long as the workers serve.

    Raises:
        OSError: an address cannot be bound (an unavailable one is skipped, as
            the single-process listener does, when other hosts are configured).
    """
    held: list[socket.socket] = []
    try:
        for host in hosts:
            try:
                infos = socket.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )
                for family, kind, proto, _, address in infos:
                    sock = _bound(family, kind, proto, (address[0], port, *address[2:]))
                    held.append(sock)
                    port = port or sock.getsockname()[1]
            except OSError as error:
                if error.errno in _SKIPPABLE and len(hosts) > 1:
                    log.warning("cannot listen on [%s]:%d (%s); skipping it", host, port, error)
                    continue
                raise
        if not held:
            raise OSError(f"no address could be bound among {', '.join(hosts)}")
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return port, held


def _bound(family: int, kind: int, proto: int, address: tuple) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            # as asyncio's create_server does: "::" must not claim IPv4 too
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock
