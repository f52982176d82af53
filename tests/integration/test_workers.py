"""Several SMTP worker processes under one supervisor (``BUZON_WORKERS``), run for real.

Each test starts ``python -m buzon`` with ``BUZON_WORKERS`` > 1 as a child
process, sends mail over real sockets, reads the counters through the real UDP
monitor and looks at the Maildirs and at the worker processes (their pids, via
/proc) to check what an operator relies on: connections spread over the
workers, exact totals at once, the transform switch reaching every worker, a
killed worker replaced with its queue delivered, and a clean stop.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ServerProcess,
    body_of,
    child_pids,
    free_port,
    maildir_files,
    server_process,
    spool_drained,
    tac_sidecar,
    wait_for,
)

from buzon.metrics.shared import SharedCounters
from buzon.monitor.wire import Command, Request, Status, decode_response, encode_request

TOKEN = b"t0k3n-ok"  # ServerProcess's token


def ask(port: int, command: Command) -> Any:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.send(encode_request(Request(0x5157, TOKEN, command)))
        response = decode_response(sock.recv(64))
    assert response.status is Status.OK, response
    return response


def started(server: Any) -> bool:
    return "buzon started, supervisor" in server.log.read_text()


def send(port: int, n: int, rcpt: str = "bob@example.org", body: str = "hello") -> None:
    for i in range(n):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("alice@example.org", [rcpt], f"{body} {i}\r\n")


@pytest.fixture
def workers_env() -> dict[str, str]:
    return {"BUZON_WORKERS": "3"}


def test_connections_spread_over_workers_and_the_monitor_counts_them_all_at_once(
    tmp_path: Path, workers_env: dict[str, str]
) -> None:
    with server_process(tmp_path / "data", free_port(), env=workers_env) as server:
        assert wait_for(lambda: started(server))
        base = ask(server.monitor_port, Command.HISTORIC_CONNECTIONS).u32  # the start probe
        assert len(child_pids(server.proc.pid)) == 3

        send(server.port, 60)

        # Exact totals, read right after the last 250: no waiting for a snapshot.
        assert ask(server.monitor_port, Command.MAILS_SENT).u32 == 60
        assert ask(server.monitor_port, Command.HISTORIC_CONNECTIONS).u32 == base + 60
        assert ask(server.monitor_port, Command.CONCURRENT_CONNECTIONS).u32 == 0
        shared = SharedCounters(tmp_path / "data" / "workers.counters", 3, create=False)
        try:
            per_worker = [shared.slot(i).mails_sent for i in range(3)]
        finally:
            shared.close()
        assert sum(per_worker) == 60
        assert all(n > 0 for n in per_worker), per_worker  # SO_REUSEPORT spread them
        assert wait_for(lambda: len(maildir_files(server.data_dir / "mail", "bob")) == 60)
        bodies = sorted(body_of(p, headerless=True)
                        for p in maildir_files(server.data_dir / "mail", "bob"))
        assert bodies == sorted(f"hello {i}\r\n".encode() for i in range(60))

        # A connection held open is counted as concurrent by whichever worker has it.
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as held:
            held.noop()
            assert ask(server.monitor_port, Command.CONCURRENT_CONNECTIONS).u32 == 1
        assert server.terminate() == 0


def test_sigterm_stops_every_worker_and_saves_the_totals(
    tmp_path: Path, workers_env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    with server_process(data, free_port(), env=workers_env) as server:
        assert wait_for(lambda: started(server))
        pids = child_pids(server.proc.pid)
        send(server.port, 12)
        assert server.terminate() == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    state = (data / "state.json").read_text()
    assert '"mails_sent": 12' in state

    # Counted again from the saved totals after a restart, now with two workers.
    with server_process(data, free_port(), env={"BUZON_WORKERS": "2"}) as server:
        assert wait_for(lambda: started(server))
        send(server.port, 1)
        assert ask(server.monitor_port, Command.MAILS_SENT).u32 == 13


def test_a_killed_worker_is_replaced_and_the_mail_it_queued_is_delivered(tmp_path: Path) -> None:
    # The transform holds every message in the queue (sleep), so SIGKILL finds
    # them queued and not delivered; the replacement worker recovers its shard.
    data = tmp_path / "data"
    env = {"BUZON_WORKERS": "2", "BUZON_TRANSFORM": "sh -c 'sleep 3; cat'"}
    with server_process(data, free_port(), env=env) as server:
        assert wait_for(lambda: started(server))
        send(server.port, 10, rcpt="carol@example.org")
        victims = child_pids(server.proc.pid)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: len(child_pids(server.proc.pid) - victims) == 2)
        mail = data / "mail"
        assert wait_for(lambda: len(maildir_files(mail, "carol")) == 10, timeout=40)
        assert wait_for(lambda: spool_drained(data), timeout=40)  # no delivery left to duplicate
        files = maildir_files(mail, "carol")
        assert sorted(body_of(p, headerless=True) for p in files) == sorted(
            f"hello {i}\r\n".encode() for i in range(10)
        )
        assert ask(server.monitor_port, Command.CONCURRENT_CONNECTIONS).u32 == 0
        send(server.port, 2, rcpt="dave@example.org")  # and the new workers serve
        assert wait_for(lambda: len(maildir_files(mail, "dave")) == 2, timeout=40)


def test_the_monitor_switch_reaches_every_worker(tmp_path: Path) -> None:
    env = {"BUZON_WORKERS": "2", "BUZON_TRANSFORM": "tac"}
    with server_process(tmp_path / "data", free_port(), env=env) as server:
        assert wait_for(lambda: started(server))
        mail = server.data_dir / "mail"
        body = "one\r\ntwo"
        response = ask(server.monitor_port, Command.TRANSFORM_DISABLE)
        assert response.flag is False
        send(server.port, 8, rcpt="plain@example.org", body=body)
        assert ask(server.monitor_port, Command.TRANSFORM_ENABLE).flag is True
        send(server.port, 8, rcpt="tac@example.org", body=body)
        assert wait_for(lambda: len(maildir_files(mail, "plain")) == 8)
        assert wait_for(lambda: len(maildir_files(mail, "tac")) == 8)
        for path in maildir_files(mail, "plain"):
            assert body_of(path, headerless=True).startswith(b"one\r\ntwo ")
        for path in maildir_files(mail, "tac"):
            # reversed by tac in either worker, Buzón's fields included
            assert body_of(path, headerless=True, tac=True).startswith(b"two ")


def run_to_exit(data: Path, port: int, workers: int) -> subprocess.CompletedProcess[str]:
    """``python -m buzon`` expected to fail at start: run it to its end."""
    server = ServerProcess(data, port, env={"BUZON_WORKERS": str(workers)})
    return subprocess.run(
        server.args, env=server.env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_worker_that_cannot_start_fails_the_whole_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "spool").mkdir(parents=True)
    (data / "spool" / "w1").write_text("a file where worker 1's spool must go")
    done = run_to_exit(data, free_port(), 3)
    assert done.returncode == 1, done.stderr
    assert "worker 1 exited with status 1 at start" in done.stderr
    listed = re.search(r"stopping the other workers \(pids ([\d, ]+)\)", done.stderr)
    assert listed, done.stderr
    others = [int(pid) for pid in listed.group(1).split(", ")]
    assert len(others) == 2
    assert not [pid for pid in others if Path(f"/proc/{pid}").exists()]


def test_the_port_taken_by_another_program_is_a_clear_start_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:  # no SO_REUSEPORT: no worker may join it
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        done = run_to_exit(tmp_path / "data", squatter.getsockname()[1], 2)
    assert done.returncode == 1
    assert "cannot start" in done.stderr and "in use" in done.stderr


def test_sidecar_transforms_find_every_workers_spool_files(tmp_path: Path) -> None:
    # Worker i's transform files are in work/w<i>/: the paths sent to a sidecar are
    # relative to the shared work area, as the sidecar (rooted there in Compose) expects.
    data = tmp_path / "data"
    (data / "work").mkdir(parents=True)
    key = tmp_path / "sidecar.key"
    key.write_text("ab" * 32)
    with tac_sidecar(data / "work", key) as port:
        env = {"BUZON_WORKERS": "3", "BUZON_TRANSFORM_SIDECARS": f"127.0.0.1:{port}",
               "BUZON_TRANSFORM_KEY_FILE": str(key)}
        with server_process(data, free_port(), env=env) as server:
            assert wait_for(lambda: started(server))
            send(server.port, 30, rcpt="erin@example.org", body="first\r\nsecond")
            assert wait_for(lambda: len(maildir_files(data / "mail", "erin")) == 30)
            assert ask(server.monitor_port, Command.MAILS_SENT).u32 == 30
            for path in maildir_files(data / "mail", "erin"):
                assert body_of(path, headerless=True, tac=True).startswith(b"second ")
            assert (data / "spool" / "w2").is_dir()  # a shard was in play
            assert (data / "work" / "w2").is_dir()  # and its own work directory
            assert server.terminate() == 0



@pytest.mark.parametrize("workers", [1, 2])
def test_port_zero_picks_a_free_port_with_the_default_event_loop(
    tmp_path: Path, workers: int
) -> None:
    # uvloop's server is no asyncio.AbstractServer: port 0 once crashed the start.
    server = ServerProcess(tmp_path / "data", 0, env={"BUZON_WORKERS": str(workers)})
    server.args[server.args.index("-P") + 1] = "0"
    server.data_dir.mkdir(parents=True)
    with open(server.log, "wb") as log:
        proc = subprocess.Popen(server.args, env=server.env, stdout=log, stderr=log)
    try:
        found = wait_for(lambda: re.search(r"started.* SMTP on 127\.0\.0\.1:(\d+)",
                                           server.log.read_text()))
        assert found, server.log.read_text()
        with smtplib.SMTP("127.0.0.1", int(found.group(1)), timeout=10) as client:
            assert client.noop()[0] == 250
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
