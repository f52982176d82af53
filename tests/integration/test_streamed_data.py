"""Bodies streamed to the spool as they arrive (issue 16): byte-exact, bounded memory,
nothing left behind when a message is refused or its client hangs up."""

from __future__ import annotations

import smtplib
import socket
import threading
from pathlib import Path

import pytest
from helpers import (
    LineClient,
    RunningServer,
    body_of,
    free_port,
    maildir_files,
    server_process,
    settings_for,
    wait_for,
)

SPILL = 4096  # the smallest spill size: every message below goes to disk past 4 KB


def _message(size: int, tag: str) -> bytes:
    """A message of about ``size`` bytes whose lines start with dots here and there."""
    lines = [f"Subject: {tag}".encode(), b"", b".a dot at the start of the body"]
    n = 0
    while sum(len(line) + 2 for line in lines) < size:
        lines.append(b"." * (n % 3) + b"line %d of %s " % (n, tag.encode()) + b"x" * 60)
        n += 1
    return b"\r\n".join(lines) + b"\r\n"


def _incoming(data: Path) -> list[Path]:
    return sorted((data / "spool" / "incoming").glob("*"))


@pytest.fixture
def server(tmp_path: Path):
    running = RunningServer(settings_for(
        tmp_path, data_spill_size=SPILL, max_message_size=600_000)).start()
    yield running
    running.stop()


def test_a_spilled_message_is_delivered_byte_for_byte(server: RunningServer) -> None:
    sent = {size: _message(size, f"m{size}") for size in (SPILL - 100, SPILL + 1, 300_000)}
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        for message in sent.values():
            client.sendmail("a@example.org", ["bob@example.org"], message)
    mail = server.mail_root
    assert wait_for(lambda: len(maildir_files(mail, "example.org/bob")) == 3)
    got = sorted(body_of(path) for path in maildir_files(mail, "example.org/bob"))
    # smtplib stuffed the dots; Buzón took them off again, across every piece edge
    assert got == sorted(sent.values())
    assert _incoming(server.settings.data_dir) == []


def test_a_too_big_message_is_refused_and_its_spill_file_removed(server: RunningServer) -> None:
    # No SIZE= on MAIL (smtplib would send it and be refused there): found out in DATA.
    with LineClient(server.port, timeout=30) as client:
        client.reply()
        for line in ("HELO c", "MAIL FROM:<a@example.org>", "RCPT TO:<bob@example.org>"):
            assert client.cmd(line).startswith("25")
        assert client.cmd("DATA").startswith("354")
        client.send(_message(700_000, "big") + b".\r\n")
        assert client.reply().startswith("552 5.3.4 ")
        assert client.cmd("NOOP").startswith("250")  # the session goes on
    assert _incoming(server.settings.data_dir) == []
    assert maildir_files(server.mail_root, "example.org/bob") == []


def test_a_client_gone_mid_data_leaves_no_spill_file(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.recv(1000)
        raw.sendall(b"HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        seen = b""
        while seen.count(b"\r\n") < 4:
            seen += raw.recv(1000)
        assert b"354" in seen
        raw.sendall(b"Subject: half\r\n\r\n" + (b"y" * 200 + b"\r\n") * 2000)  # 400 KB
        data = server.settings.data_dir
        assert wait_for(lambda: any(p.suffix == ".body" for p in _incoming(data)))
    # hung up without the terminator
    assert wait_for(lambda: _incoming(data) == [])
    assert server.server.counters.mails_sent == 0


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def test_memory_stays_bounded_while_many_large_messages_arrive_at_once(tmp_path: Path) -> None:
    """30 sessions send 4 MB each at the same time: 120 MB in flight. Held whole, the
    server's peak RSS would grow by at least that; streamed, by a few pieces each."""
    sessions, size = 30, 4 << 20
    body = _message(size, "large")
    with server_process(tmp_path / "data", free_port()) as proc:
        assert proc.proc is not None
        before = _peak_rss_mb(proc.proc.pid)
        errors: list[BaseException] = []
        go = threading.Barrier(sessions)

        def send() -> None:
            try:
                with smtplib.SMTP("127.0.0.1", proc.port, timeout=120) as client:
                    go.wait()
                    client.sendmail("a@example.org", ["carol@example.org"], body)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=send) for _ in range(sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert errors == []
        mail = tmp_path / "data" / "mail"
        assert wait_for(lambda: len(maildir_files(mail, "carol")) == sessions, timeout=60)
        growth = _peak_rss_mb(proc.proc.pid) - before
        print(f"peak RSS growth {growth:.1f} MB")
        assert growth < 60, f"peak RSS grew by {growth:.0f} MB for {sessions * size >> 20} MB sent"
