"""The DATA reader and the streamed checks: terminator rules, pipelined leftovers, limits,
dot-unstuffing, fed whole or byte by byte, cut into pieces of any size (issue 16)."""

from __future__ import annotations

import asyncio
from typing import Self

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buzon.smtp import replies
from buzon.smtp.dataread import read_pieces
from buzon.smtp.unstuff import MAX_LINE, Unstuffer

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


def reference(raw: bytes, *, max_size: int, accept_long_lines: bool = False) -> bytes | str:
    """What the whole-body reader answered before bodies were streamed: the oracle."""
    if len(raw) > max_size:
        return str(replies.TOO_BIG)
    if not accept_long_lines and any(len(line) > MAX_LINE for line in raw.split(b"\r\n")):
        return str(replies.LINE_TOO_LONG)
    content = raw.replace(b"\r\n.", b"\r\n")
    return content[1:] if content.startswith(b".") else content


async def _read(stream: bytes, *, step: int | None = None, piece_size: int = 256 * 1024,
                ) -> tuple[list[bytes], bytes]:
    """Feed ``stream`` in ``step``-octet chunks; the pieces read and what is left over.

    Each piece comes with the reader's flag; a piece flagged as holding no stuffed
    dot must hold no ``CRLF .`` (checked here), and is then passed on as a
    :class:`Flagged` so that :func:`streamed` gives the flag to the unstuffer.
    """
    reader = asyncio.StreamReader(limit=1001)
    pieces: list[bytes] = []

    async def feed() -> None:
        chunks = [stream[i:i + step] for i in range(0, len(stream), step)] if step else [stream]
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)

    async def consume(piece: bytes, stuffed: bool) -> None:
        if not stuffed:
            assert b"\r\n." not in piece, piece
        pieces.append(Flagged(piece, stuffed))
        await asyncio.sleep(0)  # like a write to disk: the feeder goes on meanwhile

    feeder = asyncio.create_task(feed())
    await asyncio.wait_for(read_pieces(reader, consume, piece_size), 5)
    await feeder
    return pieces, bytes(reader._buffer)  # type: ignore[attr-defined]


class Flagged(bytes):
    """A piece as the reader handed it over, with its "may hold stuffed dots" flag."""

    stuffed: bool

    def __new__(cls, data: bytes, stuffed: bool) -> Self:
        piece = super().__new__(cls, data)
        piece.stuffed = stuffed
        return piece


def streamed(pieces: list[bytes], *, max_size: int, accept_long_lines: bool = False
             ) -> bytes | str:
    check = Unstuffer(max_size=max_size, accept_long_lines=accept_long_lines)
    out = b"".join(check.feed(bytes(p), getattr(p, "stuffed", True)) for p in pieces)
    return str(check.refusal) if check.refusal is not None else out


@pytest.mark.parametrize("step", [None, 1, 2, 3])
@pytest.mark.parametrize(("stream", "raw", "rest"), CASES)
def test_terminator_found_whole_or_byte_by_byte(
    stream: bytes, raw: bytes, rest: bytes, step: int | None
) -> None:
    pieces, left = asyncio.run(_read(stream, step=step))
    assert (b"".join(pieces), left) == (raw, rest)


def test_pieces_are_bounded_and_never_split_a_crlf() -> None:
    body = b"".join(b"line %d\r\n" % i for i in range(20_000))
    pieces, rest = asyncio.run(_read(body + b".\r\nQUIT\r\n", step=4096, piece_size=10_000))
    assert b"".join(pieces) == body and rest == b"QUIT\r\n"
    assert len(pieces) > 10 and max(map(len, pieces)) < 10_000 + 4096
    assert all(not p.endswith(b"\r") for p in pieces)


def test_too_big_is_refused_and_drained_to_the_terminator() -> None:
    stream = b"x" * 50 + b"\r\n" + b"y" * 5000 + b"\r\n.\r\nQUIT\r\n"
    pieces, rest = asyncio.run(_read(stream, step=7, piece_size=64))
    assert streamed(pieces, max_size=100) == str(replies.TOO_BIG)
    assert rest == b"QUIT\r\n"


