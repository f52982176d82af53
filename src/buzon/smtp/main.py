"""Entry point of the ``buzon`` command: settings → logging → ``Server`` (or ``Supervisor``)."""

from __future__ import annotations

import logging
import sys

from buzon.accesslog import setup_logging
from buzon.config import load_server_settings

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    settings = load_server_settings(sys.argv[1:] if argv is None else argv)
    setup_logging(settings.log_level)
    from buzon.monitor.token import TokenError
    from buzon.smtp.server import ConfigError, Server  # after logging: warnings are formatted

    try:
        if settings.workers > 1:
            from buzon.multiproc.supervisor import Supervisor

            return Supervisor(settings).run()
        return Server(settings).run()
    except (TokenError, ConfigError) as error:
        print(f"buzon: configuration error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # Port in use, unwritable data directory...: one clear line, not a traceback.
        logging.getLogger("buzon").error("cannot start: %s", error)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
