"""Where the monitor token comes from, and the generated one's file.

Theory of operation
-------------------
The server takes, in order: ``BUZON_MONITOR_TOKEN`` (or flag ``-u``), then the
file named by ``BUZON_MONITOR_TOKEN_FILE`` (Docker secrets), then
``<data_dir>/monitor.token``. When that last file does not exist a random token
is generated (8 alphanumeric characters from :mod:`secrets`, about 47.6 bits)
and stored there readable only by the server's user, so no well-known default
is ever accepted and the operator finds the token next to the data. The log
names the file, never the token.

The file appears complete or not at all: the token is written and fsynced under
a temporary name, then hard-linked to its final name. ``link`` fails if the name
exists, so two servers racing on one data directory both end up with the token
that won, and a client never reads a half-written file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import string
from pathlib import Path

from buzon.config import ServerSettings, validate_token

__all__ = ["TOKEN_FILE_NAME", "TokenError", "load_or_create_token", "read_token_file"]

log = logging.getLogger("buzon.monitor")

TOKEN_FILE_NAME = "monitor.token"
_ALPHABET = string.ascii_letters + string.digits


class TokenError(Exception):
    """The monitor token cannot be read or is not acceptable (message never holds it)."""


def read_token_file(path: Path) -> bytes:
    """Read a token file: the token, optionally followed by a line break.

    Args:
        path: the file (the server's ``<data_dir>/monitor.token``, or a secret).

    Returns:
        The 8-byte token.

    Raises:
        TokenError: the file cannot be read, or its content is not a valid token.
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise TokenError(f"{path}: cannot read the monitor token: {_why(error)}") from None
    # Only a line break is stripped: a space is a legal token character.
    text = raw.decode("ascii", errors="replace").rstrip("\r\n")
    try:
        validate_token(text)
    except ValueError as error:
        raise TokenError(f"{path}: the monitor token {error}") from None
    return text.encode("ascii")


def load_or_create_token(settings: ServerSettings) -> bytes:
    """The server's monitor token, generating and storing one at first start.

    Args:
        settings: uses ``monitor_token``, ``monitor_token_file`` and ``data_dir``.

    Returns:
        The 8-byte token.

    Raises:
        TokenError: a configured token file is missing or invalid, or the
            generated token cannot be stored.
    """
    if settings.monitor_token is not None:
        # Already checked by ServerSettings' validator.
        return settings.monitor_token.get_secret_value().encode("ascii")
    if settings.monitor_token_file is not None:
        return read_token_file(settings.monitor_token_file)
    path = settings.data_dir / TOKEN_FILE_NAME
    if not path.exists():
        _create(path)
    else:
        log.info("monitor token read from %s", path)
    token = read_token_file(path)
    _warn_if_exposed(path)
    return token


def _generate() -> str:
    while True:
        candidate = "".join(secrets.choice(_ALPHABET) for _ in range(8))
        try:
            return validate_token(candidate)
        except ValueError:  # a well-known token by sheer chance: draw again
            continue


def _create(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise TokenError(f"{path}: cannot store the monitor token: {_why(error)}") from None
    try:
        try:
            # The umask can only remove bits; fchmod makes it exactly 0600.
            os.fchmod(fd, 0o600)
            os.write(fd, (_generate() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    except FileExistsError:
        return  # another process won the race; its token stands
    except OSError as error:
        raise TokenError(f"{path}: cannot store the monitor token: {_why(error)}") from None
    finally:
        tmp.unlink()
    log.info("monitor token generated and stored in %s (mode 0600)", path)


def _why(error: OSError) -> str:
    return error.strerror or str(error)


def _warn_if_exposed(path: Path) -> None:
    with contextlib.suppress(OSError):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            log.warning("%s is readable by other users; run chmod 600 on it", path)