def test_eof_before_the_terminator_raises_without_a_copy_and_frees_the_buffer() -> None:
    async def main() -> tuple[asyncio.IncompleteReadError, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"half a message\r\n" * 1000)
        reader.feed_eof()

        async def consume(piece: bytes, stuffed: bool) -> None:
            pass

        try:
            await read_pieces(reader, consume)
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
def test_unstuffs_and_checks(raw: bytes, out: bytes | str) -> None:
    assert streamed([raw] if raw else [], max_size=1500) == out


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
    assert (streamed([raw], max_size=10**6) == str(replies.LINE_TOO_LONG)) is too_long


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
    result = streamed([raw], max_size=10**6, accept_long_lines=accept)
    if refused and not accept:
        assert result == str(replies.LINE_TOO_LONG) == "500 5.5.2 Error: line too long"
    else:
        assert result == b"Subject: long\r\n\r\n" + line + b"\r\n.dot-stuffed after it\r\n"


@pytest.mark.parametrize("step", [1, 7, 1000, 4096, 65536])
@pytest.mark.parametrize("piece_size", [16, 1000, 256 * 1024])
@pytest.mark.parametrize("accept", [False, True])
def test_a_long_line_and_stuffed_dots_across_piece_boundaries(
        step: int, piece_size: int, accept: bool) -> None:
    """The body arrives in chunks of ``step`` octets and is read in pieces of about
    ``piece_size``; lines and dots straddle their edges. A stuffed dot right at a
    piece's start, a line end split between two chunks, a 100,000-octet line spanning
    many pieces: unstuffing, the checks and the terminator come out the same as for
    the body taken whole."""
    long_line = b"x" * 100_000
    body = (b"Subject: chunks\r\n\r\n" + b"a" * (step - 19 - 2 if step > 21 else 1) + b"\r\n"
            + b"..dot at a chunk edge\r\n" + long_line + b"\r\n" + b"...\r\n" + b"end\r\n")
    stream = body + b".\r\nQUIT\r\n"
    pieces, rest = asyncio.run(_read(stream, step=step, piece_size=piece_size))
    assert (b"".join(pieces), rest) == (body, b"QUIT\r\n")
    result = streamed(pieces, max_size=10**6, accept_long_lines=accept)
    if accept:
        assert result == body.replace(b"\r\n..", b"\r\n.")
        assert b"\r\n" + long_line + b"\r\n" in result
    else:
        assert result == str(replies.LINE_TOO_LONG)


_PARTS = st.sampled_from([b"x" * 10, b"y" * 400, b"z" * 999, b"w" * 1000, b"\r", b"\n",
                          b"\r\n", b".", b"..", b"\r\n."])


@given(st.lists(_PARTS, max_size=40), st.integers(4, 3000), st.integers(1, 5000),
       st.booleans(), st.sampled_from([1500, 10**6]))
def test_streamed_equals_taken_whole(parts: list[bytes], piece_size: int, step: int,
                                     accept: bool, max_size: int) -> None:
    raw = b"".join(parts) + b"\r\n"
    if b"\r\n.\r\n" in b"\r\n" + raw:
        return  # would end DATA early: not a body a client can send
    pieces, rest = asyncio.run(_read(raw + b".\r\n", step=step, piece_size=piece_size))
    assert rest == b"" and b"".join(pieces) == raw
    assert streamed(pieces, max_size=max_size, accept_long_lines=accept) == reference(
        raw, max_size=max_size, accept_long_lines=accept)


@given(st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n.", b"x." * 5]),
                max_size=40), st.integers(0, 200))
def test_the_dot_first_search_finds_what_the_plain_search_finds(parts: list[bytes],
                                                                 start: int) -> None:
    from buzon.smtp.dataread import _find_dot_line

    data = bytearray(b"".join(parts))
    assert _find_dot_line(data, start) == data.find(b"\r\n.", start)
