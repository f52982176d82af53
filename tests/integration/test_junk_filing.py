"""Junk filing in the real server: a filter's header files the message into ``.Junk/``.

The filter is a real program in the transform chain (a shell script standing in
for SpamAssassin): it adds ``X-Spam-Status: Yes, score=<n>`` on top of the
message, reading the score from the body. What is checked is what the server
does with the header: the inbox, the Maildir++ Junk folder (with its
``maildirfolder`` marker, as Dovecot expects), or nothing at all past the
discard threshold, with the counters to match; and that a message delivered
without the filter (switched off) is never filed by a header its sender wrote.
"""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from helpers import RunningServer, settings_for, wait_for

FILTER = r"""#!/bin/sh
# Reads the message on stdin; the score is the number after "SCORE=" in it, else 0.
msg=$(cat; echo x)
msg=${msg%x}
score=$(printf '%s' "$msg" | sed -n 's/.*SCORE=\([-0-9.]*\).*/\1/p' | head -n1)
score=${score:-0.0}
verdict=No
[ "$(printf '%s\n' "$score" | awk '{print ($1 >= 5.0)}')" = 1 ] && verdict=Yes
printf 'X-Spam-Status: %s, score=%s required=5.0 tests=BUZON_TEST\r\n' "$verdict" "$score"
printf '%s' "$msg"
"""


@pytest.fixture
def server(tmp_path: Path):
    script = tmp_path / "filter.sh"
    script.write_text(FILTER)
    script.chmod(0o755)
    settings = settings_for(
        tmp_path, transform=str(script), junk_threshold=5.0, junk_discard_threshold=50.0,
    )
    running = RunningServer(settings).start()
    try:
        yield running
    finally:
        running.stop()


def _send(port: int, rcpt: str, body: str, headers: str = "") -> None:
    message = f"From: a@example.org\r\nSubject: t\r\n{headers}\r\n{body}\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@example.org", [rcpt], message.encode())


def _files(root: Path, mailbox: str, folder: str = "") -> list[Path]:
    base = root / mailbox / folder if folder else root / mailbox
    return sorted((base / "new").glob("*")) + sorted((base / "cur").glob("*"))


def test_spam_goes_to_junk_ham_to_inbox_and_past_discard_nowhere(server: RunningServer) -> None:
    root = server.mail_root
    _send(server.port, "alice@example.org", "hello, SCORE=0.3")
    _send(server.port, "alice@example.org", "buy now SCORE=7.5")
    _send(server.port, "alice@example.org", "certain spam SCORE=99")
    server.wait_idle()
    counters = server.server.counters
    assert wait_for(lambda: counters.spam_discarded == 1)
    inbox = _files(root, "example.org/alice")
    junk = _files(root, "example.org/alice", ".Junk")
    assert [b"SCORE=0.3" in f.read_bytes() for f in inbox] == [True]
    assert [b"SCORE=7.5" in f.read_bytes() for f in junk] == [True]
    assert b"X-Spam-Status: Yes, score=7.5" in junk[0].read_bytes()
    assert (root / "example.org/alice/.Junk/maildirfolder").is_file()
    for sub in ("", "tmp", "new", "cur"):
        assert ((root / "example.org/alice/.Junk" / sub).stat().st_mode & 0o777) == 0o700
    assert not any(b"SCORE=99" in f.read_bytes() for f in inbox + junk)
    assert (counters.spam_junked, counters.spam_discarded, counters.deliveries) == (1, 1, 2)
    assert counters.queue_depth == 0


def test_a_senders_own_header_files_nothing_without_the_filter(server: RunningServer) -> None:
    # The switch off: the message is delivered as sent, and the score its sender wrote
    # into it must not move it to Junk, nor have it discarded.
    switch = server.server.switch
    server.loop.call_soon_threadsafe(switch.set_enabled, False)
    assert wait_for(lambda: not switch.enabled)
    _send(server.port, "bob@example.org", "no filter ran",
          headers="X-Spam-Status: Yes, score=1000 required=5.0\r\n")
    server.wait_idle()
    assert len(_files(server.mail_root, "example.org/bob")) == 1
    assert _files(server.mail_root, "example.org/bob", ".Junk") == []
    assert server.server.counters.spam_discarded == 0
