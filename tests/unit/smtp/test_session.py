"""The SMTP session without a socket: ``BuzonSMTP`` fed bytes through a fake transport.

As in uvicorn's protocol tests (``tests/protocols/test_http.py``), a small fake
transport collects what the session writes; the test calls ``connection_made``,
``data_received`` and ``eof_received`` itself and reads the replies back. The
event loop is real (aiosmtpd runs a coroutine per session and the idle timer is a
loop timer), the socket is not. The handler is Buzón's own; only the queue is
replaced by an intake that records what it is given. Waits are on a condition
(a reply line written, the connection lost), each with a deadline.
"""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from buzon.accesslog import AccessLog
from buzon.metrics.counters import Counters
from buzon.smtp import replies
from buzon.smtp.handler import Handler
from buzon.smtp.session import BuzonSMTP, Hub, Limits, refuse_busy
from buzon.smtp.trace import rfc5322_date

HOST = "mx.test"
PEER = ("192.0.2.7", 40123)
DEADLINE = 5.0  # seconds any wait may take before the test fails


class FakeTransport(asyncio.Transport):
    """Collects the session's writes; ``close`` ends the connection as a socket's would."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.closing = False
        self.lost = asyncio.Event()
        self.wrote = asyncio.Event()
        self.late_writes = 0  # writes after close(): a real socket would drop them

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": PEER}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            self.late_writes += 1
            return
        self.written += data
        self.wrote.set()

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self._lose)

    def abort(self) -> None:
        self.close()

    def _lose(self) -> None:
        self.protocol.connection_lost(None)
        self.lost.set()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class FakeIntake:
    """The queue's door as the handler sees it: records each message, or fails."""

    def __init__(self, error: OSError | None = None) -> None:
        self.stored: list[tuple[Any, bytes]] = []
        self.error = error

    async def store(self, envelope: Any, content: bytes, body: Any = None) -> str:
        assert body is None, "these sessions send messages under the spill size"
        if self.error is not None:
            raise self.error
        self.stored.append((envelope, content))
        return str(envelope.queue_id)

    @property
    def sent(self) -> list[bytes]:
        """Each stored message without the fields Buzón put in front of it.

        ``Received:`` (folded), then ``Date:`` and ``Message-ID:`` if Buzón added them
        (known by their values). A message without a header block keeps the empty
        line Buzón inserted before it.
        """
        result = []
        for envelope, content in self.stored:
            match = re.match(rb"Received: from [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)+", content)
            assert match, content[:300]
            rest = content[match.end():]
            date = f"Date: {rfc5322_date(envelope.received)}\r\n".encode()
            rest = rest[len(date):] if rest.startswith(date) else rest
            mid = f"Message-ID: <{envelope.queue_id}@mx.test>\r\n".encode()
            result.append(rest[len(mid):] if rest.startswith(mid) else rest)
        return result


class Client:
    """The test's side of one session: bytes in, reply lines out."""

    def __init__(self, session: BuzonSMTP, transport: FakeTransport) -> None:
        self.session, self.transport = session, transport
        self._read = 0

    def send(self, data: bytes | str) -> None:
        self.session.data_received(data.encode() if isinstance(data, str) else data)

    def eof(self) -> None:
        """The client half-closes (shutdown(SHUT_WR)); a real transport then asks the protocol."""
        if not self.session.eof_received():
            self.transport.close()

    async def line(self) -> str:
        """The next reply line, waiting until the session has written all of it."""
        async def written() -> int:
            while (end := self.transport.written.find(b"\r\n", self._read)) < 0:
                self.transport.wrote.clear()
                await self.transport.wrote.wait()
            return end

        end = await asyncio.wait_for(written(), DEADLINE)
        line = self.transport.written[self._read:end].decode("ascii")
        self._read = end + 2
        return line

    async def reply(self) -> str:
        """One whole reply; the lines of a multi-line one joined by newlines."""
        lines = [await self.line()]
        while lines[-1][3:4] == "-":
            lines.append(await self.line())
        return "\n".join(lines)

    async def cmd(self, line: str) -> str:
        self.send(line + "\r\n")
        return await self.reply()

    async def closed(self) -> None:
        """Wait until the session has closed the connection and its coroutine has ended."""
        await asyncio.wait_for(self.transport.lost.wait(), DEADLINE)
        task = self.session._handler_coroutine
        assert task is not None
        await asyncio.wait({task}, timeout=DEADLINE)
        assert task.cancelled() or task.exception() is None, task.exception()

    @property
    def unread(self) -> bytes:
        return bytes(self.transport.written[self._read:])


