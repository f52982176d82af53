"""``/metrics``, ``/healthz`` and ``/readyz`` as Prometheus and a healthcheck see them.

Every test runs a real Buzón (in-process ``make_server``, or ``python -m buzon``
with ``BUZON_WORKERS=3`` as a child process), drives it with SMTP over real
sockets and reads the HTTP listener with ``urllib``, as a scraper would. The
expected numbers come from what the test did: the connections it opened, the
bytes its client sent and received, the messages answered 250 and delivered.
Waiting polls a condition with a deadline (``wait_for``), never sleeps.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from faults.kit import remount, tmpfs
from helpers import (
    LineClient,
    RunningServer,
    child_pids,
    free_port,
    server_process,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from buzon.metrics.shared import SharedCounters
from buzon.observe import METRICS

HOST = "127.0.0.1"


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request with urllib: status, headers, body (error statuses included)."""
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def scrape(port: int) -> dict[str, float]:
    """Every sample of ``/metrics``, by name, parsed by prometheus-client's own parser."""
    status, headers, body = get(port, "/metrics")
    assert status == 200, body
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def session(port: int, i: int) -> int:
    """One message in one session, byte-counted: what the client sent plus what it read."""
    moved = 0
    with LineClient(port) as client:

        def say(line: str) -> str:
            nonlocal moved
            if line:
                client.send(line)
                moved += len(line.encode())
            reply = client.reply()
            moved += sum(len(part.encode()) + 2 for part in reply.split("\n"))
            return reply

        assert say("").startswith("220")
        assert say("EHLO client.test\r\n").startswith("250")
        assert say("MAIL FROM:<alice@example.org>\r\n").startswith("250")
        assert say("RCPT TO:<bob@example.org>\r\n").startswith("250")
        assert say("DATA\r\n").startswith("354")
        assert say(f"Subject: {i}\r\n\r\nhello {i}\r\n.\r\n").startswith("250")
        assert say("QUIT\r\n").startswith("221")
    return moved


def counted(samples: dict[str, float]) -> dict[str, float]:
    """The counters' samples of ``samples``: no histograms, queue age, stage health, disk,
    retry window, dashboard logins or refusals by code (tests/integration/
    test_http_histograms.py, test_dashboard_api.py, tests/unit/metrics/test_histograms.py
    and the refusals test below check those)."""
    return {name: value for name, value in samples.items()
            if not name.startswith(("buzon_delivery_delay_", "buzon_transform_duration_",
                                    "buzon_queue_oldest_", "buzon_sidecar_",
                                    "buzon_data_disk_", "buzon_transform_retry_window",
                                    "buzon_dashboard_", "buzon_smtp_refusals_"))}


def expected(**values: int) -> dict[str, float]:
    """Every exposed sample at zero, but for ``values`` (by counter field) and the
    queue limit, a setting (BUZON_QUEUE_LIMIT's default)."""
    samples = {m.exposed: 0.0 for m in METRICS}
    samples["buzon_queue_limit"] = 20_000.0
    samples["buzon_transform_enabled"] = 0.0
    for metric in METRICS:
        if metric.counter in values:
            samples[metric.exposed] = values[metric.counter]
    return samples


def test_metrics_after_a_known_load_are_exactly_what_was_sent(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(http_port=0)
    port = server.server.http_addresses[0][1]
    assert counted(scrape(port)) == expected()

    moved = sum(session(server.port, i) for i in range(7))
    server.wait_idle()

    want = expected(historic_connections=7, bytes_transferred=moved, mails_sent=7,
                    deliveries=7)
    assert wait_for(lambda: counted(scrape(port)) == want), (scrape(port), want)
    _, _, body = get(port, "/metrics")
    for metric in METRICS:  # every family is documented
        assert f"# HELP {metric.name}".encode() in body
        kind = "gauge" if metric.gauge else "counter"
        assert f"# TYPE {metric.exposed} {kind}".encode() in body


def test_an_open_session_is_a_gauge_and_the_queue_depth_counts_what_waits(
    make_server: Callable[..., RunningServer], tmp_path: Path,
) -> None:
    # A transform that waits for a file keeps every message in the queue.
    gate = tmp_path / "gate"
    wait = f"sh -c 'while [ ! -e {gate} ]; do sleep 0.05; done; cat'"
    server = make_server(http_port=0, transform=wait)
    port = server.server.http_addresses[0][1]
    with smtplib.SMTP(HOST, server.port, timeout=10) as client:
        for i in range(3):
            client.sendmail("alice@example.org", ["bob@example.org"], f"m {i}\r\n")
        assert wait_for(lambda: scrape(port)["buzon_queue_depth"] == 3)  # handed over after 250
        now = scrape(port)
        assert now["buzon_smtp_connections_open"] == 1
        assert now["buzon_messages_accepted_total"] == 3
        assert now["buzon_transform_enabled"] == 1
    gate.touch()
    server.wait_idle()
    assert wait_for(lambda: scrape(port)["buzon_smtp_connections_open"] == 0)
    after = scrape(port)
    assert (after["buzon_queue_depth"], after["buzon_deliveries_total"]) == (0, 3)
    assert after["buzon_transform_ok_total"] == 3


def test_totals_are_exact_across_three_workers(tmp_path: Path) -> None:
    http = free_port()
    env = {"BUZON_WORKERS": "3", "BUZON_HTTP_PORT": str(http)}
    with server_process(tmp_path / "data", free_port(), env=env) as server:
        assert wait_for(lambda: "buzon started, supervisor" in server.log.read_text())
        base = scrape(http)["buzon_smtp_connections_total"]  # the harness's start probe
        for i in range(30):
            with smtplib.SMTP(HOST, server.port, timeout=10) as client:
                client.sendmail("alice@example.org", ["bob@example.org"], f"hello {i}\r\n")

        # Exact at once, right after the last 250: the supervisor sums the workers' slots.
        now = scrape(http)
        assert now["buzon_messages_accepted_total"] == 30
        assert now["buzon_smtp_connections_total"] == base + 30
        assert wait_for(lambda: scrape(http)["buzon_deliveries_total"] == 30)
        assert wait_for(lambda: scrape(http)["buzon_queue_depth"] == 0)
        shared = SharedCounters(tmp_path / "data" / "workers.counters", 3, create=False)
        try:
            per_worker = [shared.slot(i).mails_sent for i in range(3)]
        finally:
            shared.close()
        assert sum(per_worker) == 30 and all(per_worker), per_worker
        assert get(http, "/healthz")[0] == 200
        assert get(http, "/readyz")[::2] == (200, b"ready\n")

        # A dead worker makes the server not ready until the supervisor has replaced it.
        assert server.proc is not None
        victim = min(child_pids(server.proc.pid))
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: get(http, "/readyz")[0] == 503)
        assert b"is not running (exit status -9)" in get(http, "/readyz")[2]
        assert wait_for(lambda: get(http, "/readyz")[0] == 200, timeout=30)
        assert scrape(http)["buzon_messages_accepted_total"] == 30  # its counts stay counted
        assert server.terminate() == 0


