"""``python -m buzon.transform.keygen FILE``: make the deployment's sidecar key, once.

Compose runs it as the one-shot ``keygen`` service before ``smtp`` and the
sidecars start: it writes 32 random bytes as 64 hex digits to ``FILE`` (mode
0440: the owner and its group may read it, nobody may write it) in a small
volume that the others mount read-only. A key already there is kept, so a
second ``docker compose up`` does not change the key under running sidecars;
``--force`` replaces it (then restart smtp and every sidecar). The file is
written to a temporary name, flushed and renamed, so a reader never sees half
a key. Exit status: 0 done (or kept), 1 the file cannot be written, 2 a key
file that exists but is not a valid key (left alone, named).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from buzon.transform.auth import KEY_BYTES, load_key

__all__ = ["main", "write_key"]


def write_key(path: Path, *, mode: int = 0o440) -> None:
    """Write a new random key to ``path`` atomically, with ``mode``.

    Raises:
        OSError: the file or its directory cannot be written.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode("ascii"))
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m buzon.transform.keygen",
        description="Write the sidecar key (64 hex digits) to FILE unless a valid one is there.",
    )
    parser.add_argument("file", type=Path, help="the key file, e.g. /var/lib/buzon-key/sidecar.key")
    parser.add_argument("--force", action="store_true", help="replace an existing key")
    args = parser.parse_args(argv)
    path: Path = args.file
    if path.exists() and not args.force:
        try:
            load_key(path)
        except ValueError as error:
            print(f"buzon-keygen: {error}; remove it or pass --force", file=sys.stderr)
            return 2
        print(f"buzon-keygen: keeping the key in {path}")
        return 0
    try:
        write_key(path)
    except OSError as error:
        print(f"buzon-keygen: cannot write {path}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"buzon-keygen: wrote a new key to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
