"""The whole Compose stack, built and run by testcontainers (issue 5's list).

Each test sets the transform switch it needs through ``monitor-client`` and finds its
own messages by a unique marker, so the tests do not depend on their order. Counter
checks are deltas: Docker's SMTP healthcheck is a real connection every 2 s, so the
historic connection and byte counts also grow by themselves.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import subprocess
import time

import pytest
from system.compose_stack import IMAGE_TAG, REPO, Stack, require_docker

pytestmark = pytest.mark.docker

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HEALTH_INTERVAL = 2.0  # BUZON_HEALTHCHECK_INTERVAL in the stack's env file
#: What each long-running service's healthcheck speaks (compose.yaml is its only home).
HEALTH_TESTS = {
    "smtp": ["CMD", "python3", "-m", "buzon.health", "smtp", "127.0.0.1", "2525"],
    "transform-tac": ["CMD", "buzon-sidecar", "--health", "127.0.0.1:7000"],
    "spamassassin": ["CMD-SHELL", ("spamc -U /run/spamd/spamd.sock -K >/dev/null"
                                   " && buzon-sidecar --health 127.0.0.1:7000")],
    "imap": ["CMD", "python3", "-m", "buzon.health", "imap", "127.0.0.1", "1993"],
}


def _index(lines: list[bytes], prefix: bytes) -> int:
    for number, line in enumerate(lines):
        if line.startswith(prefix):
            return number
    raise AssertionError(f"no line starting {prefix!r} in {lines!r}")


def _assert_reversed(lines: list[bytes], *in_order: bytes) -> None:
    """The lines appear, but in the reverse of the order given (tac ran)."""
    positions = [_index(lines, line) for line in in_order]
    assert positions == sorted(positions, reverse=True), (in_order, positions)


def test_compose_defaults_need_no_env_file() -> None:
    """`docker compose up` with no .env: SMTP on 2525, monitor on 127.0.0.1:2626/udp."""
    require_docker()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BUZON_", "COMPOSE_"))}
    result = subprocess.run(
        ["docker", "compose", "--env-file", "/dev/null", "--profile", "tools",
         "config", "--format", "json"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60, check=True,
    )
    config = json.loads(result.stdout)
    services = config["services"]
    assert set(services) == {"smtp", "imap", "transform-tac", "spamassassin", "keygen",
                             "users-init", "admin", "monitor-client"}
    ports = {(p["target"], p["protocol"]): p for p in services["smtp"]["ports"]}
    assert ports[(2525, "tcp")]["published"] == "2525"
    assert ports[(4650, "tcp")]["published"] == "4650"  # implicit TLS (RFC 8314)
    imap_ports = {p["target"]: p["published"] for p in services["imap"]["ports"]}
    assert imap_ports == {1143: "143", 1993: "993", 1110: "110", 1995: "995"}
    assert services["smtp"]["environment"]["BUZON_DOMAINS"] == "example.org,localhost"
    assert services["smtp"]["environment"]["BUZON_USERS_FILE"] == "/etc/buzon/users"
    assert ports[(2626, "udp")]["published"] == "2626"
    assert ports[(2626, "udp")]["host_ip"] == "127.0.0.1"
    smtp_env = services["smtp"]["environment"]
    assert smtp_env["BUZON_TRANSFORM_SIDECARS"] == "spamassassin:7000"
    assert smtp_env["BUZON_TRANSFORM_ENABLED"] == "false"
    assert smtp_env["BUZON_MONITOR_TOKEN"] is None  # unset: the server generates one
    for name in ("smtp", "imap", "transform-tac", "spamassassin"):
        assert services[name]["restart"] == "unless-stopped"
        health = services[name]["healthcheck"]
        assert health["test"] == HEALTH_TESTS[name]
        assert (health["interval"], health["timeout"], health["retries"]) == ("10s", "10s", 3)
        assert any(v["target"].startswith("/var/lib/buzon") for v in services[name]["volumes"])
    assert "healthcheck" not in services["monitor-client"]
    # Every image is one target of the one Dockerfile (one build stage, one user block).
    for name, service in services.items():
        if name == "admin":  # runs the image users-init builds (buzon-smtp)
            assert service["image"] == services["users-init"]["image"] == "buzon-smtp:local"
            continue
        assert service["build"]["dockerfile"] == "services/Dockerfile", name
        assert service["build"]["target"] == ("smtp" if name == "users-init" else name)
        assert service["build"]["args"]["BASE_IMAGE"] == "python:3.12-slim"
    client = services["monitor-client"]
    assert client["profiles"] == ["tools"]
    assert client["depends_on"]["smtp"]["condition"] == "service_healthy"
    assert [v.get("read_only") for v in client["volumes"]] == [True]
    # A sidecar outage must not stop mail intake: smtp only waits for them to start
    # (and for the one-shot keygen to have written the key).
    depends = services["smtp"]["depends_on"]
    one_shots = {"keygen", "users-init"}
    assert {d["condition"] for n, d in depends.items() if n not in one_shots} == {
        "service_started"}
    for name in one_shots:
        assert depends[name]["condition"] == "service_completed_successfully"


def test_services_are_healthy_and_not_root(stack: Stack) -> None:
    for service in ("smtp", "imap", "transform-tac", "spamassassin"):
        assert stack.health(service) == "healthy", service
        uid = stack.compose("exec", "-T", service, "id", "-u").stdout.strip()
        assert uid == "10025", (service, uid)
    published = stack.compose("port", "--protocol", "udp", "smtp", "2626").stdout.strip()
    assert published == f"127.0.0.1:{stack.monitor_port}"


def test_healthchecks_come_from_compose_only(stack: Stack) -> None:
    """No image defines a HEALTHCHECK; the containers run compose.yaml's, at its interval."""
    for service in ("smtp", "imap", "transform-tac", "spamassassin", "monitor-client"):
        image = f"buzon-{service}:{IMAGE_TAG}"
        result = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Healthcheck}}", image],
            capture_output=True, text=True, timeout=30, check=True,
        )
        assert result.stdout.strip() == "null", (image, result.stdout)
    for service, test in HEALTH_TESTS.items():
        cid = stack.compose("ps", "-q", service).stdout.strip()
        result = subprocess.run(
            ["docker", "inspect", "--format", "{{json .Config.Healthcheck}}", cid],
            capture_output=True, text=True, timeout=30, check=True,
        )
        health = json.loads(result.stdout)
        assert health["Test"] == test, service
        assert health["Interval"] == int(HEALTH_INTERVAL * 1e9), service


