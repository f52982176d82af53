"""SPEC §2 over real sockets: every reply the dialogue can produce, with its exact code."""

from __future__ import annotations

import re
import smtplib
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import LineClient, RunningServer, code, maildir_files

from buzon.smtp import replies


def test_greeting_helo_and_ehlo_advertise_the_extensions(server: RunningServer) -> None:
    with LineClient(server.port) as c:
        assert c.reply() == "220 mx.test ESMTP"
        assert c.cmd("HELO client.example") == "250 mx.test"
        assert c.cmd("EHLO client.example").split("\n") == [
            "250-mx.test",
            "250-PIPELINING",
            "250-SIZE 10240000",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-STARTTLS",  # BUZON_TLS is on by default (tests/integration/test_tls_*.py)
            "250 ENHANCEDSTATUSCODES",
        ]


def test_a_whole_transaction_gets_the_spec_replies(server: RunningServer) -> None:
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        assert c.cmd("MAIL FROM:<alice@example.org>") == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<bob@example.org>") == "250 2.1.5 Ok"
        assert c.cmd("RCPT TO:<carol@example.org>") == "250 2.1.5 Ok"
        assert c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        queued = c.cmd("Subject: t\r\n\r\nhello\r\n.")
        assert queued.startswith("250 2.0.0 Ok: queued as ")
        assert c.cmd("RSET") == "250 2.0.0 Ok"
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
        assert c.cmd("QUIT") == "221 2.0.0 Bye"
        assert c.closed()
    server.wait_idle()
    assert len(maildir_files(server.mail_root, "bob")) == 1
    assert len(maildir_files(server.mail_root, "carol")) == 1


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (["", ], "500 5.5.2"),  # empty line: bad syntax
        (["FOO bar"], "502 5.5.2"),
        (["MAIL FROM:<alice@example.org>", "RCPT TO:<bob@@example.org>"], "501 5.1.3"),
        (["MAIL FROM:<alice@example.org>", "RCPT TO:<b ob@example.org>"], "501 5.1.3"),
        (["MAIL FROM:<alice@@example.org>"], "501 5.1.7"),
        (["MAIL FROM:<alice@exa mple.org>"], "501 5.1.7"),
        (["DATA"], "503 5.5.1"),
        (["MAIL FROM:<a@example.org>", "DATA"], "503 5.5.1"),
        (["RCPT TO:<bob@example.org>"], "503 5.5.1"),
        (["MAIL FROM:<a@example.org>", "MAIL FROM:<a@example.org>"], "503 5.5.1"),
        (["MAIL FROM:<a@example.org> SIZE=10240001"], "552 5.3.4"),
        (["MAIL FROM:<a@example.org> FOO=bar"], "555 5.5.4"),
        (["MAIL TO:<a@example.org>"], "501 5.5.4"),
        (["MAIL FROM:<a@example.org>", 'RCPT TO:<"../../etc"@example.org>'], "550 5.1.1"),
    ],
)
def test_errors_carry_the_seed_codes(
    server: RunningServer, commands: list[str], expected: str
) -> None:
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        answers = [c.cmd(line) for line in commands]
        assert code(answers[-1]) == expected, answers
        # The session survives every error.
        assert c.cmd("NOOP") == "250 2.0.0 Ok"


def test_exact_error_wording_from_the_seed(server: RunningServer) -> None:
    with LineClient(server.port) as c:
        c.reply()
        assert c.cmd("DATA") == str(replies.NEED_RCPT) == "503 5.5.1 Error: need RCPT command"
        assert c.cmd("RCPT TO:<b@x.org>") == "503 5.5.1 Error: need MAIL command"
        assert c.cmd("XYZZY") == "502 5.5.2 Error: command not recognized"
        c.cmd("MAIL FROM:<a@x.org>")
        assert c.cmd("MAIL FROM:<a@x.org>") == "503 5.5.1 Error: nested MAIL command"
        assert c.cmd("RCPT TO:<a@@x.org>") == "501 5.1.3 Bad recipient address syntax"
        c.cmd("RSET")
        assert c.cmd("MAIL FROM:<a@@x.org>") == "501 5.1.7 Bad sender address syntax"


def test_null_sender_and_bare_names_are_accepted(server: RunningServer) -> None:
    """Bounces use MAIL FROM:<>; the seed accepted bare local parts."""
    with LineClient(server.port) as c:
        c.reply()
        assert c.cmd("MAIL FROM:<>") == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<>") == "501 5.1.3 Bad recipient address syntax"
        assert c.cmd("RCPT TO: theo") == "250 2.1.5 Ok"
        c.cmd("DATA")
        assert code(c.cmd("hi\r\n.")) == "250 2.0.0"
    server.wait_idle()
    (path,) = maildir_files(server.mail_root, "theo")
    assert path.read_bytes().startswith(b"Return-Path: <>\r\nDelivered-To: theo\r\n")


