"""TLS wiring: which certificate files, generated once, loaded per process; the SMTPS listener.

Theory of operation
-------------------
:func:`prepare_tls` turns the settings into a :class:`buzon.tls.ServerTls` (or
None with ``BUZON_TLS`` off): the configured ``BUZON_TLS_CERT_FILE`` and
``BUZON_TLS_KEY_FILE``, or the set generated into ``<data_dir>/tls/``. Only the
process that owns start-up generates (the single-process server, or the
supervisor before it starts any worker); workers only load what is there, so
there is no race between them (the generator also holds a lock file). A file
that does not load stops start-up with a :class:`~buzon.app.wiring.ConfigError`
naming the setting, hence exit status 2.

:func:`open_smtps` binds the implicit-TLS listener (RFC 8314) with the same
policy as the SMTP one (:func:`buzon.net.bind_sockets`, ``SO_REUSEPORT`` under
the supervisor, which reserves the port as it does the SMTP port).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from buzon.app.wiring import ConfigError
from buzon.config import ServerSettings
from buzon.net import bind_sockets, format_address
from buzon.smtp.starttls import implicit_tls
from buzon.tls import GeneratedFiles, ServerTls, TlsError, ensure_generated

__all__ = ["open_smtps", "prepare_tls"]

log = logging.getLogger("buzon.tls")

_HANDSHAKE_TIMEOUT = 60.0  # asyncio's default; capped by BUZON_IDLE_TIMEOUT


def prepare_tls(settings: ServerSettings, *, generate: bool) -> ServerTls | None:
    """The reloading TLS context the settings ask for, or None with TLS off.

    Args:
        settings: the server's settings.
        generate: make the local CA and certificate if they are missing (the
            process that owns start-up); False: only load them (a worker).

    Raises:
        ConfigError: a certificate or key file cannot be used (names the setting).
    """
    s = settings
    if not s.tls:
        return None
    if s.tls_cert_file is not None and s.tls_key_file is not None:
        cert, key = s.tls_cert_file, s.tls_key_file
        labels = ("BUZON_TLS_CERT_FILE", "BUZON_TLS_KEY_FILE")
    else:
        folder = s.data_dir / "tls"
        if generate:
            try:
                files = ensure_generated(folder, s.hostname)
            except OSError as error:
                raise ConfigError(
                    f"BUZON_DATA_DIR: cannot write the generated TLS certificate in {folder}: "
                    f"{error.strerror or error}"
                ) from None
        else:
            files = GeneratedFiles(folder)
        cert, key = files.cert, files.key
        labels = (f"generated certificate (BUZON_TLS_CERT_FILE unset, {folder})",
                  "generated key (BUZON_TLS_KEY_FILE unset)")
    try:
        tls = ServerTls(cert, key, interval=s.tls_reload_interval, labels=labels)
    except TlsError as error:
        raise ConfigError(str(error)) from None
    if generate:
        log.info("TLS: STARTTLS offered with %s (serial %x, %s, expires %s)%s",
                 cert, tls.loaded.serial, tls.loaded.subject, f"{tls.loaded.not_after:%Y-%m-%d}",
                 "; MAIL refused before STARTTLS" if s.require_tls else "")
    return tls


async def open_smtps(
    settings: ServerSettings,
    factory: Callable[[], asyncio.Protocol],
    tls: ServerTls,
    *,
    reuse_port: bool,
) -> tuple[list[Any], list[tuple[str, int]]]:
    """Bind the implicit-TLS listener; its servers and bound addresses.

    Raises:
        OSError: an address cannot be bound (as for the SMTP listener).
    """
    loop = asyncio.get_running_loop()
    timeout = min(settings.idle_timeout, _HANDSHAKE_TIMEOUT)
    make = implicit_tls(factory, tls.current, timeout)
    sockets = bind_sockets(settings.tls_hosts, settings.smtps_port, reuse_port=reuse_port)
    servers: list[Any] = []
    try:
        for sock in sockets:
            servers.append(await loop.create_server(make, sock=sock, backlog=4096))
    except BaseException:
        for srv in servers:
            srv.close()
        for sock in sockets[len(servers):]:
            sock.close()
        raise
    addresses = [sock.getsockname()[:2] for sock in sockets]
    log.info("implicit TLS (RFC 8314) on %s", ", ".join(format_address(h, p) for h, p in addresses))
    return servers, addresses
