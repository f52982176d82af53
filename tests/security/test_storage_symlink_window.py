"""Finding 9 (issue 11), storage: the Maildir symlink check had a one-second hole.

A mailbox folder checked once was trusted *by path* for a second
(``TRUST_SECONDS``), so a link put in place of it within that second was
followed: the next message for that mailbox was written outside the mail root.
Now every delivery opens the folder, ``tmp/`` and ``new/`` with ``O_NOFOLLOW``
and creates the file relative to those descriptors: a swapped-in link is
refused at once and the message waits in the queue (never lost, never written
outside).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from helpers import LineClient, RunningServer, code, maildir_files, wait_for


def _send(port: int, rcpt: str, tag: str) -> str:
    with LineClient(port) as c:
        c.reply()
        c.cmd("EHLO stranger.example")
        c.cmd("MAIL FROM:<a@example.org>")
        assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
        c.cmd("DATA")
        reply = c.cmd(f"Subject: {tag}\r\n\r\n{tag}\r\n.")
        assert code(reply) == "250 2.0.0", reply
    return reply.rsplit(" ", 1)[1]


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_a_link_swapped_in_right_after_a_delivery_is_not_followed(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> None:
    server = make_server()
    root = server.mail_root
    outside = tmp_path / "outside"
    for sub in ("tmp", "new", "cur"):
        (outside / sub).mkdir(parents=True)

    _send(server.port, "eve@example.org", "one")
    server.wait_idle()
    assert len(maildir_files(root, "eve")) == 1
    # Within the old trust second: the folder becomes a link to a place outside.
    (root / "example.org" / "eve").rename(tmp_path / "eve-moved")
    (root / "example.org" / "eve").symlink_to(outside)
    _send(server.port, "eve@example.org", "two")

    assert wait_for(lambda: server.server.delivery and server.server.delivery.pending, 3)
    assert not wait_for(lambda: _files(outside), 1.5), "written through the planted link"
    # The operator removes the link: the deferred message is delivered, nothing lost.
    (root / "example.org" / "eve").unlink()
    assert wait_for(lambda: len(maildir_files(root, "eve")) == 1, 15)
    assert _files(outside) == []


def test_a_domain_folder_swapped_for_a_link_is_not_followed(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> None:
    """Issue 12: the domain folder is one more level, opened through no link either."""
    server = make_server()
    root = server.mail_root
    outside = tmp_path / "outside"
    for sub in ("tmp", "new", "cur"):
        (outside / "eve" / sub).mkdir(parents=True)
    _send(server.port, "eve@example.org", "one")
    server.wait_idle()
    assert len(maildir_files(root, "example.org/eve")) == 1
    (root / "example.org").rename(tmp_path / "domain-moved")
    (root / "example.org").symlink_to(outside)
    _send(server.port, "eve@example.org", "two")
    assert wait_for(lambda: server.server.delivery and server.server.delivery.pending, 3)
    assert not wait_for(lambda: _files(outside), 1.5), "written through the planted link"
    (root / "example.org").unlink()
    assert wait_for(lambda: len(maildir_files(root, "example.org/eve")) == 1, 15)
    assert _files(outside) == []


def test_mailbox_folders_are_created_0700(
    make_server: Callable[..., RunningServer],
) -> None:
    old = os.umask(0o022)  # the usual umask: before, the mailbox folder came out 0755
    try:
        server = make_server()
        _send(server.port, "priv@example.org", "mode")
        server.wait_idle()
    finally:
        os.umask(old)
    folder = server.mail_root / "example.org" / "priv"
    modes = {p.name: p.stat().st_mode & 0o777 for p in (folder.parent, folder, *folder.iterdir())}
    assert modes == {"example.org": 0o700, "priv": 0o700, "tmp": 0o700, "new": 0o700, "cur": 0o700}
    (message,) = maildir_files(server.mail_root, "priv")
    assert message.stat().st_mode & 0o777 == 0o600
