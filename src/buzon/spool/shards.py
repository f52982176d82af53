"""One spool per SMTP worker process, and adoption of the spools of removed workers.

Worker 0 (and the single-process server) uses ``<data_dir>/spool`` itself, so
changing ``BUZON_WORKERS`` from 1 to more keeps the existing queue where it is;
worker *i* > 0 uses ``<data_dir>/spool/w<i>``. A spool is written and recovered
by exactly one process, so the queue's reference counts and recovery stay
single-owner, as :mod:`buzon.spool.queue` assumes.

When ``BUZON_WORKERS`` is lowered, the shards of workers that no longer exist
would hold queued mail nobody delivers. Worker 0 calls :func:`adopt_orphans`
before recovering its spool: every complete segment of such a shard is renamed
into worker 0's ``queue/`` (segment names are unique queue ids, so they cannot
collide), unreadable ones into its ``corrupt/``, and the shard is removed.
Half-written segments and transform leftovers are dropped, exactly as a
shard's own recovery would. The shard is first renamed ``w<i>.adopting``: a
segment and its message files (:mod:`buzon.spool.files`) move one rename at a
time, and a crash between them must not leave half a message in a shard that a
restart with more workers would own again (its recovery would drop the file
whose segment had moved). A shard marked so is adopted whatever the count.

Each worker's transform files live apart from its spool, in
``<work area>/w<i>`` (:func:`work_root`; worker 0 and the single process use
``w0``): the work area is the only part of the data a transform sidecar shares,
and the names sent to a sidecar are relative to it (``w2/<ID>.in``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from buzon.fsutil import fsync_dir

__all__ = ["adopt_orphans", "shard_root", "work_root"]

_SHARD = re.compile(r"w([1-9][0-9]*)")
_ADOPTING = ".adopting"


def shard_root(spool_root: Path, index: int) -> Path:
    """The spool directory of worker ``index``."""
    return spool_root if index == 0 else spool_root / f"w{index}"


def work_root(work_area: Path, index: int) -> Path:
    """The directory of worker ``index``'s transform files in the work area."""
    return work_area / f"w{index}"


def adopt_orphans(spool_root: Path, workers: int, *, fsync: bool = True,
                  work_area: Path | None = None) -> int:
    """Move the queue of every shard ``w<i>`` with ``i >= workers`` into the first spool.

    Their work directories in ``work_area`` are removed (never trusted: the
    transform runs again for every adopted message).

    Returns:
        The number of queue files moved.
    """
    if work_area is not None and work_area.is_dir():
        for entry in os.scandir(work_area):
            match = _SHARD.fullmatch(entry.name)
            if match and int(match.group(1)) >= workers:
                shutil.rmtree(entry.path, ignore_errors=True)
    try:
        # One marked for adoption first: a shard of the same number may be renamed so next.
        entries = sorted(os.scandir(spool_root), key=lambda e: not e.name.endswith(_ADOPTING))
    except FileNotFoundError:
        return 0
    moved = 0
    for entry in entries:
        name = entry.name.removesuffix(_ADOPTING)
        match = _SHARD.fullmatch(name)
        if not match or not entry.is_dir(follow_symlinks=False) or (
            name == entry.name and int(match.group(1)) < workers
        ):
            continue
        shard = Path(entry.path)
        if name == entry.name:  # marked before the first move (see the module docstring)
            shard = shard.rename(spool_root / (name + _ADOPTING))
            if fsync:
                fsync_dir(spool_root)
        for sub in ("queue", "corrupt"):
            source = shard / sub
            if not source.is_dir():
                continue
            target = spool_root / sub
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            names = [n for n in os.listdir(source) if not n.startswith(".")]
            names.sort(key=lambda n: not n.endswith(".msg"))  # files before their segments
            for file in names:
                os.rename(source / file, target / file)
            if names:
                moved += len(names)
                if fsync:
                    fsync_dir(target)  # the moves must be durable before the shard goes
                    fsync_dir(source)
        shutil.rmtree(shard)
    return moved
