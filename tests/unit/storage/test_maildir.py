"""Maildir writer: the trusted-mailbox shortcut and the folder-placement hint."""

from __future__ import annotations

import array
import fcntl
import os
from pathlib import Path

import pytest

from buzon.storage import maildir


def _deliver(root: Path, mailbox: str, name: str, known: dict[str, float] | None) -> Path:
    pending = maildir.write_tmp(root, mailbox, name, (b"H: v\r\n", b"\r\nbody\r\n"), known=known)
    maildir.commit(pending)
    return pending.final


def test_a_checked_mailbox_is_trusted_without_lstat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    known: dict[str, float] = {}
    _deliver(tmp_path, "ann", "m1", known)
    assert set(known) == {"ann"}

    def no_lstat(*args: object, **kwargs: object) -> os.stat_result:
        raise AssertionError("a known mailbox was checked again")

    monkeypatch.setattr(maildir.os, "lstat", no_lstat)
    final = _deliver(tmp_path, "ann", "m2", known)
    assert final == tmp_path / "ann" / "new" / "m2"
    assert final.read_bytes() == b"H: v\r\n\r\nbody\r\n"


def test_a_known_mailbox_removed_meanwhile_is_created_again(tmp_path: Path) -> None:
    known: dict[str, float] = {}
    _deliver(tmp_path, "bob", "m1", known)
    for sub in ("tmp", "new", "cur"):
        for entry in (tmp_path / "bob" / sub).iterdir():
            entry.unlink()
        (tmp_path / "bob" / sub).rmdir()
    (tmp_path / "bob").rmdir()

    final = _deliver(tmp_path, "bob", "m2", known)
    assert final.read_bytes().endswith(b"body\r\n")
    assert set(known) == {"bob"}


def test_a_known_mailbox_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    known: dict[str, float] = {}
    _deliver(root, "eve", "m1", known)
    (root / "eve").rename(tmp_path / "eve-old")
    (root / "eve").symlink_to(outside)  # planted: outside has no tmp/, so open fails

    with pytest.raises(maildir.UnsafePath):
        _deliver(root, "eve", "m2", known)
    assert list(outside.iterdir()) == []
    assert "eve" not in known


def test_trust_expires_and_the_folder_is_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    known: dict[str, float] = {}
    _deliver(tmp_path, "gus", "m1", known)
    known["gus"] -= maildir.TRUST_SECONDS + 1  # a second has passed
    calls: list[object] = []
    real = os.lstat
    monkeypatch.setattr(maildir.os, "lstat", lambda p: calls.append(p) or real(p))
    _deliver(tmp_path, "gus", "m2", known)
    assert calls
    assert known["gus"] > maildir.time.monotonic()


def test_without_known_every_delivery_checks_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _deliver(tmp_path, "cid", "m1", None)
    calls: list[object] = []
    real = os.lstat
    monkeypatch.setattr(maildir.os, "lstat", lambda p: calls.append(p) or real(p))
    _deliver(tmp_path, "cid", "m2", None)
    assert calls  # the shortcut is opt-in


def _flags(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, maildir._FS_IOC_GETFLAGS, flags, True)
        return flags[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def test_the_mail_root_is_marked_top_of_hierarchy_before_the_first_mailbox(
    tmp_path: Path,
) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    before = _flags(root)
    if before is None:
        pytest.skip("this file system has no inode flags (not ext2/3/4)")
    assert not before & maildir._FS_TOPDIR_FL
    _deliver(root, "dora", "m1", None)
    flags = _flags(root)
    assert flags is not None
    if not flags & maildir._FS_TOPDIR_FL:
        pytest.skip("this file system ignores FS_TOPDIR_FL")
    assert flags == before | maildir._FS_TOPDIR_FL  # nothing else changed


def test_the_placement_hint_never_fails_a_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object) -> None:
        raise OSError(25, "Inappropriate ioctl for device")

    monkeypatch.setattr(maildir.fcntl, "ioctl", refuse)
    final = _deliver(tmp_path / "elsewhere", "fay", "m1", None)
    assert final.exists()
