"""The metrics as an operator sees them: the real server, asked through its UDP monitor.

Every test runs a real Buzón (in-process ``make_server``, or ``python -m buzon``
as a child process when a restart, SIGTERM or SIGKILL is part of the story),
drives it with SMTP over real sockets and reads the counters back either with
``monitor-client`` run as a user runs it, or with the shared wire codec over a
plain UDP socket. Expected values are computed from what the test itself did:
the bytes its client sent and received, the connections it opened, the
messages it had answered 250.

Waiting is done by polling with a deadline (``wait_for``), never by sleeping:
before a SIGKILL the test waits until the periodic snapshot holds the counters
it is about to compare with. The flood's pacing is the one sleep, and it is the
load under test.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import pytest
from helpers import (
    LineClient,
    RunningServer,
    code,
    free_port,
    maildir_files,
    server_process,
    wait_for,
)

from buzon.monitor.wire import (
    Command,
    Request,
    Response,
    Status,
    decode_response,
    encode_request,
)

TOKEN = b"t0k3n-ok"  # the harness's token (settings_for, ServerProcess)
WRONG = b"wr0ngTok"  # a valid token, just not the server's
REPLY_TIMEOUT = 5.0
COUNTERS = (
    Command.HISTORIC_CONNECTIONS,
    Command.CONCURRENT_CONNECTIONS,
    Command.BYTES_TRANSFERRED,
    Command.MAILS_SENT,
)
NAMES = {
    Command.HISTORIC_CONNECTIONS: "historic",
    Command.CONCURRENT_CONNECTIONS: "concurrent",
    Command.BYTES_TRANSFERRED: "bytes",
    Command.MAILS_SENT: "mails",
}


# --------------------------------------------------------------------------- helpers


def exchange(port: int, datagram: bytes) -> bytes:
    """Send one datagram to the monitor on 127.0.0.1 and return the raw reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(REPLY_TIMEOUT)
        sock.connect(("127.0.0.1", port))
        sock.send(datagram)
        return sock.recv(64)


def request(command: int, rid: int = 0x4D31, token: bytes = TOKEN) -> bytes:
    return encode_request(Request(rid, token, command))


def ask(port: int, command: int, rid: int = 0x4D31, token: bytes = TOKEN) -> Response:
    reply = exchange(port, request(command, rid, token))
    assert len(reply) == 14, reply
    response = decode_response(reply)
    assert response.request_id == rid
    return response


def counters(port: int) -> dict[str, int]:
    """The four counters over the wire codec (fast; used while polling)."""
    values = {}
    for command in COUNTERS:
        response = ask(port, command, rid=0x100 + command)
        assert response.status is Status.OK, response
        values[NAMES[command]] = response.u32
    return values


def run_client(port: int, command: str, token: bytes = TOKEN) -> subprocess.CompletedProcess:
    """``monitor-client --v0`` (the seed's protocol) as a subprocess, no BUZON_* leaking in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}
    args = ["--v0", "--host", "127.0.0.1", "--port", str(port), "--token", token.decode()]
    return subprocess.run(
        [sys.executable, "-m", "buzon.monitor.client", *args, command],
        env=clean,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


_CLIENT_LINE = re.compile(
    r"Identifier: \d{1,5}\n"
    r"(?:(?:Historic connections|Concurrent connections|Bytes transferred|Mails sent): (\d+)"
    r"|Transformations: (enabled|disabled))\n"
)


def client_value(port: int, command: str) -> int | bool:
    """Ask with ``monitor-client`` and parse its seed-style output."""
    result = run_client(port, command)
    assert (result.returncode, result.stderr) == (0, ""), result
    match = _CLIENT_LINE.fullmatch(result.stdout)
    assert match, result.stdout
    number, flag = match.groups()
    return int(number) if number is not None else flag == "enabled"


def client_counters(port: int) -> dict[str, int]:
    values = {name: client_value(port, name) for name in NAMES.values()}
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in values.values())
    return values  # type: ignore[return-value]


def read_state(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "state.json").read_text())


def snapshot_holds(data_dir: Path, values: dict[str, int]) -> bool:
    """True once the state file saves ``values`` (historic, bytes, mails; names of ``counters``)."""
    try:
        saved = read_state(data_dir)["counters"]
    except (FileNotFoundError, ValueError, KeyError):
        return False
    names = {"historic": "historic_connections", "bytes": "bytes_transferred", "mails": "mails_sent"}
    return all(saved.get(name) == values[key] for key, name in names.items())


class CountingClient:
    """A raw SMTP client that counts every byte it sends and receives on its socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sent = 0
        self.received = 0
        self._buf = b""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    @property
    def total(self) -> int:
        return self.sent + self.received

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        self.received += len(chunk)
        return chunk

    def reply(self) -> str:
        lines = []
        while True:
            while b"\r\n" not in self._buf:
                chunk = self._recv()
                if not chunk:
                    raise ConnectionError(f"closed by server; buffered {self._buf!r}")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\r\n", 1)
            line = raw.decode()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: str) -> str:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def read_to_eof(self) -> bytes:
        """Everything the server still sends until it closes (counted too)."""
        rest = self._buf
        while chunk := self._recv():
            rest += chunk
        self._buf = b""
        return rest


