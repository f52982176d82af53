"""The live directory: the users file read again when it changes, never lost to a bad edit.

Theory of operation
-------------------
:class:`Recipients` is what every ``RCPT`` asks. It holds the current
:class:`~buzon.directory.resolve.Directory`; at most once per
``users_reload_interval`` (1 s by default) a lookup first ``stat()``s the users
file, and when its inode, size or modification time differ from the loaded
file's, reads and checks it whole and swaps it in. No thread, no inotify: the
check costs one ``stat`` a second, and each worker process (``BUZON_WORKERS``)
does it for itself.

A file that does not parse or fails a check (a typo, an alias to nobody, a
missing postmaster, an empty file) is not used: the previous directory stays,
and one ERROR names the file, the line and the fault, once per version of the
file. A file that changes while being read (an editor writing it in place) is
read again at the next check. ``buzon-admin`` replaces the file by ``rename``,
so readers see the old file or the new one, never half of one.

At start-up :func:`load` raises instead: a server never starts with a
directory it could not read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from buzon.directory.resolve import Directory, Domains, Lookup, build
from buzon.directory.users import UsersFileError, parse

__all__ = ["DirectoryConfig", "Recipients", "load"]

log = logging.getLogger("buzon.directory")

_Signature = tuple[int, int, int, int]
_MISSING: _Signature = (-1, -1, -1, -1)  # the file cannot be stat()ed


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    """The settings a directory is built from."""

    domains: Domains
    default_domain: str
    delimiters: str = "+"
    postmaster: str | None = None
    users_file: Path | None = None


def _signature(st: os.stat_result) -> _Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: Path) -> tuple[str, _Signature] | None:
    """The file's text and signature; None when it changed while being read.

    Raises:
        UsersFileError: it cannot be opened, read or decoded as UTF-8.
    """
    try:
        with open(path, "rb") as handle:
            before = _signature(os.fstat(handle.fileno()))
            data = handle.read()
            after = _signature(os.fstat(handle.fileno()))
    except OSError as error:
        raise UsersFileError(str(path), None, f"cannot read it: {error.strerror}") from None
    if before != after:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UsersFileError(str(path), line, "not UTF-8") from None
    return text, after


def _build(config: DirectoryConfig, text: str | None) -> Directory:
    source = str(config.users_file)
    return build(
        None if text is None else parse(text, source),
        domains=config.domains,
        default_domain=config.default_domain,
        delimiters=config.delimiters,
        postmaster=config.postmaster,
        source=source,
    )


def load(config: DirectoryConfig) -> tuple[Directory, _Signature | None]:
    """Read and check the users file (if any) once: the directory and the file's signature.

    Raises:
        UsersFileError: naming the file and line, or the setting, at fault.
    """
    if config.users_file is None:
        return _build(config, None), None
    for _ in range(10):  # an editor writing in place: wait for a stable read
        got = _read(config.users_file)
        if got is not None:
            return _build(config, got[0]), got[1]
    raise UsersFileError(str(config.users_file), None, "keeps changing while being read")


class Recipients:
    """The directory ``RCPT`` asks, kept up to date with the users file."""

    def __init__(
        self,
        config: DirectoryConfig,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the directory now.

        Raises:
            UsersFileError: see :func:`load`.
        """
        self.config = config
        self.interval = interval
        self._clock = clock
        self.directory, self._loaded = load(config)
        self._refused: _Signature | None = None  # the version last logged as bad
        self._next = clock() + interval

    def resolve(self, address: str) -> Lookup:
        """Where mail for ``address`` goes, after a reload if the file changed."""
        if self.config.users_file is not None and self._clock() >= self._next:
            self.check()
        return self.directory.resolve(address)

    def check(self) -> bool:
        """Reload the users file if it changed; whether a new directory was taken."""
        path = self.config.users_file
        self._next = self._clock() + self.interval
        if path is None:
            return False
        try:
            seen = _signature(os.stat(path))
        except OSError:
            seen = _MISSING
        if seen in (self._loaded, self._refused):
            return False
        try:
            got = _read(path)
            if got is None:
                return False  # changing under us: next time
            directory = _build(self.config, got[0])
        except UsersFileError as error:
            self._refused = seen  # logged once per version of the file
            log.error("%s; keeping the directory loaded before", error)
            return False
        self.directory, self._loaded, self._refused = directory, got[1], None
        log.info(
            "users file %s reloaded: %d mailbox(es), %d alias(es)",
            path, directory.users, directory.aliases,
        )
        return True
