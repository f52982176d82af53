"""Protocol paths and work files: the sidecar handoff's only contact with the file system.

Theory of operation
-------------------
Only paths cross the sidecar wire (:mod:`buzon.transform.wire`), and they are
relative to the root of the *work area* each side knows (``/var/lib/buzon/work``
in every container, a volume holding transform files and nothing else), so the
two mounts need not agree on absolute paths.

A request may name the files of one job only (:func:`check_job`): an optional
replica's folder ``instances/<name>/`` (``BUZON_INSTANCE``, issue 15) and worker
shard ``w<N>/``, then ``<ID>.in`` or a chain stage ``<ID>.out.stage<N>``
as input and ``<ID>.out`` or ``<ID>.out.stage<N>`` as output, with the same
shard and queue id ``<ID>`` on both sides; nothing else (no ``queue/``, no
other job's file) is ever read or written. :func:`confine` then turns a name
into a file, refusing anything that would land outside the root (absolute,
``..``, NUL, a symlink that escapes); :func:`relativize` is the client's
inverse. They touch the file system only to resolve symlinks, and all refuse
with :class:`~buzon.transform.wire.PathRefused`, whose kind is ``path``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from buzon.transform.wire import PathRefused

__all__ = ["check_job", "confine", "relativize"]

_JOB_FILE = re.compile(
    r"((?:instances/[A-Za-z0-9][A-Za-z0-9_-]{0,31}/)?w[0-9]{1,3}/)?"  # whose job: folder
    r"([A-Za-z0-9_-]{1,64})\.(in|out(?:\.stage[1-9][0-9]?)?)"
)


def check_job(input_: str, output: str) -> str:
    """Check that a request names an input and an output of one job.

    Returns:
        The job's queue id.

    Raises:
        PathRefused: a name not of the form
            ``[[instances/<name>/]w<N>/]<ID>.in|out|out.stage<N>``,
            an output named ``.in``, two different jobs or shards, or one file twice.
    """
    found = []
    for name in (input_, output):
        match = _JOB_FILE.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise PathRefused(f"{name!r} is not a job file ([w<N>/]<ID>.in, <ID>.out, "
                              "<ID>.out.stage<N>)")
        found.append(match.groups())
    (shard_in, job_in, kind_in), (shard_out, job_out, kind_out) = found
    if (shard_in, job_in) != (shard_out, job_out):
        raise PathRefused(f"{input_!r} and {output!r} are files of different jobs")
    if kind_out == "in" or kind_in == "out":
        raise PathRefused(f"{output!r} cannot be written from {input_!r}")
    if kind_in == kind_out:
        raise PathRefused("input and output are the same file")
    return job_in


def confine(root: Path | str, relative: str) -> Path:
    """Resolve a protocol path against the work area's root, refusing any escape.

    Symlinks are resolved (``os.path.realpath``) before the check, so a link
    inside the root that points outside it is refused too. The result may not
    exist yet (an output path).

    Args:
        root: the work area's root directory.
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
        raise PathRefused(f"{relative!r} resolves outside the work area")
    return target


def relativize(root: Path | str, path: Path | str) -> str:
    """Express a file inside the work area as a protocol path (the client side).

    Args:
        root: the work area's root directory.
        path: a file inside it (it need not exist yet).

    Returns:
        The POSIX path of ``path`` relative to ``root``, symlinks resolved.

    Raises:
        PathRefused: ``path`` is not strictly inside ``root``.
    """
    real_root = Path(os.path.realpath(root))
    target = Path(os.path.realpath(path))
    if target == real_root or not target.is_relative_to(real_root):
        raise PathRefused(f"{str(path)!r} is not inside the work area {str(root)!r}")
    return target.relative_to(real_root).as_posix()
