"""Entry point of the ``buzon`` command: settings → logging → :func:`run`.

:func:`run` chooses the process model, as uvicorn's ``main.run`` does: one
:class:`~buzon.app.server.Server` in this process, or (``BUZON_WORKERS`` > 1) a
:class:`~buzon.app.supervisor.Supervisor` that runs that many servers as worker
processes (:mod:`buzon.app.worker`) and keeps the monitor and the state file.
"""

from __future__ import annotations

import logging
import sys

from buzon.accesslog import setup_logging
from buzon.config import ServerSettings, load_server_settings

__all__ = ["main", "run"]


def run(settings: ServerSettings) -> int:
    """Serve until SIGTERM or SIGINT; the process's exit status.

    Exit status 2 for a setting that cannot be used (one line naming it on
    stderr), 1 for a start-up failure such as a port in use, 0 after a clean stop.
    """
    # Imported after logging is set up, so that import-time warnings are formatted.
    from buzon.app.server import Server
    from buzon.app.supervisor import Supervisor
    from buzon.app.wiring import ConfigError
    from buzon.monitor.token import TokenError

    try:
        if settings.workers > 1:
            return Supervisor(settings).run()
        return Server(settings).run()
    except (TokenError, ConfigError) as error:
        print(f"buzon: configuration error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # Port in use, unwritable data directory...: one clear line, not a traceback.
        logging.getLogger("buzon").error("cannot start: %s", error)
        return 1


def main(argv: list[str] | None = None) -> int:
    """The ``buzon`` command: flags and ``BUZON_*`` settings, then :func:`run`."""
    settings = load_server_settings(sys.argv[1:] if argv is None else argv)
    setup_logging(settings.log_level)
    return run(settings)


if __name__ == "__main__":
    raise SystemExit(main())
