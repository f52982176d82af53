#!/usr/bin/env python3
"""How many Maildir deliveries per second a file system takes: the fsync side of capacity.

    python3 scripts/fsync-rate.py DIR [COUNT] [SIZE]     # e.g. a mounted NFS export

Each iteration does what a delivery does (src/buzon/storage/maildir.py): create a
file in DIR/tmp, write SIZE bytes, fsync it, rename it into DIR/new, fsync DIR/new.
Then a bare write + fsync loop on one file (a queue segment's flush, roughly). One
stream: run several at once (one DIR each) to see what the device does in parallel.
The files are removed at the end. docs/scaling.md uses its figures.
"""

import os
import sys
import time


def main() -> None:
    root = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    tmp, new = os.path.join(root, "tmp"), os.path.join(root, "new")
    os.makedirs(tmp, exist_ok=True)
    os.makedirs(new, exist_ok=True)
    data = b"x" * size
    new_fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    start = time.perf_counter()
    for i in range(count):
        path = os.path.join(tmp, f"m{i}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.rename(path, os.path.join(new, f"m{i}"))
        os.fsync(new_fd)
    deliveries = count / (time.perf_counter() - start)
    segment = os.path.join(root, "segment")
    fd = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    start = time.perf_counter()
    for _ in range(count):
        os.write(fd, data)
        os.fsync(fd)
    flushes = count / (time.perf_counter() - start)
    os.close(fd)
    os.close(new_fd)
    for name in os.listdir(new):
        os.unlink(os.path.join(new, name))
    os.unlink(segment)
    print(f"{root}: maildir deliveries (write+fsync+rename+fsync dir) {deliveries:.0f}/s, "
          f"write+fsync {flushes:.0f}/s ({count} x {size} B)")


if __name__ == "__main__":
    main()
