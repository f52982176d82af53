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
