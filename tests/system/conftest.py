"""The Compose stack under test: one session-scoped testcontainers ``DockerCompose``.

Theory of operation
-------------------
``stack`` builds every image (the ``tools`` profile too, so ``monitor-client`` is
ready), then ``up --wait``s the stack, which relies on each service's healthcheck.
It runs under a unique compose project name, so it never touches a stack the
developer has running, and with its own env file: ports chosen free on 127.0.0.1,
the transform chain ``spamassassin:7000,transform-tac:7000`` switched off, a retry
window long enough that a message waits for a stopped sidecar, fast healthchecks.
The caller's ``BUZON_*``/``COMPOSE_*`` variables are dropped (``BUZON_BASE_IMAGE``,
which ``scripts/test`` sets, is copied into the env file), so a developer's shell
cannot change what is tested. Whatever happens, the stack is taken down with its volume
(``down -v``); a failing test gets the containers' logs in its report.

Every compose command is bounded in time. Without Docker the tests skip, except
when ``CI=true``, where they fail: CI must prove the stack.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from system.compose_stack import (
    BUILD_TIMEOUT,
    COMMAND_TIMEOUT,
    IMAGE_TAG,
    REPO,
    TIMINGS,
    UP_TIMEOUT,
    BoundedCompose,
    Stack,
    free_port,
    require_docker,
)


def _stack_env(project: str) -> dict[str, str]:
    """The caller's environment without its BUZON_*/COMPOSE_* (the env file has ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUZON_", "COMPOSE_"))}
    env["COMPOSE_PROJECT_NAME"] = project
    env["COMPOSE_BAKE"] = "false"  # plain builds: buildx may be missing
    return env


def _base_image() -> str:
    """$BUZON_BASE_IMAGE (scripts/test sets it), else whichever base is already here."""
    if os.environ.get("BUZON_BASE_IMAGE"):
        return os.environ["BUZON_BASE_IMAGE"]
    for image in ("python:3.12-slim", "buzon-base:bookworm"):
        found = subprocess.run(["docker", "image", "inspect", image],
                               capture_output=True, timeout=30, check=False)
        if found.returncode == 0:
            return image
    return "python:3.12-slim"  # compose will try to pull it


@contextlib.contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory, overrides: dict[str, str] | None = None,
    first_mailbox: str = "postmaster@example.org",
) -> Iterator[Stack]:
    """Build the images (cached after the first time), ``up --wait`` a stack of its own
    project with ``overrides`` over the defaults below, send a first message to
    ``first_mailbox``; always take it down with its volumes."""
    require_docker()
    project = f"buzontest{os.getpid()}{secrets.token_hex(3)}"
    smtp_port = free_port(socket.SOCK_STREAM)
    monitor_port = free_port(socket.SOCK_DGRAM)
    mail_ports = {name: free_port(socket.SOCK_STREAM) for name in ("imap", "imaps", "pop3s")}
    env_file = tmp_path_factory.mktemp("stack") / "stack.env"
    settings = {
        "COMPOSE_PROJECT_NAME": project,
        "BUZON_IMAGE_TAG": IMAGE_TAG,
        "BUZON_BASE_IMAGE": _base_image(),
        # Published on loopback only: the tests talk to 127.0.0.1 and nothing else.
        "BUZON_SMTP_PUBLISH": f"127.0.0.1:{smtp_port}",
        "BUZON_MONITOR_PUBLISH": str(monitor_port),
        "BUZON_SMTPS_PUBLISH": f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
        "BUZON_IMAP_PUBLISH": f"127.0.0.1:{mail_ports['imap']}",
        "BUZON_IMAPS_PUBLISH": f"127.0.0.1:{mail_ports['imaps']}",
        "BUZON_POP3_PUBLISH": f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
        "BUZON_POP3S_PUBLISH": f"127.0.0.1:{mail_ports['pop3s']}",
        "BUZON_HOSTNAME": "mx.system.test",
        # smtp takes every local part of the accepted domains here, so each test can
        # use addresses of its own; the users file (users-init, admin) still exists and
        # imap logs in from it. The directory itself is tested in tests/integration.
        "BUZON_USERS_FILE": "",
        "BUZON_TRANSFORM_SIDECARS": "spamassassin:7000,transform-tac:7000",
        "BUZON_TRANSFORM_ENABLED": "false",
        "BUZON_TRANSFORM_FAILURE_POLICY": "deliver",
        # A stopped sidecar must make messages wait, not fall back to the original.
        "BUZON_TRANSFORM_RETRY_WINDOW": "3600",
        "BUZON_RETRY_BACKOFF": "0.2",
        "BUZON_HEALTHCHECK_INTERVAL": "2s",
    }
    settings.update(overrides or {})
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = _stack_env(project)
    compose = BoundedCompose(
        context=REPO,
        compose_file_name="compose.yaml",
        env_file=str(env_file),
        build=False,  # built just below, with the tools profile and its own time bound
        wait=True,
        run_env=env,
        command_timeout=UP_TIMEOUT,
    )
    handle = Stack(project, env, env_file, smtp_port, monitor_port,
                   compose.compose_command_property, mail_ports)
    try:
        start = time.monotonic()
        handle.compose("--profile", "tools", "build", timeout=BUILD_TIMEOUT)
        TIMINGS.setdefault("compose --profile tools build", time.monotonic() - start)
        start = time.monotonic()
        try:
            compose.start()
        except subprocess.CalledProcessError as error:
            pytest.fail(
                f"docker compose up --wait failed ({error.returncode}):\n"
                f"{(error.stderr or b'').decode(errors='replace')}\n--- logs ---\n"
                f"{handle.logs()}",
                pytrace=False,
            )
        TIMINGS.setdefault("compose up --wait to all healthy", time.monotonic() - start)
        start = time.monotonic()
        marker = secrets.token_hex(6)
        handle.send([first_mailbox], f"first {marker}", "first message\n")
        handle.wait_for_mail(first_mailbox.split("@")[0], marker, timeout=60)
        TIMINGS.setdefault("healthy to first mail in its Maildir", time.monotonic() - start)
        yield handle
    finally:
        compose.command_timeout = COMMAND_TIMEOUT
        try:
            compose.stop(down=True)  # down --volumes
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            handle.compose("down", "--volumes", "--remove-orphans", "--timeout", "5",
                           check=False)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Build and start the whole Compose stack once; always take it down."""
    with running_stack(tmp_path_factory) as handle:
        yield handle


@pytest.fixture
def marker() -> str:
    """A unique token to find this test's messages in a Maildir."""
    return secrets.token_hex(8)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """Attach the containers' logs to the report of a failing system test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        stacks = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Stack)]
        for stack in stacks:
            try:
                report.sections.append(("docker compose logs", stack.logs()))
            except Exception as error:  # noqa: BLE001 - a report must not crash
                report.sections.append(("docker compose logs", f"unavailable: {error}"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "Compose stack timings")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/system is marked ``docker``; the Swarm test runs first of them.

    First, before the Compose stack starts: leaving a swarm drops the DNS records of
    containers already on bridge networks (moby/moby#45144), which would break the
    stack for the tests after it (test_swarm.py leaves only when nothing is running).
    """
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)
    swarm = [i for i in items if Path(str(i.fspath)) == here / "test_swarm.py"]
    rest = [i for i in items if i not in swarm]
    first = next((k for k, i in enumerate(rest) if here in Path(str(i.fspath)).parents),
                 len(rest))
    items[:] = rest[:first] + swarm + rest[first:]

