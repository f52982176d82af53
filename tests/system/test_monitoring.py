"""The ``monitoring`` Compose profile: Debian's Prometheus scraping smtp, and Buzón's rules.

A stack of its own (its own project, env file and free loopback ports; taken down
with its volumes whatever happens): smtp with ``BUZON_HTTP_LISTEN=0.0.0.0`` on the
Compose network, the ``transform-tac`` sidecar switched on with a 5 s retry window,
and the ``prometheus`` service. The test checks the shipped rules with ``promtool``
(syntax and their unit tests, deploy/prometheus/rules.test.yml) and smtp's
``/metrics`` with ``promtool check metrics``, sends mail and reads Buzón's accepted
count back from Prometheus's query API, then stops the sidecar and waits for the
``BuzonSidecarDown`` alert to fire in Prometheus. Scrapes and rule evaluations run
every 15 s, as shipped, so the waits are counted in tens of seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import smtplib
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from system.compose_stack import BUILD_TIMEOUT, REPO, UP_TIMEOUT, free_port, require_docker

from buzon.observe.history import QUERIES, STEP, samples_from

pytestmark = pytest.mark.docker

RULES = "/etc/buzon-prometheus"


class Monitoring:
    def __init__(self, project: str, env: dict[str, str], smtp: int, prometheus: int) -> None:
        self.project, self.env, self.smtp, self.prometheus = project, env, smtp, prometheus

    def compose(self, *args: str, timeout: float = 120.0,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["docker", "compose", "--profile", "monitoring", *args],
                                capture_output=True, text=True, cwd=REPO, env=self.env,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)}: {result.returncode}\n"
                                 f"{result.stdout}\n{result.stderr}\n{self.logs()}")
        return result

    def logs(self) -> str:
        result = subprocess.run(["docker", "compose", "--profile", "monitoring", "logs",
                                 "--no-color", "--tail=80"], capture_output=True, text=True,
                                cwd=REPO, env=self.env, timeout=60, check=False)
        return result.stdout + result.stderr

    def api(self, path: str, **query: str) -> Any:
        url = f"http://127.0.0.1:{self.prometheus}/api/v1/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as answer:
            data = json.loads(answer.read())
        assert data["status"] == "success", data
        return data["data"]

    def value(self, promql: str) -> float | None:
        result = self.api("query", query=promql)["result"]
        return float(result[0]["value"][1]) if result else None


def wait(predicate: Callable[[], Any], timeout: float, what: str, stack: Monitoring) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = predicate()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(1.0)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{stack.logs()}")


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    require_docker()
    project = f"buzonmon{os.getpid()}{secrets.token_hex(3)}"
    smtp, prometheus = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    settings = {
        "COMPOSE_PROJECT_NAME": project,
        "BUZON_IMAGE_TAG": "monitoring-test",
        "BUZON_BASE_IMAGE": os.environ.get("BUZON_BASE_IMAGE", "buzon-base:bookworm"),
        "BUZON_SMTP_PUBLISH": f"127.0.0.1:{smtp}",
        "BUZON_MONITOR_PUBLISH": str(free_port(socket.SOCK_DGRAM)),
        "BUZON_PROMETHEUS_PUBLISH": f"127.0.0.1:{prometheus}",
        "BUZON_HTTP_LISTEN": "0.0.0.0",  # on the Compose network, for Prometheus
        "BUZON_DASHBOARD_PROMETHEUS": "http://prometheus:9090",
        "BUZON_TRANSFORM_SIDECARS": "transform-tac:7000",
        "BUZON_TRANSFORM_ENABLED": "true",
        "BUZON_TRANSFORM_RETRY_WINDOW": "5",
        "BUZON_RETRY_BACKOFF": "0.5",
        "BUZON_HEALTHCHECK_INTERVAL": "2s",
    }
    env_file = Path(tmp_path_factory.mktemp("monitoring")) / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUZON_", "COMPOSE_"))}
    env.update(COMPOSE_PROJECT_NAME=project, COMPOSE_BAKE="false",
               COMPOSE_ENV_FILES=str(env_file))
    stack = Monitoring(project, env, smtp, prometheus)
    try:
        stack.compose("build", timeout=BUILD_TIMEOUT)
        stack.compose("up", "--detach", "--wait", timeout=UP_TIMEOUT)
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5",
                      check=False, timeout=180)


def test_the_shipped_rules_and_the_metrics_pass_promtool(monitoring: Monitoring) -> None:
    checked = monitoring.compose("exec", "-T", "prometheus", "promtool", "check", "rules",
                                 f"{RULES}/rules.yml")
    assert "SUCCESS: 4 rules found" in checked.stdout
    tested = monitoring.compose("exec", "-T", "prometheus", "promtool", "test", "rules",
                                f"{RULES}/rules.test.yml")
    assert "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    lint = monitoring.compose(
        "exec", "-T", "prometheus", "sh", "-c",
        "python3 -c \"import urllib.request,sys; sys.stdout.buffer.write(urllib.request."
        "urlopen('http://smtp:9025/metrics', timeout=5).read())\" | promtool check metrics",
        check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_prometheus_has_the_accepted_count_and_fires_sidecar_down(monitoring: Monitoring) -> None:
    with smtplib.SMTP("127.0.0.1", monitoring.smtp, timeout=30) as client:
        for i in range(5):
            client.sendmail("alice@example.org", ["postmaster@example.org"],
                            f"Subject: scraped {i}\r\n\r\nhello\r\n")
    wait(lambda: monitoring.value('buzon_messages_accepted_total{job="buzon"}') == 5, 90,
         "Prometheus's buzon_messages_accepted_total == 5", monitoring)
    wait(lambda: monitoring.value(
        'sum(buzon_transform_duration_seconds_count{sidecar="transform-tac:7000"})') == 5, 60,
         "five transform durations observed", monitoring)
    assert monitoring.value('buzon_sidecar_up{sidecar="transform-tac:7000"}') == 1

    # The sidecar stops; the next message cannot reach it; past the 5 s retry window the
    # rule fires (health is derived from attempts: the message is what tries it).
    monitoring.compose("stop", "--timeout", "5", "transform-tac")
    with smtplib.SMTP("127.0.0.1", monitoring.smtp, timeout=30) as client:
        client.sendmail("alice@example.org", ["postmaster@example.org"],
                        "Subject: held\r\n\r\nwaits for tac\r\n")

    def firing() -> list[dict[str, Any]]:
        return [a for a in monitoring.api("alerts")["alerts"]
                if a["labels"]["alertname"] == "BuzonSidecarDown" and a["state"] == "firing"]

    (alert,) = wait(firing, 120, "BuzonSidecarDown firing", monitoring)
    assert alert["labels"]["sidecar"] == "transform-tac:7000"
    assert alert["labels"]["severity"] == "critical"


def test_the_dashboard_draws_its_history_from_prometheus(monitoring: Monitoring) -> None:
    # Prometheus must see the counter before and after the messages for a rate.
    (before,) = wait(lambda: [v for v in [monitoring.value(
        'buzon_messages_accepted_total{job="buzon"}')] if v is not None], 90,
        "Prometheus scraping smtp", monitoring)  # a list: 0.0 is an answer too
    with smtplib.SMTP("127.0.0.1", monitoring.smtp, timeout=30) as client:
        for i in range(3):
            client.sendmail("alice@example.org", ["postmaster@example.org"],
                            f"Subject: history {i}\r\n\r\nfor the charts\r\n")
    wait(lambda: monitoring.value('buzon_messages_accepted_total{job="buzon"}') == before + 3,
         90, "the three messages scraped", monitoring)
    # A rate above zero for the last 20 s (it stays so for a minute after the messages):
    # every 15 s point Prometheus gives for that time shows it, wherever its grid falls.
    wait(lambda: (monitoring.value("min_over_time(sum(rate(buzon_messages_accepted_total[1m]))"
                                   "[20s:5s])") or 0) > 0,
         90, "a message rate in Prometheus for 20 s", monitoring)

    # The queries of observe/history.py, asked of the real Prometheus, and their answers
    # read by the same code the server runs: a message rate somewhere in the last minutes.
    now = time.time()
    answers = {field: {"status": "success", "data": monitoring.api(
        "query_range", query=query, start=f"{now - 600:.3f}", end=f"{now:.3f}", step=str(STEP))}
        for field, query in QUERIES.items()}
    samples = samples_from(answers, before=None)
    assert samples and all(s["source"] == "prometheus" for s in samples)
    assert any(s["rates"]["messages"] > 0 for s in samples), samples[-5:]
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)

    # History that survives a restart: smtp forgets its own samples, Prometheus does not,
    # and smtp's /api/history draws Prometheus's points first, then its live seconds.
    monitoring.compose("restart", "--timeout", "10", "smtp")

    def history() -> dict[str, Any] | None:
        got = monitoring.compose(
            "exec", "-T", "smtp", "python3", "-c",
            "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
            "'http://127.0.0.1:9025/api/history', timeout=20).read().decode())", check=False)
        page = json.loads(got.stdout) if got.returncode == 0 and got.stdout else None
        return page if page and page["samples"] else None

    page = wait(history, 90, "smtp's /api/history after its restart", monitoring)
    assert page["source"] == "prometheus", page.get("prometheus_error")
    older = [s for s in page["samples"] if s.get("source") == "prometheus"]
    local = [s for s in page["samples"] if s.get("source") != "prometheus"]
    assert len(older) == page["prometheus_points"] > 0 and local
    assert max(s["t"] for s in older) < min(s["t"] for s in local)
    # Their values are Prometheus's, parsed by samples_from (checked on its real answers
    # above, with a message rate in them).
    assert all(s["rates"]["messages"] >= 0 and isinstance(s["queue_depth"], int) for s in older)
