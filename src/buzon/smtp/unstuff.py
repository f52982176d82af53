"""DATA's body as a stream: dot-unstuffing and the size and line limits, piece by piece.

Theory of operation
-------------------
:func:`buzon.smtp.dataread.read_pieces` hands the raw body (still dot-stuffed,
RFC 5321 §4.5.2) over in pieces of about 128 KB, never cutting a CRLF in two;
the last piece ends with the body's final CRLF. :class:`Unstuffer` turns each
piece into message bytes and keeps the checks that used to run on the whole
body, so that a 10 MB message never has to be in memory at once:

* a line that begins with ``.`` loses that dot. A piece that ends with CRLF
  leaves the next one at the start of a line; the body starts at one too.
* the size limit counts the raw bytes, as before: past ``max_size`` the
  message is refused with ``552 5.3.4`` (its remaining pieces are dropped);
* a line over :data:`MAX_LINE` octets (unless the message also turns out too big,
  which wins, as it did when the whole body was checked at once) (without its CRLF, one more than
  RFC 5321's 998 for a transparency dot) is refused with ``500 5.5.2`` unless
  long lines are accepted: the length of the line still open at the end of a
  piece is carried into the next.

Pure: bytes in, bytes out; no I/O, no clock.
"""

from __future__ import annotations

from buzon.smtp import replies
from buzon.smtp.replies import Reply

__all__ = ["MAX_LINE", "Unstuffer"]

#: RFC 5321 §4.5.3.1.6: 1,000 octets with the CRLF; aiosmtpd allows one more for a
#: transparency dot, and so do we. Counted without the CRLF here.
MAX_LINE = 999


class Unstuffer:
    """Checks and unstuffs one body's pieces, in order."""

    __slots__ = ("_accept_long", "_line", "_max_size", "_raw", "_start", "refusal")

    def __init__(self, *, max_size: int, accept_long_lines: bool = False) -> None:
        self._max_size = max_size
        self._accept_long = accept_long_lines
        self._raw = 0
        self._line = 0  # octets of the line still open after the last piece
        self._start = True  # the next piece begins a line
        #: The reply refusing the message, once one applies (then nothing more comes out).
        self.refusal: Reply | None = None

    def feed(self, piece: bytes, stuffed: bool = True) -> bytes:
        """The message bytes of ``piece``; ``b""`` once the message is refused.

        ``stuffed=False`` (the reader found no ``CRLF .`` inside the piece) skips
        the search for dots after line ends; a dot at the start is still judged.
        """
        self._raw += len(piece)
        if self._raw > self._max_size:
            # Too big wins over a long line seen earlier: the answer is the one the
            # whole body would have got (the size is checked first).
            self.refusal = replies.TOO_BIG
            return b""
        if self.refusal is not None:
            return b""
        if not self._accept_long and self._too_long(piece):
            self.refusal = replies.LINE_TOO_LONG
            return b""
        content = piece.replace(b"\r\n.", b"\r\n") if stuffed else piece
        if self._start and content[:1] == b".":
            content = content[1:]
        self._start = piece.endswith(b"\r\n")
        return content

    def _too_long(self, piece: bytes) -> bool:
        """Whether a line that ends in, or runs through, ``piece`` is over the limit.

        Jumps to the *last* CRLF that can end a line starting at ``start``: every
        line before it is short enough, so a 128 KB piece takes ~130 ``rfind``
        calls instead of splitting it into thousands of line objects.
        """
        start, end = 0, len(piece)
        carried = self._line
        while start < end:
            last = piece.rfind(b"\r\n", start, start + MAX_LINE + 2 - carried)
            if last < 0:
                carried += end - start
                if carried > MAX_LINE:
                    return True
                break
            start, carried = last + 2, 0
        self._line = carried
        return False
