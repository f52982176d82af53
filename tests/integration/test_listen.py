"""One bind policy and one address format for every listener (docs/operations.md).

Regression for the renovation issue: ``BUZON_SMTP_LISTEN=192.0.2.1,127.0.0.1``
started with a warning while the same list in ``BUZON_MONITOR_LISTEN`` stopped
start-up with errno 99, and the start log and the access log wrote addresses
differently. 192.0.2.1 (TEST-NET-1) is never an address of this machine, so
binding it fails locally without sending anything.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import LineClient, RunningServer, free_port, wait_for


def test_an_absent_address_is_skipped_alike_by_smtp_and_monitor(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="buzon")
    server = make_server(smtp_listen="192.0.2.1,127.0.0.1", monitor_listen="192.0.2.1,127.0.0.1")
    assert [h for h, _ in server.server.smtp_addresses] == ["127.0.0.1"]
    assert [h for h, _ in server.server.monitor_addresses] == ["127.0.0.1"]
    skipped = [r.getMessage() for r in caplog.records if "skipping it" in r.getMessage()]
    assert [m.split(" (")[0] for m in skipped] == [
        f"cannot listen on 192.0.2.1:{server.port}",
        f"cannot listen on 192.0.2.1:{server.monitor_port}",
    ]
    with LineClient(server.port) as client:
        assert client.reply().startswith("220 ")


def test_the_start_line_and_the_access_log_write_addresses_alike(
    make_server: Callable[..., RunningServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="buzon")
    access = tmp_path / "access.log"
    server = make_server(smtp_listen="127.0.0.1,::1", access_log_file=access)
    v6_port = server.server.smtp_addresses[1][1]
    started = next(r.getMessage() for r in caplog.records if "started" in r.getMessage())
    assert f"SMTP on 127.0.0.1:{server.port}, [::1]:{v6_port}," in started
    with LineClient(v6_port, host="::1") as client:
        client.reply()
        client_port = client.sock.getsockname()[1]
        client.cmd("QUIT")
    assert wait_for(lambda: f"connect [::1]:{client_port}" in access.read_text())


def test_a_list_with_nothing_bindable_stops_start_up_naming_it(tmp_path: Path) -> None:
    for variable in ("BUZON_SMTP_LISTEN", "BUZON_MONITOR_LISTEN"):
        env = {"PATH": "/usr/bin:/bin", "BUZON_SMTP_LISTEN": "127.0.0.1",
               "BUZON_MONITOR_LISTEN": "127.0.0.1", variable: "192.0.2.1"}
        done = subprocess.run(
            [sys.executable, "-m", "buzon", "-p", str(free_port()),
             "-P", str(free_port(socket.SOCK_DGRAM)), "-u", "t0k3n-ok", "-d", str(tmp_path / "d")],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert "cannot start: " in done.stderr and "cannot bind 192.0.2.1:" in done.stderr
