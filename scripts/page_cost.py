#!/usr/bin/env python3
"""What writing a file costs when its pages stay cached, are dropped, or are freed (issue 16).

    python3 scripts/page_cost.py DIR [FILES] [SIZE]

Writes FILES files of SIZE bytes (default 20,000 of 100 KB) into DIR three ways, each
file flushed (``fdatasync``) as the server flushes its files, and prints the CPU time
per file of each:

* ``kept``: every file stays, with its pages in the page cache (what a Maildir copy
  does when nothing drops it): the kernel takes a page it has not used for a while
  for every 4 KiB written;
* ``dropped``: every file stays, but once flushed its pages are dropped (``POSIX_FADV_DONTNEED``, what ``BUZON_DELIVERY_PAGE_CACHE=drop`` does), so
  the next file reuses them;
* ``removed``: every file is removed right after it is written (what a queue segment
  does a second later), so the next file reuses its pages.

On a virtual machine whose free memory goes back to the host, a page not used for a
while costs a fault in the host when first written again; run the ``kept`` case on a
machine fresh from a page-cache drop to see it. The files are removed at the end.
Blocking and single-threaded; pin it (``taskset -c 0``) for steady figures.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path


def _run(folder: Path, mode: str, files: int, data: bytes) -> float:
    folder.mkdir(parents=True)
    started = time.process_time()
    for n in range(files):
        path = folder / str(n)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fdatasync(fd)  # every way flushes, as the server does
            if mode == "dropped":
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        if mode == "removed":
            os.unlink(path)
    return (time.process_time() - started) / files


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1]) / f"page-cost-{os.getpid()}"
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 100 * 1024
    data = os.urandom(size)
    try:
        for mode in ("kept", "dropped", "removed"):
            cost = _run(root / mode, mode, files, data)
            print(f"{mode:8} {files} files of {size} bytes: {cost * 1e6:7.1f} µs CPU per file",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
