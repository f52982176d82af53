"""``buzon-load`` run as a user runs it, against a real in-process server."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable

from helpers import RunningServer


def _load(*args: str, nofile: int | None = None) -> dict:
    def lower_limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    done = subprocess.run(
        [sys.executable, "-m", "buzon.loadgen", "--json", *args],
        capture_output=True, text=True, timeout=120, check=False, preexec_fn=lower_limit,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_send_waits_until_every_message_is_in_the_maildirs(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    result = _load(
        "--port", str(server.port), "--sessions", "5", "--messages", "40", "--rcpts", "2",
        "--mailboxes", "7", "--pipelining", "--maildir", str(server.mail_root),
    )
    assert (result["ok"], result["errors"], result["delivered"]) == (40, 0, 80)
    assert result["p50_ms"] is not None and result["p99_ms"] >= result["p50_ms"]
    assert server.server.counters.mails_sent == 40


def test_a_hold_beyond_the_file_limit_is_split_over_processes(
    make_server: Callable[..., RunningServer],
) -> None:
    # 1,000 sessions with a 600-file limit: one process cannot hold them.
    server = make_server()
    result = _load("--port", str(server.port), "--hold", "1000", "--hold-for", "0.5",
                   nofile=600)
    assert (result["sessions"], result["ok"], result["errors"]) == (1000, 1000, 0)
    # every session was opened and answered NOOP (the server counted each one)
    assert server.server.counters.historic_connections >= 1000
