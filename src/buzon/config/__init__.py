"""Settings: one pydantic-settings model per process, built once in ``main()``.

Theory of operation
-------------------
Every knob is an environment variable with a prefix (``BUZON_`` for the server,
``BUZON_MONITOR_`` for the monitor client), documented by its ``Field``
description and bounded where a bound makes sense. The seed's command-line flags
(``-p -P -u -T``) are parsed with argparse and passed as initialiser keyword
arguments, which pydantic-settings ranks above the environment, so a flag always
wins over a variable. A bad value stops start-up with one line per error naming
the variable, and exit status 2; the input value is never echoed, so a secret
cannot leak into logs.

Modules: :mod:`.server` (the server's model, which mixes in :mod:`.mailhost`,
:mod:`.tls`, :mod:`.messages`, :mod:`.observe` and :mod:`.instance`), :mod:`.client`
(``monitor-client``), :mod:`.cli` (flags), :mod:`.common` (the token rule, the error report).
"""

from buzon.config.cli import load_server_settings
from buzon.config.client import ClientSettings
from buzon.config.common import TOKEN_LENGTH, exit_on_invalid, validate_token
from buzon.config.server import ServerSettings

__all__ = [
    "TOKEN_LENGTH",
    "ClientSettings",
    "ServerSettings",
    "exit_on_invalid",
    "load_server_settings",
    "validate_token",
]
