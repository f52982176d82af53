"""Messages queued in a file of their own (buzon.spool.files), on real directories.

The file holds exactly what the mailbox will get (head, then message); the
segment holds only its record line; recovery pairs them, and settles a file
whose segment never made it or does not name it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buzon.spool.queue import Envelope, Location, Spool, SpoolCorrupt
from buzon.spool.record import TruncatedRecord, parse_segment

HEAD = b"Return-Path: <a@example.org>\r\nDelivered-To: bob@example.org\r\n"


def _envelope(queue_id: str, *mailboxes: str) -> Envelope:
    boxes = list(mailboxes or ["example.org/bob"])
    return Envelope(queue_id, "a@example.org", [f"{m.split('/')[1]}@example.org" for m in boxes],
                    boxes, received=1764412800.0)


@pytest.mark.parametrize("fsync", [True, False])
def test_a_message_with_a_head_is_its_own_file_and_its_record_holds_no_bytes(
    tmp_path: Path, fsync: bool
) -> None:
    spool = Spool(tmp_path / "spool", fsync=fsync)
    big, small = os.urandom(100_000), b"Subject: s\r\n\r\nsmall\r\n"
    own, shared = spool.store_many([
        (_envelope("AGA2BXHGAEKN6XQA"), big, HEAD),
        (_envelope("AGA2BXHGAEKN6XQB"), small),
    ])
    assert isinstance(own, Location) and isinstance(shared, Location)
    assert own.file_head == len(HEAD) and shared.file_head is None
    assert spool.message_file(own).read_bytes() == HEAD + big
    assert spool.message_file(own).stat().st_mode & 0o777 == 0o600
    segment = (spool.queue / own.segment).read_bytes()
    assert len(segment) < 1000  # the 100 KB are not in it; the small message is
    assert segment.endswith(small)
    records, fault = parse_segment(segment)
    assert fault is None and [e.file_head for _, e in records] == [len(HEAD), None]
    assert spool.load(own) == (records[0][1], big)
    envelope, nothing = spool.load(own, content=False)
    assert envelope.queue_id == own.queue_id and nothing == b""
    assert spool.load(shared)[1] == small


def test_recovery_finds_it_and_release_removes_its_file_then_the_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    (own,) = spool.store_many([(_envelope("AGA2BXHGAEKN6XQA"), b"x" * 50_000, HEAD)])
    assert isinstance(own, Location)
    restarted = Spool(tmp_path / "spool", fsync=False)
    assert restarted.recover() == [own]
    restarted.release(own, work=False)
    assert sorted(p.name for p in restarted.queue.iterdir()) == []


def test_a_file_whose_segment_was_never_committed_is_removed_at_recovery(tmp_path: Path) -> None:
    # A crash after the file was written and before its segment's rename: no 250 was sent.
    spool = Spool(tmp_path / "spool", fsync=False)
    (spool.queue / "AGA2BXHGAEKN6XQZ.AGA2BXHGAEKN6XQA.msg").write_bytes(HEAD + b"orphan")
    assert spool.recover() == []
    assert list(spool.queue.iterdir()) == []
    assert list(spool.corrupt.iterdir()) == []


def test_a_file_its_committed_segment_does_not_name_goes_to_corrupt(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    (own,) = spool.store_many([(_envelope("AGA2BXHGAEKN6XQA"), b"kept", HEAD)])
    assert isinstance(own, Location)
    stray = spool.queue / f"{own.segment}.AGA2BXHGAEKN6XQB.msg"
    stray.write_bytes(HEAD + b"named by no record")
    restarted = Spool(tmp_path / "spool", fsync=False)
    assert restarted.recover() == [own]
    assert not stray.exists()
    assert (restarted.corrupt / stray.name).read_bytes() == HEAD + b"named by no record"
    assert restarted.message_file(own).exists()


def test_a_message_file_longer_or_shorter_than_its_record_is_corrupt(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    (own,) = spool.store_many([(_envelope("AGA2BXHGAEKN6XQA"), b"0123456789", HEAD)])
    assert isinstance(own, Location)
    path = spool.message_file(own)
    path.write_bytes(HEAD + b"0123456789+")
    with pytest.raises(SpoolCorrupt, match="more than the 10 bytes"):
        spool.load(own)
    path.write_bytes(HEAD + b"01234")
    with pytest.raises(TruncatedRecord):
        spool.load(own)
    path.unlink()
    with pytest.raises(FileNotFoundError):
        spool.load(own)


def test_a_symlink_in_place_of_the_file_is_not_read_through(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", fsync=False)
    (own,) = spool.store_many([(_envelope("AGA2BXHGAEKN6XQA"), b"0123456789", HEAD)])
    assert isinstance(own, Location)
    secret = tmp_path / "secret"
    secret.write_bytes(HEAD + b"SECRETSEC!")
    spool.message_file(own).unlink()
    spool.message_file(own).symlink_to(secret)
    with pytest.raises(OSError):
        spool.load(own)


def test_a_file_that_cannot_be_written_refuses_that_message_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from buzon.spool import queue

    monkeypatch.setattr(queue, "new_queue_id", lambda: "SEGMENTAAAAAAAAA")
    spool = Spool(tmp_path / "spool", fsync=False)
    planted = tmp_path / "planted"
    planted.write_bytes(b"")
    # The file's name is taken (by a link): O_EXCL refuses, nothing is written through it.
    (spool.queue / "SEGMENTAAAAAAAAA.AGA2BXHGAEKN6XQA.msg").symlink_to(planted)
    refused, stored = spool.store_many([
        (_envelope("AGA2BXHGAEKN6XQA"), b"big" * 20_000, HEAD),
        (_envelope("AGA2BXHGAEKN6XQB"), b"small"),
    ])
    assert isinstance(refused, FileExistsError)
    assert isinstance(stored, Location)
    assert planted.read_bytes() == b""
    assert spool.load(stored)[1] == b"small"
    spool.release(stored, work=False)
    assert not (spool.queue / "SEGMENTAAAAAAAAA").exists()


def test_a_spilled_body_with_a_head_is_copied_into_a_file_of_its_own(tmp_path: Path) -> None:
    from buzon.spool.body import store_spilled

    spool = Spool(tmp_path / "spool")
    rest = os.urandom(300_000)
    body = spool.spill("AGA2BXHGAEKN6XQA")
    body.write(rest[:100_000])
    body.write(rest[100_000:])
    body.head = b"Received: by mx\r\nSubject: big\r\n\r\n"
    whole = body.head + rest
    (own,) = store_spilled(spool, [(_envelope("AGA2BXHGAEKN6XQA"), body, HEAD)])
    assert isinstance(own, Location) and own.file_head == len(HEAD)
    assert spool.message_file(own).read_bytes() == HEAD + whole
    assert len((spool.queue / own.segment).read_bytes()) < 1000  # the record line only
    assert list(spool.incoming.iterdir()) == []  # the .body file is gone
    assert spool.load(own)[1] == whole
    restarted = Spool(tmp_path / "spool")
    assert restarted.recover() == [own]
    restarted.release(own, work=False)
    assert list(restarted.queue.iterdir()) == []
