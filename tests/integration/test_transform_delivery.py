"""Transforms inside the real server: tac byte-exact, the monitor switch, chains, failures.

The transform runner and sidecar have their own tests; these check what the
delivery worker does with them: which bytes reach the Maildir, when, and what
the failure policy does when a transform will not work.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from helpers import (
    LineClient,
    RunningServer,
    _tac,
    body_of,
    code,
    free_port,
    maildir_files,
    server_process,
    wait_for,
)

from buzon.monitor import Command
from buzon.monitor.wire import Request, decode_response, encode_request

MESSAGE = b"Subject: order\r\nX-Line: 1\r\n\r\nfirst\r\nsecond\r\nthird\r\n"
REVERSED = b"third\r\nsecond\r\nfirst\r\n\r\nX-Line: 1\r\nSubject: order\r\n"
# What follows REVERSED once tac has run: the fields Buzón added when queueing, reversed.
_TAC_TAIL = re.compile(
    rb"Message-ID: <[A-Z2-7]{16}@mx\.test>\r\nDate: [^\r\n]+\r\n\t[^\r\n]+\r\n"
    rb"\tby mx\.test \(Buzon\) with ESMTP id [A-Z2-7]{16};?\r\nReceived: from me \([^\r\n]+\r\n\Z"
)


def _send(port: int, rcpts: list[str], data: bytes = MESSAGE) -> str:
    with LineClient(port) as c:
        c.reply()
        c.cmd("EHLO me")
        c.cmd("MAIL FROM:<a@example.org>")
        for rcpt in rcpts:
            assert code(c.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
        c.cmd("DATA")
        c.send(data)
        reply = c.cmd(".")
        assert code(reply) == "250 2.0.0", reply
        return reply.rsplit(" ", 1)[1]


def _switch(monitor_port: int, command: Command) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", monitor_port))
        sock.send(encode_request(Request(request_id=7, token=b"t0k3n-ok", command=command)))
        response = decode_response(sock.recv(64))
    assert response.status == 0, response
    return bool(response.data[0])


def test_local_tac_reverses_the_lines_byte_exact(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(transform="tac")
    _send(server.port, ["rev@example.org", "rev2@example.org"])
    server.wait_idle()
    for box in ("rev", "rev2"):
        (path,) = maildir_files(server.mail_root, box)
        data = path.read_bytes()
        assert _TAC_TAIL.search(data[data.index(REVERSED) + len(REVERSED):]), data
        assert body_of(path, tac=True) == REVERSED
        # Received: was added before the transform: tac moved it to the end.
        assert path.read_bytes().rsplit(b"\r\n", 2)[1].startswith(b"Received: from me (")
    assert server.server.counters.transform_ok == 1  # once per message, not per recipient


def test_the_monitor_switch_turns_transforms_off_and_on(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(transform="tac")
    assert _switch(server.monitor_port, Command.TRANSFORM_DISABLE) is False
    _send(server.port, ["off@example.org"])
    server.wait_idle()
    assert _switch(server.monitor_port, Command.TRANSFORM_ENABLE) is True
    _send(server.port, ["on@example.org"])
    server.wait_idle()
    assert body_of(maildir_files(server.mail_root, "off")[0]) == MESSAGE
    assert body_of(maildir_files(server.mail_root, "on")[0], tac=True) == REVERSED


def test_a_chain_of_two_runs_in_order(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(transform="tac | tr a-z A-Z")
    _send(server.port, ["chain@example.org"])
    server.wait_idle()
    data = maildir_files(server.mail_root, "chain")[0].read_bytes()
    queued = _tac(data.split(b"\r\n", 2)[2])  # after Return-Path and Delivered-To
    assert queued.startswith(b"RECEIVED: FROM ME (LOCALHOST [127.0.0.1])\r\n")
    assert queued.endswith(MESSAGE.upper()) and REVERSED.upper() in data


def test_a_failing_transform_is_retried_then_the_original_delivered_with_a_header(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        transform="false", transform_retry_window=1.0, retry_backoff=0.1,
        transform_failure_policy="deliver",
    )
    queue_id = _send(server.port, ["policy@example.org"])
    # A second attempt ran (about 0.1 s in, well inside the 1 s window): not delivered yet.
    assert wait_for(lambda: server.server.counters.transform_failed >= 2)
    assert maildir_files(server.mail_root, "policy") == []  # still retrying
    server.wait_idle()
    (path,) = maildir_files(server.mail_root, "policy")
    data = body_of(path)
    assert data.startswith(b"X-Buzon-Transform: failed; kind=exit;")
    assert data.split(b"\r\n", 1)[1] == MESSAGE
    assert f"Q{queue_id}R0" in path.name
    counters = server.server.counters
    assert counters.transform_failed >= 2 and counters.transform_retried >= 1
    assert counters.transform_fallback == 1 and counters.transform_ok == 0


def test_a_slow_transform_times_out_and_counts_as_a_failure(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        transform="sleep 5", transform_timeout=0.3, transform_retry_window=0.5, retry_backoff=0.1,
        transform_failure_policy="deliver",
    )
    _send(server.port, ["slow@example.org"])
    server.wait_idle()
    (path,) = maildir_files(server.mail_root, "slow")
    assert body_of(path).startswith(b"X-Buzon-Transform: failed; kind=timeout;")


def test_hold_keeps_the_message_until_the_operator_acts(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        transform="false", transform_retry_window=0.2, transform_failure_policy="hold",
        retry_backoff=0.1,
    )
    _send(server.port, ["held@example.org"])
    # Attempts at about 0, 0.1, 0.3 and 0.7 s: the third is past the 0.2 s window, and
    # a fourth proves the policy held the message then instead of delivering it.
    assert wait_for(lambda: server.server.counters.transform_failed >= 4)
    assert maildir_files(server.mail_root, "held") == []
    assert server.server.counters.transform_fallback == 0
    # The operator switches transforms off: the held message goes out untouched.
    _switch(server.monitor_port, Command.TRANSFORM_DISABLE)
    assert wait_for(lambda: len(maildir_files(server.mail_root, "held")) == 1, timeout=30)
    assert body_of(maildir_files(server.mail_root, "held")[0]) == MESSAGE


def test_sigkill_during_a_transform_delivers_once_after_restart(tmp_path: Path) -> None:
    """Deterministic crash recovery: the message is provably still queued when killed."""
    data, port = tmp_path / "data", free_port()
    with server_process(data, port, "-T", "sleep 60") as proc:
        queue_id = _send(port, ["crash1@example.org", "crash2@example.org"])
        proc.kill()
    assert maildir_files(data / "mail", "crash1") == []
    with server_process(data, port, env={"BUZON_TRANSFORM_ENABLED": "false"}) as proc:
        # The switch was never used, so the setting decides: off, deliver as is.
        assert wait_for(lambda: len(maildir_files(data / "mail", "crash2")) == 1)
        assert wait_for(lambda: not any((data / "spool" / "queue").iterdir()))
        proc.terminate()
    for box in ("crash1", "crash2"):
        (path,) = maildir_files(data / "mail", box)
        assert f"Q{queue_id}R" in path.name and body_of(path) == MESSAGE


def test_a_failure_that_waiting_cannot_fix_goes_to_the_policy_at_once(
    make_server: Callable[..., RunningServer],
) -> None:
    """Oversized output is not retried for the whole window (10 minutes here)."""
    server = make_server(
        transform="yes", max_message_size=4096, transform_retry_window=600,
        transform_failure_policy="deliver",
    )
    _send(server.port, ["big@example.org"])
    server.wait_idle()
    (path,) = maildir_files(server.mail_root, "big")
    data = body_of(path)
    assert data.startswith(b"X-Buzon-Transform: failed; kind=oversize; ")
    assert not data.startswith(b"X-Buzon-Transform: failed; kind=oversize; oversize:")
    assert data.split(b"\r\n", 1)[1] == MESSAGE
    assert server.server.counters.transform_retried == 0


def test_upgrading_from_the_spool_work_layout_loses_nothing_queued(tmp_path: Path) -> None:
    """Old layout: work files under spool/work. They are dropped; the queue is delivered."""
    from buzon.spool import Envelope, Spool, new_queue_id

    data, port = tmp_path / "data", free_port()
    old = Spool(data / "spool")  # the old layout: its work area is spool/work
    envelope = Envelope(new_queue_id(), "a@example.org", ["up@example.org"], ["example.org/up"], helo="h")
    old.store(envelope, MESSAGE)
    old.work_path(envelope.queue_id, "out").write_bytes(b"Subject: stale\r\n\r\nold\r\n")
    stray = data / "work" / "w0" / "GONE.out"  # a leftover of a message no longer queued
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    with server_process(data, port, "-T", "tac", env={"BUZON_TRANSFORM_ENABLED": "true"}) as proc:
        assert wait_for(lambda: len(maildir_files(data / "mail", "up")) == 1)
        assert wait_for(lambda: not any((data / "spool" / "queue").iterdir()))
        proc.terminate()
    (path,) = maildir_files(data / "mail", "up")
    # Transformed again, not the stale output. Queued before Received: was added at
    # intake, so it has none (a message recovered from an older queue).
    assert path.read_bytes().split(b"\r\n", 2)[2] == REVERSED
    assert not (data / "spool" / "work").exists()
    assert not stray.exists()
    assert list((data / "work" / "w0").iterdir()) == []
