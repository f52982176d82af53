"""Maildir writer: descriptors instead of trusted paths, and the folder-placement hint."""

from __future__ import annotations

import array
import fcntl
import os
import shutil
from pathlib import Path

import pytest

from buzon.storage import folders, maildir


def _deliver(root: Path, mailbox: str, name: str) -> Path:
    pending = maildir.write_tmp(root, mailbox, name, (b"H: v\r\n", b"\r\nbody\r\n"))
    maildir.commit(pending)
    return pending.final


def test_a_delivery_lands_in_new_with_0700_folders(tmp_path: Path) -> None:
    final = _deliver(tmp_path, "d.org/ann", "m1")
    assert final == tmp_path / "d.org" / "ann" / "new" / "m1"
    assert final.read_bytes() == b"H: v\r\n\r\nbody\r\n"
    for folder in ("d.org", "d.org/ann", "d.org/ann/tmp", "d.org/ann/new", "d.org/ann/cur"):
        assert (tmp_path / folder).stat().st_mode & 0o777 == 0o700, folder
    assert final.stat().st_mode & 0o777 == 0o600
    assert list((tmp_path / "d.org" / "ann" / "tmp").iterdir()) == []


def test_a_non_ascii_mailbox_is_a_utf8_folder(tmp_path: Path) -> None:
    final = _deliver(tmp_path, "xn--bcher-kva.example/mañana", "m1")
    assert final == tmp_path / "xn--bcher-kva.example" / "mañana" / "new" / "m1"
    assert os.listdir(os.fsencode(tmp_path / "xn--bcher-kva.example")) == ["mañana".encode()]


@pytest.mark.parametrize("name", ["ann", "d.org/../ann", "../x/ann", "d.org/a/b", "D.org/ann"])
def test_a_name_that_is_not_domain_slash_local_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(maildir.UnsafePath):
        _deliver(tmp_path, name, "m1")
    assert list(tmp_path.iterdir()) == []


def test_a_mailbox_removed_meanwhile_is_created_again(tmp_path: Path) -> None:
    _deliver(tmp_path, "d.org/bob", "m1")
    shutil.rmtree(tmp_path / "d.org" / "bob")
    assert _deliver(tmp_path, "d.org/bob", "m2").read_bytes().endswith(b"body\r\n")
    shutil.rmtree(tmp_path / "d.org" / "bob" / "tmp")
    assert _deliver(tmp_path, "d.org/bob", "m3").read_bytes().endswith(b"body\r\n")
    shutil.rmtree(tmp_path / "d.org")
    assert _deliver(tmp_path, "d.org/bob", "m4").read_bytes().endswith(b"body\r\n")


@pytest.mark.parametrize("where", ["domain", "", "tmp", "new"])
def test_a_symlinked_domain_mailbox_tmp_or_new_is_refused(tmp_path: Path, where: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    for sub in ("tmp", "new", "cur", "eve/tmp", "eve/new", "eve/cur"):
        (outside / sub).mkdir(parents=True)
    _deliver(root, "d.org/eve", "m1")
    victim = {"domain": root / "d.org", "": root / "d.org" / "eve"}.get(
        where, root / "d.org" / "eve" / where)
    victim.rename(tmp_path / "old")
    victim.symlink_to(outside / where if where not in ("", "domain") else outside)
    with pytest.raises(maildir.UnsafePath):
        _deliver(root, "d.org/eve", "m2")
    if where in ("domain", ""):  # m1 is behind the link now: never looked up through it
        assert not maildir.already_delivered(root, "d.org/eve", "m1")
    assert [p for p in outside.rglob("*") if p.is_file()] == []


def test_a_link_swapped_in_after_the_write_is_never_followed(tmp_path: Path) -> None:
    """The folders are held open from write_tmp to commit: a swap between them
    changes nothing, the file still lands in the real new/."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "new").mkdir(parents=True)
    (outside / "tmp").mkdir()
    _deliver(root, "d.org/eve", "m1")
    pending = maildir.write_tmp(root, "d.org/eve", "m2", (b"x",))
    real = tmp_path / "real-eve"
    (root / "d.org" / "eve").rename(real)
    (root / "d.org" / "eve").symlink_to(outside)
    maildir.commit(pending)
    assert (real / "new" / "m2").read_bytes() == b"x"
    assert list((outside / "new").iterdir()) == []


def test_a_link_left_in_tmp_under_the_file_name_is_replaced_not_followed(
    tmp_path: Path,
) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    _deliver(tmp_path / "root", "d.org/gus", "m1")
    (tmp_path / "root" / "d.org" / "gus" / "tmp" / "m2").symlink_to(target)
    assert _deliver(tmp_path / "root", "d.org/gus", "m2").read_bytes().endswith(b"body\r\n")
    assert target.read_bytes() == b"keep"


def test_already_delivered_does_not_look_through_a_link(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "new").mkdir(parents=True)
    (outside / "new" / "m1").write_bytes(b"planted")
    (outside / "hal" / "new").mkdir(parents=True)
    (outside / "hal" / "new" / "m1").write_bytes(b"planted")
    root.mkdir()
    (root / "d.org").symlink_to(outside)  # a linked domain folder
    assert not maildir.already_delivered(root, "d.org/hal", "m1")
    (root / "d.org").unlink()
    (root / "d.org").mkdir()
    (root / "d.org" / "hal").symlink_to(outside)  # a linked mailbox
    assert not maildir.already_delivered(root, "d.org/hal", "m1")
    (root / "d.org" / "hal").unlink()
    _deliver(root, "d.org/hal", "m1")
    assert maildir.already_delivered(root, "d.org/hal", "m1")
    (root / "d.org" / "hal" / "new" / "m1").rename(root / "d.org" / "hal" / "cur" / "m1:2,S")
    assert maildir.already_delivered(root, "d.org/hal", "m1")
    assert not maildir.already_delivered(root, "d.org/hal", "m2")


def _flags(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, folders._FS_IOC_GETFLAGS, flags, True)
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
    assert not before & folders._FS_TOPDIR_FL
    _deliver(root, "d.org/dora", "m1")
    flags = _flags(root)
    assert flags is not None
    if not flags & folders._FS_TOPDIR_FL:
        pytest.skip("this file system ignores FS_TOPDIR_FL")
    assert flags == before | folders._FS_TOPDIR_FL  # nothing else changed
    domain = _flags(root / "d.org")  # the domain folder spreads its mailboxes too
    assert domain is not None and domain & folders._FS_TOPDIR_FL


def test_the_placement_hint_never_fails_a_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object) -> None:
        raise OSError(25, "Inappropriate ioctl for device")

    monkeypatch.setattr(folders.fcntl, "ioctl", refuse)
    final = _deliver(tmp_path / "elsewhere", "d.org/fay", "m1")
    assert final.exists()
