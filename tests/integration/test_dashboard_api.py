"""The dashboard's HTTP face without a browser: headers, login, CSRF, the switch, refusals.

A real in-process server; requests with ``http.client`` over loopback, as a
browser (or an attacker's page) would send them.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any

from helpers import RunningServer, free_port, wait_for

from buzon.observe.dashboard import CSP

TOKEN = "t0k3n-ok"  # tests/helpers.py settings_for


class Client:
    """One cookie jar over ``http.client`` (a fresh connection per request, as the server wants)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: str | None = None

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = {"Content-Type": "application/json"} if body is not None else {}
        if self.cookie:
            sent["Cookie"] = self.cookie
        sent.update(headers or {})
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) \
            else body
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            got = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()
        if "set-cookie" in got[1]:
            value = got[1]["set-cookie"].split(";", 1)[0]
            self.cookie = None if value.endswith("=") else value
        return got

    def json(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, _, raw = self.call(method, path, body, headers)
        return status, json.loads(raw)


def port_of(server: RunningServer) -> int:
    return server.server.http_addresses[0][1]


def test_the_page_and_assets_are_served_with_a_strict_policy(
    make_server: Callable[..., RunningServer],
) -> None:
    client = Client(port_of(make_server(http_port=0)))
    status, headers, body = client.call("GET", "/dashboard")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert b"<script>" not in body and b"onclick" not in body and b"style=" not in body
    for asset in (b"/static/uPlot.iife.min.js", b"/static/dashboard.js", b"/static/uPlot.min.css"):
        assert asset in body
        status, headers, data = client.call("GET", asset.decode())
        assert status == 200 and data, asset
    assert b"MIT License" in client.call("GET", "/static/uPlot.LICENSE")[2]
    status, headers, _ = client.call("GET", "/")
    assert (status, headers["location"]) == (303, "/dashboard")
    assert client.call("GET", "/static/../pyproject.toml")[0] == 404


def test_stats_are_sampled_every_second_and_readable_without_login(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(http_port=0)
    client = Client(port_of(server))
    assert wait_for(lambda: client.json("GET", "/api/stats")[1]["sample"] is not None)
    status, data = client.json("GET", "/api/stats")
    assert status == 200 and data["logged_in"] is False and data["alerts"] == []
    assert data["sample"]["transform"] == {"configured": False, "enabled": False}
    assert 0 < data["sample"]["disk_free_percent"] <= 100
    first = data["sample"]["t"]
    assert wait_for(lambda: client.json("GET", "/api/stats")[1]["sample"]["t"] > first)
    assert len(client.json("GET", "/api/history")[1]["samples"]) >= 2


def test_login_csrf_and_the_switch(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(http_port=0, transform="cat")
    client = Client(port_of(server))
    assert client.json("POST", "/api/transforms", {"enabled": False})[0] == 401
    status, data = client.json("POST", "/api/login", {"token": TOKEN})
    assert status == 200 and data["logged_in"] and client.cookie is not None
    csrf = client.json("GET", "/api/session")[1]["csrf"]
    assert csrf == data["csrf"]
    assert client.json("POST", "/api/transforms", {"enabled": False})[0] == 403  # no CSRF
    assert client.json("POST", "/api/transforms", {"enabled": False},
                       {"X-CSRF-Token": csrf[:-1] + "x"})[0] == 403
    assert client.json("POST", "/api/transforms", {"enabled": "no"},
                       {"X-CSRF-Token": csrf})[0] == 400
    status, data = client.json("POST", "/api/transforms", {"enabled": False},
                               {"X-CSRF-Token": csrf})
    assert (status, data) == (200, {"enabled": False})
    assert server.server.switch is not None and server.server.switch.enabled is False
    assert b"buzon_transform_enabled 0.0" in client.call("GET", "/metrics")[2]
    assert client.json("POST", "/api/transforms", {"enabled": True},
                       {"X-CSRF-Token": csrf})[1] == {"enabled": True}
    assert server.server.switch.enabled is True
    # the state file has it, as after a monitor switch
    state = json.loads((server.settings.data_dir / "state.json").read_text())
    assert state["transform_enabled"] is True
    assert client.json("POST", "/api/logout", {})[0] == 200
    assert client.cookie is None
    assert client.json("GET", "/api/session")[1] == {"logged_in": False}


def test_posts_that_a_foreign_page_could_send_are_refused(
    make_server: Callable[..., RunningServer],
) -> None:
    port = port_of(make_server(http_port=0, transform="cat"))
    client = Client(port)
    # A cross-site <form> can only send form encodings: 415 before anything is read.
    assert client.call("POST", "/api/login", f"token={TOKEN}".encode(),
                       {"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    assert client.json("POST", "/api/login", {"token": TOKEN},
                       {"Origin": "http://evil.example"})[0] == 403
    assert client.json("POST", "/api/login", {"token": TOKEN},
                       {"Origin": f"http://127.0.0.1:{port}"})[0] == 200
    assert client.call("GET", "/api/login")[0] == 405


def test_switching_on_with_no_transform_configured_is_a_conflict(
    make_server: Callable[..., RunningServer],
) -> None:
    client = Client(port_of(make_server(http_port=0)))
    csrf = client.json("POST", "/api/login", {"token": TOKEN})[1]["csrf"]
    status, data = client.json("POST", "/api/transforms", {"enabled": True},
                               {"X-CSRF-Token": csrf})
    assert (status, data) == (409, {"error": "no transform program defined"})


def test_wrong_tokens_are_rate_limited_counted_and_raise_the_alert(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(http_port=0, dashboard_login_failures_per_minute=3, alert_auth_failures=3)
    client = Client(port_of(server))
    for _ in range(3):
        assert client.json("POST", "/api/login", {"token": "wrong-tk"})[0] == 401
    status, headers, _ = client.call("POST", "/api/login", {"token": TOKEN})
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 61  # even the right one
    assert b"buzon_dashboard_login_failures_total 3.0" in client.call("GET", "/metrics")[2]
    assert wait_for(lambda: [a["kind"] for a in client.json("GET", "/api/stats")[1]["alerts"]]
                    == ["auth-failures"])


def test_no_dashboard_when_turned_off(make_server: Callable[..., RunningServer]) -> None:
    client = Client(port_of(make_server(http_port=0, dashboard=False)))
    assert client.call("GET", "/dashboard")[0] == 404
    assert client.call("GET", "/metrics")[0] == 200


def test_history_without_its_prometheus_is_the_local_samples_and_the_reason(
    make_server: Callable[..., RunningServer], caplog: Any,
) -> None:
    # BUZON_DASHBOARD_PROMETHEUS names a port where nothing listens: the page still gets
    # the server's own samples, told why the long history is missing, and the log says
    # it once however often the page is loaded.
    closed = free_port()
    server = make_server(http_port=0, dashboard_prometheus=f"http://127.0.0.1:{closed}")
    client = Client(port_of(server))
    wait_for(lambda: client.json("GET", "/api/stats")[1]["sample"] is not None)
    for _ in range(3):
        status, page = client.json("GET", "/api/history")
        assert status == 200 and page["source"] == "local"
        assert f"127.0.0.1:{closed}" in page["prometheus_error"]
        assert page["samples"] and all("source" not in s for s in page["samples"])
    said = [r for r in caplog.records if "history from Prometheus unavailable" in r.getMessage()]
    assert len(said) == 1
