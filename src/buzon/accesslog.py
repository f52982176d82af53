"""Logging set-up and the access log (SPEC §5): connects, accepted messages, disconnects.

The access log is its own logger, ``buzon.access``, one line per event with a
UTC timestamp and the client address, to stdout and optionally to a file. The
server's diagnostic log goes to stderr, so the two can be routed apart (as in
the seed, which kept ``smtpd.log`` for accesses only).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["AccessLog", "format_peer", "setup_logging"]


def format_peer(peer: Any) -> str:
    """``127.0.0.1:2525`` or ``[::1]:2525`` from a socket address tuple."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


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


class AccessLog:
    """Writes the three access-log events to stdout and, if given, a file.

    Each server owns its own logger object (not one from the global registry), so
    two servers in one process (the tests) never share or stack handlers.
    """

    def __init__(self, file: Path | None = None, *, stdout: bool = True) -> None:
        self._log = logging.Logger("buzon.access", logging.INFO)
        fmt = _UTCFormatter("%(asctime)s %(message)s")
        handlers: list[logging.Handler] = []
        if stdout:
            handlers.append(logging.StreamHandler(sys.stdout))
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(file, encoding="utf-8"))
        for handler in handlers:
            handler.setFormatter(fmt)
            self._log.addHandler(handler)

    def close(self) -> None:
        for handler in self._log.handlers:
            handler.close()

    def connect(self, peer: str) -> None:
        self._log.info("connect %s", peer)

    def accepted(
        self, peer: str, queue_id: str, sender: str, recipients: list[str], size: int
    ) -> None:
        self._log.info(
            "accepted %s id=%s from=<%s> to=%s size=%d",
            peer, queue_id, sender, ",".join(f"<{r}>" for r in recipients), size,
        )

    def disconnect(self, peer: str, seconds: float) -> None:
        self._log.info("disconnect %s duration=%.3fs", peer, seconds)
