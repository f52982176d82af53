"""``buzon-admin`` as operators run it: a subprocess, real files, real hashes; and the users
file rewritten by it under load while a client sends without pause."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from helpers import LineClient, RunningServer, code, maildir_files, settings_for, wait_for

from buzon.directory import parse


def _admin(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "buzon.admin", *args], input=stdin, capture_output=True,
        text=True, timeout=60, env={**os.environ, **env},
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"BUZON_USERS_FILE": str(tmp_path / "etc" / "users"),
            "BUZON_DOMAINS": "example.org,bücher.example", "BUZON_DATA_DIR": str(tmp_path / "data"),
            "BUZON_POSTMASTER": "alice@example.org"}


def test_user_add_writes_a_dovecot_line_whose_hash_verifies(
    env: dict[str, str], tmp_path: Path,
) -> None:
    (tmp_path / "etc").mkdir()
    users = Path(env["BUZON_USERS_FILE"])
    secret = tmp_path / "pw"
    secret.write_text("correct horse\n")
    done = _admin(env, "user", "add", "Alice@Example.org", "--password-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert _admin(env, "user", "add", "josé@Bücher.example", stdin="s3cret\n").returncode == 0
    line = users.read_text().splitlines()[0]
    user, scheme_hash, *rest = line.split(":")
    assert user == "alice@example.org" and rest == [""] * 6  # uid gid gecos home shell extra
    assert scheme_hash.startswith("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$")
    assert PasswordHasher().verify(scheme_hash.removeprefix("{ARGON2ID}"), "correct horse")
    assert users.stat().st_mode & 0o777 == 0o640
    assert users.read_text().splitlines()[1].startswith("josé@xn--bcher-kva.example:{ARGON2ID}")
    assert _admin(env, "user", "list").stdout == "alice@example.org\njosé@xn--bcher-kva.example\n"
    # passwd: a new hash on the same line, everything else kept
    before = users.read_text().splitlines()
    assert _admin(env, "user", "passwd", "alice@example.org", stdin="new one\n").returncode == 0
    after = users.read_text().splitlines()
    assert after[1:] == before[1:] and after[0] != before[0]
    assert PasswordHasher().verify(after[0].split(":")[1].removeprefix("{ARGON2ID}"), "new one")


def test_aliases_and_refusals_with_their_exit_statuses(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    for user in ("alice", "bob"):
        assert _admin(env, "user", "add", f"{user}@example.org", stdin="pw\n").returncode == 0
    users = Path(env["BUZON_USERS_FILE"])
    users.write_text("# kept as written\n" + users.read_text())
    assert _admin(env, "alias", "add", "sales@example.org", "alice@example.org").returncode == 0
    assert _admin(env, "alias", "add", "sales@example.org", "bob@example.org").returncode == 0
    assert _admin(env, "alias", "add", "@example.org", "bob@example.org").returncode == 0
    assert _admin(env, "alias", "list").stdout == (
        "sales@example.org -> alice@example.org, bob@example.org\n@example.org -> bob@example.org\n")
    cases = [
        (("user", "add", "alice@example.org"), 1, "already exists"),
        (("user", "add", "eve@example.com"), 1, "example.com is not in BUZON_DOMAINS"),
        (("user", "remove", "bob@example.org"), 1, "alias target bob@example.org is neither"),
        (("user", "remove", "nobody@example.org"), 1, "is not a mailbox"),
        (("alias", "add", "x@example.org", "nobody@example.org"), 1, "is neither a mailbox"),
        (("alias", "add", "alice@example.org", "bob@example.org"), 1, "is a mailbox"),
        (("alias", "remove", "sales@example.org", "carol@example.org"), 1, "does not go to"),
        (("user", "add", "--", "-rf@example.org"), 2, "leading hyphen"),
        (("user", "frobnicate"), 2, "invalid choice"),
    ]
    text = users.read_text()
    for args, status, message in cases:
        result = _admin(env, *args, stdin="pw\n")
        assert (result.returncode, message in result.stderr) == (status, True), (args, result.stderr)
        assert users.read_text() == text, args  # a refused edit writes nothing
    assert _admin(env, "alias", "remove", "sales@example.org", "alice@example.org").returncode == 0
    assert _admin(env, "alias", "remove", "@example.org").returncode == 0
    assert [e.address for e in parse(users.read_text())] == [
        "alice@example.org", "bob@example.org", "sales@example.org"]
    assert users.read_text().startswith("# kept as written\n")
    no_file = _admin({**env, "BUZON_USERS_FILE": ""}, "user", "list")
    assert no_file.returncode == 2 and "set BUZON_USERS_FILE" in no_file.stderr
    unwritable = _admin({**env, "BUZON_USERS_FILE": str(tmp_path / "none" / "users")},
                        "user", "add", "a@example.org", stdin="pw\n")
    assert unwritable.returncode == 3, unwritable.stderr


def test_two_admins_at_once_lose_no_edit(env: dict[str, str]) -> None:
    Path(env["BUZON_USERS_FILE"]).parent.mkdir()
    procs = [subprocess.Popen([sys.executable, "-m", "buzon.admin", "user", "add",
                               f"u{i}@example.org"], stdin=subprocess.PIPE, text=True,
                              env={**os.environ, **env}, stderr=subprocess.PIPE)
             for i in range(8)]
    for proc in procs:
        proc.communicate("pw\n", timeout=60)
    assert [p.returncode for p in procs] == [0] * 8
    added = {e.address for e in parse(Path(env["BUZON_USERS_FILE"]).read_text())}
    assert added == {f"u{i}@example.org" for i in range(8)}


def test_migrate_mailboxes_prints_every_move(env: dict[str, str], tmp_path: Path) -> None:
    mail = tmp_path / "data" / "mail"
    for sub in ("cur", "new", "tmp"):
        (mail / "bob" / sub).mkdir(parents=True)
    (mail / "bob" / "new" / "m1").write_text("one")
    dry = _admin(env, "migrate-mailboxes", "--domain", "Example.org", "--dry-run")
    assert dry.returncode == 0 and dry.stdout == (
        f"would be moved {mail / 'bob'} -> {mail / 'example.org' / 'bob'}\n")
    assert (mail / "bob" / "new" / "m1").exists()
    assert _admin(env, "migrate-mailboxes", "--domain", "other.org").returncode == 1
    done = _admin(env, "migrate-mailboxes", "--domain", "example.org")
    assert done.returncode == 0 and done.stdout == (
        f"moved {mail / 'bob'} -> {mail / 'example.org' / 'bob'}\n")
    assert (mail / "example.org" / "bob" / "new" / "m1").read_text() == "one"


def test_users_file_rewritten_under_load_refuses_no_valid_recipient(
    make_server: Callable[..., RunningServer], env: dict[str, str],
) -> None:
    """A client sends to valid recipients without pause while buzon-admin rewrites the
    users file again and again: every valid recipient is taken, a new user is accepted
    once the file is reread, a removed one refused."""
    Path(env["BUZON_USERS_FILE"]).parent.mkdir()
    for user in ("alice", "bob", "gone"):
        assert _admin(env, "user", "add", f"{user}@example.org", stdin="pw\n").returncode == 0
    server = make_server(domains=env["BUZON_DOMAINS"], users_file=Path(env["BUZON_USERS_FILE"]),
                         postmaster="alice@example.org", users_reload_interval=0.1)
    stop = threading.Event()
    answers: list[str] = []
    sent = [0]

    def client() -> None:
        while not stop.is_set():
            with LineClient(server.port) as c:  # a new session every 100 messages (the cap is 1000)
                c.reply()
                for _ in range(100):
                    if stop.is_set():
                        break
                    assert code(c.cmd("MAIL FROM:<a@elsewhere.test>")) == "250 2.1.0"
                    answers.extend(c.cmd(f"RCPT TO:<{r}@example.org>") for r in ("alice", "bob+x"))
                    assert code(c.cmd("DATA")) == "354"
                    assert code(c.cmd("Subject: load\r\n\r\nx\r\n.")) == "250 2.0.0"
                    sent[0] += 1

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for n in range(5):
            assert _admin(env, "user", "add", f"new{n}@example.org", stdin="pw\n").returncode == 0
            assert wait_for(lambda n=n: code(_one(server.port, f"new{n}@example.org")) == "250 2.1.5",
                            timeout=10), f"new{n} never accepted"
        assert _admin(env, "user", "remove", "gone@example.org").returncode == 0
        assert wait_for(lambda: code(_one(server.port, "gone@example.org")) == "550 5.1.1",
                        timeout=10)
        assert wait_for(lambda: sent[0] >= 20, timeout=30)
    finally:
        stop.set()
        thread.join(30)
    assert answers and set(answers) == {"250 2.1.5 Ok"}, set(answers)
    server.wait_idle()
    assert len(maildir_files(server.mail_root, "example.org/alice")) == sent[0]
    assert len(maildir_files(server.mail_root, "example.org/bob")) == sent[0]


def _one(port: int, rcpt: str) -> str:
    with LineClient(port) as c:
        c.reply()
        c.cmd("MAIL FROM:<a@elsewhere.test>")
        return c.cmd(f"RCPT TO:<{rcpt}>")


def test_init_makes_a_file_the_server_takes_and_leaves_an_existing_one_alone(
    env: dict[str, str], tmp_path: Path,
) -> None:
    # Compose's users-init: a postmaster mailbox (no login yet) for the first domain,
    # the other domains' postmaster as its aliases; a second run changes nothing.
    (tmp_path / "etc").mkdir()
    users = Path(env["BUZON_USERS_FILE"])
    env = {**env, "BUZON_POSTMASTER": ""}
    done = _admin(env, "init")
    assert done.returncode == 0, done.stderr
    assert users.read_text().splitlines() == [
        "postmaster@example.org:{CRYPT}!::::::",
        ("postmaster@xn--bcher-kva.example:{CRYPT}!::::::nologin "
         "buzon_alias=postmaster@example.org"),
    ]
    before = users.read_bytes()
    again = _admin(env, "init")
    assert again.returncode == 0 and "left as it is" in again.stdout
    assert users.read_bytes() == before
    # The server starts on it and delivers postmaster@ either domain to the one mailbox.
    running = RunningServer(settings_for(tmp_path, users_file=users, postmaster=None,
                                         domains="example.org,bücher.example")).start()
    try:
        for rcpt in ("postmaster@example.org", "postmaster@bücher.example"):
            with LineClient(running.port) as client:
                client.reply()
                client.cmd("EHLO test")
                assert code(client.cmd("MAIL FROM:<a@example.org> SMTPUTF8")) == "250 2.1.0"
                assert code(client.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
                assert code(client.cmd("RCPT TO:<nobody@example.org>")) == "550 5.1.1"
    finally:
        running.stop()
