"""The DATA reader: terminator rules, pipelined leftovers, limits, fed whole or byte by byte."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buzon.smtp import replies
from buzon.smtp.dataread import finish, read_raw
from buzon.smtp.replies import Reply

CASES = [
    # (stream after "DATA\r\n", raw body, bytes left for the command loop)
    (b".\r\n", b"", b""),
    (b".\r\nQUIT\r\n", b"", b"QUIT\r\n"),
    (b"\r\n.\r\n", b"\r\n", b""),
    (b"a\r\n.\r\n", b"a\r\n", b""),
    (b"a\r\n.\r\nNOOP\r\nQUIT\r\n", b"a\r\n", b"NOOP\r\nQUIT\r\n"),
    (b"..x\r\n.\r\n", b"..x\r\n", b""),
    (b"a\r\n..\r\nb\r\n.\r\n", b"a\r\n..\r\nb\r\n", b""),
    # A bare LF before the dot does not end DATA (SMTP smuggling).
    (b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n", b""),
    (b"a\r\n.\nb\r\n.\r\n", b"a\r\n.\nb\r\n", b""),
]


async def _read(stream: bytes, *, max_size: int = 1000, step: int | None = None,
                allowance: int | None = None, grant: Callable[[int], int] | None = None,
                ) -> tuple[bytes, Reply | None, bytes]:
    reader = asyncio.StreamReader(limit=1001)

    async def feed() -> None:
        chunks = [stream[i:i + step] for i in range(0, len(stream), step)] if step else [stream]
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)

    feeder = asyncio.create_task(feed())
    raw, refusal = await asyncio.wait_for(read_raw(reader, max_size, allowance, grant), 5)
    await feeder
    rest = reader._buffer  # type: ignore[attr-defined]
    return raw, refusal, bytes(rest)


@pytest.mark.parametrize("step", [None, 1, 2, 3])
@pytest.mark.parametrize(("stream", "raw", "rest"), CASES)
def test_terminator_found_whole_or_byte_by_byte(
    stream: bytes, raw: bytes, rest: bytes, step: int | None
) -> None:
    assert asyncio.run(_read(stream, step=step)) == (raw, None, rest)


def test_too_big_is_drained_to_the_terminator_with_bounded_memory() -> None:
    stream = b"x" * 50 + b"\r\n" + b"y" * 5000 + b"\r\n.\r\nQUIT\r\n"
    raw, refusal, rest = asyncio.run(_read(stream, max_size=100, step=7))
    assert (raw, refusal, rest) == (b"", replies.TOO_BIG, b"QUIT\r\n")


def test_the_allowance_grows_while_the_grant_allows_it() -> None:
    asked: list[int] = []

    def grant(need: int) -> int:
        asked.append(need)
        return need + 100

    stream = b"z" * 998 + b"\r\n" + b".\r\n"
    raw, refusal, _ = asyncio.run(_read(stream, max_size=5000, step=50, allowance=100, grant=grant))
    assert (raw, refusal) == (b"z" * 998 + b"\r\n", None)
    assert asked and all(a > 100 for a in asked)


def test_a_refused_grant_drains_to_the_terminator_and_answers_452() -> None:
    stream = b"m" * 500 + b"\r\n" + b"n" * 3000 + b"\r\n.\r\nQUIT\r\n"
    raw, refusal, rest = asyncio.run(
        _read(stream, max_size=10_000, step=64, allowance=200, grant=lambda need: 200))
    assert (raw, refusal, rest) == (b"", replies.NO_MEMORY, b"QUIT\r\n")
    assert str(refusal).startswith("452 4.3.1 ")


def test_eof_before_the_terminator_raises_without_a_copy_and_frees_the_buffer() -> None:
    async def main() -> tuple[asyncio.IncompleteReadError, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"half a message\r\n" * 1000)
        reader.feed_eof()
        try:
            await read_raw(reader, 100_000)
        except asyncio.IncompleteReadError as error:
            return error, bytes(reader._buffer)  # type: ignore[attr-defined]
        raise AssertionError("no IncompleteReadError")

    error, left = asyncio.run(main())
    assert error.partial == b"" and left == b""


@pytest.mark.parametrize(
    ("raw", "out"),
    [
        (b"", b""),
        (b"..x\r\n", b".x\r\n"),
        (b".x\r\n", b"x\r\n"),
        (b"a\r\n..\r\n...b\r\n", b"a\r\n.\r\n..b\r\n"),
        (b"a\n.b\r\n", b"a\n.b\r\n"),  # not a line start: CRLF only
        (b"x" * 999 + b"\r\n", b"x" * 999 + b"\r\n"),
        (b"x" * 1000 + b"\r\n", str(replies.LINE_TOO_LONG)),
        (b"y" * 2000, str(replies.TOO_BIG)),
    ],
)
def test_finish_unstuffs_and_checks(raw: bytes, out: bytes | str) -> None:
    assert finish(raw, max_size=1500) == out


@pytest.mark.parametrize(
    ("raw", "too_long"),
    [
        (b"x" * 999 + b"\r\n" + b"y" * 999 + b"\r\n", False),
        (b"x" * 999 + b"\r\n" + b"y" * 1000 + b"\r\n", True),
        # Bare CR and LF stay inside a CRLF line and count towards its length.
        (b"x" * 500 + b"\n" + b"y" * 499 + b"\r\n", True),
        (b"x" * 500 + b"\r" + b"y" * 498 + b"\r\n", False),
        (b"x" * 500 + b"\r" + b"y" * 499 + b"\r\n", True),
        (b"a\r\n" * 2000, False),
    ],
)
def test_long_line_detection_with_and_without_bare_cr_lf(raw: bytes, too_long: bool) -> None:
    result = finish(raw, max_size=10**6)
    assert (result == str(replies.LINE_TOO_LONG)) is too_long


@given(st.lists(st.sampled_from([b"x" * 10, b"y" * 400, b"z" * 999, b"w" * 1000, b"\r", b"\n",
                                 b"\r\n", b"."]), max_size=40))
def test_long_line_check_agrees_with_splitting(parts: list[bytes]) -> None:
    from buzon.smtp.dataread import MAX_LINE, _has_long_line

    raw = b"".join(parts) + b"\r\n"
    assert _has_long_line(raw) == (max(map(len, raw.split(b"\r\n"))) > MAX_LINE)


# --- BUZON_LONG_LINES: refuse (RFC 5321 §4.5.3.1.6) or accept and keep the line intact -------
# Text octets of one line, its CRLF not counted: 998 is RFC 5321's 1,000 with the CRLF,
# 999 what a transparency dot adds (aiosmtpd's allowance, and ours).
@pytest.mark.parametrize(
    ("octets", "refused"), [(998, False), (999, False), (1000, True), (1001, True), (100_000, True)]
)
@pytest.mark.parametrize("accept", [False, True])
def test_long_lines_refused_or_kept_intact(octets: int, refused: bool, accept: bool) -> None:
    line = bytes(range(33, 127)) * (octets // 94) + b"L" * (octets % 94)
    assert len(line) == octets
    raw = b"Subject: long\r\n\r\n" + line + b"\r\n..dot-stuffed after it\r\n"
    result = finish(raw, max_size=10**6, accept_long_lines=accept)
    if refused and not accept:
        assert result == str(replies.LINE_TOO_LONG) == "500 5.5.2 Error: line too long"
    else:
        assert result == b"Subject: long\r\n\r\n" + line + b"\r\n.dot-stuffed after it\r\n"


@pytest.mark.parametrize("step", [1, 7, 1000, 4096, 65536])
@pytest.mark.parametrize("accept", [False, True])
def test_a_long_line_and_stuffed_dots_across_chunk_boundaries(step: int, accept: bool) -> None:
    """The body arrives in chunks of ``step`` octets; lines and dots straddle their edges.

    A stuffed dot right at a chunk's start, a line end split between two chunks, a
    100,000-octet line spanning many chunks: unstuffing and the terminator come out
    the same as for the body sent whole.
    """
    long_line = b"x" * 100_000
    body = (b"Subject: chunks\r\n\r\n" + b"a" * (step - 19 - 2 if step > 21 else 1) + b"\r\n"
            + b"..dot at a chunk edge\r\n" + long_line + b"\r\n" + b"...\r\n" + b"end\r\n")
    stream = body + b".\r\nQUIT\r\n"
    raw, refusal, rest = asyncio.run(_read(stream, max_size=10**6, step=step))
    assert (raw, refusal, rest) == (body, None, b"QUIT\r\n")
    result = finish(raw, max_size=10**6, accept_long_lines=accept)
    if accept:
        assert result == body.replace(b"\r\n..", b"\r\n.")
        assert b"\r\n" + long_line + b"\r\n" in result
    else:
        assert result == str(replies.LINE_TOO_LONG)


@given(st.lists(st.sampled_from([b"x" * 10, b"y" * 1500, b".", b"..", b"\r\n", b"\r", b"\n"]),
                max_size=30))
def test_accepting_long_lines_changes_nothing_but_the_refusal(parts: list[bytes]) -> None:
    raw = b"".join(parts) + b"\r\n"
    kept = finish(raw, max_size=10**6, accept_long_lines=True)
    refused = finish(raw, max_size=10**6)
    assert isinstance(kept, bytes)
    assert refused == kept or refused == str(replies.LINE_TOO_LONG)
