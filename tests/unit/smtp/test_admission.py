"""Fair shares without a socket: client keys, the per-client count, the memory budget."""

from __future__ import annotations

import ipaddress

import pytest

from buzon.smtp.admission import Clients, MemoryBudget, client_key


@pytest.mark.parametrize(
    ("peername", "key"),
    [
        (("192.0.2.7", 40123), "192.0.2.7"),
        (("2001:db8:1:2:3:4:5:6", 25, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 25, 0, 0), "2001:db8:1:2::/64"),  # same /64
        (("2001:db8:1:3::1", 25, 0, 0), "2001:db8:1:3::/64"),
        (("::ffff:192.0.2.7", 25, 0, 0), "192.0.2.7"),  # IPv4-mapped counts as IPv4
        (("fe80::1%eth0", 25, 0, 2), "fe80::/64"),
        (None, "?"),
        ("/run/buzon.sock", "?"),
    ],
)
def test_client_key(peername: object, key: str) -> None:
    assert client_key(peername) == key


def test_clients_are_capped_and_forgotten_when_gone() -> None:
    clients = Clients(limit=2)
    a, b = ("192.0.2.1", 1), ("192.0.2.2", 1)
    assert clients.admit(a) == clients.admit(a) == "192.0.2.1"
    assert clients.admit(a) is None
    assert clients.admit(b) == "192.0.2.2"
    clients.leave("192.0.2.1")
    assert clients.admit(a) == "192.0.2.1"
    clients.leave("192.0.2.1")
    clients.leave("192.0.2.1")
    clients.leave("192.0.2.2")
    assert clients.open == {}


def test_exempt_networks_are_not_counted() -> None:
    exempt = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    clients = Clients(limit=1, exempt=exempt)
    for peer in [("127.0.0.1", 1), ("127.0.0.1", 2), ("::1", 3, 0, 0), ("::ffff:127.0.0.9", 4, 0, 0)]:
        assert clients.admit(peer) == ""
    clients.leave("")
    assert clients.open == {}
    assert clients.admit(("192.0.2.1", 1)) == "192.0.2.1"
    assert clients.admit(("192.0.2.1", 2)) is None


def test_memory_budget_takes_only_what_fits() -> None:
    budget = MemoryBudget(total=100)
    assert budget.take(60)
    assert not budget.take(41)
    assert budget.used == 60
    assert budget.take(40)
    budget.give(100)
    assert budget.used == 0
