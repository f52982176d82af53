"""Sidecar authentication: the deployment key, the MAC on every line, the replay guard.

Theory of operation
-------------------
The server and its sidecars share one per-deployment key (32 random bytes, kept
as 64 hex digits in a file: :func:`load_key`, written by
:mod:`buzon.transform.keygen`). It never crosses the wire: each request and
each reply line carries an HMAC-SHA256 tag instead (docs/protocol.md §2.3).

A sealed line is a JSON object whose *last* member is ``"mac"``::

    {"v":2,"op":"health","ts":1764420000,"nonce":"<32 hex>","mac":"<64 hex>"}\\n

and the tag covers, byte for byte, everything before ``,"mac":"``, prefixed by
a context string: ``buzon-sidecar-v2 request\\n`` for a request, and
``buzon-sidecar-v2 reply\\n<the request's nonce>\\n`` for a reply, so a reply
cannot be taken for a request, nor an old reply for the answer to a new
request. No re-encoding is needed to check it (the bytes as sent are what is
signed), and tags are compared with :func:`hmac.compare_digest`.

A request's ``ts`` (Unix seconds) and ``nonce`` (16 random bytes, hex) make it
usable once: :class:`ReplayGuard` refuses a timestamp more than ``window``
seconds from the sidecar's clock, and a nonce it has already seen inside the
window (the clock is passed in). Outside the window a stale request is refused
by its timestamp, so the guard forgets nonces older than that.

Nothing here opens a socket; only :func:`load_key` reads a file.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from buzon.transform.failures import FailureKind
from buzon.transform.wire import ProtocolError

__all__ = [
    "KEY_BYTES",
    "AuthError",
    "ReplayGuard",
    "Replayed",
    "Unauthenticated",
    "load_key",
    "new_nonce",
    "reply_context",
    "seal",
    "unseal",
]

#: Bytes of key material, at least (64 hex digits in the key file).
KEY_BYTES = 32
REQUEST_CONTEXT = b"buzon-sidecar-v2 request\n"
_MAC_FIELD = b',"mac":"'
_TAIL = b'"}'
_TAG_HEX = 64
_NONCE = re.compile(r"[0-9a-f]{32}")


class AuthError(ProtocolError):
    """Request not authenticated."""

    kind = FailureKind.AUTH


class Unauthenticated(AuthError):
    """No valid MAC: is the key the same on the server and the sidecar?"""


class Replayed(AuthError):
    """Request replayed or outside the time window."""


def load_key(path: Path | str) -> bytes:
    """Read a key file: 64 or more hex digits, surrounding whitespace ignored.

    Raises:
        ValueError: unreadable, not hex, or shorter than :data:`KEY_BYTES` bytes;
            the message never contains the key.
    """
    try:
        text = Path(path).read_bytes().strip()
    except OSError as error:
        raise ValueError(f"cannot read the key file {str(path)!r}: {error.strerror}") from None
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"the key file {str(path)!r} does not hold hex digits") from None
    if len(key) < KEY_BYTES:
        raise ValueError(
            f"the key in {str(path)!r} has {len(key)} bytes; at least {KEY_BYTES} are needed"
        )
    return key


def new_nonce() -> str:
    """16 random bytes as 32 lower-case hex digits."""
    return secrets.token_hex(16)


def reply_context(nonce: str) -> bytes:
    """What a reply's tag is bound to: the nonce of the request it answers."""
    return b"buzon-sidecar-v2 reply\n" + nonce.encode("ascii") + b"\n"


def _tag(key: bytes, context: bytes, body: bytes) -> bytes:
    return hmac.new(key, context + body, hashlib.sha256).hexdigest().encode("ascii")


def seal(key: bytes, context: bytes, line: bytes) -> bytes:
    """Append the ``"mac"`` member to one encoded JSON object line.

    Args:
        key: the deployment key.
        context: :data:`REQUEST_CONTEXT` or :func:`reply_context`.
        line: ``{...}`` with its newline, as :mod:`buzon.transform.wire` encodes it.
    """
    body = line.rstrip(b"\n")
    if not body.endswith(b"}") or body == b"{}":
        raise ValueError("seal needs a non-empty JSON object line")
    body = body[:-1]
    return body + _MAC_FIELD + _tag(key, context, body) + _TAIL + b"\n"


def unseal(key: bytes, context: bytes, line: bytes) -> None:
    """Check the tag of a sealed line (the line itself is decoded afterwards).

    Raises:
        Unauthenticated: no ``"mac"`` last member, or a tag that does not verify.
    """
    body = line[:-1] if line.endswith(b"\n") else line
    at = body.rfind(_MAC_FIELD)
    if at < 0 or not body.endswith(_TAIL):
        raise Unauthenticated('request carries no MAC (protocol v2 ends each line with '
                              '"mac":"<64 hex>"}; is the peer older?)')
    tag = body[at + len(_MAC_FIELD):-len(_TAIL)]
    if len(tag) != _TAG_HEX or not hmac.compare_digest(tag, _tag(key, context, body[:at])):
        raise Unauthenticated("MAC does not verify: is the key the same on both sides?")


class ReplayGuard:
    """Refuses a request whose timestamp is stale or whose nonce was already used."""

    def __init__(self, window: float) -> None:
        """Args:
        window: seconds a request's ``ts`` may differ from the clock, either way.
        """
        self.window = window
        self._seen: dict[str, int] = {}
        self._pruned = 0.0

    def check(self, ts: int, nonce: str, now: float) -> None:
        """Admit a request once.

        Raises:
            Replayed: ``ts`` outside ``now ± window``, a malformed nonce, or a
                nonce seen before inside the window.
        """
        age = now - ts
        if abs(age) > self.window:
            when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s ahead"
            raise Replayed(f"timestamp {ts} is {when} by the sidecar's clock (window "
                           f"{self.window:g} s): replayed, or clocks out of step")
        if not _NONCE.fullmatch(nonce):
            raise Replayed("'nonce' must be 32 lower-case hex digits")
        if now - self._pruned > 1.0:
            # A nonce older than the window is refused by its timestamp anyway.
            oldest = now - self.window
            self._seen = {n: t for n, t in self._seen.items() if t >= oldest}
            self._pruned = now
        if nonce in self._seen:
            raise Replayed("nonce already used: a replayed request")
        self._seen[nonce] = ts

    def __len__(self) -> int:
        return len(self._seen)
