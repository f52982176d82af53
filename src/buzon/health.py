"""Container healthchecks that speak each service's own protocol (STYLE practice 15).

Theory of operation
-------------------
Docker runs ``HEALTHCHECK`` commands inside the container every few seconds; a check
that only looks for an open port would call a wedged server healthy. So the SMTP check
holds a real, minimal conversation::

    python -m buzon.health smtp [HOST [PORT]]

connect → expect the ``220`` greeting → ``NOOP`` → expect ``250`` → ``QUIT``. HOST
defaults to 127.0.0.1 and PORT to ``$BUZON_SMTP_PORT`` or 2525. The whole exchange is
bounded by a 5 s timeout. Exit status 0 means healthy; 1 means unhealthy, with one line
on stderr saying why (Docker keeps it in ``docker inspect``'s health log). Usage errors
exit 2. Standard library only, so it runs in any image that has the package.

Note that each check is a real SMTP session: it shows up in the access log and in the
historic connection count, like any client's.
"""

from __future__ import annotations

import os
import smtplib
import socket
import sys

__all__ = ["TIMEOUT", "check_smtp", "main"]

#: Seconds allowed for the whole check (connect, greeting, NOOP, QUIT).
TIMEOUT = 5.0


def check_smtp(host: str, port: int, timeout: float = TIMEOUT) -> str | None:
    """Hold a minimal SMTP session: greeting 220, NOOP 250, QUIT.

    Args:
        host: address of the server.
        port: its SMTP port.
        timeout: seconds allowed for each socket operation.

    Returns:
        None when healthy, else a one-line reason.
    """
    try:
        # local_hostname given so smtplib does not resolve our own name (getfqdn),
        # which can stall on a container without DNS.
        client = smtplib.SMTP(host, port, local_hostname="localhost", timeout=timeout)
    except smtplib.SMTPConnectError as error:
        return f"greeting was {error.smtp_code}, expected 220"
    except (OSError, smtplib.SMTPException) as error:
        return f"cannot connect to {host}:{port}: {error}"
    try:
        code, text = client.noop()
        if code != 250:
            return f"NOOP answered {code} {text.decode(errors='replace')}, expected 250"
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass  # the server answered NOOP; a clumsy goodbye is not a health problem
        return None
    except (OSError, smtplib.SMTPException) as error:
        return f"SMTP session with {host}:{port} failed: {error}"
    finally:
        client.close()


def _usage() -> int:
    print("usage: python -m buzon.health smtp [HOST [PORT]]", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one check named on the command line; return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "smtp" or len(args) > 3:
        return _usage()
    host = args[1] if len(args) > 1 else "127.0.0.1"
    try:
        port = int(args[2] if len(args) > 2 else os.environ.get("BUZON_SMTP_PORT", "2525"))
    except ValueError:
        return _usage()
    if not 0 < port < 65536:
        return _usage()
    socket.setdefaulttimeout(TIMEOUT)
    reason = check_smtp(host, port)
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    print(f"healthy: {host}:{port} answered 220 and NOOP 250")
    return 0


if __name__ == "__main__":
    sys.exit(main())
