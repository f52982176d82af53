"""DeliveryPipeline: transform files in work/ are removed only where they can exist.

A message that never went through the transform stage has no ``work/<id>.in``
or ``.out``; releasing it must not spend two failing ``unlink`` calls looking.
A transformed or recovered one must still have its files removed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from buzon.delivery import DeliveryPipeline
from buzon.metrics.counters import Counters
from buzon.spool import Envelope, Spool, new_queue_id
from buzon.spool import queue as queue_module


class _Upper:
    async def run(self, src: Path, dst: Path) -> None:
        dst.write_bytes(src.read_bytes().upper())


def _envelope() -> Envelope:
    return Envelope(new_queue_id(), "a@example.org", ["bo@example.org"], ["example.org/bo"], helo="h")


def _delivered(mail: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((mail / "example.org" / "bo" / "new").iterdir())]


async def _run(worker: DeliveryPipeline, recovered: list[object] | None = None,
               submit: tuple[object, Envelope, bytes] | None = None) -> None:
    worker.start(recovered or [])  # type: ignore[arg-type]
    if submit is not None:
        worker.submit(*submit)  # type: ignore[arg-type]
    await asyncio.wait_for(worker.wait_idle(), 10)
    await worker.stop()


def test_a_fresh_message_does_not_look_for_work_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spool = Spool(tmp_path / "spool")
    envelope, body = _envelope(), b"Subject: s\r\n\r\nhi\r\n"
    where = spool.store(envelope, body)
    unlinked: list[Path] = []
    real = queue_module.unlink_quietly
    monkeypatch.setattr(queue_module, "unlink_quietly", lambda p: unlinked.append(p) or real(p))
    worker = DeliveryPipeline(spool, tmp_path / "mail", hostname="mx", counters=Counters())
    asyncio.run(_run(worker, submit=(where, envelope, body)))
    assert _delivered(tmp_path / "mail")[0].endswith(body)
    assert [p.parent.name for p in unlinked] == ["queue"]  # the segment, nothing in work/
    assert not any(spool.queue.iterdir())


def test_a_transformed_message_leaves_no_work_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    envelope, body = _envelope(), b"Subject: s\r\n\r\nhi\r\n"
    where = spool.store(envelope, body)
    worker = DeliveryPipeline(
        spool, tmp_path / "mail", hostname="mx", counters=Counters(),
        transform=_Upper(), switch=SimpleNamespace(enabled=True),
    )
    asyncio.run(_run(worker, submit=(where, envelope, body)))
    assert _delivered(tmp_path / "mail")[0].endswith(b"SUBJECT: S\r\n\r\nHI\r\n")
    assert list(spool.work.iterdir()) == []


def test_a_recovered_message_has_its_old_work_files_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    envelope, body = _envelope(), b"Subject: s\r\n\r\nhi\r\n"
    spool.store(envelope, body)
    spool.work_path(envelope.queue_id, "in").write_bytes(body)  # a crash mid-transform
    restarted = Spool(tmp_path / "spool")
    recovered = restarted.recover()
    assert [r.queue_id for r in recovered] == [envelope.queue_id]
    worker = DeliveryPipeline(restarted, tmp_path / "mail", hostname="mx", counters=Counters())
    asyncio.run(_run(worker, recovered=recovered))  # type: ignore[arg-type]
    assert len(_delivered(tmp_path / "mail")) == 1
    assert list(spool.work.iterdir()) == []