Scenario = Callable[[Client, Hub, FakeIntake], Awaitable[None]]


def run(scenario: Scenario, tmp_path: Path, *, intake: FakeIntake | None = None,
        **limits: Any) -> list[str]:
    """Run ``scenario`` against one fresh session; return the access-log lines."""
    settings: dict[str, Any] = {
        "hostname": HOST, "max_message_size": 10_000, "max_recipients": 5,
        "max_line_length": 512, "idle_timeout": 30.0, "data_timeout": 30.0, **limits,
    }
    log_file = tmp_path / "access.log"

    async def main() -> None:
        access = AccessLog(log_file, stdout=False)
        hub = Hub(Limits(**settings), Counters(), access)
        queue = intake if intake is not None else FakeIntake()
        session = BuzonSMTP(Handler(queue), hub)  # type: ignore[arg-type]
        transport = FakeTransport(session)
        session.connection_made(transport)
        client = Client(session, transport)
        try:
            await scenario(client, hub, queue)
        finally:
            if not transport.closing:
                transport.close()
            await client.closed()
            access.close()
        assert transport.late_writes == 0
        assert hub.sessions == set() and hub.counters.concurrent_connections == 0

    asyncio.run(main())
    return [line.split(" ", 1)[1] for line in log_file.read_text().splitlines()]


async def _envelope(c: Client, rcpt: str = "bob@example.org") -> None:
    assert await c.cmd("MAIL FROM:<alice@example.org>") == "250 2.1.0 Ok"
    assert await c.cmd(f"RCPT TO:<{rcpt}>") == "250 2.1.5 Ok"
    assert await c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"


# --------------------------------------------------------------------------- greeting, EHLO


