"""Spool shards of worker processes, and adoption of the shards of removed workers."""

from __future__ import annotations

import os
from pathlib import Path

from buzon.spool.queue import Envelope, Spool, new_queue_id
from buzon.spool.shards import adopt_orphans, shard_root


def _queue(root: Path, text: bytes) -> str:
    envelope = Envelope(new_queue_id(), "a@example.org", ["b@example.org"], ["example.org/b"], size=len(text))
    Spool(root, fsync=False).store(envelope, text)
    return envelope.queue_id


def test_worker_zero_keeps_the_single_process_spool() -> None:
    assert shard_root(Path("/d/spool"), 0) == Path("/d/spool")
    assert shard_root(Path("/d/spool"), 3) == Path("/d/spool/w3")


def test_shards_of_removed_workers_are_moved_into_the_first_spool(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    kept = _queue(shard_root(root, 1), b"for worker 1, still configured\r\n")
    orphans = {_queue(shard_root(root, 2), b"orphan two\r\n"), _queue(shard_root(root, 5), b"five\r\n")}
    (shard_root(root, 2) / "incoming" / "half-written").write_bytes(b"BUZON1 {")
    (shard_root(root, 5) / "corrupt" / "BAD").write_bytes(b"garbage")
    (root / "wx").mkdir(parents=True)  # not a shard name: left alone

    assert adopt_orphans(root, 2, fsync=False) == 3  # two queue segments and one corrupt

    assert not shard_root(root, 2).exists() and not shard_root(root, 5).exists()
    assert (root / "corrupt" / "BAD").read_bytes() == b"garbage"
    assert (root / "wx").is_dir()
    spool = Spool(root, fsync=False)
    recovered = spool.recover()
    assert {where.queue_id for where in recovered} == orphans
    contents = sorted(spool.load(where)[1] for where in recovered)
    assert contents == [b"five\r\n", b"orphan two\r\n"]
    assert [w.queue_id for w in Spool(shard_root(root, 1), fsync=False).recover()] == [kept]


def test_nothing_to_adopt(tmp_path: Path) -> None:
    assert adopt_orphans(tmp_path / "absent", 1) == 0
    (tmp_path / "spool" / "w1").mkdir(parents=True)
    assert adopt_orphans(tmp_path / "spool", 2) == 0
    assert (tmp_path / "spool" / "w1").is_dir()


def test_an_adoption_cut_short_is_finished_even_when_the_shard_is_wanted_again(
    tmp_path: Path,
) -> None:
    # A message in a file of its own is two renames (its .msg, then its segment). A crash
    # between them, then a restart with more workers, must not split them (buzon.spool.files).
    from buzon.spool.queue import Location

    root = tmp_path / "spool"
    shard = Spool(root / "w1", fsync=False)
    envelope = Envelope("AGA2BXHGAEKN6XQA", "a@example.org", ["bob@example.org"],
                        ["example.org/bob"], received=1764412800.0)
    (own,) = shard.store_many([(envelope, b"x" * 50_000, b"Delivered-To: bob@example.org\r\n")])
    assert isinstance(own, Location) and own.file_head is not None
    Spool(root, fsync=False)  # worker 0's folders
    # adopt_orphans(root, 1) marked the shard and moved the file, then the process died
    marked = (root / "w1").rename(root / "w1.adopting")
    os.rename(marked / "queue" / shard.message_file(own).name,
              root / "queue" / shard.message_file(own).name)
    assert adopt_orphans(root, 2, fsync=False) == 1  # restarted with BUZON_WORKERS=2
    assert not marked.exists()
    first = Spool(root, fsync=False)
    assert first.recover() == [own]
    assert first.load(own)[1] == b"x" * 50_000


def test_a_directory_in_the_queue_does_not_stop_recovery(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    (spool.queue / "AGA2BXHGAEKN6XQZ.AGA2BXHGAEKN6XQA.msg").mkdir()
    (spool.queue / "AGA2BXHGAEKN6XQZ").mkdir()
    assert spool.recover() == []
