"""The web dashboard's routes: its page and assets, the JSON it polls, login, the switch.

Theory of operation
-------------------
The page (``/dashboard``, ``static/index.html``) is static, and so is its
script: every number comes from JSON the script fetches (``/api/history`` once,
``/api/stats`` every second, both built by :class:`~buzon.observe.stats.Stats`;
the history starts with Prometheus's when ``BUZON_DASHBOARD_PROMETHEUS`` is set,
:mod:`buzon.observe.history`),
so the page carries no inline script and every answer of this module sends a
``Content-Security-Policy`` allowing only this origin's own scripts, styles and
requests (no CDN: uPlot is vendored in ``static/``, see ``static/VENDORED.md``).

Reading is open, as ``/metrics`` is (the listener is loopback unless configured
otherwise). Changing something needs a login (:mod:`buzon.observe.sessions`):
``POST /api/login`` with the monitor token in JSON sets the session cookie and
answers the session's CSRF token; ``POST /api/transforms`` must carry the cookie,
that token in ``X-CSRF-Token`` and a JSON body; ``POST /api/logout`` ends it. Every
POST must be ``Content-Type: application/json`` (a cross-site form cannot send
it without a CORS preflight, which this server never grants) and, when the
browser sends ``Origin``, come from this very host. The switch is the one the
monitor uses (the process that owns the HTTP listener owns it: the single server,
or the supervisor, whose workers follow it through the shared counters file).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from buzon.observe import history
from buzon.observe.httpd import Answer, Request, Route, post
from buzon.observe.sessions import Session, Sessions
from buzon.observe.stats import Stats

__all__ = ["ASSETS", "CSP", "dashboard_routes"]

log = logging.getLogger("buzon.observe")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_SECURITY = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
             ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"))
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
JSON = "application/json"


def _answer(status: int, body: bytes, content_type: str,
            *extra: tuple[str, str]) -> Answer:
    return Answer(status, body, content_type, headers=(*_SECURITY, *extra))


def _json(status: int, data: Any, *extra: tuple[str, str]) -> Answer:
    return _answer(status, json.dumps(data, separators=(",", ":")).encode(), JSON, *extra)


def _refusal(request: Request) -> Answer | None:
    """The answer to a POST that is not a same-origin JSON request, else None."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != JSON:
        return _json(415, {"error": "send application/json"})
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return _json(403, {"error": "cross-origin request refused"})
    return None


def _body(request: Request) -> dict[str, Any] | None:
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def dashboard_routes(stats: Stats, sessions: Sessions, switch: Any,
                     clock: Callable[[], float] = time.time, *,
                     prometheus: str | None = None,
                     history_seconds: float = 3600.0) -> dict[str, Route]:
    """The dashboard's paths, over the sampler, the sessions and the transform switch.

    With ``prometheus`` (``BUZON_DASHBOARD_PROMETHEUS``), ``/api/history`` starts with
    that Prometheus's last ``history_seconds`` (:mod:`buzon.observe.history`).
    """
    failures_logged: set[str] = set()
    files = resources.files("buzon.observe") / "static"
    assets = {name: (files / name).read_bytes() for name in ASSETS}

    def asset(name: str) -> Route:
        async def serve(_: Request) -> Answer:
            return _answer(200, assets[name], ASSETS[name])
        return serve

    def session_of(request: Request) -> Session | None:
        return sessions.find(request.headers.get("cookie"), clock())

    async def home(_: Request) -> Answer:
        return _answer(303, b"", "text/plain", ("Location", "/dashboard"))

    async def api_stats(request: Request) -> Answer:
        return _json(200, {"sample": stats.latest,
                           "alerts": [{"kind": a.kind, "text": a.text} for a in stats.alerts],
                           "logged_in": session_of(request) is not None})

    async def api_history(_: Request) -> Answer:
        local = list(stats.samples)
        if prometheus is None:
            return _json(200, {"samples": local, "source": "local"})
        first = local[0]["t"] if local else None
        try:
            older = await asyncio.to_thread(history.fetch, prometheus, history_seconds,
                                            clock(), first)
        except history.HistoryError as error:
            reason = str(error)
            if reason not in failures_logged:  # once per kind, not once per page load
                failures_logged.add(reason)
                log.warning("dashboard history from Prometheus unavailable: %s", reason)
            return _json(200, {"samples": local, "source": "local",
                               "prometheus_error": reason})
        return _json(200, {"samples": older + local, "source": "prometheus",
                           "prometheus_points": len(older)})

    async def api_session(request: Request) -> Answer:
        session = session_of(request)
        if session is None:
            return _json(200, {"logged_in": False})
        return _json(200, {"logged_in": True, "csrf": session.csrf, "expires": session.expires})

    async def api_login(request: Request) -> Answer:
        if (refused := _refusal(request)) is not None:
            return refused
        now = clock()
        wait = sessions.limited(request.peer, now)
        if wait:
            return _json(429, {"error": "too many wrong tokens; try again later"},
                         ("Retry-After", str(int(wait) + 1)))
        body = _body(request)
        token = body.get("token") if body else None
        if not isinstance(token, str):
            return _json(400, {"error": "send {\"token\": \"...\"}"})
        session = sessions.login(token, request.peer, now)
        if session is None:
            log.warning("dashboard: wrong token from %s", request.peer)
            return _json(401, {"error": "wrong token"})
        log.info("dashboard: login from %s", request.peer)
        return _json(200, {"logged_in": True, "csrf": session.csrf, "expires": session.expires},
                     ("Set-Cookie", sessions.cookie(session)))

    async def api_logout(request: Request) -> Answer:
        if (refused := _refusal(request)) is not None:
            return refused
        session = session_of(request)
        if session is not None:
            sessions.logout(session)
        return _json(200, {"logged_in": False}, ("Set-Cookie", sessions.cookie(None)))

    async def api_transforms(request: Request) -> Answer:
        if (refused := _refusal(request)) is not None:
            return refused
        session = session_of(request)
        if session is None:
            return _json(401, {"error": "log in first"})
        if not hmac.compare_digest(request.headers.get("x-csrf-token", "").encode(),
                                   session.csrf.encode()):
            return _json(403, {"error": "missing or wrong CSRF token"})
        body = _body(request)
        enabled = body.get("enabled") if body else None
        if not isinstance(enabled, bool):
            return _json(400, {"error": "send {\"enabled\": true|false}"})
        try:
            switch.set_enabled(enabled)
        except RuntimeError as error:  # NoTransformConfigured: nothing to switch on
            return _json(409, {"error": str(error)})
        except OSError as error:  # the state file could not be saved: switch rolled back
            log.error("dashboard: transform switch not saved: %s", error)
            return _json(503, {"error": f"not saved: {error.strerror or error}"})
        log.info("dashboard: transforms %s by %s", "enabled" if enabled else "disabled",
                 request.peer)
        return _json(200, {"enabled": bool(switch.enabled)})

    table: dict[str, Route] = {f"/static/{name}": asset(name) for name in ASSETS}
    table.update({
        "/": home,
        "/dashboard": asset("index.html"),
        "/api/stats": api_stats,
        "/api/history": api_history,
        "/api/session": api_session,
        "/api/login": post(api_login),
        "/api/logout": post(api_logout),
        "/api/transforms": post(api_transforms),
    })
    return table