def test_greeting_and_the_ehlo_lines(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        assert await c.reply() == "220 mx.test ESMTP"
        assert hub.counters.concurrent_connections == 1 and len(hub.sessions) == 1
        assert (await c.cmd("EHLO client.example")).split("\n") == [
            "250-mx.test",
            "250-PIPELINING",
            "250-SIZE 10000",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250 ENHANCEDSTATUSCODES",
        ]
        assert await c.cmd("HELO client.example") == "250 mx.test"

    log = run(scenario, tmp_path)
    assert log[0] == "connect 192.0.2.7:40123" and log[-1].startswith("disconnect 192.0.2.7")


# --------------------------------------------------------------------------- a transaction


def test_a_transaction_is_queued_with_its_envelope_and_unstuffed_body(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        await c.cmd("EHLO client.example")
        await _envelope(c)
        c.send("Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n")
        queued = await c.reply()
        assert queued.startswith("250 2.0.0 Ok: queued as ")
        ((envelope, content),) = intake.stored
        assert queued == replies.QUEUED.format(envelope.queue_id)
        assert (envelope.sender, envelope.recipients, envelope.mailboxes) == (
            "alice@example.org", ["bob@example.org"], ["example.org/bob"])
        assert (envelope.helo, envelope.esmtp, envelope.peer) == ("client.example", True,
                                                                  "192.0.2.7:40123")
        assert intake.sent == [b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"]
        # Received: at intake, in the RFC 5321 §4.4 form (buzon.smtp.trace has the table).
        assert content.startswith(
            b"Received: from client.example (unknown [192.0.2.7])\r\n"
            b"\tby mx.test (Buzon) with ESMTP id " + envelope.queue_id.encode() + b"\r\n"
            b"\tfor <bob@example.org>; ")
        assert envelope.size == len(content) and hub.counters.mails_sent == 1
        # The session is ready for the next transaction.
        assert await c.cmd("MAIL FROM:<>") == "250 2.1.0 Ok"

    log = run(scenario, tmp_path)
    assert any(line.startswith("accepted 192.0.2.7:40123 id=") for line in log)


@pytest.mark.parametrize("step", [None, 1, 7], ids=["whole", "byte-by-byte", "7-byte-chunks"])
def test_pipelined_transaction_fed_in_any_split(tmp_path: Path, step: int | None) -> None:
    """h11's rule: the same bytes, however they are split, give the same replies."""
    stream = (b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
              b"line one\r\n..\r\n.\r\nNOOP\r\n")
    replies_: list[str] = []

    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        size = step or len(stream)
        for i in range(0, len(stream), size):
            c.send(stream[i:i + size])
            await asyncio.sleep(0)  # one loop turn: the session reads this piece on its own
        for _ in range(6):
            replies_.append((await c.reply()).split("\n")[-1])
        # No header block: Buzón put an empty line before it, so readers show the body.
        assert intake.sent == [b"\r\nline one\r\n.\r\n"]

    run(scenario, tmp_path)
    assert [r[:9] for r in replies_] == [
        "250 ENHAN", "250 2.1.0", "250 2.1.5", "354 End d", "250 2.0.0", "250 2.0.0"]


def test_data_fed_one_byte_at_a_time(tmp_path: Path) -> None:
    body = b"Subject: drip\r\n\r\nfirst\r\n..dot\r\nlast\r\n"

    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        await _envelope(c)
        for byte in body + b".\r\n":
            assert c.unread == b""  # nothing answered before the terminator is whole
            c.send(bytes([byte]))
            await asyncio.sleep(0)  # one loop turn per byte: the DATA reader sees every split
        assert (await c.reply()).startswith("250 2.0.0 Ok: queued as ")
        assert intake.sent == [b"Subject: drip\r\n\r\nfirst\r\n.dot\r\nlast\r\n"]

    run(scenario, tmp_path)


def test_a_queue_write_failure_is_a_temporary_reply(tmp_path: Path) -> None:
    for error, expected in [(OSError(errno.ENOSPC, "full"), "452 4.3.1"),
                            (OSError(errno.EIO, "i/o"), "451 4.3.0")]:
        async def scenario(c: Client, hub: Hub, intake: FakeIntake,
                           expected: str = expected) -> None:
            await c.reply()
            await _envelope(c)
            assert (await c.cmd("x\r\n.")).startswith(expected)
            assert hub.counters.mails_sent == 0

        run(scenario, tmp_path, intake=FakeIntake(error))


# --------------------------------------------------------------------------- sequence and syntax


def test_commands_out_of_sequence_get_503(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        assert await c.cmd("RCPT TO:<bob@example.org>") == "503 5.5.1 Error: need MAIL command"
        assert await c.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
        assert await c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
        assert await c.cmd("MAIL FROM:<a@example.org>") == "503 5.5.1 Error: nested MAIL command"
        assert await c.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
        assert await c.cmd("FOO") == "502 5.5.2 Error: command not recognized"
        assert intake.stored == []

    run(scenario, tmp_path)


def test_rset_forgets_the_envelope(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        assert await c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
        assert await c.cmd("RCPT TO:<bob@example.org>") == "250 2.1.5 Ok"
        assert c.session.in_transaction
        assert await c.cmd("RSET") == "250 2.0.0 Ok"
        assert not c.session.in_transaction
        assert await c.cmd("RCPT TO:<bob@example.org>") == "503 5.5.1 Error: need MAIL command"
        assert await c.cmd("DATA") == "503 5.5.1 Error: need RCPT command"
        assert await c.cmd("RSET now") == "501 5.5.4 Syntax: RSET"

    run(scenario, tmp_path)


def test_a_command_line_too_long_is_refused_and_the_session_goes_on(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        assert await c.cmd("NOOP " + "x" * 93) == "250 2.0.0 Ok"  # 100 octets with the CRLF
        assert await c.cmd("NOOP " + "x" * 94) == "500 5.5.2 Error: line too long"
        assert await c.cmd("NOOP " + "x" * 5000) == "500 5.5.2 Error: line too long"  # > reader limit
        assert await c.cmd("NOOP") == "250 2.0.0 Ok"

    run(scenario, tmp_path, max_line_length=100)


def test_a_message_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        await _envelope(c)
        assert await c.cmd("y" * 80 + "\r\n" + "y" * 80 + "\r\n.") == str(replies.TOO_BIG)
        assert intake.stored == []
        assert await c.cmd("NOOP") == "250 2.0.0 Ok"

    run(scenario, tmp_path, max_message_size=100)


def test_auth_is_refused(tmp_path: Path) -> None:
    """No authentication exists, so AUTH is an unknown command, before and after EHLO."""
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        assert await c.cmd("AUTH PLAIN") == "502 5.5.2 Error: command not recognized"
        assert "AUTH" not in await c.cmd("EHLO client.example")
        assert await c.cmd("AUTH PLAIN") == "502 5.5.2 Error: command not recognized"

    run(scenario, tmp_path)


# --------------------------------------------------------------------------- ends of a session


def test_quit_says_bye_and_closes(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        assert await c.cmd("QUIT") == "221 2.0.0 Bye"
        await c.closed()
        assert c.unread == b""

    log = run(scenario, tmp_path)
    assert [line.split(" ", 1)[0] for line in log] == ["connect", "disconnect"]


def test_idle_timeout_says_421_and_closes(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        assert await c.cmd("NOOP") == "250 2.0.0 Ok"
        # Nothing more is sent: the loop's idle timer must fire on its own.
        assert await c.reply() == "421 4.4.2 mx.test Error: timeout exceeded"
        await c.closed()

    run(scenario, tmp_path, idle_timeout=0.05)


def test_a_data_transfer_past_its_deadline_says_421(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        await _envelope(c)
        c.send("a body that never ends\r\n")
        assert await c.reply() == "421 4.4.2 mx.test Error: data transfer took too long"
        await c.closed()
        assert intake.stored == []

    run(scenario, tmp_path, data_timeout=0.05)


def test_half_close_in_the_middle_of_data_queues_nothing(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        await _envelope(c)
        c.send("Subject: cut\r\n\r\nhalf a li")
        c.eof()
        await c.closed()
        assert c.unread == b""  # no reply to a DATA that never ended
        assert intake.stored == [] and hub.counters.mails_sent == 0

    run(scenario, tmp_path)


def test_half_close_after_whole_commands_still_answers_them(tmp_path: Path) -> None:
    """``cat msg | nc -q1``: the client's last commands arrive with its EOF."""
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
        c.eof()
        answers = [await c.reply() for _ in range(5)]
        assert [a[:9] for a in answers] == [
            "250 2.1.0", "250 2.1.5", "354 End d", "250 2.0.0", "221 2.0.0"]
        await c.closed()
        assert intake.sent == [b"\r\nhi\r\n"]  # no header block: an empty line before it

    run(scenario, tmp_path)


def test_mail_while_stopping_says_421_and_closes(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        hub.stopping = True
        c.send("MAIL FROM:<a@example.org>\r\n")
        assert await c.reply() == "421 4.3.2 mx.test Service shutting down, try again later"
        await c.closed()

    run(scenario, tmp_path)


def test_a_connection_over_the_limit_is_refused_with_421() -> None:
    async def main() -> tuple[bytes, bool, int]:
        hub = Hub(Limits(HOST, 1000, 5, 512, 30.0), Counters(), AccessLog(None, stdout=False))
        protocol = refuse_busy(hub)
        transport = FakeTransport(protocol)
        protocol.connection_made(transport)
        return bytes(transport.written), transport.closing, hub.counters.bytes_transferred

    written, closing, counted = asyncio.run(main())
    assert written == b"421 4.3.2 mx.test Error: too many connections, try again later\r\n"
    assert closing and counted == len(written)


# --------------------------------------------------------------------------- fair shares


def test_the_lifetime_lets_a_transaction_in_flight_finish_first(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        await _envelope(c)
        c.send("Subject: late\r\n\r\nbody\r\n")
        session = c.session
        await asyncio.wait_for(_until(lambda: session._expired), DEADLINE)
        assert await c.cmd(".") == "250 2.0.0 Ok: queued as " + intake.stored[0][0].queue_id
        assert await c.reply() == (
            "421 4.7.0 mx.test Error: session lasted too long, reconnect to go on")
        await c.closed()

    run(scenario, tmp_path, session_lifetime=0.05)


def test_data_without_memory_gets_452_and_the_transaction_stays(tmp_path: Path) -> None:
    async def scenario(c: Client, hub: Hub, intake: FakeIntake) -> None:
        await c.reply()
        hub.budget.used = hub.budget.total  # every byte taken by other sessions
        await c.cmd("EHLO client.example")
        assert await c.cmd("MAIL FROM:<a@example.org> SIZE=100") == "250 2.1.0 Ok"
        assert await c.cmd("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
        assert await c.cmd("DATA") == (
            "452 4.3.1 Error: insufficient system resources, try again later")
        hub.budget.used = 0
        assert await c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        assert hub.budget.used == 100  # the declared SIZE= is what it reserved
        assert (await c.cmd("x\r\n.")).startswith("250 2.0.0")
        assert hub.budget.used == 0

    run(scenario, tmp_path)


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.005)
