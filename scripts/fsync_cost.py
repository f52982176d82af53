#!/usr/bin/env python3
"""What making a Maildir delivery durable costs, per message: fsync per file vs syncfs per batch.

Writes batches of 256 one-KB files spread over 225 Maildirs (what a delivery
batch of the 1 KB benchmark touches), the two ways the Maildir writer can
make them durable (``BUZON_DELIVERY_SYNC``, see buzon/delivery/writer.py):

* ``file``: fsync each file, rename it into new/, fsync every touched new/;
* ``batch``: syncfs, rename every file, syncfs again.

Prints wall and CPU microseconds per message for each, alternating, so both
see the same disk. Usage: ``python3 scripts/fsync_cost.py DIR [--rounds N]``
(DIR on the file system to measure; it is created and removed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from buzon.fsutil import fsync_dir, sync_filesystem

MAILDIRS, BATCH, BODY = 225, 256, b"x" * 1100


def one_batch(root: Path, mode: str, tag: str) -> None:
    files = []
    for i in range(BATCH):
        box = root / f"u{i % MAILDIRS}"
        tmp = box / "tmp" / f"{tag}.{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, BODY)
        files.append((fd, tmp, box))
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if mode == "batch":
            sync_filesystem(root_fd)
        for fd, tmp, box in files:
            if mode == "file":
                os.fsync(fd)
            os.close(fd)
            os.rename(tmp, box / "new" / tmp.name)
        if mode == "batch":
            sync_filesystem(root_fd)
        else:
            for box in {box for _, _, box in files}:
                fsync_dir(box / "new")
    finally:
        os.close(root_fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of both modes")
    args = parser.parse_args()
    root = args.dir
    for i in range(MAILDIRS):
        (root / f"u{i}" / "tmp").mkdir(parents=True, exist_ok=True)
        (root / f"u{i}" / "new").mkdir(exist_ok=True)
    try:
        for round_ in range(args.rounds):
            for mode in ("file", "batch"):
                wall, cpu = time.perf_counter(), time.process_time()
                for k in range(10):
                    one_batch(root, mode, f"{mode}{round_}{k}")
                n = 10 * BATCH
                print(f"{mode:5}  {(time.perf_counter() - wall) / n * 1e6:6.0f} µs/msg wall"
                      f"  {(time.process_time() - cpu) / n * 1e6:6.0f} µs/msg CPU")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
