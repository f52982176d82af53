"""`python -m buzon.health smtp`: the container healthcheck, against the real server and
against fake servers that misbehave in each way the check must notice; and its second
half, the server's own /readyz."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults.kit import remount, tmpfs
from helpers import RunningServer, free_port

from buzon.health import check_smtp, main, ready_url


@pytest.fixture
def fake_smtp() -> Iterator[Callable[[list[bytes]], int]]:
    """A one-connection TCP server on loopback that sends scripted lines.

    The first line is sent on connect; each later one answers one client line.
    """
    sockets: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(script: list[bytes]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)
        sockets.append(listener)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                reader = conn.makefile("rb")
                for index, line in enumerate(script):
                    if index and not reader.readline():
                        return
                    if line:
                        conn.sendall(line)
                reader.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return int(listener.getsockname()[1])

    yield start
    for listener in sockets:
        listener.close()
    for thread in threads:
        thread.join(10)


def test_real_server_is_healthy(server: RunningServer) -> None:
    assert check_smtp("127.0.0.1", server.port) is None


def test_cli_exit_status_zero_against_the_real_server(server: RunningServer) -> None:
    env = {**os.environ, "BUZON_HTTP_LISTEN": "127.0.0.1",
           "BUZON_HTTP_PORT": str(server.server.http_addresses[0][1])}
    result = subprocess.run(
        [sys.executable, "-m", "buzon.health", "smtp", "127.0.0.1", str(server.port)],
        capture_output=True, text=True, timeout=30, check=False, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy:") and "/readyz 200" in result.stdout


def test_refused_connection_is_unhealthy() -> None:
    reason = check_smtp("127.0.0.1", free_port(), timeout=2)
    assert reason is not None and reason.startswith("cannot connect")


def test_greeting_other_than_220_is_unhealthy(fake_smtp: Callable[[list[bytes]], int]) -> None:
    port = fake_smtp([b"554 5.3.2 go away\r\n"])
    assert check_smtp("127.0.0.1", port, timeout=2) == "greeting was 554, expected 220"


def test_noop_other_than_250_is_unhealthy(fake_smtp: Callable[[list[bytes]], int]) -> None:
    port = fake_smtp([b"220 mx ESMTP\r\n", b"421 4.3.2 shutting down\r\n"])
    reason = check_smtp("127.0.0.1", port, timeout=2)
    assert reason is not None and reason.startswith("NOOP answered 421")


def test_silent_server_times_out(fake_smtp: Callable[[list[bytes]], int]) -> None:
    port = fake_smtp([b""])  # accepts, never greets
    reason = check_smtp("127.0.0.1", port, timeout=0.5)
    assert reason is not None


def test_clumsy_goodbye_is_still_healthy(fake_smtp: Callable[[list[bytes]], int]) -> None:
    # 220, NOOP 250, then the connection drops instead of 221.
    port = fake_smtp([b"220 mx ESMTP\r\n", b"250 2.0.0 Ok\r\n"])
    assert check_smtp("127.0.0.1", port, timeout=2) is None


@pytest.mark.parametrize(
    "argv", [[], ["pop3"], ["smtp", "h", "notaport"], ["smtp", "h", "0"], ["smtp", "h", "1", "x"]]
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    assert main(argv) == 2


def test_unhealthy_exit_status_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smtp", "127.0.0.1", str(free_port())]) == 1
    assert capsys.readouterr().err.startswith("unhealthy: cannot connect")


@pytest.mark.parametrize(("environ", "url"), [
    ({}, "http://127.0.0.1:9025/readyz"),
    ({"BUZON_HTTP_LISTEN": "0.0.0.0", "BUZON_HTTP_PORT": "9100"}, "http://127.0.0.1:9100/readyz"),
    ({"BUZON_HTTP_LISTEN": "::"}, "http://[::1]:9025/readyz"),
    ({"BUZON_HTTP_LISTEN": "10.1.2.3, 127.0.0.1"}, "http://10.1.2.3:9025/readyz"),
    ({"BUZON_HTTP_LISTEN": ""}, None),  # the listener is off: SMTP alone decides
])
def test_the_readyz_address_follows_the_servers_own_settings(
    environ: dict[str, str], url: str | None,
) -> None:
    assert ready_url(environ) == url


def test_a_server_that_answers_smtp_but_is_not_ready_is_unhealthy(
    tmp_path: Path, make_server: Callable[..., RunningServer],
) -> None:
    # The Compose healthcheck's command, with the container's environment: SMTP answers,
    # but the queue is on a read-only file system, so /readyz says 503 and why.
    data = tmp_path / "ro-data"
    with tmpfs(data, "20m"):
        server = make_server(http_port=0, data_dir=data)
        env = {**os.environ, "BUZON_HTTP_LISTEN": "127.0.0.1",
               "BUZON_HTTP_PORT": str(server.server.http_addresses[0][1])}

        def health() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "buzon.health", "smtp", "127.0.0.1", str(server.port)],
                capture_output=True, text=True, timeout=30, check=False, env=env)

        assert health().returncode == 0
        remount(data, "ro")
        try:
            result = health()
            assert result.returncode == 1
            assert "answered 503: not ready: queue directory " in result.stderr
        finally:
            remount(data, "rw")
        ok = health()
        assert ok.returncode == 0 and "/readyz 200" in ok.stdout, ok.stderr
        server.stop()
