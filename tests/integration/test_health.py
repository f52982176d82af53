"""`python -m buzon.health smtp`: the container healthcheck, against the real server and
against fake servers that misbehave in each way the check must notice."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from helpers import RunningServer, free_port

from buzon.health import check_smtp, main


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
    result = subprocess.run(
        [sys.executable, "-m", "buzon.health", "smtp", "127.0.0.1", str(server.port)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy:")


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
