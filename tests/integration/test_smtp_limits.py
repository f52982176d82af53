"""Each configurable limit, with its reply, over real sockets (SPEC §2, issue 2)."""

from __future__ import annotations

import time
from collections.abc import Callable

from helpers import LineClient, RunningServer, code, maildir_files, wait_for


def _start_data(c: LineClient, rcpt: str = "lim@example.org") -> None:
    c.reply()
    c.cmd("EHLO me")
    assert code(c.cmd("MAIL FROM:<a@example.org>")) == "250 2.1.0"
    assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
    assert code(c.cmd("DATA")) == "354"


def test_message_over_the_size_limit_is_refused_and_nothing_stored(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_message_size=2048)
    with LineClient(server.port) as c:
        c.reply()
        assert c.cmd("EHLO me").split("\n")[2] == "250-SIZE 2048"
        assert code(c.cmd("MAIL FROM:<a@example.org> SIZE=2049")) == "552 5.3.4"
        assert code(c.cmd("MAIL FROM:<a@example.org> SIZE=2000")) == "250 2.1.0"
        c.cmd("RCPT TO:<big@example.org>")
        c.cmd("DATA")
        c.send(("x" * 70 + "\r\n") * 40)  # ~2.9 KB, more than declared and allowed
        assert code(c.cmd(".")) == "552 5.3.4"
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
    server.wait_idle()
    assert maildir_files(server.mail_root, "big") == []
    assert list((server.settings.data_dir / "spool" / "queue").iterdir()) == []


def test_recipient_limit_answers_452(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(max_recipients=3)
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("MAIL FROM:<a@example.org>")
        answers = [code(c.cmd(f"RCPT TO:<r{i}@example.org>")) for i in range(5)]
        assert answers == ["250 2.1.5"] * 3 + ["452 4.5.3"] * 2
        c.cmd("DATA")
        assert code(c.cmd("x\r\n.")) == "250 2.0.0"
    server.wait_idle()
    assert [len(maildir_files(server.mail_root, f"r{i}")) for i in range(5)] == [1, 1, 1, 0, 0]


def test_command_line_too_long(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(max_line_length=100)
    with LineClient(server.port) as c:
        c.reply()
        assert code(c.cmd("NOOP " + "x" * 93)) == "250 2.0.0"  # 100 octets with CRLF
        assert c.cmd("NOOP " + "x" * 94) == "500 5.5.2 Error: line too long"
        assert code(c.cmd("NOOP " + "x" * 5000)) == "500 5.5.2"  # past the reader's buffer
        assert c.cmd("NOOP") == "250 2.0.0 Ok"


def test_data_line_over_1000_octets_is_refused(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(long_lines="refuse")  # the default, "accept", keeps the line
    with LineClient(server.port) as c:
        _start_data(c, "longline@example.org")
        c.send("y" * 1200 + "\r\n")
        assert code(c.cmd(".")) == "500 5.5.2"
    server.wait_idle()
    assert maildir_files(server.mail_root, "longline") == []


def test_idle_timeout_says_421_and_closes(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(idle_timeout=0.5)
    with LineClient(server.port) as c:
        c.reply()
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
        assert c.reply() == "421 4.4.2 mx.test Error: timeout exceeded"
        assert c.closed()


def test_each_command_restarts_the_idle_period(make_server: Callable[..., RunningServer]) -> None:
    """The timer is moved, not re-created, per command: it must still measure silence."""
    server = make_server(idle_timeout=0.5)
    with LineClient(server.port) as c:
        c.reply()
        for _ in range(5):  # 5 x 0.3 s = 1.5 s of session, never 0.5 s of silence
            assert c.cmd("NOOP") == "250 2.0.0 Ok"
            time.sleep(0.3)  # the pacing under test: a gap shorter than the idle timeout
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
        quiet = time.monotonic()
        assert c.reply() == "421 4.4.2 mx.test Error: timeout exceeded"
        assert 0.4 < time.monotonic() - quiet < 1.5
        assert c.closed()


def test_a_slow_but_live_data_transfer_is_not_cut_off(
    make_server: Callable[..., RunningServer],
) -> None:
    """The idle timer measures silence, not the length of DATA."""
    server = make_server(idle_timeout=0.6)
    with LineClient(server.port) as c:
        _start_data(c, "slow@example.org")
        for _ in range(8):  # 8 x 0.2 s = 1.6 s of DATA, never 0.6 s of silence
            c.send("line\r\n")
            time.sleep(0.2)  # the pacing under test: a slow but live DATA transfer
        assert code(c.cmd(".")) == "250 2.0.0"
    server.wait_idle()
    assert len(maildir_files(server.mail_root, "slow")) == 1


def test_connection_limit_answers_421(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(max_connections=2)
    first, second = LineClient(server.port), LineClient(server.port)
    try:
        assert code(first.reply()) == "220"
        assert code(second.reply()) == "220"
        with LineClient(server.port) as third:
            assert third.reply() == "421 4.3.2 mx.test Error: too many connections, try again later"
            assert third.closed()
        first.cmd("QUIT")
        assert first.closed()
        assert wait_for(lambda: server.server.counters.concurrent_connections <= 1, 5)
        with LineClient(server.port) as fourth:
            assert code(fourth.reply()) == "220"
    finally:
        first.close()
        second.close()


def test_a_data_transfer_that_trickles_forever_is_cut_at_the_deadline(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(idle_timeout=5, data_timeout=1.0)
    with LineClient(server.port) as c:
        _start_data(c, "drip@example.org")
        started = time.monotonic()
        cut = False
        while time.monotonic() - started < 8:
            try:
                c.send("d\r\n")
            except OSError:
                cut = True
                break
            time.sleep(0.1)  # the drip under test: one line every 0.1 s
            if c.closed(timeout=0.01):
                cut = True
                break
        assert cut
        assert b"421 4.4.2 mx.test Error: data transfer took too long" in c._buf
    server.wait_idle()
    assert maildir_files(server.mail_root, "drip") == []
