"""Issue 11, finding 6: one client cannot take every slot, every message or all memory.

Before: no per-address cap (one address held all slots with a NOOP every few
seconds), no limit on messages or time per session, and every session in DATA
could buffer the maximum message size. Each limit is a setting; each is
exercised here over real sockets with the reply a client sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from helpers import LineClient, RunningServer, code, wait_for


def _to_data(c: LineClient, size: int | None = None, rcpt: str = "fair@example.org") -> str:
    c.cmd("EHLO fair.example")
    declared = f" SIZE={size}" if size is not None else ""
    assert code(c.cmd(f"MAIL FROM:<a@example.org>{declared}")) == "250 2.1.0"
    assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
    return c.cmd("DATA")


def test_sessions_per_client_address_are_capped(make_server: Callable[..., RunningServer]) -> None:
    # loopback is exempt by default (as Postfix exempts $mynetworks): not here
    server = make_server(max_connections_per_client=2, client_limit_exempt="")
    first, second = LineClient(server.port), LineClient(server.port)
    try:
        assert code(first.reply()) == code(second.reply()) == "220"
        with LineClient(server.port) as third:
            assert third.reply() == (
                "421 4.7.0 mx.test Error: too many connections from your address, "
                "try again later")
            assert third.closed()
        # another address (here ::1) has its own share
        with LineClient(server.server.smtp_addresses[1][1], host="::1") as v6:
            assert code(v6.reply()) == "220"
        first.cmd("QUIT")
        assert wait_for(lambda: server.server.counters.concurrent_connections <= 1, 5)
        with LineClient(server.port) as again:
            assert code(again.reply()) == "220"
    finally:
        first.close()
        second.close()


def test_messages_per_session_are_capped(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(max_messages_per_session=2)
    with LineClient(server.port) as c:
        c.reply()
        for _ in range(2):
            assert _to_data(c) == "354 End data with <CR><LF>.<CR><LF>"
            assert code(c.cmd("hello\r\n.")) == "250 2.0.0"
        assert c.cmd("MAIL FROM:<a@example.org>") == (
            "421 4.7.0 mx.test Error: too many messages in one session, reconnect to send more")
        assert c.closed()


def test_a_session_has_a_lifetime(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(session_lifetime=1.0, idle_timeout=30)
    with LineClient(server.port) as c:
        c.reply()
        started = time.monotonic()
        c.send("NOOP\r\n")
        replies = []
        while len(replies) < 20:  # a NOOP every 0.2 s keeps the idle timer away
            replies.append(c.reply())
            if replies[-1].startswith("421"):
                break
            time.sleep(0.2)  # the pacing under test: a client that is never idle
            c.send("NOOP\r\n")
        assert replies[-1] == "421 4.7.0 mx.test Error: session lasted too long, reconnect to go on"
        assert time.monotonic() - started < 3
        assert c.closed()


def test_data_memory_budget_answers_452_at_data_and_mid_transfer(
    make_server: Callable[..., RunningServer],
) -> None:
    mib = 1 << 20
    server = make_server(max_message_size=mib, data_memory_budget=mib)
    with LineClient(server.port) as big, LineClient(server.port) as small:
        big.reply()
        small.reply()
        # checked at DATA: the declared SIZE= is reserved, so nothing is left
        assert _to_data(big, size=mib - 100_000) == "354 End data with <CR><LF>.<CR><LF>"
        assert _to_data(small, size=200_000) == (
            "452 4.3.1 Error: insufficient system resources, try again later")
        big.send(("b" * 98 + "\r\n") * 5000)
        assert code(big.cmd(".")) == "250 2.0.0"  # its reservation is given back
        assert code(small.cmd("DATA")) == "354"
        assert code(small.cmd("ok\r\n.")) == "250 2.0.0"
        # no SIZE=: the reservation grows as the body arrives; past the budget the
        # rest is read and dropped, and the reply after the terminator is 452
        assert _to_data(big) == _to_data(small) == "354 End data with <CR><LF>.<CR><LF>"
        big.send(("c" * 98 + "\r\n") * 6000)  # 600 KB held
        assert wait_for(lambda: server.server.hub.budget.used >= 600_000, 5)
        small.send(("d" * 98 + "\r\n") * 6000)  # 600 KB more: over the budget
        assert small.cmd(".") == "452 4.3.1 Error: insufficient system resources, try again later"
        assert code(big.cmd(".")) == "250 2.0.0"
    server.wait_idle()
    assert wait_for(lambda: server.server.hub.budget.used == 0, 5)
