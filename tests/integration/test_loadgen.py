"""``buzon-load`` run as a user runs it, against a real in-process server."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable

import pytest
from helpers import RunningServer

from buzon.loadgen import Bodies, SizePicker, parse_mix


def _load(*args: str, nofile: int | None = None, status: int = 0) -> dict:
    def lower_limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    done = subprocess.run(
        [sys.executable, "-m", "buzon.loadgen", "--json", *args],
        capture_output=True, text=True, timeout=120, check=False, preexec_fn=lower_limit,
    )
    assert done.returncode == status, done.stdout + done.stderr
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
    assert sum(result["timeline"]) == 40 and result["refused"] == {}


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


def test_duration_sends_until_the_deadline_and_counts_each_second(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    started = server.server.counters.mails_sent
    result = _load("--port", str(server.port), "--sessions", "4", "--duration", "2",
                   "--maildir", str(server.mail_root))
    assert result["duration"] == 2.0 and result["errors"] == 0
    # 2 s and the messages in flight at the deadline: a bucket for each second, and
    # at most a third one for what was finished after it
    assert 2.0 <= result["seconds"] < 4.0, result["seconds"]
    assert len(result["timeline"]) in (2, 3)
    assert result["timeline"][0] > 0 and result["timeline"][1] > 0, result["timeline"]
    assert sum(result["timeline"]) == result["ok"] == result["delivered"]
    assert server.server.counters.mails_sent - started == result["ok"]


def test_mix_draws_each_size_by_weight_the_same_way_for_one_seed(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    args = ["--port", str(server.port), "--sessions", "4", "--messages", "40",
            "--mix", "1024:50,65536:50", "--seed", "7", "--maildir", str(server.mail_root)]
    first = _load(*args)
    assert (first["ok"], first["errors"], first["delivered"]) == (40, 0, 40)
    assert set(first["by_size"]) == {"1024", "65536"}, first["by_size"]
    # the 64 KB messages really were 64 KB: delivered files, trace headers added
    files = [f for f in server.mail_root.rglob("new/*")]
    assert len(files) == 40
    big = [f for f in files if f.stat().st_size >= 65536]
    assert all(f.stat().st_size < 66536 for f in big)
    assert all(f.stat().st_size < 2048 for f in files if f not in big)
    assert len(big) == first["by_size"]["65536"]
    assert _load(*args)["by_size"] == first["by_size"]


def test_mix_sequences_bodies_and_errors() -> None:
    mix = parse_mix("4096:70, 102400:25,2097152:5")
    assert mix == [(4096, 70.0), (102400, 25.0), (2097152, 5.0)]
    a, b = SizePicker(mix, seed=5), SizePicker(mix, seed=5)
    drawn = [a.next() for _ in range(2000)]
    assert drawn == [b.next() for _ in range(2000)]
    assert 0.6 < drawn.count(4096) / 2000 < 0.8 and 0.02 < drawn.count(2097152) / 2000 < 0.08
    bodies = Bodies()
    for size in (1024, 2097152):
        head, tail = bodies.parts(size, 12)
        assert len(head) + len(tail) == size + 3 and tail.endswith(b"\r\n.\r\n")
        assert bodies.parts(size, 99_999)[1] is tail  # one tail per size, cached
        assert bodies.parts(size, 99_999)[0] != head
    for bad in ("4096", "0:5", "4096:-1", "4096:0", "x:1"):
        with pytest.raises(ValueError):
            parse_mix(bad)


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_4xx_is_a_deferral_counted_by_code_not_an_error(
    make_server: Callable[..., RunningServer], pipelining: bool,
) -> None:
    server = make_server(max_recipients=2)
    extra = ["--pipelining"] if pipelining else []
    args = ["--port", str(server.port), "--sessions", "2", "--messages", "10", "--pause",
            "0.01", "--maildir", str(server.mail_root), *extra]
    refused = _load(*args, "--rcpts", "3")
    assert (refused["ok"], refused["errors"], refused["refused"]) == (0, 0, {"452": 10})
    assert refused["first_refusals"] == ["452 4.5.3 Error: too many recipients"]
    assert server.server.counters.mails_sent == 0 and refused["delivered"] == 0
    # within the limit the same run is accepted: the refusal was the limit's
    accepted = _load(*args, "--rcpts", "2")
    assert (accepted["ok"], accepted["errors"], accepted["refused"]) == (10, 0, {})


def test_a_421_closes_the_session_and_the_next_one_goes_on(
    make_server: Callable[..., RunningServer],
) -> None:
    # the server ends each session after 5 messages with 421 4.7.0 at the next MAIL
    server = make_server(max_messages_per_session=5)
    result = _load("--port", str(server.port), "--sessions", "2", "--messages", "30",
                   "--pause", "0.01", "--maildir", str(server.mail_root))
    assert result["errors"] == 0 and set(result["refused"]) == {"421"}
    assert result["ok"] + result["refused"]["421"] == 30 and result["ok"] >= 20
    assert result["delivered"] == result["ok"] == server.server.counters.mails_sent
