"""Forward-confirmed reverse DNS: the rule, the timeout, the cache (resolvers passed in).

The resolver functions are parameters of :class:`ReverseDns` (the system's by
default), so each test gives it a resolver that answers, lies, fails or hangs;
one test uses the system's own resolver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from buzon.smtp.reverse import UNKNOWN, ReverseDns, confirmed


class Dns:
    """A resolver with fixed answers that counts its calls."""

    def __init__(self, ptr: dict[str, str], a: dict[str, list[str]], delay: float = 0.0) -> None:
        self.ptr, self.a, self.delay = ptr, a, delay
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def name_of(self, ip: str) -> str:
        with self.lock:
            self.calls.append(ip)
        time.sleep(self.delay)
        if ip not in self.ptr:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.ptr[ip]

    def addresses_of(self, name: str) -> list[str]:
        if name not in self.a:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.a[name]


DNS = Dns(
    ptr={"192.0.2.1": "mail.example.org", "192.0.2.2": "liar.example.org",
         "2001:db8::25": "v6.example.org.", "192.0.2.3": "192.0.2.3",
         "192.0.2.4": "gone.example.org"},
    a={"mail.example.org": ["192.0.2.1"], "liar.example.org": ["198.51.100.9"],
       "v6.example.org.": ["2001:db8:0:0::25"], "192.0.2.3": ["192.0.2.3"]},
)


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("192.0.2.1", "mail.example.org"),  # PTR, and A back to the address
        ("192.0.2.2", UNKNOWN),  # the name points elsewhere: not confirmed
        ("2001:db8::25", "v6.example.org"),  # another spelling of the same address; root dot dropped
        ("192.0.2.3", UNKNOWN),  # a PTR that is an address literal proves nothing
        ("192.0.2.4", UNKNOWN),  # the name does not resolve at all
        ("192.0.2.99", UNKNOWN),  # no PTR
        (None, UNKNOWN),
    ],
)
def test_forward_confirmed_names(ip: str | None, name: str) -> None:
    reverse = ReverseDns(1.0, name_of=DNS.name_of, addresses_of=DNS.addresses_of)

    async def main() -> str:
        return await reverse.name(reverse.lookup(ip), ip)

    try:
        assert asyncio.run(main()) == name
    finally:
        reverse.close()


@pytest.mark.parametrize(
    ("ip", "name", "addresses", "ok"),
    [
        ("192.0.2.1", "a.example", ["192.0.2.1"], True),
        ("192.0.2.1", "a.example", ["192.0.2.2", "192.0.2.1"], True),
        ("::1", "a.example", ["0:0::1"], True),
        ("fe80::1", "a.example", ["fe80::1%eth0"], True),
        ("192.0.2.1", "a.example", [], False),
        ("192.0.2.1", "192.0.2.1", ["192.0.2.1"], False),
        ("192.0.2.1", "a.example", ["junk"], False),
        ("junk", "a.example", ["192.0.2.1"], False),
    ],
)
def test_confirmed_rule(ip: str, name: str, addresses: list[str], ok: bool) -> None:
    assert confirmed(ip, name, addresses) is ok


def test_a_hanging_resolver_costs_the_session_the_timeout_and_no_more() -> None:
    slow = Dns(ptr={"192.0.2.1": "mail.example.org"}, a={"mail.example.org": ["192.0.2.1"]},
               delay=2.0)
    reverse = ReverseDns(0.2, name_of=slow.name_of, addresses_of=slow.addresses_of)

    async def main() -> tuple[str, float]:
        start = time.monotonic()
        name = await reverse.name(reverse.lookup("192.0.2.1"), "192.0.2.1")
        return name, time.monotonic() - start

    try:
        name, took = asyncio.run(main())
    finally:
        reverse.close()
    assert name == UNKNOWN
    assert 0.15 < took < 1.0, took


def test_results_are_cached_failures_shorter_and_the_cache_is_bounded() -> None:
    dns = Dns(ptr=dict(DNS.ptr), a=dict(DNS.a))
    now = [1000.0]
    reverse = ReverseDns(1.0, size=2, ttl=300.0, name_of=dns.name_of,
                         addresses_of=dns.addresses_of, clock=lambda: now[0])

    async def name(ip: str) -> str:
        return await reverse.name(None, ip)

    async def main() -> None:
        assert await name("192.0.2.1") == "mail.example.org"
        assert await name("192.0.2.1") == "mail.example.org"
        assert dns.calls == ["192.0.2.1"]  # the second came from the cache
        assert await name("192.0.2.99") == UNKNOWN
        now[0] += 31  # past a failure's 30 s, inside a name's 300 s
        assert await name("192.0.2.1") == "mail.example.org"
        assert await name("192.0.2.99") == UNKNOWN
        assert dns.calls == ["192.0.2.1", "192.0.2.99", "192.0.2.99"]
        now[0] += 300  # the name too is stale now
        assert await name("192.0.2.1") == "mail.example.org"
        assert dns.calls[-1] == "192.0.2.1"
        # size=2: a third address pushes out the least recently used one
        await name("192.0.2.2")
        await name("2001:db8::25")
        calls = len(dns.calls)
        await name("2001:db8::25")
        assert len(dns.calls) == calls  # still cached
        await name("192.0.2.1")
        assert len(dns.calls) == calls + 1  # was evicted

    try:
        asyncio.run(main())
    finally:
        reverse.close()


def test_concurrent_sessions_of_one_client_share_one_look_up() -> None:
    dns = Dns(ptr=dict(DNS.ptr), a=dict(DNS.a), delay=0.1)
    reverse = ReverseDns(1.0, name_of=dns.name_of, addresses_of=dns.addresses_of)

    async def main() -> list[str]:
        pending = [reverse.lookup("192.0.2.1") for _ in range(20)]
        return await asyncio.gather(*(reverse.name(p, "192.0.2.1") for p in pending))

    try:
        assert asyncio.run(main()) == ["mail.example.org"] * 20
    finally:
        reverse.close()
    assert dns.calls == ["192.0.2.1"]


def test_a_session_cancelled_while_waiting_does_not_cancel_the_others() -> None:
    dns = Dns(ptr=dict(DNS.ptr), a=dict(DNS.a), delay=0.2)
    reverse = ReverseDns(1.0, name_of=dns.name_of, addresses_of=dns.addresses_of)

    async def main() -> str:
        shared = reverse.lookup("192.0.2.1")
        first = asyncio.ensure_future(reverse.name(shared, "192.0.2.1"))
        second = asyncio.ensure_future(reverse.name(shared, "192.0.2.1"))
        await asyncio.sleep(0.05)
        first.cancel()
        return await second

    try:
        assert asyncio.run(main()) == "mail.example.org"
    finally:
        reverse.close()


def test_the_system_resolver_confirms_localhost() -> None:
    try:
        ptr = socket.getnameinfo(("127.0.0.1", 0), socket.NI_NAMEREQD)[0]
        back = {info[4][0] for info in socket.getaddrinfo(ptr, None)}
    except OSError:
        pytest.skip("this machine has no name for 127.0.0.1")
    reverse = ReverseDns(2.0)

    async def main() -> str:
        return await reverse.name(reverse.lookup("127.0.0.1"), "127.0.0.1")

    try:
        assert asyncio.run(main()) == (ptr if "127.0.0.1" in back else UNKNOWN)
    finally:
        reverse.close()
