"""Logging set-up and the access log (SPEC §5): connects, accepted and refused, disconnects.

The access log is its own logger, ``buzon.access``, one line per event with a
UTC timestamp and the client address, to stdout and optionally to a file. The
server's diagnostic log goes to stderr, so the two can be routed apart (as in
the seed, which kept ``smtpd.log`` for accesses only).

What a client says (addresses; peers are ours, but go through the same door)
is written through :func:`escape`: a control character (ESC, CR, NUL...), a
space, a non-ASCII character, a double quote and the separators ``< > ,`` and
``\\`` become ``\\xNN`` (``\\uNNNN``, ``\\UNNNNNNNN`` beyond Latin-1), so a
client can neither drive the terminal of whoever reads the log nor forge a
line or a field (a quote would open a quoted value for logfmt-style parsers).
The log file is created 0640 (owner and group only).

Two formats (``BUZON_ACCESS_LOG_FORMAT``): ``text``, one ``key=value`` token per
field, and ``json``, one JSON object per line for log shippers (JSON string
escaping makes client text unambiguous there). The format is chosen once, by
binding the event methods at construction: the accepted line, written for
every message, pays for no branch. A refusal (:meth:`AccessLog.refused`) is
rare, and its reason is cut to :data:`REASON_MAX` characters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TextIO

__all__ = ["FORMATS", "REASON_MAX", "AccessLog", "escape", "setup_logging"]

_UNSAFE = re.compile(r"[^\x21\x23-\x2b\x2d-\x3b\x3d\x3f-\x5b\x5d-\x7e]")
#: Characters of a refusal's reason (and command verb, and address) kept at most.
REASON_MAX = 200
_VERB_MAX = 16
FORMATS = ("text", "json")


def _hex(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with every character but printable ASCII, and ``"<>,\\``, as ``\\xNN``.

    Reversible and unambiguous: a backslash in the output always starts an escape.
    """
    return _UNSAFE.sub(_hex, text)


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + (
            f".{int(record.msecs):03d}Z"
        )


def setup_logging(level: str) -> None:
    """Diagnostics to stderr at ``level`` (the access log has its own handlers)."""
    root = logging.getLogger()
    root.setLevel(level)
    diag = logging.StreamHandler(sys.stderr)
    diag.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [diag]
    # aiosmtpd logs every command line at INFO: too chatty for a server log.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, root.level))


def _open_log(file: Path) -> TextIO:
    """Open the log file for appending, created 0640; an existing one loses other bits."""
    fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        mode = os.fstat(fd).st_mode & 0o7777
        if mode & ~0o640:
            os.fchmod(fd, mode & 0o640)
    except OSError:
        pass  # not ours to change: keep logging
    return open(fd, "a", encoding="utf-8")


