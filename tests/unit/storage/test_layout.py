"""Old ``<root>/<local>/`` Maildirs: found, and moved to ``<root>/<domain>/<local>/`` with
nothing lost or overwritten. Real folders and files."""

from __future__ import annotations

from pathlib import Path

import pytest

from buzon.storage.layout import legacy_maildirs, migrate
from buzon.storage.mailbox import UnsafeMailbox


def _maildir(folder: Path, **files: str) -> None:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, where in files.items():
        (folder / where / name).write_text(f"message {name}")


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


def test_old_mailboxes_are_told_from_domain_folders(tmp_path: Path) -> None:
    assert legacy_maildirs(tmp_path / "missing") == []
    _maildir(tmp_path / "bob", m1="new")
    _maildir(tmp_path / "alice")
    _maildir(tmp_path / "example.org" / "carol")  # the new layout
    for user in ("cur", "new", "tmp"):  # a domain whose users are named cur, new and tmp
        _maildir(tmp_path / "odd.org" / user)
    (tmp_path / "half").mkdir()  # not a Maildir
    (tmp_path / "half" / "new").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "bob")
    assert legacy_maildirs(tmp_path) == ["alice", "bob"]


def test_a_dry_run_reports_every_move_and_moves_nothing(tmp_path: Path) -> None:
    _maildir(tmp_path / "bob", m1="new", m2="cur")
    before = _tree(tmp_path)
    lines: list[str] = []
    assert migrate(tmp_path, "example.org", dry_run=True, report=lines.append) == 0
    assert lines == [f"moved {tmp_path / 'bob'} -> {tmp_path / 'example.org' / 'bob'}"]
    assert _tree(tmp_path) == before and not (tmp_path / "example.org").exists()
    assert migrate(tmp_path, "example.org", report=lines.append) == 0
    assert (tmp_path / "example.org").stat().st_mode & 0o777 == 0o700  # created like the others


def test_each_old_mailbox_is_renamed_whole_into_the_domain(tmp_path: Path) -> None:
    _maildir(tmp_path / "bob", m1="new", **{"m2:2,S": "cur"})
    (tmp_path / "bob" / "dovecot-uidlist").write_text("3 V1")
    _maildir(tmp_path / "alice", m3="new")
    _maildir(tmp_path / "example.org" / "carol", m4="new")  # already migrated: untouched
    before = _tree(tmp_path)
    lines: list[str] = []
    assert migrate(tmp_path, "example.org", report=lines.append) == 0
    assert len(lines) == 2 and all(line.startswith("moved ") for line in lines)
    moved = {k if k.startswith("example.org/") else "example.org/" + k: v for k, v in before.items()}
    assert _tree(tmp_path) == moved
    assert legacy_maildirs(tmp_path) == []


def test_into_an_existing_mailbox_files_move_one_by_one_and_nothing_is_overwritten(
    tmp_path: Path,
) -> None:
    """The server ran once before the migration: bob has mail in both places."""
    _maildir(tmp_path / "bob", old1="new", clash="new", **{"old2:2,S": "cur"}, part="tmp")
    _maildir(tmp_path / "example.org" / "bob", new1="new", clash="new")
    (tmp_path / "example.org" / "bob" / "new" / "clash").write_text("the new one")
    (tmp_path / "bob" / ".Sent").mkdir()
    lines: list[str] = []
    left = migrate(tmp_path, "example.org", report=lines.append)
    assert left == 2  # the clashing file and the Maildir++ folder stay, named
    target = tmp_path / "example.org" / "bob"
    assert sorted(p.name for p in (target / "new").iterdir()) == ["clash", "new1", "old1"]
    assert (target / "new" / "clash").read_text() == "the new one"
    assert (target / "cur" / "old2:2,S").read_text() == "message old2:2,S"
    assert (target / "tmp" / "part").exists()
    assert (tmp_path / "bob" / "new" / "clash").read_text() == "message clash"  # kept
    assert f"left {tmp_path / 'bob' / 'new' / 'clash'} (a file of that name is already there)" \
        in lines
    assert any(line.startswith("left ") and ".Sent" in line for line in lines)
    # Mended by hand, a second run finishes the job and removes the empty old folder.
    (tmp_path / "bob" / "new" / "clash").rename(tmp_path / "bob" / "new" / "clash2")
    (tmp_path / "bob" / ".Sent").rmdir()
    assert migrate(tmp_path, "example.org", report=lines.append) == 0
    assert not (tmp_path / "bob").exists()
    assert (target / "new" / "clash2").read_text() == "message clash"


def test_a_domain_that_is_an_old_mailbox_name_is_refused(tmp_path: Path) -> None:
    _maildir(tmp_path / "bob")
    with pytest.raises(UnsafeMailbox, match="old-layout mailbox"):
        migrate(tmp_path, "bob", report=lambda line: None)
    with pytest.raises(UnsafeMailbox):
        migrate(tmp_path, "Example.org", report=lambda line: None)  # not normal
    assert legacy_maildirs(tmp_path) == ["bob"]
