"""The live directory: a changed users file is taken, a broken one never is. Real files, a
clock passed in, no sockets."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from buzon.directory import DirectoryConfig, Lookup, Recipients, Refusal, UsersFileError
from buzon.directory.resolve import parse_domains

H = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"
BASE = f"alice@example.org:{H}::::::\npostmaster@example.org:{{CRYPT}}!::::::nologin buzon_alias=alice@example.org\n"
UNKNOWN = Lookup(refusal=Refusal.UNKNOWN)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _replace(path: Path, text: str) -> None:
    """As buzon-admin does: a new file renamed over the old (a new inode every time)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    os.rename(tmp, path)


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(BASE)
    return path


def _recipients(path: Path, clock: Clock) -> Recipients:
    config = DirectoryConfig(parse_domains("example.org"), "example.org", users_file=path)
    return Recipients(config, interval=1.0, clock=clock)


def test_a_changed_file_is_taken_at_the_first_lookup_after_the_interval(
    users: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    live = _recipients(users, clock)
    assert live.resolve("bob@example.org") == UNKNOWN
    _replace(users, BASE + f"bob@example.org:{H}::::::\n")
    clock.now = 0.5
    assert live.resolve("bob@example.org") == UNKNOWN  # not checked yet: one stat a second
    clock.now = 1.0
    with caplog.at_level(logging.INFO, "buzon.directory"):
        assert live.resolve("bob@example.org") == Lookup(("example.org/bob",))
    assert "reloaded: 2 mailbox(es), 1 alias(es)" in caplog.text


def test_an_edit_in_place_of_the_same_size_within_a_second_is_seen(users: Path) -> None:
    clock = Clock()
    live = _recipients(users, clock)
    stat = users.stat()
    with open(users, "r+", encoding="utf-8") as handle:  # same inode, same size
        text = handle.read().replace("alice", "alicf")
        handle.seek(0)
        handle.write(text)
    os.utime(users, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    clock.now = 1.0
    assert live.resolve("alicf@example.org") == Lookup(("example.org/alicf",))


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        (BASE + "bob@example.org\n", "users, line 3: expected user:password"),
        (BASE + "x@example.org:{CRYPT}!::::::nologin buzon_alias=nobody@example.org\n",
         "line 3: alias target nobody@example.org is neither a mailbox nor an alias"),
        (f"alice@example.org:{H}::::::\n", "no postmaster for example.org"),
        ("", "holds no mailbox"),
        (BASE[:10], "line 1: expected user:password"),  # cut short in its first line
        (None, "cannot read it"),  # removed
    ],
)
def test_a_broken_file_keeps_the_last_good_directory_and_is_logged_once(
    users: Path, caplog: pytest.LogCaptureFixture, text: str | None, logged: str,
) -> None:
    clock = Clock()
    live = _recipients(users, clock)
    if text is None:
        users.unlink()
    else:
        _replace(users, text)
    with caplog.at_level(logging.INFO, "buzon.directory"):
        for second in range(1, 4):
            clock.now = float(second)
            assert live.resolve("alice@example.org") == Lookup(("example.org/alice",))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.text
    assert logged in errors[0].getMessage() and str(users) in errors[0].getMessage()
    assert "keeping the directory loaded before" in errors[0].getMessage()
    _replace(users, BASE + f"bob@example.org:{H}::::::\n")  # mended: taken at once
    clock.now = 5.0
    assert live.resolve("bob@example.org") == Lookup(("example.org/bob",))


def test_a_server_never_starts_on_a_file_it_cannot_use(users: Path) -> None:
    users.write_bytes(BASE.encode() + b"\xff@example.org:x\n")
    with pytest.raises(UsersFileError, match="line 3: not UTF-8"):
        _recipients(users, Clock())
    users.unlink()
    with pytest.raises(UsersFileError, match="cannot read it"):
        _recipients(users, Clock())