class AccessLog:
    """Writes the access-log events to stdout and, if given, a file, as text or JSON.

    Lines are buffered and written out at most ``flush_interval`` seconds later
    (and at :meth:`close`): going through ``logging`` and flushing per line cost
    8% of the event loop's time per message. A hard crash may lose the last
    ``flush_interval`` of access-log lines, never mail.
    """

    def __init__(
        self,
        file: Path | None = None,
        *,
        stdout: bool = True,
        flush_interval: float = 0.5,
        fmt: str = "text",
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"access log format must be one of {FORMATS}, not {fmt!r}")
        self._streams: list[TextIO] = []
        self._owned: list[TextIO] = []
        if stdout:
            self._streams.append(sys.stdout)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            handle = _open_log(file)
            self._streams.append(handle)
            self._owned.append(handle)
        self._lines: list[str] = []
        self._interval = flush_interval
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        if fmt == "json":  # bound once: the text methods stay branch-free
            self.connect = self._connect_json  # type: ignore[method-assign]
            self.accepted = self._accepted_json  # type: ignore[method-assign]
            self.refused = self._refused_json  # type: ignore[method-assign]
            self.disconnect = self._disconnect_json  # type: ignore[method-assign]

    def _now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:  # format the date once per second, not per line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(now * 1000) % 1000:03d}Z"

    def _emit(self, text: str) -> None:
        # The text path, taken for every accepted message: inlined, no helper calls.
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self._lines.append(f"{self._stamp}.{int(now * 1000) % 1000:03d}Z {text}\n")
        if self._timer is None:
            self._arm()

    def _emit_json(self, event: str, peer: str, **fields: object) -> None:
        record = {"ts": self._now(), "event": event, "peer": peer, **fields}
        self._write(json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n")

    def _write(self, line: str) -> None:
        self._lines.append(line)
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._timer = loop.call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Write out the buffered lines."""
        self._timer = None
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        for stream in self._streams:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError) as error:  # a closed stdout must not stop mail
                logging.getLogger(__name__).warning("cannot write the access log: %s", error)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        for handle in self._owned:
            handle.close()

    def connect(self, peer: str) -> None:
        self._emit(f"connect {escape(peer)}")

    def accepted(
        self, peer: str, queue_id: str, sender: str, recipients: list[str], size: int
    ) -> None:
        rcpts = ",".join(f"<{escape(r)}>" for r in recipients)
        self._emit(
            f"accepted {escape(peer)} id={escape(queue_id)} from=<{escape(sender)}>"
            f" to={rcpts} size={size}"
        )

    def disconnect(self, peer: str, seconds: float) -> None:
        self._emit(f"disconnect {escape(peer)} duration={seconds:.3f}s")

    def refused(
        self,
        peer: str,
        cmd: str,
        reply: str,
        sender: str | None,
        recipients: list[str],
        addr: str | None = None,
    ) -> None:
        """A 4xx/5xx reply to a client's command.

        Args:
            peer: the client.
            cmd: the command's verb as the client sent it (cut to 16 characters).
            reply: the reply line sent, ``NNN X.Y.Z text`` (the reason is the text).
            sender: the envelope's sender so far; None before an accepted MAIL.
            recipients: the recipients accepted so far.
            addr: the address a refused MAIL or RCPT named, if one could be read.
        """
        code, enhanced, reason = _split_reply(reply)
        rcpts = ",".join(f"<{escape(r)}>" for r in recipients)
        self._emit(
            f"refused {escape(peer)} cmd={escape(cmd[:_VERB_MAX]) or '-'} code={code}"
            f" {escape(enhanced) or '-'}"
            f" from={'' if sender is None else f'<{escape(sender)}>'} to={rcpts}"
            f" addr={'' if addr is None else f'<{escape(addr[:REASON_MAX])}>'}"
            f" reason={escape(reason) or '-'}"
        )

    def _connect_json(self, peer: str) -> None:
        self._emit_json("connect", peer)

    def _accepted_json(
        self, peer: str, queue_id: str, sender: str, recipients: list[str], size: int
    ) -> None:
        self._emit_json(
            "accepted", peer, queue_id=queue_id, **{"from": sender}, to=recipients, size=size
        )

    def _refused_json(
        self,
        peer: str,
        cmd: str,
        reply: str,
        sender: str | None,
        recipients: list[str],
        addr: str | None = None,
    ) -> None:
        code, enhanced, reason = _split_reply(reply)
        self._emit_json(
            "refused", peer, cmd=cmd[:_VERB_MAX], code=int(code) if code.isdigit() else code,
            enhanced=enhanced, reason=reason, **{"from": sender}, to=list(recipients),
            addr=None if addr is None else addr[:REASON_MAX],
        )

    def _disconnect_json(self, peer: str, seconds: float) -> None:
        self._emit_json("disconnect", peer, duration=round(seconds, 3))


def _split_reply(line: str) -> tuple[str, str, str]:
    """``(code, enhanced, reason)`` of a reply line; the reason cut to REASON_MAX."""
    code, _, rest = line.rstrip("\r\n").partition(" ")
    head, _, tail = rest.partition(" ")
    if head[:1].isdigit() and head.count(".") == 2:
        return code[:3], head[:11], tail[:REASON_MAX]
    return code[:3], "", rest[:REASON_MAX]
