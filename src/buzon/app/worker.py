"""Entry point of one SMTP worker process: ``python -m buzon.app.worker``.

Started only by :class:`buzon.app.supervisor.Supervisor`, never by hand.
Its standard input is a pipe from the supervisor carrying one JSON line (the
settings, already validated and with the port resolved, this worker's index,
the worker count, the shared counters file and the fd to report readiness on),
then kept open: end of file means the supervisor is gone, and the worker shuts
down gracefully instead of serving on, orphaned, with nobody to watch it.
Settings travel this way rather than in the environment or the command line
so that the worker sees exactly what the supervisor validated.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from buzon.accesslog import setup_logging
from buzon.config import ServerSettings

__all__ = ["main"]


def main() -> int:
    # Raw reads of fd 0, not sys.stdin: a daemon thread blocked in the buffered
    # reader holds its lock, and the interpreter aborts on it at exit.
    first = bytearray()
    while not first.endswith(b"\n"):
        chunk = os.read(0, 65536)
        if not chunk:
            return 2  # the supervisor died before sending the order
        first += chunk
    order: dict[str, Any] = json.loads(first)
    settings = ServerSettings(**order["settings"])
    setup_logging(settings.log_level)
    from buzon.app.server import Server, WorkerRole

    role = WorkerRole(order["index"], order["count"], Path(order["counters"]))
    server = Server(settings, role)
    ready_fd: int = order["ready_fd"]

    def ready() -> None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)

    def watch_supervisor() -> None:
        while os.read(0, 4096):
            pass
        logging.getLogger("buzon").warning(
            "worker %d: the supervisor is gone; shutting down", role.index
        )
        server.request_stop()

    threading.Thread(target=watch_supervisor, name="supervisor-watch", daemon=True).start()
    try:
        return server.run(ready)
    except OSError as error:
        logging.getLogger("buzon").error("worker %d cannot start: %s", role.index, error)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
