"""Disk full: the spool and the Maildirs on a small tmpfs, filled by the clients.

Injected: the data directory (spool, Maildirs, state) is a 2 MB tmpfs; four
sessions send 16 KB messages until the queue writes fail with ENOSPC. Then
space comes back, either by growing the tmpfs (``mount -o remount,size=20m``)
or by deleting a filler file that took most of a 4 MB tmpfs.

Checked while full: refusals are ``452 4.3.1`` (or ``451 4.3.0``), never 5xx;
every acked message is in a Maildir or in a queue segment; every queue segment
parses whole; nothing lingers in ``incoming/``; every delivered file carries an
acked id and the exact bytes sent. After recovery: new mail is accepted and
every acked message is delivered exactly once; no half-written file anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from faults.kit import (
    Ledger,
    Message,
    delivered,
    leftovers,
    queued_ids,
    reconcile,
    remount,
    send_load,
    tmpfs,
)
from helpers import RunningServer

SIZE = 16 * 1024
TEMPORARY = {"250 2.0.0", "452 4.3.1", "451 4.3.0"}


async def _fill(port: int, ledger: Ledger, refusals: int) -> None:
    """Send until ``refusals`` messages were refused (or 4 x 100 were sent)."""
    stop = asyncio.Event()
    record = ledger.record

    def record_and_watch(message: Message, reply: str | None) -> None:
        record(message, reply)
        if len(ledger.refused) >= refusals:
            stop.set()  # the sessions check it before their next message

    ledger.record = record_and_watch  # type: ignore[method-assign]
    try:
        await send_load(port, ledger, sessions=4, per_session=100, size=SIZE, prefix="f",
                        mailboxes=4, stop=stop)
    finally:
        del ledger.record  # the class's method again


@pytest.mark.slow
@pytest.mark.parametrize("recovery", ["remount-bigger", "delete-filler"])
def test_disk_full_refuses_temporarily_and_recovers(
    tmp_path: Path, make_server: Callable[..., RunningServer], recovery: str,
) -> None:
    disk = tmp_path / "disk"
    with tmpfs(disk, "2m" if recovery == "remount-bigger" else "4m"):
        filler = disk / "filler"
        if recovery == "delete-filler":
            filler.write_bytes(b"\0" * (2 << 20))  # leaves about 2 MB for Buzón
        server = make_server(data_dir=disk)
        try:
            mail, spool = server.mail_root, disk / "spool"
            ledger = Ledger()
            asyncio.run(_fill(server.port, ledger, refusals=8))

            # --- while full --------------------------------------------------------------
            assert set(ledger.codes) <= TEMPORARY, f"not only 250/452/451: {ledger.codes}"
            assert ledger.codes["452 4.3.1"] >= 1, ledger.codes
            assert len(ledger.acked) >= 20, ledger.codes
            assert not ledger.in_doubt and not ledger.errors, ledger.errors
            queued = set(queued_ids(spool))  # every segment parses whole
            assert not any((spool / "incoming").iterdir()), "half-written queue file left"
            full = reconcile(ledger, mail, complete=False)  # files there are whole and right
            on_disk = {d.queue_id for d in delivered(mail)} | queued
            lost = ledger.acked_ids - on_disk
            assert not lost, f"acked but neither queued nor delivered: {sorted(lost)[:5]}"
            # Refused while full means refused: none of those is queued.
            refused_ids = {r.rsplit(" ", 1)[-1] for r, _ in ledger.refused.values()}
            assert not refused_ids & on_disk

            # --- space comes back ------------------------------------------------------------
            if recovery == "remount-bigger":
                remount(disk, "size=20m")
            else:
                filler.unlink()
            after = Ledger()
            asyncio.run(send_load(server.port, after, sessions=2, per_session=10, size=SIZE,
                                  prefix="g", mailboxes=4))
            assert after.codes == {"250 2.0.0": 20}, after.codes
            server.wait_idle(60)

            both = ledger.merge(after)
            result = reconcile(both, mail)
            assert result.delivered == len(both.acked)
            assert not leftovers(mail), "half-written files left in a tmp/"
            for sub in ("queue", "incoming", "corrupt"):
                assert not any((spool / sub).iterdir()), f"spool/{sub} not empty"
            print(f"\n[disk-full/{recovery}] replies while filling {dict(ledger.codes)}; "
                  f"delivered while full {full.delivered}; after recovery "
                  f"acked {result.acked} = delivered {result.delivered}")
        finally:
            server.stop()  # before the unmount
