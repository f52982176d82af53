"""Container healthchecks that speak each service's own protocol (STYLE practice 15).

Theory of operation
-------------------
Docker runs ``HEALTHCHECK`` commands inside the container every few seconds; a check
that only looks for an open port would call a wedged server healthy. So the SMTP check
holds a real, minimal conversation::

    python -m buzon.health smtp [HOST [PORT]]

connect → expect the ``220`` greeting → ``NOOP`` → expect ``250`` → ``QUIT``. HOST
defaults to 127.0.0.1 and PORT to ``$BUZON_SMTP_PORT`` or 2525. Then, when the
server's HTTP listener is on (the same ``BUZON_HTTP_LISTEN``/``BUZON_HTTP_PORT`` the
container's server reads; empty ``BUZON_HTTP_LISTEN`` means off), it asks ``/readyz``:
a server that answers SMTP but cannot write its queue, or whose worker died, is
unhealthy too, with the reason ``/readyz`` gives. The whole exchange is
bounded by a 5 s timeout. Exit status 0 means healthy; 1 means unhealthy, with one line
on stderr saying why (Docker keeps it in ``docker inspect``'s health log). Usage errors
exit 2. Standard library only, so it runs in any image that has the package.

Note that each check is a real SMTP session: it shows up in the access log and in the
historic connection count, like any client's.

The IMAP check (Dovecot, service ``imap``) logs in for real::

    python -m buzon.health imap [HOST [PORT]]

connect to IMAPS (default 127.0.0.1:1993) → TLS → ``LOGIN`` → ``SELECT INBOX`` →
``LOGOUT``, so a broken passdb, an unreadable users file or a Maildir Dovecot cannot
open is unhealthy, not just a closed port. The credentials are those of a health
user that the container's entrypoint makes at start in ``$BUZON_HEALTH_CREDENTIALS``
(default ``/run/buzon-health/credentials``: a user name line and a password line), which
Dovecot only accepts from loopback (``allow_nets``). The certificate is not verified:
the check talks to its own container over loopback and tests the service, not the
chain a client would build.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import smtplib
import socket
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["TIMEOUT", "check_imap", "check_ready", "check_smtp", "main", "ready_url"]

#: Where the imap container's entrypoint writes the health user's name and password.
HEALTH_CREDENTIALS = "/run/buzon-health/credentials"

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


def ready_url(environ: dict[str, str]) -> str | None:
    """The ``/readyz`` URL of the server configured in ``environ``, or None when it has no
    HTTP listener. A wildcard listen address is reached on loopback."""
    listen = environ.get("BUZON_HTTP_LISTEN", "127.0.0.1")
    first = next((a.strip() for a in listen.split(",") if a.strip()), None)
    if first is None:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(first, first).strip("[]")
    port = environ.get("BUZON_HTTP_PORT", "9025").strip() or "9025"
    return f"http://[{host}]:{port}/readyz" if ":" in host else f"http://{host}:{port}/readyz"


def check_ready(url: str, timeout: float = TIMEOUT) -> str | None:
    """``GET /readyz``: None on 200, else the reason (its body, or why it did not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return None if answer.status == 200 else f"{url} answered {answer.status}"
    except urllib.error.HTTPError as error:
        with error:
            body = error.read(300).decode("utf-8", "replace").strip()
        return f"{url} answered {error.code}: {body}"
    except OSError as error:
        return f"cannot reach {url}: {error}"


def check_imap(host: str, port: int, credentials: Path, timeout: float = TIMEOUT) -> str | None:
    """Log in over IMAPS with the health user, select INBOX, log out.

    Returns:
        None when healthy, else a one-line reason.
    """
    try:
        user, password = credentials.read_text(encoding="utf-8").split("\n")[:2]
    except (OSError, ValueError) as error:
        return f"cannot read the health credentials {credentials}: {error}"
    context = ssl.create_default_context()
    context.check_hostname = False  # our own container over loopback: see the docstring
    context.verify_mode = ssl.CERT_NONE
    try:
        client = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
    except (OSError, imaplib.IMAP4.error) as error:
        return f"cannot connect to {host}:{port} over TLS: {error}"
    try:
        client.login(user, password)
        status, _ = client.select("INBOX", readonly=True)
        if status != "OK":
            return f"SELECT INBOX answered {status}"
        client.logout()
        return None
    except (OSError, imaplib.IMAP4.error) as error:
        return f"IMAP session with {host}:{port} failed: {error}"
    finally:
        with contextlib.suppress(OSError):
            client.shutdown()


_DEFAULT_PORTS = {"smtp": ("BUZON_SMTP_PORT", "2525"), "imap": ("BUZON_IMAPS_PORT", "1993")}


def _usage() -> int:
    print("usage: python -m buzon.health {smtp|imap} [HOST [PORT]]", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one check named on the command line; return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in _DEFAULT_PORTS or len(args) > 3:
        return _usage()
    kind = args[0]
    host = args[1] if len(args) > 1 else "127.0.0.1"
    variable, default = _DEFAULT_PORTS[kind]
    try:
        port = int(args[2] if len(args) > 2 else os.environ.get(variable, default))
    except ValueError:
        return _usage()
    if not 0 < port < 65536:
        return _usage()
    socket.setdefaulttimeout(TIMEOUT)
    if kind == "smtp":
        reason = check_smtp(host, port)
        done = "answered 220 and NOOP 250"
        url = ready_url(dict(os.environ))
        if reason is None and url is not None:
            reason = check_ready(url)
            done += f", {url} 200"
    else:
        credentials = Path(os.environ.get("BUZON_HEALTH_CREDENTIALS", HEALTH_CREDENTIALS))
        reason = check_imap(host, port, credentials)
        done = "logged in over TLS and selected INBOX"
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    print(f"healthy: {host}:{port} {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