def test_mail_lands_in_each_recipients_maildir(stack: Stack, marker: str) -> None:
    stack.set_transforms(False)
    reply = stack.send(
        ["alice@example.org", "Bob@Example.org", "carol@example.org"],
        f"hello {marker}",
        "Hello all.\nSecond line.\n",
    )
    assert re.match(r"2\.0\.0 Ok: queued as \S+", reply), reply
    for mailbox, address in (("alice", "alice"), ("bob", "bob"), ("carol", "carol")):
        [message] = stack.wait_for_mail(mailbox, marker)
        assert message.name.startswith("new/"), message.name
        assert re.search(rb"^Delivered-To: <?%s@example\.org>?\r?$" % address.encode(),
                         message.data, flags=re.MULTILINE | re.IGNORECASE), message.data[:400]
        assert b"Hello all.\r\nSecond line.\r\n" in message.data
        assert message.data.index(b"Subject: hello") < message.data.index(b"Hello all.")
    assert not [m for m in stack.maildir("dave") if marker.encode() in m.data]


def test_monitor_client_answers_every_command(stack: Stack, marker: str) -> None:
    stack.set_transforms(False)
    # Exactly the README's command (dependencies included), then --no-deps for speed.
    first = stack.monitor(0, deps=True).stdout
    assert re.fullmatch(r"Identifier: \d+\nHistoric connections: \d+\n", first), first

    before = {c: int(stack.monitor_value(c)) for c in (0, 2, 3)}
    started = time.monotonic()
    sent = 3
    for number in range(sent):
        stack.send(["counter@example.org"], f"count {marker} {number}", "x" * 100 + "\n")
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, local_hostname="held.test",
                      timeout=30) as held:
        held.ehlo()
        assert int(stack.monitor_value(1)) >= 1  # the session we hold open
    after = {c: int(stack.monitor_value(c)) for c in (0, 2, 3)}
    probes = (time.monotonic() - started) / HEALTH_INTERVAL + 2

    assert sent + 1 <= after[0] - before[0] <= sent + 1 + probes
    assert after[2] - before[2] >= sent * 100
    assert after[3] - before[3] == sent
    assert stack.monitor_value("historic").isdigit()  # names work as well as numbers

    assert stack.monitor_value(4) == "disabled"
    assert stack.monitor_value(5) == "enabled"
    assert stack.monitor_value(4) == "enabled"
    assert stack.monitor_value(6) == "disabled"
    assert stack.monitor_value(4) == "disabled"


