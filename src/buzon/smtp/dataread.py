"""Reading the DATA phase in large chunks (RFC 5321 §4.1.1.4, §4.5.2).

Theory of operation
-------------------
aiosmtpd reads DATA one line at a time from a ``StreamReader`` whose limit is
1,001 bytes; the reader pauses the socket whenever more than two limits
(2 KB) are buffered. A 100 KB message thus costs ~1,500 ``readuntil`` calls
and ~50 pause/resume cycles; that made Buzón slower than Postfix on large
messages. Here the whole body is found with one scan of the reader's buffer
per arrival of bytes, with the buffer allowed to grow to 256 KB.

The body ends at the first ``CRLF . CRLF``, counting the CRLF that ended the
``DATA`` command line, so a body of just ``.CRLF`` is an empty message. Only
CRLF counts as a line end (a bare LF followed by ``.`` does not end DATA: the
"SMTP smuggling" ambiguity, CVE-2023-51764 family). Bytes after the terminator
(a pipelined ``QUIT``) stay in the reader for the command loop.

The body is handed on in pieces of about 256 KB as it arrives, so a large
message never sits whole in this buffer; :mod:`buzon.smtp.unstuff` checks and
unstuffs each piece.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["read_pieces"]

_END = b"\r\n.\r\n"
_CHUNK_LIMIT = 256 * 1024


async def read_pieces(
    reader: asyncio.StreamReader,
    consume: Callable[[bytes], Awaitable[None]],
    piece_size: int = _CHUNK_LIMIT,
) -> None:
    """Consume the DATA body up to and including its terminator, in pieces.

    Args:
        reader: the session's stream reader (asyncio's, used through the private
            ``_buffer``/``_wait_for_data``/``_limit`` it has had since Python 3.4:
            the public API cannot find a terminator that may begin before the
            first byte read, nor read a large body without 2 KB flow control).
        consume: awaited with each piece of the raw body, in order: still
            dot-stuffed, about ``piece_size`` bytes, never ending between a CR and
            its LF; the last piece ends with the body's final CRLF (not the
            ``.CRLF``). An empty body gives no piece. While ``consume`` runs (a
            write to disk), the socket is paused once two pieces are buffered.

    Raises:
        asyncio.IncompleteReadError: the client closed before the terminator;
            it carries no bytes, and the reader's buffer is emptied first: an
            aborted body is freed at once, not kept by the exception.
    """
    r: Any = reader
    buf: bytearray = r._buffer
    saved_limit = r._limit
    r._limit = max(saved_limit, piece_size)
    try:
        at_start = True  # the stream so far is preceded by the DATA line's CRLF
        scanned = 0
        while True:
            if at_start and len(buf) >= 3:
                if buf[:3] == b".\r\n":
                    del buf[:3]
                    return
                at_start = False
            if not at_start:
                end = buf.find(_END, max(0, scanned - len(_END) + 1))
                if end >= 0:
                    with memoryview(buf) as view:  # one copy, not slice-then-bytes
                        piece = bytes(view[: end + 2])
                    del buf[: end + len(_END)]
                    await consume(piece)
                    return
                scanned = len(buf)
                # Keep a tail that may hold the start of the terminator, and never
                # end a piece between CR and LF (the line checks want whole CRLFs).
                cut = scanned - (len(_END) - 1)
                if cut > 0 and buf[cut - 1] == 0x0D:
                    cut -= 1
                if scanned >= piece_size and cut > 0:
                    with memoryview(buf) as view:
                        piece = bytes(view[:cut])
                    del buf[:cut]
                    scanned = len(buf)
                    await consume(piece)
                    continue
            if r._eof:
                buf.clear()
                raise asyncio.IncompleteReadError(b"", None)
            await r._wait_for_data("read_pieces")
    finally:
        r._limit = saved_limit
        r._maybe_resume_transport()
