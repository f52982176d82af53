"""Fuzz target: random command streams against a live server over a real socket.

An in-process Buzón (one for the module) receives, per example, up to 25
random lines: real commands in random order (so sessions do reach RCPT, DATA,
AUTH...), printable noise, raw bytes with NUL, lone CR or LF and 8-bit octets,
lines of up to 5,000 bytes, with CRLF, bare LF, bare CR or no terminator at all.
The client then sends ``CRLF . CRLF QUIT CRLF`` (which ends a DATA in progress,
if any), half-closes, and reads until the server hangs up. Properties:

* every line the server sends is a reply line: three digits, then a space, a
  dash or the end; the first is the 220 greeting; the stream ends in CRLF;
* the session ends with ``221`` (our QUIT), or earlier with a ``421`` or
  ``502 5.5.1`` (too many unrecognized commands), never silently;
* no reply says ``451 4.3.0 ... local error`` (an exception escaped a handler)
  and the server logs no warning or error;
* afterwards a fresh session still gets 220 and completes a transaction.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import LineClient, RunningServer, code, settings_for
from hypothesis import example, given, settings
from hypothesis import strategies as st

FUZZ = settings.get_profile("fuzz")
# See test_syntax_fuzz.py: hypothesis' patch writer warns on import.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")
_REPLY_LINE = re.compile(rb"\d{3}(?:[ -]|$)")
_LOCAL_ERROR = b"451 4.3.0 Error: local error"

COMMANDS = [
    b"EHLO fuzz.example", b"HELO fuzz", b"EHLO", b"MAIL FROM:<a@example.org>", b"MAIL FROM:<>",
    b"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME", b"MAIL FROM:<a@example.org> SMTPUTF8",
    b"RCPT TO:<fuzz@example.org>", b"RCPT TO:<postmaster>", b'RCPT TO:<"q u"@example.org>',
    b"RCPT TO:<../etc@example.org>", b"DATA", b"DATA x", b"RSET", b"NOOP", b"NOOP x", b"VRFY x",
    b"EXPN x", b"HELP", b"HELP MAIL", b"STARTTLS", b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH",
    b"BDAT 10 LAST", b"QUIT", b".", b"..", b"", b" ", b"mail from:<a@example.org>",
]
_line = st.one_of(
    st.sampled_from(COMMANDS),
    st.sampled_from(COMMANDS).flatmap(lambda c: st.binary(max_size=20).map(lambda b: c + b)),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(str.encode),
    st.binary(max_size=120),
    st.tuples(st.integers(400, 5000), st.sampled_from([b"A", b"\x00", b"\xff", b"MAIL "])).map(
        lambda t: t[1] * (t[0] // len(t[1]))),
)
_end = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
PAYLOADS = st.lists(st.tuples(_line, _end), max_size=25).map(
    lambda lines: b"".join(line + end for line, end in lines))
SENTINEL = b"\r\n.\r\nQUIT\r\n"


class _Problems(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        detail = f" ({type(error).__name__}: {error})" if error else ""
        self.records.append(f"{record.name}: {record.getMessage()}{detail}")


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, _Problems]]:
    tmp: Path = tmp_path_factory.mktemp("live-fuzz")
    server = RunningServer(settings_for(
        tmp, fsync=False, idle_timeout=10, data_timeout=20, max_message_size=64 * 1024,
    )).start()
    problems = _Problems()
    logger = logging.getLogger("buzon")
    logger.addHandler(problems)
    try:
        yield server, problems
    finally:
        logger.removeHandler(problems)
        server.stop()


def _exchange(port: int, payload: bytes) -> bytes:
    """Send payload + sentinel, half-close, return everything the server said."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(payload + SENTINEL)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up first (502 / 421): what it said is still readable
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


def _fresh_transaction(port: int) -> None:
    with LineClient(port) as c:
        assert c.reply().startswith("220 ")
        assert code(c.cmd("EHLO after.fuzz")) == "250"
        assert code(c.cmd("MAIL FROM:<after@example.org>")) == "250 2.1.0"
        assert code(c.cmd("RCPT TO:<after@example.org>")) == "250 2.1.5"
        assert code(c.cmd("DATA")) == "354"
        assert code(c.cmd("Subject: still alive\r\n\r\nyes\r\n.")) == "250 2.0.0"
        assert code(c.cmd("QUIT")) == "221 2.0.0"


@pytest.mark.slow
@FUZZ
@given(payload=PAYLOADS)
@example(payload=b"")
@example(payload=b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nhalf a line")
@example(payload=b"\x00\xff\r\r\n\n" * 3 + b"X" * 5000 + b"\r\n")
@example(payload=b"BOGUS\r\n" * 12)
@example(payload=b"AUTH LOGIN\r\n")
def test_any_byte_stream_gets_well_formed_replies_and_the_server_survives(
    fuzz_server: tuple[RunningServer, _Problems], payload: bytes,
) -> None:
    server, problems = fuzz_server
    problems.records.clear()
    received = _exchange(server.port, payload)
    assert received.endswith(b"\r\n"), received[-200:]
    lines = received[:-2].split(b"\r\n")
    assert lines[0].startswith(b"220 "), lines[0]
    bad = [line for line in lines if not _REPLY_LINE.match(line)]
    assert not bad, f"not reply lines: {bad[:3]}"
    assert not [line for line in lines if line.startswith(_LOCAL_ERROR)], lines
    last = lines[-1]
    # Or a STARTTLS was accepted: what follows is no TLS handshake, and the
    # session ends there (smtp/starttls.py), quietly, without a leak.
    assert last.startswith((b"221 ", b"421 ", b"502 5.5.1 Too many unrecognized",
                            b"220 2.0.0 Ready to start TLS")), last
    _fresh_transaction(server.port)
    assert not problems.records, problems.records


def test_after_the_fuzzing_no_session_is_left_open(
    fuzz_server: tuple[RunningServer, _Problems],
) -> None:
    server, problems = fuzz_server
    _fresh_transaction(server.port)
    deadline = time.monotonic() + 10
    while server.server.counters.concurrent_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.server.counters.concurrent_connections == 0
    server.wait_idle(30)
    assert not problems.records, problems.records
