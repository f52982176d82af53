"""Back-pressure end to end: a real server whose delivery is held back (issue 16).

The transform is a real local program that waits for a file before it copies
the message: while the file is absent nothing leaves the queue, so the queue's
depth is exactly the number of messages acknowledged, and the test decides
when delivery resumes.
"""

from __future__ import annotations

import smtplib
import threading
import time
from pathlib import Path

import pytest
from helpers import RunningServer, maildir_files, settings_for, wait_for


def _held_transform(go: Path) -> str:
    return f"sh -c 'while [ ! -e {go} ]; do sleep 0.02; done; cat'"


def _send(port: int, n: int) -> float:
    """Send one message; seconds until its final reply (raises on a refusal)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        started = time.monotonic()
        client.sendmail("a@example.org", ["bob@example.org"],
                        f"Subject: {n}\r\n\r\nmessage {n}\r\n")
        return time.monotonic() - started


@pytest.fixture
def held(tmp_path: Path):
    go = tmp_path / "go"

    def start(**overrides) -> RunningServer:
        settings = settings_for(tmp_path, transform=_held_transform(go), **overrides)
        return RunningServer(settings).start()

    return go, start


def test_past_the_mark_the_250_waits_and_at_the_limit_the_message_is_refused(held) -> None:
    go, start = held
    server = start(queue_delay_at=2, queue_limit=4, queue_max_delay=0.5)
    try:
        assert _send(server.port, 1) < 0.4
        assert _send(server.port, 2) < 0.4
        assert _send(server.port, 3) >= 0.5  # waited for room, then stored under the limit
        assert _send(server.port, 4) >= 0.5
        started = time.monotonic()
        with pytest.raises(smtplib.SMTPDataError) as refused:
            _send(server.port, 5)
        assert time.monotonic() - started < 0.4  # at the limit: refused at once
        assert refused.value.smtp_code == 452
        assert refused.value.smtp_error.startswith(b"4.3.1 ")
        counters = server.server.counters
        assert (counters.queue_limit, counters.queue_delayed, counters.refused_452) == (4, 2, 1)
        assert counters.mails_sent == 4 and counters.queue_depth == 4
        go.touch()
        mail = server.mail_root
        assert wait_for(lambda: len(maildir_files(mail, "example.org/bob")) == 4)
        assert wait_for(lambda: server.server.counters.queue_depth == 0)
        assert _send(server.port, 6) < 0.4  # room again
    finally:
        server.stop()


def test_a_waiting_message_is_let_in_by_the_next_delivery_not_by_its_deadline(held) -> None:
    go, start = held
    server = start(queue_delay_at=1, queue_limit=10, queue_max_delay=60)
    try:
        assert _send(server.port, 1) < 0.4
        took: list[float] = []
        second = threading.Thread(target=lambda: took.append(_send(server.port, 2)))
        second.start()
        gate = server.server.intake.gate
        assert wait_for(lambda: gate.waiting == 1)
        go.touch()  # message 1 is delivered: message 2 goes in
        second.join(20)
        assert took and took[0] < 20  # long before the 60 s deadline
        mail = server.mail_root
        assert wait_for(lambda: len(maildir_files(mail, "example.org/bob")) == 2)
        assert server.server.counters.queue_delayed == 1
    finally:
        server.stop()


def test_marks_out_of_order_are_refused_at_start(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        settings_for(tmp_path, queue_delay_at=50, queue_limit=50)
    assert stopped.value.code == 2
    assert "BUZON_QUEUE_LIMIT: Value error, must be above BUZON_QUEUE_DELAY_AT (50)" in (
        capsys.readouterr().err)
