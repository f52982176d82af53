"""Issue 12, the recipient directory over real sockets: every RCPT reply, aliases,
catch-all, postmaster, subaddresses, the default layout, workers, old queues and
the start-up refusal on an old mail root."""

from __future__ import annotations

import logging
import smtplib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    LineClient,
    RunningServer,
    code,
    free_port,
    maildir_files,
    server_process,
    spool_drained,
    wait_for,
)

from buzon.admin import hash_password
from buzon.spool import Envelope, Spool, new_queue_id

USERS = "\n".join([
    "# test directory",
    f"alice@example.org:{hash_password('a')}::::::",
    f"bob@example.org:{hash_password('b')}::::::",
    f"carol@example.org:{hash_password('c')}::::::",
    "sales@example.org:{CRYPT}!::::::nologin buzon_alias=alice@example.org,bob@example.org",
    "big@example.org:{CRYPT}!::::::nologin buzon_alias=alice@example.org,bob@example.org,"
    "carol@example.org",
    "@example.net:{CRYPT}!::::::nologin buzon_alias=carol@example.org",
]) + "\n"


@pytest.fixture
def directory_server(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> Callable[..., RunningServer]:
    def start(**overrides: object) -> RunningServer:
        users = tmp_path / "users"
        users.write_text(USERS)
        settings: dict[str, object] = dict(
            domains="example.org,example.net,*.sub.example.org", users_file=users,
            postmaster="alice@example.org", users_reload_interval=0.1)
        settings.update(overrides)
        return make_server(**settings)
    return start


def _rcpt(port: int, *rcpts: str) -> list[str]:
    with LineClient(port) as c:
        c.reply()
        c.cmd("EHLO client.example")
        assert code(c.cmd("MAIL FROM:<someone@elsewhere.test>")) == "250 2.1.0"
        answers = [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]
        c.cmd("QUIT")
    return answers


def _send(port: int, rcpts: list[str], subject: str = "hello") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        refused = client.sendmail("someone@elsewhere.test", rcpts,
                                  f"Subject: {subject}\r\n\r\nbody\r\n")
    assert refused == {}


def test_every_rcpt_reply(directory_server: Callable[..., RunningServer]) -> None:
    server = directory_server()
    assert _rcpt(server.port, "alice@example.org", "someone@example.com", "nobody@example.org",
                 "-rf@example.org", "alice@[127.0.0.1]", "x@deep.sub.example.org") == [
        "250 2.1.5 Ok",
        "550 5.7.1 <someone@example.com>: Relay access denied",
        "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown",
        "550 5.1.1 Recipient address rejected: unsafe mailbox name",
        "550 5.7.1 <alice@[127.0.0.1]>: Relay access denied",
        "550 5.1.1 <x@deep.sub.example.org>: Recipient address rejected: User unknown",
    ]


def test_an_alias_fans_out_and_each_mailbox_gets_one_copy(
    directory_server: Callable[..., RunningServer],
) -> None:
    server = directory_server()
    _send(server.port, ["sales@example.org", "Alice@example.org", "alice+x@example.org"])
    server.wait_idle()
    root = server.mail_root
    assert [len(maildir_files(root, f"example.org/{u}")) for u in ("alice", "bob", "carol")] \
        == [1, 1, 0]
    (bob,) = maildir_files(root, "example.org/bob")
    assert b"Delivered-To: sales@example.org\r\n" in bob.read_bytes()
    assert wait_for(lambda: spool_drained(server.settings.data_dir))


def test_the_recipient_limit_counts_rcpt_commands_not_mailboxes(
    directory_server: Callable[..., RunningServer],
) -> None:
    server = directory_server(max_recipients=2)
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("MAIL FROM:<a@elsewhere.test>")
        assert code(c.cmd("RCPT TO:<big@example.org>")) == "250 2.1.5"  # three mailboxes
        assert code(c.cmd("RCPT TO:<bob@example.org>")) == "250 2.1.5"
        assert c.cmd("RCPT TO:<carol@example.org>") == "452 4.5.3 Error: too many recipients"
        assert code(c.cmd("DATA")) == "354"
        assert code(c.cmd("Subject: x\r\n\r\nx\r\n.")) == "250 2.0.0"
    server.wait_idle()
    assert [len(maildir_files(server.mail_root, f"example.org/{u}"))
            for u in ("alice", "bob", "carol")] == [1, 1, 1]


def test_catch_all_postmaster_and_subaddress(
    directory_server: Callable[..., RunningServer],
) -> None:
    server = directory_server()
    _send(server.port, ["anything@example.net"], "catch-all")
    _send(server.port, ["bob+newsletters@example.org"], "subaddress")
    _send(server.port, ["PostMaster@example.org", "postmaster@example.net"], "postmaster")
    with LineClient(server.port) as c:  # bare postmaster (RFC 5321 §4.5.1)
        c.reply()
        c.cmd("MAIL FROM:<>")
        assert code(c.cmd("RCPT TO:<postmaster>")) == "250 2.1.5"
        c.cmd("DATA")
        assert code(c.cmd("Subject: bare\r\n\r\nbounce\r\n.")) == "250 2.0.0"
    server.wait_idle()
    root = server.mail_root

    def subjects(box: str) -> list[bytes]:
        return sorted(f.read_bytes().split(b"Subject: ")[1].split(b"\r\n")[0]
                      for f in maildir_files(root, box))

    assert subjects("example.org/carol") == [b"catch-all"]
    assert subjects("example.org/bob") == [b"subaddress"]
    assert subjects("example.org/alice") == [b"bare", b"postmaster"]  # BUZON_POSTMASTER, once
    assert sorted(p.name for p in root.iterdir()) == ["example.org"]


def test_with_nothing_configured_every_domain_has_its_own_folder(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, "buzon"):
        server = make_server()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("BUZON_DOMAINS is unset" in w and "development" in w for w in warnings) == 1
    _send(server.port, ["bob@example.org", "bob@anything.test", "bob"])
    server.wait_idle()
    root = server.mail_root
    assert [len(maildir_files(root, f"{d}/bob")) for d in ("example.org", "anything.test",
                                                           "mx.test")] == [1, 1, 1]


def test_the_server_refuses_to_start_on_a_mail_root_of_the_old_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ("bob", "carol"):
        for sub in ("cur", "new", "tmp"):
            (data / "mail" / name / sub).mkdir(parents=True)
    (data / "mail" / "bob" / "new" / "m1").write_text("old mail")
    port = free_port()
    args = [sys.executable, "-m", "buzon", "-p", str(port), "-d", str(data)]
    env = {"BUZON_SMTP_LISTEN": "127.0.0.1", "BUZON_MONITOR_PORT": "0", "BUZON_HTTP_PORT": "0",
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "old layout" in x]
    assert "holds 2 mailbox(es) of the old layout" in line and "(bob, carol)" in line
    assert "buzon-admin migrate-mailboxes --domain <domain>" in line
    assert (data / "mail" / "bob" / "new" / "m1").read_text() == "old mail"  # nothing moved
    # Migrated, the same data directory starts, and the old mail is where Dovecot looks.
    migrated = subprocess.run(
        [sys.executable, "-m", "buzon.admin", "migrate-mailboxes", "--domain", "example.org"],
        env={**env, "BUZON_DATA_DIR": str(data)}, capture_output=True, text=True, timeout=30)
    assert migrated.returncode == 0, migrated.stderr
    with server_process(data, port):
        assert maildir_files(data / "mail", "example.org/bob")[0].read_text() == "old mail"


def test_a_queue_written_before_the_upgrade_delivers_into_the_new_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    envelope = Envelope(new_queue_id(), "a@elsewhere.test", ["Bob@Example.org", "postmaster"],
                        ["example.org/bob", "localhost/postmaster"], helo="h", peer="?")
    location = Spool(data / "spool").store(envelope, b"Subject: old\r\n\r\nqueued before\r\n")
    segment = data / "spool" / "queue" / location.segment
    old = segment.read_bytes().replace(
        b'"mailboxes":["example.org/bob","localhost/postmaster"]', b'"mailboxes":["bob","postmaster"]')
    assert b'"mailboxes":["bob","postmaster"]' in old
    segment.write_bytes(old)
    with server_process(data, free_port()):
        assert wait_for(lambda: spool_drained(data))
    assert len(maildir_files(data / "mail", "example.org/bob")) == 1
    assert len(maildir_files(data / "mail", "localhost/postmaster")) == 1


def test_workers_each_build_the_directory(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(USERS)
    data, port = tmp_path / "data", free_port()
    env = {"BUZON_WORKERS": "2", "BUZON_DOMAINS": "example.org,example.net",
           "BUZON_USERS_FILE": str(users), "BUZON_POSTMASTER": "alice@example.org"}
    with server_process(data, port, env=env):
        for _ in range(6):  # connections spread over both workers
            assert [code(a) for a in _rcpt(port, "sales@example.org", "x@example.com",
                                           "nobody@example.org")] == \
                ["250 2.1.5", "550 5.7.1", "550 5.1.1"]
        _send(port, ["sales@example.org"])
        assert wait_for(lambda: len(maildir_files(data / "mail", "example.org/bob")) == 1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BUZON_DOMAINS": "example.org,exa mple.net"},
         "buzon: configuration error: BUZON_DOMAINS: 'exa mple.net' is not a domain"),
        ({"BUZON_DOMAINS": "example.org", "USERS": "alice@example.org\n"},
         "users, line 1: expected user:password"),
        ({"BUZON_DOMAINS": "example.org,example.net", "USERS": USERS},
         "no postmaster for example.org (RFC 5321 §4.5.1 requires one for every accepted "
         "domain): add an alias (buzon-admin alias add postmaster@example.org you@example.org) "
         "or set BUZON_POSTMASTER=you@example.org"),
    ],
)
def test_a_directory_the_server_cannot_use_stops_start_up_with_one_line(
    tmp_path: Path, env: dict[str, str], message: str,
) -> None:
    settings = {k: v for k, v in env.items() if k.startswith("BUZON_")}
    if "USERS" in env:
        (tmp_path / "users").write_text(env["USERS"])
        settings["BUZON_USERS_FILE"] = str(tmp_path / "users")
    result = subprocess.run(
        [sys.executable, "-m", "buzon", "-p", str(free_port()), "-d", str(tmp_path / "data")],
        env={"PATH": "/usr/bin:/bin", "BUZON_SMTP_LISTEN": "127.0.0.1", "BUZON_MONITOR_PORT": "0",
             "BUZON_HTTP_PORT": "0", **settings},
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert [line for line in result.stderr.splitlines() if "configuration error" in line] == [
        line for line in result.stderr.splitlines() if message in line], result.stderr
    assert message in result.stderr
