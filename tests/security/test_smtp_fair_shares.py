"""Issue 11, finding 6: one client cannot take every slot, every message or all memory.

Before: no per-address cap (one address held all slots with a NOOP every few
seconds), no limit on messages or time per session, and every session in DATA
could buffer the maximum message size. Each limit is a setting; each is
exercised here over real sockets with the reply a client sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from helpers import LineClient, RunningServer, code, maildir_files, wait_for


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


def test_data_memory_budget_answers_452_at_data_and_spills_mid_transfer(
    make_server: Callable[..., RunningServer],
) -> None:
    """The budget bounds what bodies hold in memory: a DATA that cannot reserve its
    first part gets 452 before the 354; a body whose reservation cannot grow goes
    on to the spool on disk and is accepted whole (issue 16: no 452 for a size the
    server can take)."""
    mib = 1 << 20
    spill = 256 * 1024
    server = make_server(max_message_size=mib, data_memory_budget=mib, data_spill_size=spill)
    holders = [LineClient(server.port) for _ in range(3)]
    try:
        with LineClient(server.port) as small:
            small.reply()
            # checked at DATA: the declared SIZE= is reserved (at most the spill size and
            # one 64 KB step each), so three large messages leave no room for a fourth
            for holder in holders:
                holder.reply()
                assert _to_data(holder, size=mib - 1000) == "354 End data with <CR><LF>.<CR><LF>"
            assert server.server.hub.budget.used == 3 * (spill + 64 * 1024)
            assert _to_data(small, size=200_000) == (
                "452 4.3.1 Error: insufficient system resources, try again later")
            # past its reservation, each body goes to disk: all three accepted
            for n, holder in enumerate(holders):
                holder.send((f"{n}" * 98 + "\r\n") * 9000)  # 900 KB
                assert code(holder.cmd(".")) == "250 2.0.0"
            assert code(small.cmd("DATA")) == "354"
            assert code(small.cmd("ok\r\n.")) == "250 2.0.0"
    finally:
        for holder in holders:
            holder.close()
    server.wait_idle()
    mail = server.mail_root
    got = sorted(len(p.read_bytes()) for p in maildir_files(mail, "fair"))
    assert len(got) == 4 and all(size > 900_000 for size in got[1:])
    assert wait_for(lambda: server.server.hub.budget.used == 0, 5)
