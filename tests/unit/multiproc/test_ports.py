"""Port reservation for SO_REUSEPORT workers, on real loopback sockets."""

from __future__ import annotations

import socket

import pytest

from buzon.multiproc.ports import reserve


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
