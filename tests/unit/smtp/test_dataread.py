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
