"""Crash recovery and graceful shutdown with the server as a real child process."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from helpers import LineClient, body_of, code, free_port, maildir_files, server_process, wait_for

from buzon.spool.queue import Envelope, Spool, new_queue_id
from buzon.storage import maildir


def _transaction(c: LineClient, rcpts: list[str], body: str) -> str:
    c.cmd("EHLO me")
    c.cmd("MAIL FROM:<a@example.org>")
    for rcpt in rcpts:
        assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
    c.cmd("DATA")
    return c.cmd(body + "\r\n.")


def test_sigkill_right_after_250_delivers_once_per_recipient_after_restart(
    tmp_path: Path,
) -> None:
    data, port = tmp_path / "data", free_port()
    acked: list[str] = []
    for round_ in range(5):
        with server_process(data, port) as proc:
            with LineClient(port) as c:
                c.reply()
                reply = _transaction(c, ["k1@example.org", "k2@example.org"], f"round {round_}")
                proc.kill()  # no QUIT, no grace: the 250 is all the client got
            assert code(reply) == "250 2.0.0"
            acked.append(reply.rsplit(" ", 1)[1])
    with server_process(data, port):
        mail = data / "mail"
        assert wait_for(lambda: len(maildir_files(mail, "k2")) == 5)
        assert wait_for(lambda: not any((data / "spool" / "queue").iterdir()))
    for box in ("k1", "k2"):
        files = maildir_files(mail, box)
        assert sorted(body_of(p, headerless=True) for p in files) == [
            f"round {i}\r\n".encode() for i in range(5)]
        assert sorted(p.name.split(".")[1][1:17] for p in files) == sorted(acked)


def test_crash_between_two_recipients_does_not_deliver_the_first_twice(tmp_path: Path) -> None:
    """The queue file survives, recipient 0 was delivered, recipient 1 was not."""
    data = tmp_path / "data"
    spool = Spool(data / "spool")
    envelope = Envelope(
        queue_id=new_queue_id(), sender="a@example.org",
        recipients=["first@example.org", "second@example.org"],
        mailboxes=["example.org/first", "example.org/second"], helo="me", peer="127.0.0.1:1", esmtp=True,
    )
    spool.store(envelope, b"Subject: half\r\n\r\nbody\r\n")
    name0 = maildir.message_name(envelope.received, envelope.queue_id, 0, "mx.test")
    maildir.deliver(data / "mail", "example.org/first", name0, [b"Delivered-To: first\r\n", b"body\r\n"])
    # A mail reader then moved it to cur/ and flagged it as seen.
    new = data / "mail" / "example.org" / "first" / "new" / name0
    new.rename(data / "mail" / "example.org" / "first" / "cur" / (name0 + ":2,S"))

    with server_process(data, free_port()):
        assert wait_for(lambda: len(maildir_files(data / "mail", "second")) == 1)
        assert wait_for(lambda: not any((data / "spool" / "queue").iterdir()))
    assert [p.name for p in maildir_files(data / "mail", "first")] == [name0 + ":2,S"]


def test_half_written_spool_files_are_dropped_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    spool = Spool(data / "spool")
    (spool.incoming / "PARTIAL").write_bytes(b"BUZON1 {\"queue_id\":")  # crash mid-write
    (spool.queue / "GARBAGE").write_bytes(b"not a queue file")
    with server_process(data, free_port()):
        assert wait_for(lambda: (spool.corrupt / "GARBAGE").exists())
    assert list(spool.incoming.iterdir()) == []
    assert not (data / "mail").exists() or list((data / "mail").iterdir()) == []


def test_sigterm_lets_a_transaction_in_flight_finish_and_says_421_to_idle_sessions(
    tmp_path: Path,
) -> None:
    data, port = tmp_path / "data", free_port()
    with server_process(data, port) as proc:
        busy, idle = LineClient(port), LineClient(port)
        try:
            busy.reply()
            idle.reply()
            busy.cmd("MAIL FROM:<a@example.org>")
            busy.cmd("RCPT TO:<inflight@example.org>")
            assert code(busy.cmd("DATA")) == "354"
            busy.send("Subject: in flight\r\n\r\nfirst half\r\n")
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
            assert idle.reply().startswith("421 4.3.2 mx.test Service shutting down")
            assert idle.closed()
            busy.send("second half\r\n")
            assert code(busy.cmd(".")) == "250 2.0.0"
            # The next transaction is refused: the server is going away.
            assert code(busy.cmd("MAIL FROM:<a@example.org>")) == "421 4.3.2"
            assert proc.proc.wait(15) == 0
        finally:
            busy.close()
            idle.close()
    # Queued before the 250: delivered now or at the next start, never lost.
    with server_process(data, port):
        assert wait_for(lambda: len(maildir_files(data / "mail", "inflight")) == 1)
    (path,) = maildir_files(data / "mail", "inflight")
    assert body_of(path) == b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"


def test_sigterm_aborts_sessions_that_outlive_the_grace_period(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    with server_process(data, port, env={"BUZON_SHUTDOWN_GRACE": "0.5"}) as proc:
        with LineClient(port) as c:
            c.reply()
            c.cmd("MAIL FROM:<a@example.org>")
            c.cmd("RCPT TO:<never@example.org>")
            c.cmd("DATA")
            c.send("this DATA never ends\r\n")
            assert proc.proc is not None
            started = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            assert proc.proc.wait(15) == 0
            assert time.monotonic() - started < 10
            assert c.closed()
    assert "aborting 1 session(s)" in proc.log.read_text()
    assert maildir_files(data / "mail", "never") == []
