"""Dashboard logins: the monitor token in, a session cookie and a CSRF token out.

Theory of operation
-------------------
An operator logs in with the server's monitor token (the one ``monitor-client``
uses), compared with :func:`hmac.compare_digest`. Each client address may
fail :attr:`Sessions.failures_per_minute` times in a sliding minute; past that
its attempts are refused unread (``429``) until the oldest failure is a minute
old, so guessing the token's ~47.6 bits over HTTP is hopeless. A success makes a
:class:`Session`: a random 256-bit id (the cookie, ``HttpOnly``,
``SameSite=Strict``, ``Max-Age`` the lifetime, never readable by a script) and
a separate random CSRF token that the page sends back in a header on every
change it asks for. Sessions are kept in memory (a restart logs everyone out),
expire after ``lifetime`` seconds, and at most :data:`MAX_SESSIONS` live at
once (the oldest goes first). The clock is passed in (``now``), so every case
is unit-tested without waiting.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from dataclasses import dataclass

__all__ = ["COOKIE", "MAX_SESSIONS", "Session", "Sessions"]

COOKIE = "buzon_session"
MAX_SESSIONS = 256


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str
    expires: float


class Sessions:
    """The live sessions, the failed-login counts and the rate limit."""

    def __init__(self, token: bytes, *, lifetime: float, failures_per_minute: int) -> None:
        self._token = token
        self.lifetime = lifetime
        self.failures_per_minute = failures_per_minute
        self.failures = 0
        """Wrong tokens since the start (``buzon_dashboard_login_failures_total``)."""
        self._live: dict[str, Session] = {}
        self._failed: dict[str, deque[float]] = {}

    def limited(self, peer: str, now: float) -> float:
        """Seconds ``peer`` must wait before it may try again (0: it may now)."""
        recent = self._failed.get(peer)
        if recent is None:
            return 0.0
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if not recent:
            del self._failed[peer]
            return 0.0
        return recent[0] + 60 - now if len(recent) >= self.failures_per_minute else 0.0

    def login(self, given: str, peer: str, now: float) -> Session | None:
        """A new session for the right token, else None (and the failure counted).

        The caller checks :meth:`limited` first; a limited peer's attempt is not read.
        """
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self._token):
            self.failures += 1
            if len(self._failed) > 4 * MAX_SESSIONS:  # bounded memory under a spray
                self._failed.pop(next(iter(self._failed)))
            self._failed.setdefault(peer, deque()).append(now)
            return None
        self._expire(now)
        while len(self._live) >= MAX_SESSIONS:
            self._live.pop(next(iter(self._live)))  # dicts keep insertion order: the oldest
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                          now + self.lifetime)
        self._live[session.id] = session
        return session

    def find(self, cookie_header: str | None, now: float) -> Session | None:
        """The live session a ``Cookie`` header names, if any."""
        if not cookie_header:
            return None
        for part in cookie_header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                session = self._live.get(value)
                if session is not None and session.expires > now:
                    return session
        return None

    def logout(self, session: Session) -> None:
        self._live.pop(session.id, None)

    def cookie(self, session: Session | None) -> str:
        """The ``Set-Cookie`` value that starts ``session`` (None: ends the current one)."""
        if session is None:
            return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        return (f"{COOKIE}={session.id}; Path=/; HttpOnly; SameSite=Strict; "
                f"Max-Age={int(self.lifetime)}")

    def _expire(self, now: float) -> None:
        for sid in [sid for sid, s in self._live.items() if s.expires <= now]:
            del self._live[sid]
