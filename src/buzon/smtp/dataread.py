"""Reading the DATA phase in large chunks (RFC 5321 §4.1.1.4, §4.5.2).

Theory of operation
-------------------
aiosmtpd reads DATA one line at a time from a ``StreamReader`` whose limit is
1,001 bytes; the reader pauses the socket whenever more than two limits
(2 KB) are buffered. A 100 KB message thus costs ~1,500 ``readuntil`` calls
and ~50 pause/resume cycles; that made Buzón slower than Postfix on large
messages. Here the whole body is found with one scan of the reader's buffer
per arrival of bytes, with the buffer allowed to grow in 256 KB steps.

The body ends at the first ``CRLF . CRLF``, counting the CRLF that ended the
``DATA`` command line, so a body of just ``.CRLF`` is an empty message. Only
CRLF counts as a line end (a bare LF followed by ``.`` does not end DATA: the
"SMTP smuggling" ambiguity, CVE-2023-51764 family). Bytes after the terminator
(a pipelined ``QUIT``) stay in the reader for the command loop.

:func:`finish` is pure: the raw bytes in, the message (dot-unstuffed) or the
reply for a limit out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from buzon.smtp import replies
from buzon.smtp.replies import Reply

__all__ = ["finish", "read_raw"]

_END = b"\r\n.\r\n"
_CHUNK_LIMIT = 256 * 1024
#: RFC 5321 §4.5.3.1.6: 1,000 octets with the CRLF; aiosmtpd allows one more for a
#: transparency dot, and so do we. Counted without the CRLF here.
MAX_LINE = 999


async def read_raw(
    reader: asyncio.StreamReader,
    max_size: int,
    allowance: int | None = None,
    grant: Callable[[int], int] | None = None,
) -> tuple[bytes, Reply | None]:
    """Consume the DATA body up to and including its terminator.

    Args:
        reader: the session's stream reader (asyncio's, used through the private
            ``_buffer``/``_wait_for_data``/``_limit`` it has had since Python 3.4:
            the public API cannot find a terminator that may begin before the
            first byte read, nor read a large body without 2 KB flow control).
        max_size: bytes kept at most; past it the rest is read and dropped.
        allowance: bytes the body may buffer before ``grant`` is asked for more
            (the session's memory reservation); None: ``max_size``.
        grant: called with the bytes buffered when they pass ``allowance``;
            returns the new allowance, smaller than asked when memory is short.

    Returns:
        ``(raw, refusal)``: the body with its final CRLF but not the ``.CRLF``,
        still dot-stuffed; or ``(b"", reply)`` when bytes were dropped:
        ``552 5.3.4`` past ``max_size``, ``452 4.3.1`` when ``grant`` refused.

    Raises:
        asyncio.IncompleteReadError: the client closed before the terminator;
            it carries no bytes, and the reader's buffer is emptied first: an
            aborted body is freed at once, not kept by the exception.
    """
    r: Any = reader
    buf: bytearray = r._buffer
    saved_limit = r._limit
    r._limit = max(saved_limit, _CHUNK_LIMIT)
    ceiling = max_size + len(_END)
    if allowance is None or grant is None:
        allowance = ceiling
    try:
        refusal: Reply | None = None
        at_start = True  # the stream so far is preceded by the DATA line's CRLF
        scanned = 0
        while True:
            if at_start and len(buf) >= 3:
                if buf[:3] == b".\r\n":
                    del buf[:3]
                    return b"", None
                at_start = False
            if not at_start:
                end = buf.find(_END, max(0, scanned - len(_END) + 1))
                if end >= 0:
                    if refusal is None and end >= allowance and grant is not None:
                        # the body came whole between two looks: it must fit too
                        allowance = grant(end + 2)
                        if allowance < end + 2:
                            refusal = replies.NO_MEMORY
                    if refusal is not None:
                        del buf[: end + len(_END)]
                        return b"", refusal
                    with memoryview(buf) as view:  # one copy, not slice-then-bytes
                        raw = bytes(view[: end + 2])
                    del buf[: end + len(_END)]
                    return raw, None
                scanned = len(buf)
                if refusal is None and scanned > allowance:
                    if scanned > ceiling:
                        refusal = replies.TOO_BIG
                    else:
                        assert grant is not None  # allowance < ceiling only with grant
                        allowance = grant(scanned)
                        if allowance < scanned:
                            refusal = replies.NO_MEMORY
                if refusal is not None:
                    # Dropping: keep only a tail that may hold the start of the
                    # terminator, so memory stays bounded however much is sent.
                    keep = len(_END) - 1
                    del buf[: len(buf) - keep]
                    scanned = keep
            if r._eof:
                buf.clear()
                raise asyncio.IncompleteReadError(b"", None)
            await r._wait_for_data("read_raw")
    finally:
        r._limit = saved_limit
        r._maybe_resume_transport()


def _has_long_line(raw: bytes) -> bool:
    """Whether a CRLF-delimited line of ``raw`` (which ends in CRLF) exceeds MAX_LINE.

    Jumps to the *last* CRLF that can end a line starting at ``start``: every line
    before it is short enough, so a 100 KB body takes ~100 ``rfind`` calls instead
    of splitting it into ~1,500 line objects.
    """
    start, end = 0, len(raw)
    while start < end:
        last = raw.rfind(b"\r\n", start, start + MAX_LINE + 2)
        if last < 0:
            return True
        start = last + 2
    return False


def finish(raw: bytes, *, max_size: int, accept_long_lines: bool = False) -> bytes | str:
    """Check limits and undo dot-stuffing.

    Args:
        raw: the body as :func:`read_raw` returns it (whole, still dot-stuffed).
        max_size: the size limit.
        accept_long_lines: keep lines over 1,000 octets (``BUZON_LONG_LINES=accept``)
            instead of refusing the message. Unstuffing works on the whole body, not
            on the chunks it arrived in, so a long line or a dot at a chunk's edge
            comes out the same either way.

    Returns:
        The message bytes, or the reply line to send (552 5.3.4 too big,
        500 5.5.2 line too long).
    """
    if len(raw) > max_size:
        return str(replies.TOO_BIG)
    if not accept_long_lines and len(raw) > MAX_LINE and _has_long_line(raw):
        return str(replies.LINE_TOO_LONG)
    # §4.5.2: a line beginning with "." lost its first dot on the way in.
    content = raw.replace(b"\r\n.", b"\r\n")
    if content.startswith(b"."):
        content = content[1:]
    return content
