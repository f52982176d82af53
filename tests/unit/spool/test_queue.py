"""The spool's use of the record codec, on a real directory: what recovery trusts.

A queue file is input like any other: a disk error, a bug in an older version or
a hand-edited file can put a record there whose queue id or mailbox would become
a path. Recovery must quarantine such a segment (after delivering the good
records before the damage), never hand out a :class:`Location` for it.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from buzon.spool.queue import Envelope, Location, Spool, SpoolCorrupt, new_queue_id

GOOD = {
    "queue_id": "AGA2BXHGAEKN6XQA",
    "sender": "a@example.org",
    "recipients": ["bob@example.org"],
    "mailboxes": ["bob"],
    "helo": "client.example.org",
    "peer": "192.0.2.7:40122",
    "esmtp": True,
    "received": 1764412800.5,
    "size": 5,
}


def _record(fields: dict[str, object], body: bytes = b"hello") -> bytes:
    return b"BUZON1 " + json.dumps(fields, separators=(",", ":")).encode() + b"\n" + body


HOSTILE = [
    pytest.param({**GOOD, "queue_id": "../../etc/passwd"}, id="queue_id-climbs"),
    pytest.param({**GOOD, "mailboxes": ["../../root"]}, id="mailbox-climbs"),
    pytest.param({**GOOD, "mailboxes": ["bob", "eve"]}, id="mailbox-count"),
    pytest.param({**GOOD, "sender": "a@b\r\nBcc: eve@example.org"}, id="sender-crlf"),
    pytest.param({**GOOD, "size": True, "extra": 1}, id="size-bool-extra-key"),
]


@pytest.mark.parametrize("fields", HOSTILE)
def test_a_hostile_record_is_quarantined_at_recovery_and_never_located(
    tmp_path: Path, fields: dict[str, object]
) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    (spool.queue / "HOSTILE").write_bytes(_record(fields))
    assert spool.recover() == []
    assert (spool.corrupt / "HOSTILE").exists()
    assert not (spool.queue / "HOSTILE").exists()


def test_a_header_nested_too_deeply_for_json_is_quarantined_not_raised(tmp_path: Path) -> None:
    # json recurses per nesting level; the RecursionError used to escape recover().
    spool = Spool(tmp_path / "spool", fsync=False)
    (spool.queue / "DEEP").write_bytes(b"BUZON1 " + b"[" * 100_000 + b"\n")
    assert spool.recover() == []
    assert (spool.corrupt / "DEEP").exists()


def test_good_records_before_a_hostile_one_are_delivered_then_the_segment_quarantined(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    first = _record(GOOD)
    (spool.queue / "MIXED").write_bytes(
        first + _record({**GOOD, "queue_id": "AGA2BXHGAEKN6XQB", "mailboxes": [".."]})
    )
    assert spool.recover() == [Location("MIXED", 0, GOOD["queue_id"])]
    envelope, content = spool.load(Location("MIXED", 0, GOOD["queue_id"]))
    # GOOD is a record of the old layout: its mailbox reads as <domain>/<local>.
    assert (envelope.queue_id, envelope.mailboxes, content) == (
        GOOD["queue_id"], ["example.org/bob"], b"hello")
    with pytest.raises(SpoolCorrupt):
        spool.load(Location("MIXED", len(first), "AGA2BXHGAEKN6XQB"))
    spool.release(Location("MIXED", 0, GOOD["queue_id"]))
    assert (spool.corrupt / "MIXED").exists() and not (spool.queue / "MIXED").exists()


def test_store_then_recover_reads_every_record_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False, segment_bytes=10)
    items = [
        (Envelope(new_queue_id(), "", [f"r{i}@example.org"], [f"example.org/r{i}"], peer="?"), b"x" * i)
        for i in range(5)
    ]
    stored = spool.store_many(items)
    fresh = Spool(tmp_path / "spool", fsync=False)
    found = fresh.recover()
    assert sorted(found, key=lambda w: w.queue_id) == sorted(stored, key=lambda w: w.queue_id)
    for where in found:
        envelope, content = fresh.load(where)
        assert (envelope, content) == next((e, c) for e, c in items if e.queue_id == where.queue_id)


def test_load_refuses_a_record_whose_id_is_not_the_one_asked_for(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    (spool.queue / "SEG").write_bytes(_record(GOOD))
    with pytest.raises(SpoolCorrupt, match="AGA2BXHGAEKN6XQB"):
        spool.load(Location("SEG", 0, "AGA2BXHGAEKN6XQB"))


def test_load_refuses_a_truncated_body(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    (spool.queue / "SEG").write_bytes(_record(GOOD, b"hell"))
    with pytest.raises(SpoolCorrupt, match="truncated"):
        spool.load(Location("SEG", 0, GOOD["queue_id"]))


def test_store_refuses_an_envelope_it_could_not_read_back_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    first, second = (Envelope(new_queue_id(), "a@x", [f"{n}@x"], [f"x/{n}"]) for n in ("b", "c"))
    bad = Envelope(new_queue_id(), "a@x", ["../b@x"], ["x/../b"])
    results = spool.store_many([(first, b"1"), (bad, b"2"), (second, b"3")])
    refused = results[1]
    assert isinstance(refused, OSError) and refused.errno == errno.EINVAL
    assert "mailboxes[0]" in str(refused)
    assert [type(r) for r in results] == [Location, OSError, Location]
    found = Spool(tmp_path / "spool", fsync=False).recover()
    assert [where.queue_id for where in found] == [first.queue_id, second.queue_id]
    assert [spool.load(where)[1] for where in found] == [b"1", b"3"]


def test_a_batch_of_only_refused_envelopes_writes_no_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    bad = Envelope("not an id", "a@x", ["b@x"], ["x/b"])
    (result,) = spool.store_many([(bad, b"x")])
    assert isinstance(result, OSError) and "queue_id" in str(result)
    assert list(spool.queue.iterdir()) == [] and list(spool.incoming.iterdir()) == []
    with pytest.raises(OSError):
        spool.store(bad, b"x")
