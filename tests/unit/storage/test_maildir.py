"""Maildir writer: the trusted-mailbox shortcut."""

from __future__ import annotations

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
