"""The mail root's layout: Maildirs of the old ``<root>/<local>/`` form, found and moved.

Theory of operation
-------------------
Until issue 12 a mailbox was ``<root>/<local>/{cur,new,tmp}``; it is now
``<root>/<domain>/<local>/``. A server that started on an old root would
deliver new mail beside the old and readers would see half of each mailbox,
so start-up refuses while :func:`legacy_maildirs` finds any, naming them and
the command that moves them (``buzon-admin migrate-mailboxes --domain D``,
which calls :func:`migrate`).

A folder directly under the root is an old mailbox when it holds ``cur/``,
``new/`` and ``tmp/`` directories that are not themselves mailboxes (a domain
with users named ``cur``, ``new`` and ``tmp`` has Maildirs there).

:func:`migrate` moves each old mailbox whole with one ``rename`` when its new
place is free (same file system: nothing is copied). When the new place exists
already (the server ran once before the migration, or a half-done run), each
message file of ``cur/``, ``new/`` and ``tmp/`` is moved alone with
``link`` + ``unlink``, which never overwrites: a file whose name is taken
there stays where it was and is reported. Other entries (Maildir++ folders
such as ``.Sent``, Dovecot's index files) stay too, reported, to be merged by
hand. Every move is reported before it is made; a dry run reports only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from buzon.storage.mailbox import UnsafeMailbox, check_domain, check_local

__all__ = ["legacy_maildirs", "migrate"]

_SUBDIRS = ("cur", "new", "tmp")


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() and not (path / sub).is_symlink() for sub in _SUBDIRS)


def legacy_maildirs(root: Path) -> list[str]:
    """Names of the old-layout mailboxes directly under ``root``, sorted; [] if none or no root."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if _is_maildir(path) and not any(_is_maildir(path / sub) for sub in _SUBDIRS):
            found.append(entry.name)
    return sorted(found)


def _merge(source: Path, target: Path, dry_run: bool, report: Callable[[str], None]) -> int:
    """Move the message files of ``source`` into the existing ``target``; files left behind."""
    left = 0
    for sub in _SUBDIRS:
        if not dry_run:
            os.makedirs(target / sub, mode=0o700, exist_ok=True)
        for entry in sorted(os.scandir(source / sub), key=lambda e: e.name):
            src, dst = Path(entry.path), target / sub / entry.name
            if not entry.is_file(follow_symlinks=False) or os.path.lexists(dst):
                why = "not a regular file" if not entry.is_file(follow_symlinks=False) \
                    else "a file of that name is already there"
                report(f"left {src} ({why})")
                left += 1
                continue
            report(f"moved {src} -> {dst}")
            if not dry_run:
                os.link(src, dst, follow_symlinks=False)  # FileExistsError: never overwrites
                os.unlink(src)
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        if entry.name not in _SUBDIRS:
            report(f"left {entry.path} (not a message folder: merge it by hand)")
            left += 1
    if not left and not dry_run:
        for sub in _SUBDIRS:
            os.rmdir(source / sub)
        os.rmdir(source)
        report(f"removed the empty {source}")
    return left


def migrate(
    root: Path, domain: str, *, dry_run: bool = False, report: Callable[[str], None] = print,
) -> int:
    """Move every old-layout mailbox ``<root>/<local>`` to ``<root>/<domain>/<local>``.

    Args:
        root: the mail root.
        domain: the domain the old mailboxes belong to, normal (IDNA A-labels).
        dry_run: report what would be moved, move nothing.
        report: called with one line per move, and per entry left where it was.

    Returns:
        How many entries were left in place (0: everything moved).

    Raises:
        UnsafeMailbox: ``domain`` is not a normal domain, or is itself the name of
            an old mailbox (it would be moved into itself).
        OSError: a move failed; what was moved before stays moved.
    """
    check_domain(domain)
    names = legacy_maildirs(root)
    if domain in names:
        raise UnsafeMailbox(f"{root / domain} is an old-layout mailbox, not a domain folder")
    if not dry_run and names:
        os.makedirs(root / domain, mode=0o700, exist_ok=True)
    left = 0
    for name in names:
        source, target = root / name, root / domain / name
        try:
            check_local(name)
        except UnsafeMailbox as error:
            report(f"left {source} (not a mailbox name: {error})")
            left += 1
            continue
        if os.path.lexists(target):
            left += _merge(source, target, dry_run, report)
            continue
        report(f"moved {source} -> {target}")
        if not dry_run:
            os.rename(source, target)
    return left
