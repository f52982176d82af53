#!/usr/bin/env python3
"""Fuzz Buzón's parsers with many inputs fast: ``python3 scripts/fuzz.py --inputs 1000000``.

Theory of operation
-------------------
The Hypothesis properties in ``tests/fuzz/`` explore cleverly but cost about a
millisecond per example; this driver trades cleverness for volume, so that a
million inputs per target is a matter of minutes. Each target has seeds (valid
inputs) and a rule for what may happen to any input: which exception classes
are allowed, and what must hold of a result. Inputs come from a seeded PRNG
(``--seed``; every failure prints the seed and the input number, so it can be
replayed): random bytes, and seeds mutated by bit flips, byte insertions and
deletions, truncation, splicing two seeds, repeating a slice, and interesting
bytes (NUL, CR, LF, 0xFF, quotes, brackets). Anything outside the rule is a
finding: the driver prints the input (``repr``) and exits 1.

Targets (pure unless marked live):

=========  ==================================================================
monitor    ``monitor.wire.decode_request``/``decode_response``: only
           MonitorError/BadResponse; a decoded value re-encodes to its bytes
record     ``spool.record.decode_header``: only SpoolCorrupt;
           ``parse_segment`` never raises and never reads past its buffer
syntax     ``smtp.syntax.parse_mail``/``parse_rcpt``: only SyntaxFault, a reply
           line without CR/LF; ``storage.mailbox.mailbox_name``: only
           UnsafeMailbox, and every name it returns passes ``check_mailbox``
sidecar    ``transform.auth.unseal`` and ``transform.wire.decode_request``/
           ``decode_response`` (protocol v2, sealed seeds): only ProtocolError
smtp       (live) a real ``python -m buzon`` on 127.0.0.1; each input is a
           short burst of command lines on its own connection, sent with the
           end-of-DATA sentinel and QUIT; every reply line must be well formed,
           none ``451 ... local error``, the session must end with 221, 421,
           502 or the 220 of an accepted STARTTLS, and the server must still complete a transaction at the end
           and have logged no ERROR or traceback
=========  ==================================================================

Used by ``tests/fuzz/test_fuzz_driver.py`` with a few thousand inputs per target,
so that the driver itself is tested in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_INTERESTING = b"\x00\r\n\xff\"<>@\\:;., \t\x7f\x1b[]{}()=+-%/"


@dataclass
class Target:
    name: str
    seeds: list[bytes]
    check: Callable[[bytes], None]
    """Raises AssertionError (or any unexpected exception) on a finding."""
    max_len: int = 256


class Finding(Exception):
    pass


# --------------------------------------------------------------------------- inputs


def mutate(rng: random.Random, seeds: list[bytes], max_len: int) -> bytes:
    """One input: random bytes, or a seed mutated one to four times."""
    if rng.random() < 0.1:
        return rng.randbytes(rng.randrange(max_len + 1))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert an interesting byte
            data[pos:pos] = bytes([rng.choice(_INTERESTING)])
        elif op == 2 and data:  # delete a run
            del data[pos: pos + rng.randint(1, 8)]
        elif op == 3:  # truncate
            del data[pos:]
        elif op == 4:  # splice another seed in
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            data[pos:] = other[cut:]
        elif op == 5 and data:  # repeat a slice
            i = rng.randrange(len(data))
            data[i:i] = data[i: i + rng.randint(1, 16)] * rng.randint(2, 40)
        elif op == 6:  # random bytes
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        else:  # overwrite with an interesting byte
            if data:
                data[rng.randrange(len(data))] = rng.choice(_INTERESTING)
    return bytes(data[: max_len * 4])


def inputs(target: Target, count: int, seed: int) -> Iterator[tuple[int, bytes]]:
    rng = random.Random(f"{seed}:{target.name}")
    for seed_input in target.seeds:
        yield -1, seed_input
    for n in range(count):
        yield n, mutate(rng, target.seeds, target.max_len)


# --------------------------------------------------------------------------- pure targets


def monitor_target() -> Target:
    from buzon.monitor.wire import (
        SIGNATURE,
        BadResponse,
        MonitorError,
        Request,
        Response,
        Status,
        decode_request,
        decode_response,
        encode_request,
        encode_response,
    )

    seeds = [
        encode_request(Request(request_id=7, token=b"t0k3n-ok", command=0)),
        encode_request(Request(request_id=0xFFFF, token=b"\x00" * 8, command=4)),
        encode_response(Response(request_id=1, status=Status.OK, data=b"\x00" * 8)),
        SIGNATURE + bytes(12),
    ]

    def check(data: bytes) -> None:
        try:
            assert encode_request(decode_request(data)) == data
        except MonitorError:
            pass
        try:
            assert encode_response(decode_response(data)) == data
        except BadResponse:
            pass

    return Target("monitor", seeds, check, max_len=24)


def record_target() -> Target:
    from buzon.spool.record import Envelope, SpoolCorrupt, decode_header, encode, parse_segment

    envelopes = [
        Envelope("AAAAAAAAAAAAAAAA", "a@example.org", ["b@example.org"], ["example.org/b"], helo="h",
                 peer="127.0.0.1:2525", esmtp=True, received=1.5, size=3),
        Envelope("ZZZZ2345ZZZZ2345", "", ['"q.u"@x.org', "c@x.org"], ["x.org/q.u", "x.org/c"], helo=None,
                 peer="[::1]:1", size=0),
    ]
    seeds = [encode(e) + b"abc"[: e.size] for e in envelopes]
    seeds.append(seeds[0] + seeds[1])

    def check(data: bytes) -> None:
        line = data.split(b"\n", 1)[0] + b"\n"
        try:
            decode_header(line)
        except SpoolCorrupt:
            pass
        records, fault = parse_segment(data)
        assert fault is None or isinstance(fault, SpoolCorrupt)
        for offset, envelope in records:
            assert 0 <= offset < len(data) and envelope.size <= len(data) - offset

    return Target("record", seeds, check, max_len=400)


def syntax_target() -> Target:
    from buzon.smtp.syntax import SyntaxFault, parse_mail, parse_rcpt
    from buzon.storage.mailbox import UnsafeMailbox, check_mailbox, mailbox_name

    seeds = [b"FROM:<alice@example.org> SIZE=100 BODY=8BITMIME", b"TO:<\"q u\"@x.org>",
             b"TO:<@a,@b:c@d.org>", b"FROM:<>", b"TO:postmaster", b"FROM:<a@[127.0.0.1]>"]

    def check(data: bytes) -> None:
        text = data.decode("utf-8", "surrogateescape")
        for parse in (lambda a: parse_mail(a, extended=True, max_size=1000),
                      lambda a: parse_rcpt(a, extended=True)):
            try:
                parsed = parse(text)
            except SyntaxFault as fault:
                assert "\r" not in fault.reply and "\n" not in fault.reply, fault.reply
                continue
            try:
                name = mailbox_name(parsed.address, "mx.test")
            except UnsafeMailbox:
                continue
            assert check_mailbox(name) == name

    return Target("syntax", seeds, check, max_len=200)


def sidecar_target() -> Target:
    from buzon.transform import auth, wire

    key = bytes(range(32))
    stamp = wire.Stamp(1_764_420_000, "0" * 32)
    requests = [wire.HealthRequest(), wire.TransformRequest("w0/AAAAAAAAAAAAAAAA.in",
                                                            "w0/AAAAAAAAAAAAAAAA.out")]
    seeds = [auth.seal(key, auth.REQUEST_CONTEXT, wire.encode_request(r, stamp)) for r in requests]
    replies = [wire.TransformOk(size=2048, ms=3.1),
               wire.ErrorReply(wire.FailureKind.TIMEOUT, "tac ran past 30 s")]
    seeds += [auth.seal(key, auth.reply_context(stamp.nonce), wire.encode_response(r))
              for r in replies]

    def check(data: bytes) -> None:
        # What a sidecar does with a line (unseal, then decode), and what the server
        # does with an answer; each may refuse only with a ProtocolError.
        for context in (auth.REQUEST_CONTEXT, auth.reply_context(stamp.nonce)):
            try:
                auth.unseal(key, context, data)
            except wire.ProtocolError:
                pass
        try:
            wire.decode_request(data)
        except wire.ProtocolError:
            pass
        for op in wire.Op:
            try:
                wire.decode_response(data, op)
            except wire.ProtocolError:
                pass

    return Target("sidecar", seeds, check, max_len=300)


PURE: dict[str, Callable[[], Target]] = {
    "monitor": monitor_target, "record": record_target, "syntax": syntax_target,
    "sidecar": sidecar_target,
}


def run_pure(target: Target, count: int, seed: int) -> float:
    started = time.perf_counter()
    for n, data in inputs(target, count, seed):
        try:
            target.check(data)
        except Exception as error:
            raise Finding(f"{target.name}: input {n} (seed {seed}): {data!r}\n"
                          f"  {type(error).__name__}: {error}") from error
    return time.perf_counter() - started


# --------------------------------------------------------------------------- live SMTP

_COMMANDS = [
    b"EHLO fuzz.example", b"HELO fuzz", b"MAIL FROM:<a@example.org>", b"MAIL FROM:<>",
    b"RCPT TO:<fuzz@example.org>", b'RCPT TO:<"q u"@example.org>', b"DATA", b"RSET", b"NOOP",
    b"VRFY x", b"EXPN x", b"HELP", b"STARTTLS", b"AUTH PLAIN", b"BDAT 1 LAST", b"QUIT",
    b"MAIL FROM:<a@example.org> SIZE=10 BODY=8BITMIME", b".", b"Subject: x",
]
_TRANSACTION = (b"EHLO fuzz", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>", b"DATA")
_REPLY = re.compile(rb"\d{3}(?:[ -]|$)")
_SENTINEL = b"\r\n.\r\nQUIT\r\n"


async def _session(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload + _SENTINEL)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            received += chunk
    except ConnectionError:
        pass
    writer.close()
    return received


def _payload(rng: random.Random) -> bytes:
    """A burst of lines; some sessions first open a transaction so DATA gets fuzzed too."""
    lines = list(_TRANSACTION) if rng.random() < 0.4 else []
    for _ in range(rng.randint(1, 5)):
        lines.append(rng.choice(_COMMANDS) if rng.random() < 0.3 else mutate(rng, _COMMANDS, 120))
    return b"\r\n".join(lines)


def _check_session(payload: bytes, received: bytes) -> None:
    assert received.endswith(b"\r\n"), received[-200:]
    lines = received[:-2].split(b"\r\n")
    assert lines[0].startswith(b"220 "), lines[0]
    assert all(_REPLY.match(line) for line in lines), [x for x in lines if not _REPLY.match(x)]
    assert not any(line.startswith(b"451 4.3.0") for line in lines), lines
    # A STARTTLS accepted ends the session when no TLS handshake follows.
    assert lines[-1][:4] in (b"221 ", b"421 ", b"502 ") or lines[-1] == (
        b"220 2.0.0 Ready to start TLS"), lines[-1]


def run_live(count: int, seed: int, concurrency: int = 16) -> float:
    rng = random.Random(f"{seed}:smtp")
    with tempfile.TemporaryDirectory(prefix="buzon-fuzz-") as tmp:
        port = _free_port()
        log = Path(tmp) / "server.log"
        env = {**os.environ, "BUZON_SMTP_LISTEN": "127.0.0.1", "BUZON_MONITOR_LISTEN": "127.0.0.1",
               "BUZON_FSYNC": "false", "BUZON_MAX_MESSAGE_SIZE": "65536",
               "BUZON_IDLE_TIMEOUT": "30", "BUZON_HOSTNAME": "fuzz.test",
               "BUZON_HTTP_LISTEN": ""}  # no /metrics listener on the default port
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "buzon", "-p", str(port), "-P", str(_free_port(udp=True)),
                 "-u", "fuzz-tok", "-d", str(Path(tmp) / "data")],
                env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            )
        try:
            _wait_listening(port, proc, log)
            started = time.perf_counter()

            async def main() -> None:
                queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(concurrency * 4)

                async def worker() -> None:
                    while (item := await queue.get()) is not None:
                        n, payload = item
                        received = await _session(port, payload)
                        try:
                            _check_session(payload, received)
                        except AssertionError as error:
                            raise Finding(f"smtp: input {n} (seed {seed}): {payload!r}\n"
                                          f"  {error}") from None

                tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
                for n in range(count):
                    await queue.put((n, _payload(rng)))
                    if any(t.done() for t in tasks):
                        break
                for _ in tasks:
                    await queue.put(None)
                await asyncio.gather(*tasks)

            asyncio.run(main())
            elapsed = time.perf_counter() - started
            received = asyncio.run(_session(port, b"EHLO x\r\nMAIL FROM:<a@x.org>\r\n"
                                                  b"RCPT TO:<b@x.org>\r\nDATA\r\nhi"))
            assert b"250 2.0.0" in received, received
            assert proc.poll() is None, "the server died"
        finally:
            proc.terminate()
            proc.wait(30)
        text = log.read_text(errors="replace")
        bad = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
        if bad:
            raise Finding("smtp: the server logged:\n  " + "\n  ".join(bad[:5]))
    return elapsed


def _free_port(udp: bool = False) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("server did not listen within 30 s")


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("targets", nargs="*", default=[*PURE, "smtp"],
                        help=f"any of {', '.join([*PURE, 'smtp'])} (default: all)")
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    status = 0
    for name in args.targets:
        try:
            if name == "smtp":
                seconds = run_live(args.inputs, args.seed)
            else:
                seconds = run_pure(PURE[name](), args.inputs, args.seed)
        except Finding as finding:
            print(f"FINDING {finding}", flush=True)
            status = 1
            continue
        print(f"{name}: {args.inputs:,} inputs, no finding, {seconds:.1f} s", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
