"""Finding 3 (issue 11): a failed Maildir write was counted as a delivery.

The delivery writer took *any* ``FileNotFoundError`` as "the queue segment is
gone: delivered and released by an earlier run", so one raised while writing
into the mailbox (its ``tmp/`` removed between the folder check and the
``open``, the mail root gone) released the queue record: a message answered
``250`` vanished with one warning. Only a missing segment means "done"; any
error from the Maildir side must defer the message, which is then retried and
delivered.

The race (``tmp/`` removed between the check and the ``open``) is made
deterministic by removing the folder from inside the first ``write_tmp`` call
and raising the ``FileNotFoundError`` the ``open`` then gets, exactly what the
kernel answers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import LineClient, RunningServer, body_of, code, maildir_files, spool_drained, wait_for

from buzon.storage import maildir

BODY = b"Subject: keep me\r\n\r\nacked, so it must arrive\r\n"


def _send(port: int, rcpt: str) -> str:
    with LineClient(port) as c:
        c.reply()
        c.cmd("EHLO stranger.example")
        assert code(c.cmd("MAIL FROM:<a@example.org>")) == "250 2.1.0"
        assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
        assert code(c.cmd("DATA")) == "354"
        reply = c.cmd(BODY.decode() + ".")
        assert code(reply) == "250 2.0.0", reply
        c.cmd("QUIT")
    return reply.rsplit(" ", 1)[1]


@pytest.mark.parametrize("vanish", ["tmp", "mail-root"])
def test_a_maildir_write_that_finds_no_folder_is_retried_not_counted_delivered(
    make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch, vanish: str,
) -> None:
    server = make_server()
    root = server.mail_root
    _send(server.port, "first@example.org")  # the mailbox folder exists and is known
    server.wait_idle()
    real = maildir.write_tmp
    failures: list[str] = []

    def racing_write_tmp(root_: Path, mailbox: str, *args: Any, **kwargs: Any) -> Any:
        if mailbox == "example.org/victim" and not failures:
            failures.append(mailbox)
            gone = root_ / mailbox / "tmp" if vanish == "tmp" else root_
            shutil.rmtree(gone, ignore_errors=True)
            raise FileNotFoundError(2, "No such file or directory", str(gone))
        return real(root_, mailbox, *args, **kwargs)

    monkeypatch.setattr(maildir, "write_tmp", racing_write_tmp)
    (root / "example.org" / "victim" / "tmp").mkdir(parents=True)
    (root / "example.org" / "victim" / "new").mkdir()
    queue_id = _send(server.port, "victim@example.org")

    delivered = wait_for(lambda: maildir_files(root, "victim"), timeout=10)
    assert failures == ["example.org/victim"]
    assert delivered, f"message {queue_id} was acked, its write failed, and it was never retried"
    (path,) = delivered
    assert f"Q{queue_id}R0" in path.name and body_of(path) == BODY
    assert wait_for(lambda: spool_drained(server.settings.data_dir))
