"""Finding 3 (issue 11), queue: a corrupt queue record is moved aside, counted and logged.

The record codec (``spool/record.py``) already refuses a bad record and the
spool moves its segment to ``corrupt/``. What was missing: nobody could tell.
Now every segment moved aside is logged at ERROR with its name and the first
fault, and counted in ``spool_quarantined`` (kept in ``state.json`` with the
other internal counters); the good records before the damage are delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import RunningServer, maildir_files, settings_for, wait_for

from buzon.spool.record import Envelope, encode


def _record(queue_id: str, rcpt: str, body: bytes) -> bytes:
    envelope = Envelope(queue_id, "a@example.org", [f"{rcpt}@example.org"], [f"example.org/{rcpt}"],
                        peer="127.0.0.1:1", received=1_700_000_000, size=len(body))
    return encode(envelope) + body


def test_corrupt_segments_are_counted_and_logged(
    make_server: Callable[..., RunningServer], tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    queue = settings_for(tmp_path).data_dir / "spool" / "queue"
    queue.mkdir(parents=True)
    good = _record("AGRCOAAAAAAAAAAA", "kept", b"Subject: good\r\n\r\nfine\r\n")
    # A planted record naming a path outside the spool as its queue id.
    forged = good.replace(b'"AGRCOAAAAAAAAAAA"', b'"../../../etc/x12"')
    (queue / "AGRCOAAAAAAAAAAB").write_bytes(good + forged)  # one good, then damage
    (queue / "AGRCOAAAAAAAAAAC").write_bytes(b"BUZON1 {not json}\n")  # nothing good

    with caplog.at_level(logging.ERROR, logger="buzon.spool"):
        server = make_server()
        assert wait_for(lambda: len(maildir_files(server.mail_root, "kept")) == 1)
        corrupt = server.settings.data_dir / "spool" / "corrupt"
        assert wait_for(lambda: len(list(corrupt.iterdir())) == 2)
        assert wait_for(lambda: server.server.counters.spool_quarantined == 2)
    lines = [r.getMessage() for r in caplog.records if "moved to corrupt/" in r.getMessage()]
    assert len(lines) == 2, lines
    assert any("AGRCOAAAAAAAAAAB" in ln and "queue_id" in ln for ln in lines), lines
    assert any("AGRCOAAAAAAAAAAC" in ln and "BadJson" in ln for ln in lines), lines
    assert not list(queue.iterdir())
