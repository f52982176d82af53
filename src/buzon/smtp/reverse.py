"""The client's DNS name for ``Received:``: reverse look-up, forward-confirmed, bounded, cached.

Theory of operation
-------------------
``Received:`` names the client by the name its address maps back to (PTR),
but only if that name resolves to the same address again: anyone controls the
PTR records of their own addresses, so an unconfirmed name proves nothing.
Postfix's ``smtpd`` does the same and writes ``unknown`` otherwise.

* :meth:`ReverseDns.lookup` starts a look-up and returns at once with a future
  of the name; the session starts it when the client greets (the first
  command of nearly every client) and awaits it when the message is queued, so
  the look-up runs while the envelope is sent.
* The whole look-up (PTR, then the forward check) is bounded by ``timeout``;
  past it the name is ``unknown``. A session never waits longer than that.
* The two blocking resolver calls run on a small executor of our own, so a slow
  DNS server fills that pool and nothing else (asyncio's default executor
  serves other work); a call past the timeout finishes in its thread, unheard.
* Results are cached per address (a bounded LRU of ``size`` entries, names for
  ``ttl`` seconds, failures for a tenth of it), and concurrent look-ups of one
  address share one resolution: a client opening many sessions asks once.

The resolver functions and the clock are parameters, so the timeout, the cache
and the confirmation rule are tested with resolvers that are slow or lie.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["UNKNOWN", "ReverseDns", "confirmed"]

UNKNOWN = "unknown"

#: (ip) -> host name (PTR); raises OSError when there is none.
NameOf = Callable[[str], str]
#: (name) -> the addresses it resolves to; raises OSError when none.
AddressesOf = Callable[[str], list[str]]


def _name_of(ip: str) -> str:
    return socket.getnameinfo((ip, 0), socket.NI_NAMEREQD)[0]


def _addresses_of(name: str) -> list[str]:
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def confirmed(ip: str, name: str, addresses: list[str]) -> bool:
    """Whether ``name`` (from the PTR of ``ip``) resolves back to ``ip``.

    A "name" that is itself an address literal proves nothing and never confirms.
    """
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        pass
    try:
        want = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for text in addresses:
        try:
            if ipaddress.ip_address(text.partition("%")[0]) == want:
                return True
        except ValueError:
            continue
    return False


class ReverseDns:
    """Forward-confirmed reverse DNS with a timeout and a bounded cache."""

    def __init__(
        self,
        timeout: float,
        *,
        size: int = 4096,
        ttl: float = 300.0,
        threads: int = 4,
        name_of: NameOf = _name_of,
        addresses_of: AddressesOf = _addresses_of,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self._size = size
        self._ttl = ttl
        self._name_of = name_of
        self._addresses_of = addresses_of
        self._clock = clock
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._cache: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._running: dict[str, asyncio.Future[str]] = {}

    def lookup(self, ip: str | None) -> Awaitable[str]:
        """A future of the client's confirmed name, or :data:`UNKNOWN`; never raises.

        Await it through :func:`asyncio.shield` (:meth:`name`): it may be shared.
        """
        loop = asyncio.get_running_loop()
        if not ip:
            return _done(loop, UNKNOWN)
        hit = self._cache.get(ip)
        if hit is not None:
            if hit[0] > self._clock():
                self._cache.move_to_end(ip)
                return _done(loop, hit[1])
            del self._cache[ip]
        running = self._running.get(ip)
        if running is None:
            running = self._running[ip] = loop.create_task(self._resolve(ip))
        return running

    async def name(self, pending: Awaitable[str] | None, ip: str | None) -> str:
        """The name a look-up found (starting one if ``pending`` is None)."""
        future = pending if pending is not None else self.lookup(ip)
        try:
            return await asyncio.shield(future)
        except Exception:  # noqa: BLE001 - a resolver bug is an unknown name, not a lost message
            return UNKNOWN

    async def _resolve(self, ip: str) -> str:
        try:
            try:
                name = await asyncio.wait_for(self._confirm(ip), self.timeout)
                lifetime = self._ttl if name != UNKNOWN else self._ttl / 10
            except (TimeoutError, OSError, UnicodeError, ValueError):
                name, lifetime = UNKNOWN, self._ttl / 10
            self._remember(ip, name, lifetime)
            return name
        finally:
            self._running.pop(ip, None)

    async def _confirm(self, ip: str) -> str:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="reverse-dns")
        name = await loop.run_in_executor(self._executor, self._name_of, ip)
        addresses = await loop.run_in_executor(self._executor, self._addresses_of, name)
        return name.rstrip(".") if confirmed(ip, name, addresses) else UNKNOWN

    def _remember(self, ip: str, name: str, lifetime: float) -> None:
        self._cache[ip] = (self._clock() + lifetime, name)
        self._cache.move_to_end(ip)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        """Let go of the resolver threads (those still in a call finish it first)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _done(loop: Any, value: str) -> asyncio.Future[str]:
    future: asyncio.Future[str] = loop.create_future()
    future.set_result(value)
    return future
