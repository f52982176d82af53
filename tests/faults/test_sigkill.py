"""SIGKILL of the server in the middle of a load run, then a restart.

Injected: ``kill -9`` of ``python -m buzon`` (a real child process, fsync on)
1.5 s into 20 concurrent sessions × 600 pipelined 1 KB messages.
Checked: every message acknowledged with ``250 ... queued as <ID>`` before the
kill is in its Maildir exactly once after the restart, in a file named with its
``Q<ID>R0``, with the bytes sent. Messages whose final dot was written but
whose reply never came are "in doubt": they may be delivered (the server had
queued them, the 250 died with it), never twice. Nothing else appears.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from faults.kit import (
    Ledger,
    count_files,
    delivered,
    leftovers,
    queued_ids,
    reconcile,
    send_load,
    wait_until,
)
from helpers import child_pids, free_port, server_process

SESSIONS, PER_SESSION, SIZE = 20, 600, 1024
KILL_AFTER = 1.5  # seconds into the load; the first counter snapshot is at 1 s


@pytest.mark.slow
def test_sigkill_mid_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    mail, spool = data / "mail", data / "spool"
    ledger = Ledger()

    with server_process(data, port) as proc:

        async def load_then_kill() -> None:
            load = asyncio.create_task(send_load(
                port, ledger, sessions=SESSIONS, per_session=PER_SESSION, size=SIZE, prefix="k",
            ))
            await asyncio.sleep(KILL_AFTER)
            assert not load.done(), "the load finished before the kill: make it bigger"
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(load, 30)  # every session sees its connection die
            await asyncio.to_thread(proc.proc.wait, 10)

        asyncio.run(load_then_kill())
        assert proc.proc is not None and proc.proc.returncode == -signal.SIGKILL

    acked = len(ledger.acked)
    total = SESSIONS * PER_SESSION
    assert 0 < acked < total, ledger.codes
    assert set(ledger.codes) <= {"250 2.0.0", "(no reply)"}, ledger.codes
    # The counters are snapshotted every second: a crash loses at most the last second.
    saved = json.loads((data / "state.json").read_text())["counters"]["mails_sent"]
    assert 0 < saved <= acked + len(ledger.in_doubt)

    # What the crash left: acked messages only in the queue, half-written files.
    at_kill = {d.queue_id for d in delivered(mail)}
    only_queued = len(ledger.acked_ids - at_kill)
    assert ledger.acked_ids <= at_kill | set(queued_ids(spool)), "acked but not on disk"
    torn = len(leftovers(mail)) + len(list((spool / "incoming").iterdir()))

    # Restart on the same data directory: the queue drains into the Maildirs.
    with server_process(data, port) as proc:
        assert wait_until(lambda: not any((spool / "queue").iterdir()), 60), "queue never drained"
        assert wait_until(lambda: count_files(mail) >= acked, 30)
        # And the restarted server takes new mail.
        base = count_files(mail)
        after = Ledger()
        asyncio.run(send_load(port, after, sessions=2, per_session=10, size=SIZE, prefix="r"))
        assert len(after.acked) == 20, after.codes
        assert wait_until(lambda: count_files(mail) >= base + 20, 30)
        assert proc.terminate() == 0

    result = reconcile(ledger.merge(after), mail, allow_in_doubt=True)
    assert result.delivered == acked + result.in_doubt_delivered + 20
    assert not leftovers(mail), "half-written files left in tmp/"
    assert not any((spool / "incoming").iterdir()) and not any((spool / "corrupt").iterdir())
    print(
        f"\n[sigkill] sent {total}, acked before kill {acked}, in doubt {len(ledger.in_doubt)}, "
        f"acked but only queued at the kill {only_queued}, torn files at the kill {torn}, "
        f"delivered after restart {result.delivered - 20} "
        f"(acked {acked} + in-doubt {result.in_doubt_delivered}), "
        f"mails_sent saved {saved} (counter lag {acked - saved})"
    )


@pytest.mark.slow
def test_sigkill_of_one_worker_mid_load_loses_nothing_and_the_worker_is_replaced(
    tmp_path: Path,
) -> None:
    """``BUZON_WORKERS=2``: one worker is killed under load while the other serves on;
    the supervisor starts a new one, which delivers what the dead one had queued."""
    data, port = tmp_path / "data", free_port()
    mail, spools = data / "mail", [data / "spool", data / "spool" / "w1"]
    ledger = Ledger()

    with server_process(data, port, env={"BUZON_WORKERS": "2"}) as proc:
        assert proc.proc is not None
        assert wait_until(lambda: "buzon started, supervisor" in proc.log.read_text(), 30)
        workers = child_pids(proc.proc.pid)
        assert len(workers) == 2
        victim = min(workers)

        async def load_then_kill() -> None:
            load = asyncio.create_task(send_load(
                port, ledger, sessions=SESSIONS, per_session=PER_SESSION, size=SIZE, prefix="w",
            ))
            await asyncio.sleep(KILL_AFTER)
            assert not load.done(), "the load finished before the kill: make it bigger"
            os.kill(victim, signal.SIGKILL)
            await asyncio.wait_for(load, 120)

        asyncio.run(load_then_kill())
        assert wait_until(lambda: len(child_pids(proc.proc.pid) - {victim}) == 2, 30)
        acked, total = len(ledger.acked), SESSIONS * PER_SESSION
        assert 0 < acked < total, ledger.codes  # the victim's sessions were cut
        assert set(ledger.codes) <= {"250 2.0.0", "(no reply)"}, ledger.codes
        assert wait_until(
            lambda: not any(any((s / "queue").iterdir()) for s in spools)
            and count_files(mail) >= acked,
            60,
        ), "the queue never drained"
        assert proc.terminate() == 0

    result = reconcile(ledger, mail, allow_in_doubt=True)
    assert result.delivered == acked + result.in_doubt_delivered
    assert not leftovers(mail), "half-written files left in tmp/"
    print(
        f"\n[sigkill one of 2 workers] sent {total}, acked {acked}, in doubt "
        f"{len(ledger.in_doubt)}, delivered {result.delivered} "
        f"(acked {acked} + in-doubt {result.in_doubt_delivered})"
    )
