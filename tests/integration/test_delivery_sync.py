"""BUZON_DELIVERY_SYNC: a batch made durable by syncfs or file by file delivers the same mail."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from helpers import (
    RunningServer,
    body_of,
    maildir_files,
    settings_for,
    spool_drained,
    wait_for,
)


@pytest.mark.parametrize("mode", ["batch", "file"])
def test_both_ways_of_flushing_deliver_every_message_once(tmp_path: Path, mode: str) -> None:
    server = RunningServer(settings_for(tmp_path, delivery_sync=mode)).start()
    try:
        assert server.server.delivery is not None
        assert server.server.delivery.writer.batch_sync is (mode == "batch")
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            for n in range(60):
                client.sendmail("a@example.org", [f"u{n % 7}@example.org", "all@example.org"],
                                f"Subject: {n}\r\n\r\nmessage {n}\r\n")
        mail = server.mail_root
        assert wait_for(lambda: len(maildir_files(mail, "example.org/all")) == 60)
        assert wait_for(lambda: spool_drained(tmp_path / "data"))
        bodies = sorted(body_of(p) for p in maildir_files(mail, "example.org/all"))
        assert bodies == sorted(f"Subject: {n}\r\n\r\nmessage {n}\r\n".encode() for n in range(60))
        for box in range(7):
            assert len(maildir_files(mail, f"example.org/u{box}")) == len(range(box, 60, 7))
        assert not any((mail / "example.org").glob("*/tmp/*"))  # nothing left half-done
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["batch", "file"])
def test_large_messages_to_one_mailbox_arrive_whole_by_link(tmp_path: Path, mode: str) -> None:
    # 100 KB to one mailbox: queued in a file of its own and linked into the Maildir
    # (spool/files.py); to two mailboxes: copied into each. Both must read the same.
    server = RunningServer(settings_for(tmp_path, delivery_sync=mode)).start()
    try:
        body = "".join(f"line {n:06d} of a large message\r\n" for n in range(3000))
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            for n in range(20):
                client.sendmail("a@example.org", ["solo@example.org"],
                                f"Subject: solo {n}\r\n\r\n{body}")
                client.sendmail("a@example.org", ["pair@example.org", "twin@example.org"],
                                f"Subject: pair {n}\r\n\r\n{body}")
        mail = server.mail_root
        assert wait_for(lambda: len(maildir_files(mail, "example.org/solo")) == 20)
        assert wait_for(lambda: spool_drained(tmp_path / "data"))
        solo = sorted(body_of(p) for p in maildir_files(mail, "example.org/solo"))
        pair = sorted(body_of(p) for p in maildir_files(mail, "example.org/pair"))
        assert solo == sorted(f"Subject: solo {n}\r\n\r\n{body}".encode() for n in range(20))
        assert [b.replace(b"pair", b"solo") for b in pair] == solo
        for path in maildir_files(mail, "example.org/solo"):
            text = path.read_bytes()
            assert text.startswith(b"Return-Path: <a@example.org>\r\n"
                                   b"Delivered-To: solo@example.org\r\nReceived: ")
            assert path.stat().st_nlink == 1  # the queue's link is gone
        assert len(maildir_files(mail, "example.org/twin")) == 20
    finally:
        server.stop()
