"""The queue's one door: an id only once the message is on disk, and nothing queued on failure."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from buzon.spool import Envelope, Intake, Location, Spool, new_queue_id


def _envelope() -> Envelope:
    return Envelope(new_queue_id(), "a@example.org", ["b@example.org"], ["example.org/b"], helo="h")


def test_store_returns_the_id_after_the_record_is_queued(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    handed: list[tuple[Location, Envelope, bytes]] = []

    async def run() -> str:
        intake = Intake(spool, on_stored=lambda *a: handed.append(a))
        intake.start()
        try:
            envelope = _envelope()
            queue_id = await intake.store(envelope, b"hello\r\n")
            # Durable before the id is given: the record is already readable from queue/.
            assert spool.load(handed[0][0]) == (envelope, b"hello\r\n")
            return queue_id
        finally:
            await intake.stop()

    queue_id = asyncio.run(run())
    assert [(w.queue_id, e.queue_id, c) for w, e, c in handed] == [
        (queue_id, queue_id, b"hello\r\n")
    ]
    assert [w.queue_id for w in Spool(tmp_path / "spool").recover()] == [queue_id]


def test_a_failed_write_raises_and_hands_nothing_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "spool")
    handed: list[object] = []

    def full(items: object) -> list[OSError]:
        return [OSError(errno.ENOSPC, "No space left on device")] * len(items)  # type: ignore[arg-type]

    monkeypatch.setattr(spool, "store_many", full)

    async def run() -> None:
        intake = Intake(spool, on_stored=lambda *a: handed.append(a))
        intake.start()
        try:
            with pytest.raises(OSError) as info:
                await intake.store(_envelope(), b"x\r\n")
            assert info.value.errno == errno.ENOSPC
        finally:
            await intake.stop()

    asyncio.run(run())
    assert handed == [] and list(spool.queue.iterdir()) == []


def test_concurrent_stores_share_segments(tmp_path: Path) -> None:
    """Group commit: messages stored at the same moment go into fewer segment files."""
    spool = Spool(tmp_path / "spool")
    handed: list[Location] = []

    async def run() -> list[str]:
        intake = Intake(spool, on_stored=lambda where, *_: handed.append(where))
        intake.start()
        try:
            return list(await asyncio.gather(
                *(intake.store(_envelope(), b"m\r\n") for _ in range(50))
            ))
        finally:
            await intake.stop()

    ids = asyncio.run(run())
    assert sorted(w.queue_id for w in handed) == sorted(ids) and len(set(ids)) == 50
    assert len({w.segment for w in handed}) < 50