def send_message(client: CountingClient | LineClient, rcpts: list[str], body: str) -> str:
    assert code(client.cmd("MAIL FROM:<alice@example.org>")) == "250 2.1.0"
    for rcpt in rcpts:
        assert code(client.cmd(f"RCPT TO:<{rcpt}>")) == "250 2.1.5"
    assert code(client.cmd("DATA")) == "354"
    return client.cmd(f"Subject: {body}\r\n\r\n{body}\r\n.")


def known_session(port: int) -> tuple[CountingClient, str]:
    """One connection, EHLO, two messages (the first to two recipients), QUIT, EOF.

    Returns the client (with its byte counts) and the greeting line.
    """
    with CountingClient(port) as client:
        greeting = client.reply()
        assert greeting.startswith("220 "), greeting
        assert client.cmd("EHLO client.test").startswith("250")
        for body, rcpts in (
            ("one", ["bob@example.org", "carol@example.org"]),
            ("two", ["dave@example.org"]),
        ):
            assert code(send_message(client, rcpts, body)) == "250 2.0.0"
        assert code(client.cmd("QUIT")) == "221 2.0.0"
        assert client.read_to_eof() == b""
    return client, greeting


def reset_on_close(sock: socket.socket) -> None:
    """Make close() send an RST instead of a FIN (a client that vanishes)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def break_state_file(data_dir: Path) -> Path:
    """Put a directory where state.json is, so the atomic rename onto it fails (EISDIR)."""
    path = data_dir / "state.json"

    def swap() -> bool:
        path.unlink(missing_ok=True)
        try:
            path.mkdir()
        except FileExistsError:  # the 1 s snapshot renamed a file in between: again
            return False
        return True

    assert wait_for(swap, timeout=5)
    return path


# --------------------------------------------------------------------------- counters move exactly


def test_one_session_two_messages_moves_each_counter_exactly(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    port = server.monitor_port
    before = client_counters(port)

    with CountingClient(server.port) as client:
        greeting = client.reply()
        assert greeting.startswith("220 ")
        # Mid-session, at a quiet point (the last reply has been read): the open
        # connection is counted, and every byte both ways already is.
        assert counters(port) == {
            "historic": before["historic"] + 1,
            "concurrent": before["concurrent"] + 1,
            "bytes": before["bytes"] + client.total,
            "mails": before["mails"],
        }
        assert client.cmd("EHLO client.test").startswith("250-")
        # Two recipients, one message: mails counts messages, not recipients.
        assert code(send_message(client, ["bob@example.org", "carol@example.org"], "one")) == (
            "250 2.0.0"
        )
        assert counters(port)["mails"] == before["mails"] + 1
        assert code(send_message(client, ["dave@example.org"], "two")) == "250 2.0.0"
        # A refused command moves bytes but not mails.
        assert code(client.cmd("RCPT TO:<erin@example.org>")) == "503 5.5.1"
        mid = counters(port)
        assert mid == {
            "historic": before["historic"] + 1,
            "concurrent": before["concurrent"] + 1,
            "bytes": before["bytes"] + client.total,
            "mails": before["mails"] + 2,
        }
        assert code(client.cmd("QUIT")) == "221 2.0.0"
        assert client.read_to_eof() == b""

    assert wait_for(lambda: counters(port)["concurrent"] == before["concurrent"])
    after = client_counters(port)  # as the operator reads them
    print(f"\nsession: sent {client.sent} B, received {client.received} B; {before} -> {after}")
    assert after == {
        "historic": before["historic"] + 1,
        "concurrent": before["concurrent"],
        "bytes": before["bytes"] + client.sent + client.received,
        "mails": before["mails"] + 2,
    }
    server.wait_idle()
    assert [len(maildir_files(server.mail_root, box)) for box in ("bob", "carol", "dave")] == [
        1,
        1,
        1,
    ]


def test_concurrent_connections_while_five_sessions_are_held_open(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    port = server.monitor_port
    assert counters(port)["concurrent"] == 0
    clients = [LineClient(server.port) for _ in range(5)]
    try:
        for client in clients:
            assert client.reply().startswith("220 ")  # the session has started
        assert client_value(port, "concurrent") == 5
        assert client_value(port, "historic") == 5

        # Two leave politely, one vanishes with a reset: three fewer.
        for client in clients[:2]:
            assert code(client.cmd("QUIT")) == "221 2.0.0"
            assert client.closed()
            client.close()
        reset_on_close(clients[2].sock)
        clients[2].close()
        assert wait_for(lambda: counters(port)["concurrent"] == 2), counters(port)
        held = counters(port)
        assert (held["concurrent"], held["historic"]) == (2, 5)
    finally:
        for client in clients:
            client.close()
    assert wait_for(lambda: counters(port)["concurrent"] == 0), counters(port)
    assert client_value(port, "concurrent") == 0
    assert client_value(port, "historic") == 5


def test_a_connection_refused_at_the_limit_is_historic_but_never_concurrent(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(max_connections=2)
    port = server.monitor_port
    held = [CountingClient(server.port) for _ in range(2)]
    try:
        for client in held:
            assert client.reply().startswith("220 ")
        with CountingClient(server.port) as refused:
            assert code(refused.reply()) == "421 4.3.2"
            assert refused.read_to_eof() == b""
        assert counters(port) == {
            "historic": 3,
            "concurrent": 2,
            "bytes": sum(c.total for c in held) + refused.total,
            "mails": 0,
        }
    finally:
        for client in held:
            client.sock.close()
    assert wait_for(lambda: counters(port)["concurrent"] == 0)


# --------------------------------------------------------------------------- persistence


def test_counters_survive_a_sigterm_restart(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    with server_process(data, port) as proc:
        # ServerProcess.start() probes the port once (a connection that reads the
        # greeting and hangs up): that is historic connection 1.
        client, greeting = known_session(port)
        probe = len(greeting) + 2
        assert wait_for(lambda: counters(proc.monitor_port)["concurrent"] == 0)
        first = client_counters(proc.monitor_port)
        assert first == {
            "historic": 2,
            "concurrent": 0,
            "bytes": probe + client.total,
            "mails": 2,
        }
        assert proc.terminate() == 0
    saved = read_state(data)["counters"]
    assert {k: saved[k] for k in ("historic_connections", "bytes_transferred", "mails_sent")} == {
        "historic_connections": 2,
        "bytes_transferred": first["bytes"],
        "mails_sent": 2,
    }
    assert "concurrent_connections" not in saved

    with server_process(data, port) as proc:
        # The new start's own probe is one more connection and one more greeting.
        assert wait_for(lambda: counters(proc.monitor_port)["concurrent"] == 0)
        assert client_counters(proc.monitor_port) == {
            "historic": first["historic"] + 1,
            "concurrent": 0,
            "bytes": first["bytes"] + probe,
            "mails": first["mails"],
        }
        assert proc.terminate() == 0


@pytest.mark.slow
def test_after_sigkill_counters_lose_at_most_the_last_snapshot_interval_and_mail_none(
    tmp_path: Path,
) -> None:
    data, port = tmp_path / "data", free_port()
    with server_process(data, port) as proc:
        client, greeting = known_session(port)
        probe = len(greeting) + 2
        assert wait_for(lambda: counters(proc.monitor_port)["concurrent"] == 0)
        first = counters(proc.monitor_port)
        assert first == {"historic": 2, "concurrent": 0, "bytes": probe + client.total, "mails": 2}
        # The 1 s snapshot saves `first` (no counter moves meanwhile) before the kill.
        assert wait_for(lambda: snapshot_holds(data, first), timeout=10)
        proc.kill()

    with server_process(data, port) as proc:
        assert wait_for(lambda: counters(proc.monitor_port)["concurrent"] == 0)
        second = counters(proc.monitor_port)
        assert second == {
            "historic": first["historic"] + 1,  # + this start's probe
            "concurrent": 0,
            "bytes": first["bytes"] + probe,
            "mails": first["mails"],
        }
        assert wait_for(lambda: snapshot_holds(data, second), timeout=10)  # `second` is saved too
        # Now a message acknowledged right before a SIGKILL: its counter increment
        # may be lost (it is younger than the snapshot), the message never.
        with LineClient(port) as c:
            c.reply()
            assert code(send_message(c, ["frank@example.org"], "last")) == "250 2.0.0"
            proc.kill()

    with server_process(data, port) as proc:
        assert wait_for(lambda: len(maildir_files(data / "mail", "frank")) == 1)
        third = counters(proc.monitor_port)
        print(f"\nbefore the last kill {second}, after it {third}")
        assert third["mails"] in (second["mails"], second["mails"] + 1)
        # + the third start's probe, + perhaps the lost session's connection
        assert second["historic"] + 1 <= third["historic"] <= second["historic"] + 2
        assert third["bytes"] >= second["bytes"] + probe
        assert proc.terminate() == 0
    assert [len(maildir_files(data / "mail", b)) for b in ("bob", "carol", "dave", "frank")] == [
        1,
        1,
        1,
        1,
    ]


def test_counters_restored_from_the_state_file_saturate_on_the_wire(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.json").write_text(
        json.dumps(
            {
                "counters": {
                    "historic_connections": 7,
                    "bytes_transferred": 2**32 + 5,
                    "mails_sent": 2**32 - 1,
                }
            }
        )
    )
    server = make_server()
    port = server.monitor_port
    assert counters(port) == {
        "historic": 7,
        "concurrent": 0,
        "bytes": 2**32 - 1,
        "mails": 2**32 - 1,
    }
    assert client_value(port, "bytes") == 2**32 - 1
    with LineClient(server.port) as c:
        c.reply()
        assert code(send_message(c, ["gina@example.org"], "over")) == "250 2.0.0"
    assert counters(port)["mails"] == 2**32 - 1  # stuck at the top, never wrapped to 0
    server.stop()
    saved = read_state(data)["counters"]
    # Inside the server (and on disk) the counters stay exact past 32 bits.
    assert saved["mails_sent"] == 2**32
    assert saved["bytes_transferred"] > 2**32 + 5
    assert saved["historic_connections"] == 8


# --------------------------------------------------------------------------- statuses


def test_every_status_code_is_reached_on_the_running_server(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    plain = make_server()  # no transform configured
    tac = make_server(transform="tac", data_dir=tmp_path / "tac")
    rid = 0xBEEF
    raw = {
        Status.OK: request(Command.HISTORIC_CONNECTIONS, rid),
        Status.AUTH_FAILED: request(Command.HISTORIC_CONNECTIONS, rid, token=WRONG),
        Status.BAD_VERSION: b"\xff\xfe\x01" + request(0, rid)[3:],
        Status.BAD_COMMAND: request(0x07, rid),
        Status.BAD_REQUEST: request(0, rid) + b"\x00",  # 15 bytes
        Status.NO_TRANSFORM: request(Command.TRANSFORM_ENABLE, rid),
    }
    replies = {status: exchange(plain.monitor_port, datagram) for status, datagram in raw.items()}
    # 0x06: a genuine fault. The switch is saved at once; with a directory where
    # state.json should be, the atomic rename fails inside the disable command.
    assert ask(tac.monitor_port, Command.TRANSFORM_STATUS).flag is True
    broken = break_state_file(tac.settings.data_dir)
    try:
        replies[Status.UNEXPECTED] = exchange(
            tac.monitor_port, request(Command.TRANSFORM_DISABLE, rid)
        )
        # The monitor keeps serving after the fault.
        assert ask(tac.monitor_port, Command.HISTORIC_CONNECTIONS).status is Status.OK
    finally:
        broken.rmdir()

    assert {s: len(r) for s, r in replies.items()} == {s: 14 for s in Status}
    decoded = {s: decode_response(r) for s, r in replies.items()}
    assert {s: r.status for s, r in decoded.items()} == {s: s for s in Status}
    assert all(r.request_id == rid for r in decoded.values())
    assert all(r.data == bytes(8) for s, r in decoded.items() if s is not Status.OK)
    assert plain.server.counters.monitor_auth_failures == 1

    # The same faults as monitor-client reports them (it cannot send 0x02-0x04 faults).
    wrong = run_client(plain.monitor_port, "historic", token=WRONG)
    assert (wrong.returncode, wrong.stdout, wrong.stderr) == (11, "", "Error: Auth failed\n")
    none = run_client(plain.monitor_port, "enable")
    assert (none.returncode, none.stdout, none.stderr) == (
        15,
        "",
        "Error: No transform program defined\n",
    )
    assert client_value(plain.monitor_port, "status") is False
    assert client_value(plain.monitor_port, "disable") is False  # allowed, and a no-op


def test_unexpected_error_as_monitor_client_reports_it(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(transform="tac")
    assert client_value(server.monitor_port, "status") is True
    broken = break_state_file(server.settings.data_dir)
    try:
        result = run_client(server.monitor_port, "disable")
    finally:
        broken.rmdir()
    assert (result.returncode, result.stdout, result.stderr) == (
        16,
        "",
        "Error: Unexpected server error\n",
    )


# --------------------------------------------------------------------------- transform switch


def test_transform_switch_with_a_program_configured_survives_restarts(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = make_server(transform="tac")
    port = first.monitor_port
    # Configured and never switched: enabled by default.
    assert [ask(port, c).flag for c in (0x04, 0x06, 0x04)] == [True, False, False]
    # Saved at once, before the reply: no need to wait for the 1 s snapshot.
    assert read_state(data)["transform_enabled"] is False
    first.stop()

    second = make_server(transform="tac")
    assert client_value(second.monitor_port, "status") is False
    assert client_value(second.monitor_port, "enable") is True
    assert read_state(data)["transform_enabled"] is True
    assert [ask(second.monitor_port, c).flag for c in (0x05, 0x04)] == [True, True]
    second.stop()

    # The operator's switch wins over the start-up setting once it has been used.
    third = make_server(transform="tac", transform_enabled=False)
    assert ask(third.monitor_port, Command.TRANSFORM_STATUS).flag is True
    assert ask(third.monitor_port, Command.TRANSFORM_DISABLE).flag is False
    third.stop()


def test_transform_switch_is_saved_before_the_reply_even_across_sigkill(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    with server_process(data, port, "-T", "tac") as proc:
        assert client_value(proc.monitor_port, "status") is True
        assert client_value(proc.monitor_port, "disable") is False
        proc.kill()  # at once: no snapshot tick, no shutdown save
    with server_process(data, port, "-T", "tac") as proc:
        assert client_value(proc.monitor_port, "status") is False
        assert client_value(proc.monitor_port, "enable") is True
        proc.kill()
    with server_process(data, port, "-T", "tac") as proc:
        assert client_value(proc.monitor_port, "status") is True
        assert proc.terminate() == 0


def test_a_snapshot_in_flight_does_not_undo_a_switch_saved_at_once(
    make_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving is real, only made certain: the snapshot's worker thread is
    held at the start of its save until the operator's switch has been saved."""
    import buzon.metrics.keeper as keeper_module

    real_save = keeper_module.save_state
    held, release, finished = threading.Event(), threading.Event(), threading.Event()

    def save_state(path: Path, state: dict[str, Any], *, fsync: bool = True) -> None:
        snapshot = threading.current_thread().name.startswith("asyncio_")  # to_thread
        if snapshot and not held.is_set():
            held.set()
            release.wait(10)
            try:
                real_save(path, state, fsync=fsync)
            finally:
                finished.set()
            return
        real_save(path, state, fsync=fsync)

    monkeypatch.setattr(keeper_module, "save_state", save_state)
    server = make_server(transform="tac")
    data = server.settings.data_dir
    assert held.wait(10)  # the first tick's snapshot (transforms enabled) is mid-save
    # The operator disables now; the held snapshot is let go a moment later. All
    # saves are serialised, so the switch's save waits for the snapshot's and the
    # reply comes after both: the file must end with the operator's value.
    threading.Timer(0.3, release.set).start()
    assert ask(server.monitor_port, Command.TRANSFORM_DISABLE).flag is False
    assert finished.is_set()
    assert read_state(data)["transform_enabled"] is False
    server.stop()
    assert read_state(data)["transform_enabled"] is False


