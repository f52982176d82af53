"""Finding 9 (issue 11), logs: client text reached the access log raw, and the file was 0644.

A recipient such as ``a@[>,<forged]`` (a domain literal may hold ``> , <``)
was logged as ``to=<a@[>,<forged]>``, which reads as two recipients; a quoted
sender with spaces split into extra ``key=value`` fields; control characters
(ESC, CR, NUL) would reach whoever ``tail``s the log. Now addresses and peers
are escaped (``\\xNN``) so each field is one unambiguous token, and the log
file is created 0640.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from helpers import LineClient, RunningServer, code, wait_for

from buzon.accesslog import AccessLog


def test_a_recipient_cannot_forge_a_second_recipient_or_field(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> None:
    log_file = tmp_path / "logs" / "access.log"
    old = os.umask(0o022)
    try:
        server = make_server(access_log_file=log_file)
    finally:
        os.umask(old)
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO stranger.example")
        assert code(c.cmd('MAIL FROM:<"x size=1 to=y"@example.org>')) == "250 2.1.0"
        assert code(c.cmd("RCPT TO:a@[>,<forged]")) == "250 2.1.5"
        c.cmd("DATA")
        assert code(c.cmd("Subject: s\r\n\r\nbody\r\n.")) == "250 2.0.0"
        c.cmd("QUIT")
    line = wait_for(lambda: next(
        (ln for ln in log_file.read_text().splitlines() if " accepted " in ln), None), 5)
    assert line, log_file.read_text()
    fields = line.split(" ")
    assert [f.split("=", 1)[0] for f in fields[3:]] == ["id", "from", "to", "size"], line
    recipients = re.findall(r"<[^<>]*>", line.split(" to=", 1)[1].split(" ")[0])
    assert len(recipients) == 1, line
    assert log_file.stat().st_mode & 0o777 == 0o640


def test_control_characters_are_escaped_in_every_field(tmp_path: Path) -> None:
    log_file = tmp_path / "access.log"
    log = AccessLog(log_file, stdout=False)
    evil = "\x1b]0;owned\x07\x1b[2J\r\n2026-01-01T00:00:00.000Z connect 10.0.0.1:1\x00"
    log.connect(evil)
    log.accepted(evil, "AGRCOX27EE7TPU3U", evil, [evil, "b@x"], 5)
    log.disconnect(evil, 0.1)
    log.close()
    data = log_file.read_bytes()
    assert len(data.splitlines()) == 3
    assert not re.search(rb"[\x00-\x1f\x7f]", data.replace(b"\n", b""))
    assert b"\\x1b]0;owned\\x07" in data and b"\\x0d\\x0a" in data and b"\\x00" in data
