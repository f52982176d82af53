"""buzon.net: address parsing and formatting, the one bind policy, port reservation.

Real loopback sockets; 192.0.2.1 (TEST-NET-1, RFC 5737) is an address this machine
never has, so binding it fails with EADDRNOTAVAIL without sending anything.
"""

from __future__ import annotations

import socket

import pytest

from buzon.net import (
    bind_sockets,
    format_address,
    format_peer,
    parse_address,
    parse_listen,
    reserve,
)


def _listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def test_port_zero_picks_one_that_workers_can_join_and_strangers_cannot() -> None:
    port, held = reserve(("127.0.0.1",), 0)
    try:
        assert port > 0 and held[0].getsockname() == ("127.0.0.1", port)
        workers = [_listener(port), _listener(port)]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # a listening worker takes it; the reservation never listens
        for w in workers:
            w.close()
        with socket.socket() as stranger, pytest.raises(OSError):
            stranger.bind(("127.0.0.1", port))  # held while no worker listens
    finally:
        for sock in held:
            sock.close()


def test_every_host_gets_the_same_port_and_a_missing_ipv6_is_skipped() -> None:
    port, held = reserve(("127.0.0.1", "::1"), 0)
    try:
        assert {s.getsockname()[1] for s in held} == {port}
        assert len(held) in (1, 2)  # 1 where the host has no IPv6
    finally:
        for sock in held:
            sock.close()


def test_a_port_taken_without_reuseport_is_an_error() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        with pytest.raises(OSError):
            reserve(("127.0.0.1",), squatter.getsockname()[1])


@pytest.mark.parametrize(
    "text", ["host", "host:", ":7000", "host:0", "host:65536", "host:x", "::1:7000", "[]:7000"]
)
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_parse_address_reads_brackets() -> None:
    assert parse_address(" [::1]:7000 ") == ("::1", 7000)
    assert parse_address("spamassassin:7000") == ("spamassassin", 7000)


def test_one_format_for_every_address() -> None:
    assert format_address("127.0.0.1", 25) == "127.0.0.1:25"
    assert format_address("::1", 25) == "[::1]:25"
    assert format_peer(("::1", 25, 0, 0)) == "[::1]:25"
    assert format_peer(None) == "?"
    assert parse_address(format_address("::1", 25)) == ("::1", 25)


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0, [::] ,") == ("0.0.0.0", "::")
    with pytest.raises(ValueError):
        parse_listen(" , ")


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_an_absent_address_is_skipped_when_another_binds(
    kind: int, caplog: pytest.LogCaptureFixture
) -> None:
    socks = bind_sockets(("192.0.2.1", "127.0.0.1"), 0, kind=kind)
    try:
        assert [s.getsockname()[0] for s in socks] == ["127.0.0.1"]
        assert "cannot listen on 192.0.2.1:" in caplog.text and "skipping it" in caplog.text
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_a_list_of_only_absent_addresses_stops_start_up(kind: int) -> None:
    with pytest.raises(OSError, match="192.0.2.1"):
        bind_sockets(("192.0.2.1",), 0, kind=kind)


def test_port_zero_is_shared_by_every_host() -> None:
    socks = bind_sockets(("127.0.0.1", "::1"), 0)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(socks) == 2 and len(ports) == 1
        v6 = socks[1]
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in socks:
            sock.close()


def test_an_address_in_use_is_never_skipped() -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    try:
        with pytest.raises(OSError, match="in use"):
            bind_sockets(("127.0.0.1", "::1"), squatter.getsockname()[1])
    finally:
        squatter.close()
