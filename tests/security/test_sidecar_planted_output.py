"""Finding 1 (issue 11): a planted ``work/<ID>.out`` let a message skip the transform.

The server reused an existing output file "because a previous run transformed
it before a crash", and the work area is shared with the sidecars, so anyone
who could write there (and read the id in ``250 ... queued as <ID>``) chose
what was delivered: the spam filter was skipped. Now every attempt runs the
transform afresh and reads back only what that run wrote.

The test uses a real server on loopback and a local transform that fails until
a gate file exists: while the message waits for its retry, the test plants an
output under the queue id the server announced (in the old and the new work
area), opens the gate, and checks what reached the Maildir.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers import LineClient, RunningServer, body_of, code, maildir_files, wait_for

MESSAGE = b"Subject: order\r\nX-Line: 1\r\n\r\nfirst\r\nsecond\r\n"
REVERSED = b"second\r\nfirst\r\n\r\nX-Line: 1\r\nSubject: order\r\n"
PLANTED = b"Subject: planted\r\n\r\nthis skipped the filter\r\n"


def _send(port: int, rcpt: str) -> str:
    with LineClient(port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.cmd("MAIL FROM:<a@example.org>")
        assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
        c.cmd("DATA")
        c.send(MESSAGE)
        reply = c.cmd(".")
        assert code(reply) == "250 2.0.0", reply
        return reply.rsplit(" ", 1)[1].strip()


def _work_dirs(data: Path) -> list[Path]:
    """Where an output could be planted: the old layout's and the new work area."""
    return [data / "spool" / "work", data / "work" / "w0"]


def test_a_planted_output_never_replaces_the_transform(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    server = make_server(
        transform=f"sh -c 'test -e {gate} || exit 75; exec tac'",
        transform_retry_window=120, transform_failure_policy="hold", retry_backoff=0.2,
    )
    queue_id = _send(server.port, "victim@example.org")
    assert wait_for(lambda: server.server.counters.transform_failed >= 1)
    data = server.settings.data_dir
    planted = []
    for folder in _work_dirs(data):
        if folder.is_dir():
            (folder / f"{queue_id}.out").write_bytes(PLANTED)
            planted.append(folder)
    assert planted, list(data.rglob("*"))
    gate.touch()
    assert wait_for(lambda: maildir_files(server.mail_root, "victim"), timeout=30)
    (path,) = maildir_files(server.mail_root, "victim")
    assert body_of(path, tac=True) == REVERSED  # transformed, not the planted bytes
    assert server.server.counters.transform_ok == 1


def test_a_planted_symlink_output_is_not_followed(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """An output link to a file smtp may read (the token) must not be delivered."""
    gate = tmp_path / "gate"
    server = make_server(
        transform=f"sh -c 'test -e {gate} || exit 75; exec tac'",
        transform_retry_window=120, transform_failure_policy="hold", retry_backoff=0.2,
    )
    queue_id = _send(server.port, "victim2@example.org")
    assert wait_for(lambda: server.server.counters.transform_failed >= 1)
    secret = tmp_path / "secret"
    secret.write_bytes(b"Subject: secret\r\n\r\nthe monitor token\r\n")
    for folder in _work_dirs(server.settings.data_dir):
        if folder.is_dir():
            (folder / f"{queue_id}.out").symlink_to(secret)
    gate.touch()
    assert wait_for(lambda: maildir_files(server.mail_root, "victim2"), timeout=30)
    (path,) = maildir_files(server.mail_root, "victim2")
    assert body_of(path, tac=True) == REVERSED
    assert secret.read_bytes().startswith(b"Subject: secret")  # untouched
