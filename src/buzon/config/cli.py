"""The server's command line: the seed's flags over the ``BUZON_*`` environment."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from buzon import __version__
from buzon.config.common import exit_on_invalid
from buzon.config.server import ServerSettings

__all__ = ["load_server_settings"]


def _server_parser() -> argparse.ArgumentParser:
    # -h is the seed's help flag and -v its version flag, so argparse's own help is
    # replaced rather than shadowed.
    parser = argparse.ArgumentParser(
        prog="buzon",
        add_help=False,
        description="Buzón SMTP server. Flags override BUZON_* environment variables.",
    )
    parser.add_argument("-h", "--help", action="help", help="show this help and exit")
    parser.add_argument(
        "-v", "--version", action="version", version=f"buzon {__version__}",
        help="print the version and exit",
    )
    parser.add_argument("-p", dest="smtp_port", type=int, help="SMTP port (BUZON_SMTP_PORT)")
    parser.add_argument("-P", dest="monitor_port", type=int, help="monitor UDP port")
    parser.add_argument("-u", dest="monitor_token", help="monitor token, 8 characters")
    parser.add_argument("-T", dest="transform", help="transform program, e.g. tac")
    parser.add_argument("-d", dest="data_dir", type=Path, help="data directory")
    return parser


def load_server_settings(argv: list[str] | None = None, **overrides: Any) -> ServerSettings:
    """Build the server settings from flags, environment and defaults, or exit 2.

    Args:
        argv: command-line arguments (without the program name).
        overrides: extra initialiser values (tests), ranked like flags.
    """
    args = _server_parser().parse_args(argv)
    kwargs = {k: v for k, v in vars(args).items() if v is not None}
    kwargs.update(overrides)
    try:
        return ServerSettings(**kwargs)
    except ValidationError as error:
        exit_on_invalid(error, "BUZON_")