def test_healthz_readyz_and_the_answers_to_wrong_requests(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(http_port=0)
    port = server.server.http_addresses[0][1]
    assert get(port, "/healthz")[::2] == (200, b"ok\n")
    assert get(port, "/readyz")[::2] == (200, b"ready\n")
    status, headers, body = get(port, "/readyz", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == "6"
    assert get(port, "/nowhere")[0] == 404
    status, headers, _ = get(port, "/metrics", method="POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    with socket.create_connection((HOST, port), timeout=10) as raw:
        raw.sendall(b"GARBAGE\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection((HOST, port), timeout=10) as raw:
        raw.sendall(b"GET /" + b"a" * 9000)
        assert raw.recv(100).startswith(b"HTTP/1.1 431 ")


def test_the_listener_binds_loopback_by_default_and_an_empty_list_turns_it_off(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(http_port=0)  # BUZON_HTTP_LISTEN at its default
    assert [host for host, _ in server.server.http_addresses] == ["127.0.0.1"]
    assert make_server(http_listen="").server.http is None


def test_readyz_is_503_while_the_queue_is_on_a_read_only_file_system(
    tmp_path: Path, make_server: Callable[..., RunningServer],
) -> None:
    # root ignores file modes, so the fault tests' way: a tmpfs remounted read-only.
    data = tmp_path / "ro-data"
    with tmpfs(data, "20m"):
        server = make_server(http_port=0, data_dir=data)
        port = server.server.http_addresses[0][1]
        assert get(port, "/readyz")[0] == 200
        remount(data, "ro")
        try:
            status, _, body = get(port, "/readyz")
            assert status == 503
            assert body.startswith(b"not ready: queue directory ")
            assert body.endswith(b" is on a read-only file system\n")
            assert get(port, "/healthz")[0] == 200  # alive, just not ready
        finally:
            remount(data, "rw")
        assert get(port, "/readyz")[0] == 200
        server.stop()


def refusals(port: int) -> dict[str, float]:
    """``buzon_smtp_refusals_total`` by its ``code`` label."""
    status, _, body = get(port, "/metrics")
    assert status == 200
    return {s.labels["code"]: s.value
            for family in text_string_to_metric_families(body.decode())
            if family.name == "buzon_smtp_refusals" for s in family.samples}


def test_refusals_by_reply_code_are_exact_across_three_workers(tmp_path: Path) -> None:
    # Each refusal a client provokes is one count under its code, whichever worker
    # answered it: 550 (relay denied), 501 (bad address), 503 (nested MAIL), 502
    # (unknown command); the accepted message refuses nothing.
    http = free_port()
    env = {"BUZON_WORKERS": "3", "BUZON_HTTP_PORT": str(http), "BUZON_DOMAINS": "example.org"}
    with server_process(tmp_path / "data", free_port(), env=env) as server:
        assert wait_for(lambda: "buzon started, supervisor" in server.log.read_text())
        assert set(refusals(http).values()) == {0.0}
        rounds = 7
        for _ in range(rounds):
            with LineClient(server.port) as client:
                client.reply()
                assert client.cmd("EHLO client.test").startswith("250")
                assert client.cmd("FROB").startswith("502")
                assert client.cmd("MAIL FROM:<broken").startswith("501")
                assert client.cmd("MAIL FROM:<a@example.net>").startswith("250")
                assert client.cmd("MAIL FROM:<a@example.net>").startswith("503")
                assert client.cmd("RCPT TO:<x@elsewhere.test>").startswith("550 5.7.1")
                assert client.cmd("RCPT TO:<y@elsewhere.test>").startswith("550 5.7.1")
                assert client.cmd("RCPT TO:<bob@example.org>").startswith("250")
                assert client.cmd("DATA").startswith("354")
                assert client.cmd("Subject: x\r\n\r\nbody\r\n.").startswith("250")
                assert client.cmd("QUIT").startswith("221")
        counted = refusals(http)  # exact at once: the supervisor sums the slots
        assert {code: n for code, n in counted.items() if n} == {
            "502": rounds, "501": rounds, "503": rounds, "550": 2 * rounds}
