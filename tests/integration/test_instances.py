"""Replicas on one data directory (``BUZON_INSTANCE``, issue 15), as real processes.

Two servers share a data directory the way Swarm replicas share a volume: each
queues into its own ``instances/<name>/spool``, keeps its own state file and
counters, and delivers into the one shared mail root. One is killed (SIGKILL)
right after its last ``250``, well inside the state file's one-second snapshot
interval, and started again under the same name: its count must carry on exactly,
and ``monitor-client --all-replicas`` must report the sum over both.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from helpers import ServerProcess, free_port, maildir_files, tac_sidecar, wait_for

TOKEN = "t0k3n-ok"  # ServerProcess's -u


def _send(port: int, marker: str) -> str:
    message = EmailMessage()
    message["From"] = "a@example.org"
    message["To"] = "shared@example.org"
    message["Subject"] = marker
    message.set_content(f"body {marker}\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.send_message(message) == {}  # every recipient took it
    return marker


def _replica(data: Path, name: str, monitor_host: str, monitor_port: int) -> ServerProcess:
    # -P last wins over the one ServerProcess chose: both replicas on one port, two hosts.
    return ServerProcess(data, free_port(), "-P", str(monitor_port),
                         env={"BUZON_INSTANCE": name, "BUZON_MONITOR_LISTEN": monitor_host})


def _monitor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "buzon.monitor.client", "--token", TOKEN, "--timeout", "2",
         *args],
        capture_output=True, text=True, timeout=30, check=False,
    )


def _mails(host: str, port: int) -> int:
    result = _monitor("-H", host, "-p", str(port), "--json", "mails")
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["value"])


def test_replicas_keep_queues_and_counters_apart_and_a_killed_one_carries_on(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    monitor_port = free_port(socket.SOCK_DGRAM)
    one = _replica(data, "1", "127.0.0.1", monitor_port)
    two = _replica(data, "2", "127.0.0.2", monitor_port)
    try:
        one.start()
        two.start()
        sent = [_send(one.port, f"one-{i}") for i in range(3)]
        one.kill()  # SIGKILL: no final save, and no snapshot yet (it runs once a second)
        sent += [_send(two.port, f"two-{i}") for i in range(2)]
        # Each replica's own things under instances/<name>/; nothing at the top.
        for name in ("1", "2"):
            assert (data / "instances" / name / "spool" / "queue").is_dir()
            assert (data / "instances" / name / "counters").is_file()
        assert not (data / "spool").exists()
        assert not (data / "state.json").exists()
        one.start()  # the replacement: same name, same shard, same counters
        mail = data / "mail"
        assert wait_for(lambda: len(maildir_files(mail, "shared")) >= len(sent), timeout=30)
        subjects = sorted(
            line.split(b": ", 1)[1].strip().decode()
            for path in maildir_files(mail, "shared")
            for line in path.read_bytes().splitlines() if line.startswith(b"Subject: "))
        assert subjects == sorted(sent)  # every message, each once, in the shared Maildir
        assert _mails("127.0.0.1", monitor_port) == 3  # carried over the SIGKILL exactly
        assert _mails("127.0.0.2", monitor_port) == 2
        both = _monitor("-H", "127.0.0.1,127.0.0.2", "-p", str(monitor_port), "--all-replicas",
                        "mails")
        assert both.returncode == 0, both.stderr
        assert both.stdout.splitlines() == ["Replicas: 2", "Mails sent: 5"]
        as_json = json.loads(_monitor("-H", "127.0.0.1,127.0.0.2", "-p", str(monitor_port),
                                      "--all-replicas", "--json", "--v0", "mails").stdout)
        assert as_json["value"] == 5
        assert as_json["replicas"] == {f"127.0.0.1:{monitor_port}": 3,
                                       f"127.0.0.2:{monitor_port}": 2}
        status = _monitor("-H", "127.0.0.1,127.0.0.2", "-p", str(monitor_port),
                          "--all-replicas", "status")
        assert status.stdout.splitlines() == ["Replicas: 2", "Transformations: disabled"]
        # The state files are the replicas' own, and the shared token file untouched.
        one.terminate()
        state = json.loads((data / "instances" / "1" / "state.json").read_text())
        assert state["counters"]["mails_sent"] == 3
    finally:
        one.ensure_stopped()
        two.ensure_stopped()


def test_a_replica_that_does_not_answer_fails_the_total(tmp_path: Path) -> None:
    monitor_port = free_port(socket.SOCK_DGRAM)
    one = _replica(tmp_path / "data", "a", "127.0.0.1", monitor_port)
    try:
        one.start()
        result = _monitor("-H", "127.0.0.1,127.0.0.2", "-p", str(monitor_port),
                          "--all-replicas", "--retries", "0", "mails")
        assert result.returncode in (3, 4), result  # no reply, or port unreachable
        assert result.stdout == ""  # never a smaller sum
        assert result.stderr.startswith(f"Error: 127.0.0.2:{monitor_port}: ")
    finally:
        one.ensure_stopped()


def test_a_bad_instance_name_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "buzon", "-d", str(tmp_path / "data"), "-p", "0"],
        env={**os.environ, "BUZON_INSTANCE": "../up"}, capture_output=True, text=True,
        timeout=30, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [(
        "buzon: configuration error: BUZON_INSTANCE: Value error, must be 1-32 letters, "
        "digits, '-' or '_', starting with a letter or digit (it names a directory; in a "
        "Swarm stack use {{.Task.Slot}})")]
    assert not (tmp_path / "data").exists()


def test_the_same_instance_twice_on_one_data_directory_is_refused(tmp_path: Path) -> None:
    """Two owners of one queue would deliver it twice (a start-first update, a lost node)."""
    data = tmp_path / "data"
    first = _replica(data, "7", "127.0.0.1", free_port(socket.SOCK_DGRAM))
    second = _replica(data, "7", "127.0.0.1", free_port(socket.SOCK_DGRAM))
    try:
        first.start()
        with pytest.raises(RuntimeError, match="server exited 1") as refused:
            second.start()
        assert f"BUZON_INSTANCE=7: another server holds {data}/instances/7/lock" in str(
            refused.value)
        first.kill()  # the kernel drops the lock with its process
        second.start()
    finally:
        first.ensure_stopped()
        second.ensure_stopped()


def test_a_replica_with_workers_and_a_sidecar_keeps_to_its_own_folders(tmp_path: Path) -> None:
    """BUZON_WORKERS under BUZON_INSTANCE: the supervisor's state and every worker's shard
    are the instance's; the sidecar, rooted at the shared work area, accepts the jobs'
    ``instances/<name>/w<N>/`` paths."""
    data = tmp_path / "data"
    (data / "work").mkdir(parents=True)
    key = tmp_path / "sidecar.key"
    key.write_text("ab" * 32)
    with tac_sidecar(data / "work", key) as port:
        server = ServerProcess(data, free_port(), env={
            "BUZON_INSTANCE": "east-1", "BUZON_WORKERS": "2",
            "BUZON_TRANSFORM_SIDECARS": f"127.0.0.1:{port}",
            "BUZON_TRANSFORM_KEY_FILE": str(key)})
        try:
            server.start()
            sent = [_send(server.port, f"w-{i}") for i in range(6)]
            mail = data / "mail"
            assert wait_for(lambda: len(maildir_files(mail, "shared")) == len(sent), timeout=30)
            for path in maildir_files(mail, "shared"):  # tac ran: the body line comes first
                delivered = path.read_bytes()
                after = delivered.split(b"\r\n", 2)[2]  # after Return-Path and Delivered-To
                assert after.startswith(b"body w-"), delivered[:300]
            own = data / "instances" / "east-1"
            assert (own / "spool" / "queue").is_dir() and (own / "spool" / "w1").is_dir()
            assert (own / "workers.counters").is_file() and (own / "lock").is_file()
            assert (data / "work" / "instances" / "east-1" / "w1").is_dir()
            assert not (data / "spool").exists() and not (data / "work" / "w0").exists()
            assert server.terminate() == 0
            state = json.loads((own / "state.json").read_text())
            assert state["counters"]["mails_sent"] == len(sent)
            assert state["counters"]["transform_ok"] == len(sent)  # every one through the sidecar
        finally:
            server.ensure_stopped()

