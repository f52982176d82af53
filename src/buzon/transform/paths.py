"""Protocol paths and spool files: the sidecar handoff's only contact with the file system.

Theory of operation
-------------------
Only paths cross the sidecar wire (:mod:`buzon.transform.wire`), and they are
relative to the spool root each side knows (``/var/lib/buzon/spool`` in every
container), so the two mounts need not agree on absolute paths.
:func:`confine` is how the sidecar turns one into a file it may touch, refusing
anything that would land outside the root (absolute, ``..``, NUL, a symlink
that escapes); :func:`relativize` is the client's inverse. Both touch the file
system only to resolve symlinks, and both refuse with
:class:`~buzon.transform.wire.PathRefused`, whose kind is ``path``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from buzon.transform.wire import PathRefused

__all__ = ["confine", "relativize"]


def confine(root: Path | str, relative: str) -> Path:
    """Resolve a protocol path against the spool root, refusing any escape.

    Symlinks are resolved (``os.path.realpath``) before the check, so a link
    inside the root that points outside it is refused too. The result may not
    exist yet (an output path).

    Args:
        root: the spool root directory.
        relative: a path from a request, relative to ``root``.

    Returns:
        The resolved absolute path, strictly inside the resolved root.

    Raises:
        PathRefused: NUL byte, empty, absolute, a ``..`` component, the root
            itself, or a path that resolves outside the root.
    """
    if not isinstance(relative, str) or not relative:
        raise PathRefused("empty path")
    if "\x00" in relative:
        raise PathRefused("path contains a NUL byte")
    pure = PurePosixPath(relative)
    if pure.is_absolute():
        raise PathRefused(f"absolute path {relative!r}")
    # Refused even when it would resolve inside: no legitimate client sends one.
    if ".." in pure.parts:
        raise PathRefused(f"'..' in path {relative!r}")
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(real_root / pure))
    if target == real_root or not target.is_relative_to(real_root):
        raise PathRefused(f"{relative!r} resolves outside the spool root")
    return target


def relativize(root: Path | str, path: Path | str) -> str:
    """Express a file inside the spool root as a protocol path (the client side).

    Args:
        root: the spool root directory.
        path: a file inside it (it need not exist yet).

    Returns:
        The POSIX path of ``path`` relative to ``root``, symlinks resolved.

    Raises:
        PathRefused: ``path`` is not strictly inside ``root``.
    """
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(path))
    if target == real_root or not target.is_relative_to(real_root):
        raise PathRefused(f"{str(path)!r} is not inside the spool root {str(root)!r}")
    return target.relative_to(real_root).as_posix()