# --------------------------------------------------------------------------- monitor vs SMTP


def _smtp_session(port: int, index: int) -> float:
    started = time.perf_counter()
    with LineClient(port) as c:
        assert c.reply().startswith("220 ")
        reply = send_message(c, [f"load{index % 4}@example.org"], f"m{index}")
        assert code(reply) == "250 2.0.0", reply
        assert code(c.cmd("QUIT")) == "221 2.0.0"
    return time.perf_counter() - started


def _describe(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"n={len(ms)} median={statistics.median(ms):.1f} ms p95={p95:.1f} ms max={ms[-1]:.1f} ms"


@pytest.mark.slow
def test_a_monitor_flood_does_not_stop_smtp_sessions(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server()
    monitor_port = server.monitor_port
    quiet = [_smtp_session(server.port, i) for i in range(20)]

    total, senders, seconds = 5000, 2, 2.0
    per_sender, batches = total // senders, 50
    assert per_sender % batches == 0 and per_sender * senders == total
    replies: list[int] = [0] * senders
    sent_count: list[int] = [0] * senders
    bad: list[str] = []

    def flood(index: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("127.0.0.1", monitor_port))
            sock.setblocking(False)
            sent: dict[int, int] = {}
            start = time.monotonic()

            def drain() -> None:
                while True:
                    try:
                        data = sock.recv(64)
                    except BlockingIOError:
                        return
                    response = decode_response(data)
                    command = sent.get(response.request_id)
                    if command is None or response.status is not Status.OK:
                        bad.append(f"{response}")
                    elif command == Command.TRANSFORM_STATUS and response.flag:
                        bad.append(f"status says enabled: {response}")
                    replies[index] += 1

            for batch in range(batches):
                for i in range(per_sender // batches):
                    rid = index * per_sender + batch * (per_sender // batches) + i
                    command = rid % 5  # counters 0x00-0x03 and the status 0x04
                    sent[rid] = command
                    try:
                        sock.send(request(command, rid))
                        sent_count[index] += 1
                    except BlockingIOError:
                        bad.append("send buffer full")
                drain()
                pause = start + (batch + 1) * seconds / batches - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # the flood's pacing: `seconds` of load, spread evenly
            wait_for(lambda: (drain(), replies[index] >= per_sender)[1], timeout=2.0)

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(senders)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    loaded: list[float] = []
    failures: list[BaseException] = []
    try:
        # SMTP sessions back to back for as long as the flood lasts (at least 20).
        index = 100
        while any(t.is_alive() for t in threads) or len(loaded) < 20:
            try:
                loaded.append(_smtp_session(server.port, index))
            except (AssertionError, OSError) as error:
                failures.append(error)
            index += 1
    finally:
        for thread in threads:
            thread.join(30)
    flood_time = time.monotonic() - started

    print(
        f"\nquiet:   {_describe(quiet)}"
        f"\nflooded: {_describe(loaded)}"
        f"\nflood: {sum(sent_count)} requests in {flood_time:.2f} s, {sum(replies)} replies,"
        f" monitor_requests={server.server.counters.monitor_requests}"
    )
    assert failures == []
    assert bad == []
    assert sum(sent_count) == total
    assert sum(replies) > 0  # answered while SMTP ran; how many UDP may drop is not asserted
    server.wait_idle()
    assert counters(monitor_port)["mails"] == len(quiet) + len(loaded)
    delivered = sum(len(maildir_files(server.mail_root, f"load{i}")) for i in range(4))
    assert delivered == len(quiet) + len(loaded)


def test_state_file_is_written_by_the_snapshot_without_a_shutdown(
    make_server: Callable[..., RunningServer],
) -> None:
    """The periodic snapshot (not only the shutdown save) persists counter changes."""
    server = make_server()
    data = server.settings.data_dir
    with LineClient(server.port) as c:
        c.reply()
        assert code(send_message(c, ["hana@example.org"], "snap")) == "250 2.0.0"

    def snapshotted() -> bool:
        try:
            saved = read_state(data)["counters"]
        except (FileNotFoundError, ValueError, KeyError):
            return False
        return saved["mails_sent"] == 1 and saved["historic_connections"] == 1

    assert wait_for(snapshotted, timeout=10)
    assert server.server._stop.is_set() is False  # still running: it was the snapshot
