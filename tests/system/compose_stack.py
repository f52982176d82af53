"""Handles on the Compose stack for the system tests: bounded compose commands, mail
in and out, the monitor client. The fixtures that build and start it are in conftest.py.
"""


from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import smtplib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from testcontainers.compose import DockerCompose

REPO = Path(__file__).resolve().parents[2]
IMAGE_TAG = "test"
BUILD_TIMEOUT = 1200.0  # a cold build from a slow mirror
UP_TIMEOUT = 300.0
COMMAND_TIMEOUT = 120.0

#: Filled by the fixture, printed at the end of the run.
TIMINGS: dict[str, float] = {}


# -- Docker availability ------------------------------------------------------------------
def _docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not on PATH"
    for args in (["docker", "info"], ["docker", "compose", "version"]):
        try:
            result = subprocess.run(args, capture_output=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(args)}` timed out"
        if result.returncode != 0:
            return f"`{' '.join(args)}` failed: {result.stderr.decode(errors='replace').strip()}"
    return None


def require_docker() -> None:
    """Skip without Docker, or fail when running in CI (CI=true)."""
    problem = _docker_problem()
    if problem is None:
        return
    message = f"system tests need Docker and the compose plugin: {problem}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message + " (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


# -- testcontainers with bounded commands and a controlled environment --------------------
@dataclass
class BoundedCompose(DockerCompose):
    """``DockerCompose`` whose commands run with our environment and a timeout.

    testcontainers 4.x runs every compose command through ``_run_command`` with the
    caller's environment and no time limit; this override passes the stack's own
    environment and bounds each command.
    """

    run_env: dict[str, str] = field(default_factory=dict)
    command_timeout: float = UP_TIMEOUT

    def _run_command(
        self, cmd: str | list[str], context: str | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            cmd,
            capture_output=True,
            check=True,
            cwd=context or str(self.context),
            env=self.run_env,
            timeout=self.command_timeout,
        )


# -- the stack ------------------------------------------------------------------------
def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Delivered:
    """One message file found in a Maildir."""

    mailbox: str
    name: str
    data: bytes

    @property
    def lines(self) -> list[bytes]:
        return self.data.replace(b"\r\n", b"\n").split(b"\n")


_READ_MAILDIR = """
import base64, glob, json, os, sys
mail = os.path.join(os.environ.get("BUZON_DATA_DIR", "/var/lib/buzon"), "mail")
# mail/<domain>/<local> (issue 12): a bare local part is looked for in every domain
box = sys.argv[1]
roots = [os.path.join(mail, box)] if "/" in box else sorted(glob.glob(os.path.join(mail, "*", box)))
found = {}
for root in roots:
    for sub in ("new", "cur"):
        d = os.path.join(root, sub)
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    found[sub + "/" + name] = base64.b64encode(f.read()).decode()
print(json.dumps(found))
"""


@dataclass
class Stack:
    """Handles on the running stack for the tests."""

    project: str
    env: dict[str, str]
    env_file: Path
    smtp_port: int
    monitor_port: int
    compose_cmd: list[str]
    mail_ports: dict[str, int] = field(default_factory=dict)
    """Published loopback ports of the imap service: imap, imaps, pop3s."""

    # compose ----------------------------------------------------------------------
    def compose(
        self, *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker compose <args>`` for this project; bounded in time."""
        result = subprocess.run(
            [*self.compose_cmd, *args],
            capture_output=True, text=True, cwd=REPO, env=self.env, timeout=timeout,
            check=False, input=input_text,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def logs(self, tail: int = 200) -> str:
        result = self.compose("logs", "--no-color", "--timestamps", f"--tail={tail}",
                              check=False, timeout=60)
        return result.stdout + result.stderr

    def health(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).stdout.strip()
        if not cid:
            return "absent"
        result = subprocess.run(
            ["docker", "inspect", "-f", ("{{if .State.Health}}{{.State.Health.Status}}"
             "{{else}}{{.State.Status}}{{end}}"), cid],
            capture_output=True, text=True, timeout=30, check=False,
        )
        return result.stdout.strip() or "unknown"

    def wait_healthy(self, *services: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(services)
        while pending:
            pending = [s for s in pending if self.health(s) != "healthy"]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy after {timeout:.0f} s: {pending}")
            time.sleep(0.5)

    # monitor ----------------------------------------------------------------------
    def monitor(
        self, command: str | int, check: bool = True, deps: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``docker compose run --rm monitor-client COMMAND``.

        With ``deps=False`` (``--no-deps``) compose does not start what monitor-client
        depends on, transitively: a sidecar a test has stopped stays stopped.
        """
        flags = [] if deps else ["--no-deps"]
        return self.compose("run", "--rm", "-T", *flags, "monitor-client", str(command),
                            check=check)

    def monitor_value(self, command: str | int) -> str:
        """The text after the label, e.g. '12' for 'Historic connections: 12'."""
        out = self.monitor(command).stdout.strip().splitlines()
        assert len(out) == 2 and out[0].startswith("Identifier: "), out
        return out[1].split(": ", 1)[1]

    # mail -------------------------------------------------------------------------
    def send(
        self,
        recipients: list[str],
        subject: str,
        body: str,
        sender: str = "sender@example.org",
        extra_headers: dict[str, str] | None = None,
    ) -> str:
        """Send one message over the published SMTP port; return the server's reply."""
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Message-ID"] = f"<{secrets.token_hex(8)}@system.test>"
        for name, value in (extra_headers or {}).items():
            message[name] = value
        message.set_content(body)
        data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        with smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.test",
                          timeout=30) as client:
            client.ehlo()
            code, text = client.mail(sender)
            assert code == 250, (code, text)
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                assert code == 250, (code, text)
            code, text = client.data(data)
            assert code == 250, (code, text)
            return text.decode()

    def maildir(self, mailbox: str) -> list[Delivered]:
        """Every message in ``mail/<mailbox>/{new,cur}`` of the volume."""
        result = self.compose("exec", "-T", "smtp", "python3", "-c", _READ_MAILDIR, mailbox)
        found = json.loads(result.stdout)
        return [Delivered(mailbox, name, base64.b64decode(data)) for name, data in found.items()]

    def wait_for_mail(
        self, mailbox: str, marker: str, timeout: float = 60.0, count: int = 1
    ) -> list[Delivered]:
        """Poll a Maildir until ``count`` messages containing ``marker`` are there."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [m for m in self.maildir(mailbox) if marker.encode() in m.data]
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{count} message(s) with {marker!r} not in {mailbox}'s Maildir after "
                    f"{timeout:.0f} s (found {len(hits)})"
                )
            time.sleep(0.5)

    def set_transforms(self, enabled: bool) -> None:
        value = self.monitor_value("enable" if enabled else "disable")
        assert value == ("enabled" if enabled else "disabled"), value


def compose_config() -> dict:  # type: ignore[type-arg]
    """``docker compose config`` of the repository's file as shipped: no .env, no BUZON_*
    variables from the caller, the tools profile included."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUZON_", "COMPOSE_"))}
    result = subprocess.run(
        ["docker", "compose", "--env-file", "/dev/null", "--profile", "tools", "config",
         "--format", "json"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60, check=True,
    )
    return dict(json.loads(result.stdout))
