"""Issue 11, finding 9 (SMTP): HELO names, HELP, AUTH, and client bytes in logs.

Before: a HELO/EHLO name with a NUL or an ESC was accepted with 250 (the NUL
then silently dropped from ``Received:``); HELP answered 250 listing AUTH and
VRFY but not MAIL, RCPT or DATA; AUTH was half-answered (538) though no
authentication exists; and aiosmtpd logged an unknown verb raw, so a client
could write terminal escapes and fake lines into the server log.
"""

from __future__ import annotations

import logging

import pytest
from helpers import LineClient, RunningServer, code

BAD = "501 5.5.2 Error: control characters in the HELO/EHLO name"


@pytest.mark.parametrize("name", ["evil\x00.example", "a\x1b[31mred", "tab\tbed", "del\x7f"])
def test_helo_and_ehlo_names_with_control_bytes_get_501(server: RunningServer, name: str) -> None:
    with LineClient(server.port) as c:
        c.reply()
        assert c.cmd(f"HELO {name}") == BAD
        assert c.cmd(f"EHLO {name}") == BAD
        assert code(c.cmd("EHLO fine.example")) == "250"


def test_help_answers_214_with_the_commands_that_exist(server: RunningServer) -> None:
    with LineClient(server.port) as c:
        c.reply()
        listed = c.cmd("HELP")
        assert code(listed) == "214 2.0.0"
        words = set(listed.split(": ", 1)[1].split())
        assert {"MAIL", "RCPT", "DATA", "QUIT", "EHLO"} <= words
        assert "AUTH" not in words
        assert c.cmd("HELP mail") == (
            "214 2.0.0 Syntax: MAIL FROM:<address> [SP <mail-parameters>]")
        assert code(c.cmd("HELP AUTH")) == "504 5.5.4"


def test_auth_is_neither_advertised_nor_half_answered(server: RunningServer) -> None:
    with LineClient(server.port) as c:
        c.reply()
        assert "AUTH" not in c.cmd("EHLO client.example")
        assert c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == "502 5.5.2 Error: command not recognized"
        assert c.cmd("AUTH LOGIN") == "502 5.5.2 Error: command not recognized"


def test_control_characters_from_clients_never_reach_the_log_raw(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with LineClient(server.port) as c:
        c.reply()
        c.send(b"\x1b[2J\x1b]0;owned\x07FAKE\rWARNING\x00x\r\n")
        assert code(c.reply()) == "502 5.5.2"
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
    messages = [r.getMessage() for r in caplog.records]
    assert any("FAKE" in m for m in messages), messages  # the unknown verb was logged...
    for m in messages:  # ...escaped
        assert not any(ch in m for ch in "\x1b\x07\r\x00"), repr(m)
