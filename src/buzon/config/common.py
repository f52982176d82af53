"""What several settings models share: the monitor token rule and the error report."""

from __future__ import annotations

import sys
from typing import NoReturn

from pydantic import ValidationError

__all__ = ["TOKEN_LENGTH", "exit_on_invalid", "validate_token"]

#: SPEC §6: the monitor token is exactly 8 bytes on the wire.
TOKEN_LENGTH = 8

# Tokens that appear in the seed's documentation or are obvious guesses: a server
# that accepted one would be open to anyone who read the report.
_KNOWN_TOKENS = frozenset({"secretpa", "mipass23", "changeme", "password", "12345678", "00000000"})


def validate_token(value: str) -> str:
    """Check a monitor token: 8 printable ASCII characters, not a well-known one.

    Raises:
        ValueError: with a message that never contains the token itself.
    """
    if len(value) != TOKEN_LENGTH or not value.isascii() or not value.isprintable():
        raise ValueError(f"must be exactly {TOKEN_LENGTH} printable ASCII characters")
    if value.lower() in _KNOWN_TOKENS:
        raise ValueError("is a well-known default token; choose a secret one")
    return value



def exit_on_invalid(error: ValidationError, prefix: str) -> NoReturn:
    """Print one line per validation error, naming the variable, and exit 2.

    ``include_input=False`` keeps the offending value (possibly a token) out of the
    message.
    """
    for item in error.errors(include_input=False, include_url=False):
        name = prefix + "_".join(str(p) for p in item["loc"]).upper() if item["loc"] else prefix
        print(f"buzon: configuration error: {name}: {item['msg']}", file=sys.stderr)
    raise SystemExit(2)