def test_every_reply_after_the_greeting_has_an_enhanced_code(server: RunningServer) -> None:
    lines = [
        "HELP", "VRFY bob", "EXPN list", "RSET x", "QUIT x", "DATA x", "HELO",
        "MAIL FROM:<a@x.org> BODY=9BIT", "MAIL FROM:<a@x.org> SMTPUTF8",
    ]
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO me")
        for line in lines:
            reply = c.cmd(line)
            assert len(code(reply).split()) == 2, (line, reply)


def test_smtplib_sendmail_round_trip(server: RunningServer) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        code_, _ = client.ehlo("client.example")
        assert code_ == 250
        assert client.has_extn("pipelining") and client.has_extn("enhancedstatuscodes")
        assert client.sendmail("a@example.org", ["Dora@example.org"], b"Subject: x\r\n\r\nhi\r\n") == {}
    server.wait_idle()
    assert len(maildir_files(server.mail_root, "dora")) == 1


def test_ipv6_clients_are_served(server: RunningServer) -> None:
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6; SPEC §2 requires it")
    ports = {port for host, port in server.server.smtp_addresses if host == "::1"}
    assert ports == {server.port}
    with LineClient(server.port, host="::1") as c:
        assert c.reply() == "220 mx.test ESMTP"
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<six@example.org>")
        c.cmd("DATA")
        assert code(c.cmd("v6\r\n.")) == "250 2.0.0"
    server.wait_idle()
    (path,) = maildir_files(server.mail_root, "six")
    # No HELO: "from" repeats the client's name (::1's confirmed name, else "unknown").
    assert re.search(rb"\r\nReceived: from ([\w.-]+) \(\1 \[IPv6:::1\]\)\r\n", path.read_bytes())


def test_pipelined_commands_in_one_write_are_answered_in_order(server: RunningServer) -> None:
    with LineClient(server.port) as c:
        c.reply()
        c.send(
            "EHLO me\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<p1@example.org>\r\n"
            "RCPT TO:<bad@@x>\r\nRCPT TO:<p2@example.org>\r\nDATA\r\n"
            "Subject: pipelined\r\n\r\nbody\r\n.\r\nNOOP\r\nBOGUS\r\nQUIT\r\n"
        )
        answers = [code(c.reply()) for _ in range(9)]
        assert answers == [
            "250", "250 2.1.0", "250 2.1.5", "501 5.1.3", "250 2.1.5", "354", "250 2.0.0",
            "250 2.0.0", "502 5.5.2",
        ]
        assert c.reply() == "221 2.0.0 Bye"
    server.wait_idle()
    assert len(maildir_files(server.mail_root, "p1")) == 1
    assert len(maildir_files(server.mail_root, "p2")) == 1


def test_a_client_that_half_closes_after_pipelining_still_gets_its_mail_queued(
    server: RunningServer,
) -> None:
    """`cat message | nc -q1 host 2525`, the seed's demo: EOF after the last command."""
    with LineClient(server.port) as c:
        c.send(
            "HELO me\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<half@example.org>\r\nDATA\r\n"
            "hello\r\n.\r\nQUIT\r\n"
        )
        c.sock.shutdown(socket.SHUT_WR)
        answers = [code(c.reply()) for _ in range(7)]
        assert answers == ["220", "250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"]
    server.wait_idle()
    assert len(maildir_files(server.mail_root, "half")) == 1


def test_access_log_records_connect_accept_and_disconnect(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    log_file = tmp_path / "access.log"
    server = make_server(access_log_file=log_file)
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("MAIL FROM:<alice@example.org>")
        c.cmd("RCPT TO:<bob@example.org>")
        c.cmd("RCPT TO:<carol@example.org>")
        c.cmd("DATA")
        queue_id = c.cmd("Subject: x\r\n\r\nhello\r\n.").rsplit(" ", 1)[1]
        c.cmd("QUIT")
        peer = "127.0.0.1:%d" % c.sock.getsockname()[1]
    server.stop()
    lines = [line.split(" ", 1) for line in log_file.read_text().splitlines()]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp) for stamp, _ in lines)
    events = [event for _, event in lines]
    assert events[0] == f"connect {peer}"
    assert events[1] == (
        f"accepted {peer} id={queue_id} from=<alice@example.org> "
        "to=<bob@example.org>,<carol@example.org> size=21"
    )
    assert re.fullmatch(rf"disconnect {re.escape(peer)} duration=\d+\.\d{{3}}s", events[2])


@pytest.mark.parametrize("arg", ["<", "< ", "<@", "<a@", '<"'])
def test_vrfy_of_a_broken_address_is_refused_not_a_local_error(
    server: RunningServer, arg: str
) -> None:
    """Regression (found by scripts/fuzz.py smtp): ``VRFY <`` made the standard library's
    address parser raise IndexError inside aiosmtpd, and the client got
    ``451 4.3.0 local error`` with a traceback in the log."""
    with LineClient(server.port) as c:
        c.reply()
        assert code(c.cmd(f"VRFY {arg}")) == "502 5.5.2"
        assert code(c.cmd("VRFY bob")) == "252 2.5.0"
