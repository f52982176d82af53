"""Delivery by hard link of a message queued in a file of its own (delivery.writer).

Real spool, real Maildirs: the mailbox's file must be the very inode the queue
wrote (nothing written twice), hold what a copy would hold, be made once even
after a crash, and fall back to a copy where a link cannot reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from buzon.delivery.job import Job
from buzon.delivery.writer import LINK_MIN_SIZE, MaildirWriter
from buzon.spool.queue import Envelope, Location, Spool
from buzon.storage import maildir


def _envelope(queue_id: str, *recipients: str) -> Envelope:
    recipients = recipients or ("bob@example.org",)
    return Envelope(queue_id, "a@example.org", list(recipients),
                    [f"example.org/{r.split('@')[0]}" for r in recipients],
                    received=1764412800.0)


def _queue(spool: Spool, writer: MaildirWriter, envelope: Envelope, content: bytes) -> Location:
    head = writer.file_head(envelope, len(content))
    (where,) = spool.store_many([(envelope, content, head)])
    assert isinstance(where, Location)
    return where


def _delivered(root: Path, mailbox: str) -> list[Path]:
    new = root / mailbox / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Spool, MaildirWriter, Path]:
    spool = Spool(tmp_path / "data" / "spool")
    root = tmp_path / "data" / "mail"
    return spool, MaildirWriter(spool, root, hostname="mx"), root


def test_a_large_message_to_one_mailbox_is_linked_not_written_again(setup) -> None:  # type: ignore[no-untyped-def]
    spool, writer, root = setup
    content = b"Subject: big\r\n\r\n" + os.urandom(LINK_MIN_SIZE)
    envelope = _envelope("AGA2BXHGAEKN6XQA")
    where = _queue(spool, writer, envelope, content)
    assert where.file_head is not None
    queued = spool.message_file(where).stat()
    assert writer.deliver_batch([Job(where, envelope=envelope)]) == [None]
    (file,) = _delivered(root, "example.org/bob")
    assert file.stat().st_ino == queued.st_ino  # the queue's file itself
    assert file.stat().st_nlink == 1  # the queue's link was released
    assert file.read_bytes() == maildir.trace_headers(
        sender="a@example.org", recipient="bob@example.org") + content
    assert file.name == maildir.message_name(envelope.received, envelope.queue_id, 0, "mx")
    assert list(spool.queue.iterdir()) == []


def test_the_linked_file_is_what_a_written_copy_would_be(setup) -> None:  # type: ignore[no-untyped-def]
    spool, writer, root = setup
    content = b"Subject: same\r\n\r\n" + b"line\r\n" * 10_000
    linked = _envelope("AGA2BXHGAEKN6XQA")
    written = _envelope("AGA2BXHGAEKN6XQB", "bob@example.org", "carol@example.org")
    one = _queue(spool, writer, linked, content)
    two = _queue(spool, writer, written, content)
    assert one.file_head is not None and two.file_head is None  # two mailboxes: a copy each
    assert writer.deliver_batch([Job(one), Job(two)]) == [None, None]
    bodies = [p.read_bytes() for p in _delivered(root, "example.org/bob")]
    assert bodies[0] == bodies[1]
    assert len(_delivered(root, "example.org/carol")) == 1


@pytest.fixture
def other_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A mail root on another file system than the spool (/dev/shm, a tmpfs)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    root = shm / f"buzon-test-{os.getpid()}-{tmp_path.name}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_small_messages_and_unlinkable_mail_roots_are_queued_in_the_segment(
    setup, other_fs: Path  # type: ignore[no-untyped-def]
) -> None:
    spool, writer, _ = setup
    envelope = _envelope("AGA2BXHGAEKN6XQA")
    assert writer.file_head(envelope, LINK_MIN_SIZE - 1) is None
    assert writer.file_head(envelope, LINK_MIN_SIZE) is not None
    assert writer.file_head(_envelope("AGA2BXHGAEKN6XQA", "bob@example.org", "carol@example.org"),
                            LINK_MIN_SIZE) is None
    elsewhere = MaildirWriter(spool, other_fs, hostname="mx")
    assert elsewhere.file_head(envelope, 10 * LINK_MIN_SIZE) is None


def test_a_queued_file_the_mail_root_cannot_link_is_copied(setup, other_fs: Path) -> None:  # type: ignore[no-untyped-def]
    # Queued while the mail root was on the spool's file system; it moved since.
    spool, writer, _ = setup
    envelope = _envelope("AGA2BXHGAEKN6XQA")
    content = b"Subject: moved\r\n\r\n" + b"z" * LINK_MIN_SIZE
    where = _queue(spool, writer, envelope, content)
    assert where.file_head is not None
    moved = MaildirWriter(Spool(spool.root), other_fs, hostname="mx")
    assert moved.deliver_batch([Job(where, envelope=envelope)]) == [None]
    (file,) = _delivered(other_fs, "example.org/bob")
    assert file.read_bytes() == maildir.trace_headers(
        sender="a@example.org", recipient="bob@example.org") + content


def test_a_recovered_message_already_linked_is_not_delivered_twice(setup) -> None:  # type: ignore[no-untyped-def]
    spool, writer, root = setup
    envelope = _envelope("AGA2BXHGAEKN6XQA")
    where = _queue(spool, writer, envelope, b"x" * LINK_MIN_SIZE)
    # A crash after the link and before the release: the queue still holds the message.
    name = maildir.message_name(envelope.received, envelope.queue_id, 0, "mx")
    maildir.link_new(root, "example.org/bob", name, spool.message_file(where))
    restarted = Spool(spool.root)
    (recovered,) = restarted.recover()
    again = MaildirWriter(restarted, root, hostname="mx")
    assert again.deliver_batch([Job(recovered, check=True)]) == [None]
    assert len(_delivered(root, "example.org/bob")) == 1
    assert list(restarted.queue.iterdir()) == []


def test_a_recovered_record_whose_file_was_released_counts_as_delivered(setup) -> None:  # type: ignore[no-untyped-def]
    spool, writer, root = setup
    where = _queue(spool, writer, _envelope("AGA2BXHGAEKN6XQA"), b"x" * LINK_MIN_SIZE)
    spool.message_file(where).unlink()  # a crash between the file's removal and the segment's
    restarted = Spool(spool.root)
    (recovered,) = restarted.recover()
    assert MaildirWriter(restarted, root, hostname="mx").deliver_batch(
        [Job(recovered, check=True)]) == [None]
    assert list(restarted.queue.iterdir()) == []


def test_a_transformed_message_is_written_not_linked(setup) -> None:  # type: ignore[no-untyped-def]
    spool, writer, root = setup
    envelope = _envelope("AGA2BXHGAEKN6XQA")
    where = _queue(spool, writer, envelope, b"x" * LINK_MIN_SIZE)
    job = Job(where, envelope=envelope, content=b"Subject: transformed\r\n\r\nnew\r\n",
              transformed=True)
    assert writer.deliver_batch([job]) == [None]
    (file,) = _delivered(root, "example.org/bob")
    assert file.read_bytes().endswith(b"Subject: transformed\r\n\r\nnew\r\n")
    assert list(spool.queue.iterdir()) == []


def test_a_symlink_planted_as_the_queue_file_is_not_linked_into_the_mailbox(setup) -> None:  # type: ignore[no-untyped-def]
    spool, writer, root = setup
    envelope = _envelope("AGA2BXHGAEKN6XQA")
    where = _queue(spool, writer, envelope, b"x" * LINK_MIN_SIZE)
    path = spool.message_file(where)
    path.unlink()
    path.symlink_to("/etc/passwd")
    assert writer.deliver_batch([Job(where, envelope=envelope)]) == [None]  # done: set aside
    assert _delivered(root, "example.org/bob") == []
    assert (spool.corrupt / path.name).is_symlink()  # kept for a human, with its segment
    assert (spool.corrupt / where.segment).exists()
    assert list(spool.queue.iterdir()) == []


@pytest.mark.parametrize("damage", ["short", "long"])
@pytest.mark.parametrize("transformed", [False, True])
def test_a_queue_file_unlike_its_record_is_set_aside_not_delivered(
    setup, damage: str, transformed: bool  # type: ignore[no-untyped-def]
) -> None:
    # Cut short by a crash with BUZON_FSYNC=false, or grown by a hand edit: a link would
    # deliver it unread, and a transform's read must not lose it either.
    spool, writer, root = setup
    envelope = _envelope("AGA2BXHGAEKN6XQA")
    where = _queue(spool, writer, envelope, b"x" * LINK_MIN_SIZE)
    path = spool.message_file(where)
    if damage == "short":
        os.truncate(path, 10)
    else:
        with open(path, "ab") as handle:
            handle.write(b"extra")
    damaged = path.read_bytes()
    restarted = Spool(spool.root)
    (recovered,) = restarted.recover()
    job = Job(recovered, check=True, work=True, transformed=transformed)
    assert MaildirWriter(restarted, root, hostname="mx").deliver_batch([job]) == [None]
    assert _delivered(root, "example.org/bob") == []
    assert (restarted.corrupt / path.name).read_bytes() == damaged
    assert (restarted.corrupt / where.segment).exists()
    assert list(restarted.queue.iterdir()) == []


def test_a_fresh_queue_file_with_a_second_link_is_not_delivered(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool, writer, root = setup
    envelope = _envelope("AGA2BXHGAEKN6XQA")
    where = _queue(spool, writer, envelope, b"x" * LINK_MIN_SIZE)
    os.link(spool.message_file(where), tmp_path / "elsewhere")
    assert writer.deliver_batch([Job(where, envelope=envelope)]) == [None]
    assert _delivered(root, "example.org/bob") == []
    assert (spool.corrupt / spool.message_file(where).name).exists()


def _resident_pages(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "PAGES",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
@pytest.mark.parametrize("drop", [True, False])
def test_delivered_files_leave_the_page_cache_when_asked(tmp_path: Path, drop: bool) -> None:
    spool = Spool(tmp_path / "spool", drop_cache=drop)
    root = tmp_path / "mail"
    writer = MaildirWriter(spool, root, hostname="mx", drop_cache=drop)
    big = _queue(spool, writer, _envelope("AGA2BXHGAEKN6XQA"), b"x" * (4 * LINK_MIN_SIZE))
    carol = _envelope("AGA2BXHGAEKN6XQB", "carol@example.org")
    (copied,) = spool.store_many([(carol, b"y" * (4 * LINK_MIN_SIZE))])  # written, not linked
    assert big.file_head is not None and isinstance(copied, Location)
    assert writer.deliver_batch([Job(big), Job(copied)]) == [None, None]
    for mailbox in ("example.org/bob", "example.org/carol"):
        (file,) = _delivered(root, mailbox)
        assert (_resident_pages(file) == 0) is drop


def test_whether_the_queue_can_link_into_the_mail_root_is_tried_and_leaves_nothing(
    tmp_path: Path, other_fs: Path
) -> None:
    from buzon.fsutil import can_link

    queue, near = tmp_path / "queue", tmp_path / "mail"
    for folder in (queue, near, other_fs):
        folder.mkdir()
    assert can_link(queue, near) is True
    assert can_link(queue, other_fs) is False  # EXDEV, as between two Docker volumes
    assert [*queue.iterdir(), *near.iterdir(), *other_fs.iterdir()] == []