def test_monitor_client_with_a_wrong_token_is_refused(stack: Stack) -> None:
    result = stack.compose("run", "--rm", "-T", "--no-deps", "-e", "BUZON_MONITOR_TOKEN=Wr0ngT0k",
                           "monitor-client", "0", check=False)
    assert result.returncode == 11, (result.stdout, result.stderr)
    assert "Error: Auth failed" in result.stderr


def test_enabled_transforms_run_spamassassin_then_tac(stack: Stack, marker: str) -> None:
    stack.set_transforms(True)
    try:
        stack.send(["tac@example.org"], f"tac {marker}", "first line\nsecond line\nthird line\n")
        [message] = stack.wait_for_mail("tac", marker, timeout=90)
    finally:
        stack.set_transforms(False)
    lines = message.lines
    _assert_reversed(lines, b"Subject: tac", b"first line", b"second line", b"third line")
    # spamassassin ran first, so its header lines went through tac as well.
    assert lines[_index(lines, b"X-Spam-Status: ")].startswith(b"X-Spam-Status: No,")


def test_gtube_is_flagged_and_ordinary_mail_is_not(stack: Stack, marker: str) -> None:
    stack.set_transforms(True)
    try:
        stack.send(["spam@example.org"], f"gtube {marker}", f"{GTUBE}\n")
        stack.send(["ham@example.org"], f"lunch {marker}",
                   "Shall we have lunch at noon tomorrow?\n")
        [spam] = stack.wait_for_mail("spam", marker, timeout=90)
        [ham] = stack.wait_for_mail("ham", marker, timeout=90)
    finally:
        stack.set_transforms(False)
    assert b"X-Spam-Flag: YES" in spam.lines
    assert spam.lines[_index(spam.lines, b"X-Spam-Status: ")].startswith(b"X-Spam-Status: Yes,")
    assert b"X-Spam-Flag: YES" not in ham.lines
    assert ham.lines[_index(ham.lines, b"X-Spam-Status: ")].startswith(b"X-Spam-Status: No,")


def test_stopped_sidecar_holds_mail_until_it_is_back(stack: Stack, marker: str) -> None:
    stack.set_transforms(True)
    stack.compose("stop", "transform-tac", timeout=60)
    try:
        # Intake goes on: the server answers 250 and queues the message.
        stack.send(["outage@example.org"], f"outage {marker}", "alpha\nbeta\n")
        time.sleep(4)
        assert not [m for m in stack.maildir("outage") if marker.encode() in m.data], (
            "delivered while transform-tac was down, inside the retry window"
        )
        assert stack.health("smtp") == "healthy"
    finally:
        stack.compose("start", "transform-tac", timeout=60)
    stack.wait_healthy("transform-tac")
    try:
        [message] = stack.wait_for_mail("outage", marker, timeout=120)
    finally:
        stack.set_transforms(False)
    _assert_reversed(message.lines, b"alpha", b"beta")
    assert b"X-Buzon-Transform" not in message.data  # transformed, not the fallback


def test_smtp_restart_keeps_counters_and_drains_the_queue(stack: Stack, marker: str) -> None:
    stack.set_transforms(True)
    stack.compose("stop", "transform-tac", timeout=60)
    try:
        stack.send(["queued@example.org"], f"queued {marker}", "one\ntwo\n")
        historic = int(stack.monitor_value(0))
        mails = int(stack.monitor_value(3))
        transferred = int(stack.monitor_value(2))

        stack.compose("restart", "smtp", timeout=90)
        stack.wait_healthy("smtp", timeout=120)

        assert int(stack.monitor_value(0)) >= historic
        assert int(stack.monitor_value(3)) == mails
        assert int(stack.monitor_value(2)) >= transferred
        assert stack.monitor_value(4) == "enabled"  # the switch survives too
        assert not [m for m in stack.maildir("queued") if marker.encode() in m.data]
    finally:
        stack.compose("start", "transform-tac", timeout=60)
    stack.wait_healthy("transform-tac")
    try:
        [message] = stack.wait_for_mail("queued", marker, timeout=120)
    finally:
        stack.set_transforms(False)
    _assert_reversed(message.lines, b"one", b"two")
