"""Read-only file systems: the mail root, then the spool.

Mail root read-only (``BUZON_MAIL_ROOT`` on a tmpfs remounted ``ro``, the data
directory elsewhere): the queue is fine, so mail is still accepted with 250;
deliveries fail with EROFS and are deferred, not dropped or bounced; once the
tmpfs is writable again everything is delivered exactly once.

Spool read-only (the data directory on a tmpfs remounted ``ro`` after start):
nothing can be queued, so every DATA is answered 4xx (temporary: the client
keeps the message and retries), never 5xx and never 250; after ``remount,rw``
mail flows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults.kit import (
    Ledger,
    count_files,
    leftovers,
    queued_ids,
    reconcile,
    remount,
    send_load,
    tmpfs,
)
from helpers import RunningServer, wait_for


class _Deferrals(logging.Handler):
    """Counts the delivery pipeline's "delivery of <id> deferred: ..." warnings per queue id."""

    def __init__(self, seen: Counter[str]) -> None:
        super().__init__(logging.WARNING)
        self.seen = seen

    def emit(self, record: logging.LogRecord) -> None:
        words = record.getMessage().split()
        if words[:2] == ["delivery", "of"] and len(words) > 3 and words[3] == "deferred:":
            self.seen[words[2]] += 1


@contextlib.contextmanager
def _deferrals(seen: Counter[str]) -> Iterator[None]:
    handler, logger = _Deferrals(seen), logging.getLogger("buzon")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _saved_mails(data_dir: Path) -> int | None:
    """``mails_sent`` in the metrics state file, or None before the first save."""
    try:
        return int(json.loads((data_dir / "state.json").read_text())["counters"]["mails_sent"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_read_only_mail_root_defers_deliveries_then_delivers_once(
    tmp_path: Path, make_server: Callable[..., RunningServer],
) -> None:
    root = tmp_path / "mailroot"
    deferred = Counter[str]()
    with tmpfs(root, "20m"), _deferrals(deferred):
        server = make_server(mail_root=root)
        try:
            spool = server.settings.data_dir / "spool"
            before = Ledger()
            asyncio.run(send_load(server.port, before, sessions=4, per_session=5, size=2048,
                                  prefix="w", mailboxes=3))
            server.wait_idle(30)  # nothing in flight (remount retries while a file is open)
            assert count_files(root) == 20

            remount(root, "ro")
            during = Ledger()
            asyncio.run(send_load(server.port, during, sessions=5, per_session=6, size=2048,
                                  prefix="r", mailboxes=6))  # 3 mailboxes are new: mkdir fails too
            assert during.codes == {"250 2.0.0": 30}, during.codes
            # Every message has failed at least twice (attempts at 0, 0.1 s, 0.3 s...).
            assert wait_for(lambda: all(deferred[i] >= 2 for i in during.acked_ids)), deferred
            assert count_files(root) == 20, "delivered onto a read-only file system?"
            assert server.server.delivery is not None and server.server.delivery.pending == 30
            assert set(queued_ids(spool)) >= during.acked_ids, "a deferred message left the queue"

            remount(root, "rw")
            server.wait_idle(30)
            both = before.merge(during)
            result = reconcile(both, root)
            assert result.delivered == 50
            assert not leftovers(root)
            assert not any((spool / "queue").iterdir())
            print(f"\n[ro-mail-root] acked {result.acked} (30 while read-only) "
                  f"= delivered {result.delivered}")
        finally:
            server.stop()


@pytest.mark.slow
def test_read_only_spool_answers_4xx_and_recovers(
    tmp_path: Path, make_server: Callable[..., RunningServer],
) -> None:
    data = tmp_path / "data"
    with tmpfs(data, "20m"):
        server = make_server(data_dir=data, mail_root=tmp_path / "mail")
        try:
            before = Ledger()
            asyncio.run(send_load(server.port, before, sessions=2, per_session=5, size=2048,
                                  prefix="a"))
            server.wait_idle(30)

            remount(data, "ro")
            during = Ledger()
            asyncio.run(send_load(server.port, during, sessions=4, per_session=5, size=2048,
                                  prefix="b"))
            assert not during.acked, during.codes
            assert all(code.startswith("4") for code in during.codes), during.codes
            assert during.codes == {"451 4.3.0": 20}, during.codes

            remount(data, "rw")
            after = Ledger()
            asyncio.run(send_load(server.port, after, sessions=2, per_session=5, size=2048,
                                  prefix="c"))
            assert after.codes == {"250 2.0.0": 10}, after.codes
            server.wait_idle(30)
            result = reconcile(before.merge(during).merge(after), tmp_path / "mail")
            assert result.delivered == 20 and result.refused == 20
            print(f"\n[ro-spool] while read-only: {dict(during.codes)}; "
                  f"acked {result.acked} = delivered {result.delivered}")
        finally:
            server.stop()


@pytest.mark.slow
def test_sigterm_with_a_read_only_spool_stops_cleanly(tmp_path: Path) -> None:
    from faults.kit import wait_until as _wait
    from helpers import free_port, server_process

    data = tmp_path / "data"
    with tmpfs(data, "20m"):
        with server_process(data, free_port(), env={"BUZON_MAIL_ROOT": str(tmp_path / "mail")}) as proc:
            ledger = Ledger()
            asyncio.run(send_load(proc.port, ledger, sessions=1, per_session=3, size=1024,
                                  prefix="t"))
            assert _wait(lambda: count_files(tmp_path / "mail") == 3, 15)
            # A metrics snapshot of these 3 happened; the next save will fail.
            assert wait_for(lambda: _saved_mails(data) == 3)
            remount(data, "ro")
            try:
                status = proc.terminate()
            finally:
                remount(data, "rw")
        log = proc.log.read_text()
        # Nothing acked is lost either way; the exit must say so.
        assert reconcile(ledger, tmp_path / "mail").delivered == 3
        assert "cannot start" not in log, log[-500:]
        assert status == 0
