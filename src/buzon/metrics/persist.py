"""Durable metrics: an atomic JSON snapshot (tmp + fsync + rename) and its restore.

The server writes the snapshot at most once per ``interval`` while counters
change, and once more at shutdown, so a hard crash loses at most the increments
of the last interval (one second by default). The transform switch lives in the
same file because it is operator state that must survive a restart (issue 4).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from buzon.fsutil import fsync_dir, write_all

__all__ = ["load_state", "save_state"]

log = logging.getLogger(__name__)


def load_state(path: Path) -> dict[str, Any]:
    """Read the snapshot; a missing file is an empty state, a corrupt one is logged."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        log.error("metrics snapshot %s is corrupt; starting from zero", path)
        return {}
    return data if isinstance(data, dict) else {}


def save_state(path: Path, state: dict[str, Any], *, fsync: bool = True) -> None:
    """Replace the snapshot atomically: readers see the old or the new file, never half."""
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(state, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)
