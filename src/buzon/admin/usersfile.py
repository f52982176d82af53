"""Editing the users file safely: one admin at a time, readers never see half a file.

Theory of operation
-------------------
:func:`edit` takes an exclusive ``flock`` on ``<users file>.lock`` (a file of
its own, so the lock survives the rename of the users file), reads the file,
lets the caller change its lines, checks the result with the same parser and
rules the server uses, then writes it to a temporary file in the same folder,
flushes it, gives it the old file's mode (0640 for a new file) and owner, and
renames it over the old one, then flushes the folder. The server (and Dovecot)
see the old file or the new one, never a mix; a second admin waits for the
lock and then edits what the first wrote.

Lines are edited as text: comments, blank lines and lines written by hand
stay as they were.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from buzon.directory import DirectoryConfig, Entry, Incomplete, UsersFileError, build, parse

__all__ = ["UsersFile", "edit", "locked", "read"]

NEW_FILE_MODE = 0o640  # the server and Dovecot's group may read it; nobody else


@dataclass
class UsersFile:
    """The lines of a users file while it is being edited."""

    path: Path
    lines: list[str]

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    def entries(self) -> list[Entry]:
        """Raises: UsersFileError (the file as it stands does not parse)."""
        return parse(self.text, str(self.path))

    def find(self, address: str) -> Entry | None:
        return next((e for e in self.entries() if e.address == address), None)

    def replace(self, entry: Entry, line: str | None) -> None:
        """Put ``line`` where ``entry`` is (None: remove it)."""
        index = entry.line - 1
        assert self.lines[index] == entry.text
        if line is None:
            del self.lines[index]
        else:
            self.lines[index] = line


def read(path: Path) -> UsersFile:
    """The file's lines ([] when it does not exist yet)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        text = ""
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line, or an empty file
        lines.pop()
    return UsersFile(path, lines)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the users file's lock (``<path>.lock``) for the block."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write(path: Path, text: str) -> None:
    folder = path.parent
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fchmod(fd, NEW_FILE_MODE if st is None else st.st_mode & 0o7777)
        if st is not None:
            with contextlib.suppress(PermissionError):  # not root: keep our own
                os.fchown(fd, st.st_uid, st.st_gid)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def edit(
    path: Path,
    change: Callable[[UsersFile], None],
    config: DirectoryConfig,
    warn: Callable[[str], None],
) -> None:
    """Change the users file under its lock, check it as the server would, replace it.

    Args:
        path: the users file (created if missing).
        change: edits ``UsersFile.lines``; raises to abandon the edit.
        config: the server's directory settings, to check the result against.
        warn: told when the result is well formed but the server would not take it
            yet (no postmaster, no mailbox): it is written all the same.

    Raises:
        UsersFileError: the result would not parse or breaks a rule (nothing written).
        OSError: the file or its lock cannot be read or written.
    """
    with locked(path):
        users = read(path)
        change(users)
        try:
            build(users.entries(), domains=config.domains, default_domain=config.default_domain,
                  delimiters=config.delimiters, postmaster=config.postmaster, source=str(path))
        except Incomplete as problem:
            warn(f"{problem}; the server keeps its previous directory until this is mended")
        except UsersFileError:
            raise
        _write(path, users.text)
