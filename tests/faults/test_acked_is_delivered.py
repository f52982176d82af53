"""An accepted recipient must be deliverable: a 250 for RCPT and DATA promises delivery.

Regression test for a fault found by the mailbox-name fuzz property
(``tests/fuzz/test_syntax_fuzz.py``): ``mailbox_name('"a@b"@x')`` is ``a@b``,
but delivery re-checked the stored name by parsing it again as an address
(``mailbox_name('a@b') == 'a'``), refused it with ``UnsafePath``, and deferred
the message again and again: acked with 250, never delivered.

The server may refuse such a recipient at RCPT (5xx) or deliver it; it must
never accept it and then not deliver it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from faults.kit import Ledger, Message, count_files, reconcile, wait_until
from helpers import LineClient, RunningServer, code


@pytest.mark.parametrize(
    ("address", "local"), [('"a@b"@example.org', "a@b"), ('"\\"x\\""@example.org', '"x"')],
)
def test_a_recipient_acked_at_rcpt_and_data_is_delivered(
    tmp_path: Path, make_server: Callable[..., RunningServer], address: str, local: str,
) -> None:
    server = make_server()
    body = b"Subject: quoted\r\nX-Fault-Tag: quoted-1\r\n\r\nhello\r\n"
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.cmd("MAIL FROM:<a@example.org>")
        rcpt = c.cmd(f"RCPT TO:<{address}>")
        if rcpt.startswith("5"):
            return  # refused up front: a fine answer
        assert code(rcpt) == "250 2.1.5"
        assert code(c.cmd("DATA")) == "354"
        final = c.cmd(body.decode() + ".")
    assert code(final) == "250 2.0.0"
    ledger = Ledger()
    ledger.record(Message("quoted-1", local, body), final)
    pending = server.server.delivery
    assert wait_until(lambda: count_files(server.mail_root) == 1, 3), (
        f"acked {final.rsplit(' ', 1)[1]} but not delivered; "
        f"{pending.pending if pending else '?'} message(s) deferred")
    assert reconcile(ledger, server.mail_root).delivered == 1
