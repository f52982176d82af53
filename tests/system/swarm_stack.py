"""Handles on a Swarm stack for tests/system/test_swarm.py: the swarm, the stack, its clients.

Theory of operation
-------------------
:func:`swarm` makes sure the engine is a Swarm manager: if it is in no swarm, it runs
``docker swarm init --advertise-addr 127.0.0.1`` and, on the way out (failure
included), ``docker swarm leave --force``; a swarm that was already there is used as
it is and left running. :func:`deployed` builds the images the stack needs (the
Compose build, so the cache is shared with the other system tests), writes the two
secrets into a temporary folder, deploys ``deploy/stack.yaml`` under a stack name
of its own, waits until every task is healthy, and on the way out removes exactly
what it made: the stack (services, networks, secrets), then, once its containers
are gone, its volumes and any image tag the test added.

Everything the test does to the stack is a bounded ``docker`` command, and every
wait polls a condition against a deadline. The routing mesh is not used (it does
not work in every sandbox, this one included): clients are containers on the
stack's attachable ``front`` network, reaching ``smtp`` by DNS round robin.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import string
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import wait_until
from system.compose_stack import BUILD_TIMEOUT, IMAGE_TAG, REPO

STACK_FILE = REPO / "deploy" / "stack.yaml"
VOLUMES = ("buzon-data", "buzon-work", "buzon-mail", "buzon-tls", "buzon-users",
           "prometheus-data")
CLIENT_SCRIPT = (Path(__file__).parent / "swarm_client.py").read_text()

#: Reads every message of mail/example.org/swarm in the mail volume: attempt id → copies.
_READ_MAIL = """
import collections, json, os
box = "/m/example.org/swarm"
found = collections.Counter()
for sub in ("new", "cur"):
    d = os.path.join(box, sub)
    for name in (os.listdir(d) if os.path.isdir(d) else []):
        with open(os.path.join(d, name), "rb") as f:
            for line in f:
                if line.startswith(b"X-Swarm-Test: "):
                    found[line.split(b": ", 1)[1].strip().decode()] += 1
                    break
                if line in (b"\\r\\n", b"\\n"):
                    break
print(json.dumps(found))
"""

#: Queue segments not yet delivered, per instance, in the data volume.
_READ_QUEUES = """
import json, os
root = "/d/instances"
out = {}
for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    spool = os.path.join(root, name, "spool")
    out[name] = sum(len(os.listdir(os.path.join(spool, sub))) for sub in ("incoming", "queue")
                    if os.path.isdir(os.path.join(spool, sub)))
print(json.dumps(out))
"""


def docker(*args: str, timeout: float = 120.0, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``docker <args>``, bounded in time; raises with its output when it fails."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True,
                            timeout=timeout, check=False, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


#: Set by :func:`swarm` when it could not leave safely; printed in the run's summary.
KEPT: list[str] = []


def _dns_dependents() -> list[str]:
    """Running containers on user-defined networks: those ``swarm leave`` would harm.

    Docker 20.10's ``swarm leave`` drops the embedded DNS records of every container
    already on a user-defined bridge network (moby/moby#45144, open): they stop finding
    each other by name until restarted. A Compose stack running beside the test, the
    test suite's own or someone else's, would break.
    """
    out = docker("ps", "--format", "{{.Names}} {{.Networks}}", timeout=30).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and any(
        net not in ("bridge", "host", "none") for net in line.split()[1].split(","))]


@contextlib.contextmanager
def swarm() -> Iterator[bool]:
    """A Swarm manager to deploy on; yields whether this test made it (and will leave it).

    A swarm the test made is left at the end, failure included, unless containers
    outside the test would lose their DNS records by it (:func:`_dns_dependents`): then
    it stays, and the run says so (a later run uses it and leaves it alone).
    """
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
                   timeout=30).stdout.split()
    created = False
    if state[0] == "inactive":
        docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=60)
        created = True
    elif state != ["active", "true"]:
        raise AssertionError(f"the engine is in a swarm it cannot deploy to: {state}")
    try:
        yield created
    finally:
        if created:
            dependents = _dns_dependents()
            if dependents:
                KEPT.append(
                    f"swarm kept (docker swarm leave --force to end it): leaving would drop "
                    f"the DNS records of {len(dependents)} running container(s) "
                    f"({', '.join(dependents[:5])}), moby/moby#45144")
            else:
                docker("swarm", "leave", "--force", timeout=60, check=False)


def _base_image() -> str:
    """$BUZON_BASE_IMAGE (scripts/test sets it), else whichever base is already here."""
    if os.environ.get("BUZON_BASE_IMAGE"):
        return os.environ["BUZON_BASE_IMAGE"]
    for image in ("python:3.12-slim", "buzon-base:bookworm"):
        if docker("image", "inspect", image, check=False, timeout=30).returncode == 0:
            return image
    return "python:3.12-slim"


@dataclass
class SwarmStack:
    """A deployed stack: its name, the environment it was deployed with, its secrets."""

    name: str
    env: dict[str, str]
    secrets_dir: Path
    added_tags: list[str] = field(default_factory=list)

    @property
    def token(self) -> Path:
        return self.secrets_dir / "monitor.token"

    def service(self, short: str) -> str:
        return f"{self.name}_{short}"

    # -- tasks ------------------------------------------------------------------------
    def containers(self, short: str, healthy: bool = False) -> dict[str, str]:
        """Running containers of a service: task slot → container id."""
        args = ["ps", "--filter", f"label=com.docker.swarm.service.name={self.service(short)}",
                "--format", '{{.ID}} {{.Label "com.docker.swarm.task.name"}}']
        if healthy:
            args[3:3] = ["--filter", "health=healthy"]
        found = {}
        for line in docker(*args, timeout=30).stdout.split("\n"):
            if line.strip():
                cid, task = line.split()
                found[task.split(".")[1]] = cid
        return found

    def wait_healthy(self, short: str, replicas: int, timeout: float = 120.0) -> dict[str, str]:
        return wait_until(
            f"{replicas} healthy {short} tasks",
            lambda: (c if len(c := self.containers(short, healthy=True)) == replicas else None),
            timeout)

    # -- clients on the front network ----------------------------------------------------
    def start_client(self, run: str, **settings: str | int) -> str:
        """Start the load client (swarm_client.py) detached; its container name."""
        name = f"{self.name}-client-{run}"
        env = [f"--env={k.upper()}={v}" for k, v in {"run": run, **settings}.items()]
        docker("run", "-d", "--name", name, "--network", f"{self.name}_front", *env,
               "--entrypoint", "python3", f"buzon-smtp:{IMAGE_TAG}", "-c", CLIENT_SCRIPT)
        return name

    def progress(self, client: str) -> int:
        """Messages the client has had a 250 for, from its last progress line."""
        err = docker("logs", "--tail", "5", client, timeout=30).stderr.split()
        values = [int(err[i + 1]) for i, word in enumerate(err[:-1]) if word == "progress"]
        return max(values, default=0)

    def finish_client(self, client: str, timeout: float) -> dict[str, Any]:
        """Wait for the client's exit; its summary (and remove its container)."""
        try:
            status = docker("wait", client, timeout=timeout).stdout.strip()
            logs = docker("logs", client, timeout=60)
            assert status == "0", f"client exited {status}:\n{logs.stderr[-3000:]}"
            return dict(json.loads(logs.stdout.strip().splitlines()[-1]))
        finally:
            docker("rm", "-f", client, check=False, timeout=60)

    def monitor(self, *args: str) -> dict[str, Any]:
        """``monitor-client --all-replicas --json ARGS`` against ``tasks.smtp``."""
        result = docker(
            "run", "--rm", "--network", f"{self.name}_front",
            "-v", f"{self.token}:/run/monitor.token:ro", f"buzon-monitor-client:{IMAGE_TAG}",
            "--token-file", "/run/monitor.token", "-H", "tasks.smtp", "--all-replicas", "--json",
            *args, timeout=60)
        return dict(json.loads(result.stdout))

    def prometheus(self, expr: str) -> float | None:
        """The value of a PromQL expression with one result (None: no result), asked of
        the stack's Prometheus from a container on the front network."""
        script = ("import json, sys, urllib.parse, urllib.request\n"
                  "url = 'http://prometheus:9090/api/v1/query?query=' + "
                  "urllib.parse.quote(sys.argv[1])\n"
                  "print(urllib.request.urlopen(url, timeout=10).read().decode())")
        result = docker("run", "--rm", "--network", f"{self.name}_front", "--entrypoint",
                        "python3", f"buzon-smtp:{IMAGE_TAG}", "-c", script, expr,
                        timeout=60, check=False)
        if result.returncode != 0:
            return None
        found = json.loads(result.stdout)["data"]["result"]
        return float(found[0]["value"][1]) if len(found) == 1 else None

    # -- volumes -----------------------------------------------------------------------
    def _read(self, volume: str, mount: str, script: str) -> Any:
        result = docker("run", "--rm", "-v", f"{self.name}_{volume}:{mount}:ro",
                        "--network", "none", "--entrypoint", "python3",
                        f"buzon-smtp:{IMAGE_TAG}", "-c", script, timeout=120)
        return json.loads(result.stdout)

    def mailbox(self) -> dict[str, int]:
        """Attempt id → copies of it in the swarm@example.org Maildir."""
        return dict(self._read("buzon-mail", "/m", _READ_MAIL))

    def queued(self) -> dict[str, int]:
        """Instance → files still in its spool (incoming/ and queue/)."""
        return dict(self._read("buzon-data", "/d", _READ_QUEUES))

    def exited(self, short: str) -> dict[str, str]:
        """Containers of a service that have stopped: container id → its whole log."""
        lines = docker("ps", "-a", "--filter", f"label=com.docker.swarm.service.name="
                       f"{self.service(short)}", "--filter", "status=exited",
                       "--format", "{{.ID}}", timeout=30).stdout.split()
        out = {}
        for cid in lines:
            result = docker("logs", cid, timeout=30, check=False)
            out[cid] = result.stdout + result.stderr
        return out

    def logs(self, short: str, tail: int = 60) -> str:
        """The last lines of every container of a service, killed ones included.

        ``docker container logs``, not ``docker service logs``: the latter can hang.
        """
        ids = docker("ps", "-a", "--filter", f"label=com.docker.swarm.service.name="
                     f"{self.service(short)}", "--format", "{{.ID}} {{.Names}}",
                     timeout=30, check=False).stdout.splitlines()
        out = []
        for line in ids:
            cid, cname = line.split()
            result = docker("logs", "--tail", str(tail), cid, timeout=30, check=False)
            out.append(f"[{cname}]\n{result.stdout}{result.stderr}")
        return "\n".join(out)


def _write_secrets(folder: Path) -> None:
    folder.mkdir(mode=0o700, exist_ok=True)
    subprocess.run([sys.executable, "-m", "buzon.transform.keygen", str(folder / "sidecar.key")],
                   check=True, capture_output=True, timeout=60)
    alphabet = string.ascii_letters + string.digits
    (folder / "monitor.token").write_text("".join(secrets.choice(alphabet) for _ in range(8))
                                          + "\n")
    # Read by the monitor-client container's user (uid 10025) through a bind mount.
    (folder / "monitor.token").chmod(0o644)


@contextlib.contextmanager
def deployed(folder: Path, settings: dict[str, str]) -> Iterator[SwarmStack]:
    """Build the images, deploy ``deploy/stack.yaml`` with ``settings``; always remove it."""
    name = f"buzonswarm{os.getpid()}{secrets.token_hex(2)}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BUZON_", "COMPOSE_"))}
    build_env = {**base, "BUZON_IMAGE_TAG": IMAGE_TAG, "BUZON_BASE_IMAGE": _base_image(),
                 "COMPOSE_BAKE": "false", "COMPOSE_PROJECT_NAME": name}
    docker("compose", "--env-file", "/dev/null", "-f", str(REPO / "compose.yaml"),
           "--profile", "monitoring", "build", "smtp", "transform-tac", "monitor-client",
           "prometheus", env=build_env, timeout=BUILD_TIMEOUT)
    _write_secrets(folder / "secrets")
    env = {**base, "BUZON_IMAGE_TAG": IMAGE_TAG, "BUZON_SECRETS": str(folder / "secrets"),
           **settings}
    stack = SwarmStack(name, env, folder / "secrets")
    try:
        docker("stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE), name,
               env=env, timeout=120)
        yield stack
    finally:
        _remove(stack)


def _remove(stack: SwarmStack) -> None:
    """The stack, then (its containers gone) its volumes and the tags the test added."""
    clients = docker("ps", "-aq", "--filter", f"name={stack.name}-client-", timeout=30,
                     check=False).stdout.split()
    if clients:  # a test that failed with its load client still running
        docker("rm", "-f", *clients, check=False, timeout=60)
    docker("stack", "rm", stack.name, check=False, timeout=120)
    label = f"label=com.docker.stack.namespace={stack.name}"

    def gone() -> bool:
        return not docker("ps", "-aq", "--filter", label, timeout=30).stdout.strip() and not (
            docker("network", "ls", "-q", "--filter", label, timeout=30).stdout.strip())

    with contextlib.suppress(AssertionError):
        wait_until(f"stack {stack.name} removed", gone, timeout=90)
    docker("volume", "rm", *(f"{stack.name}_{v}" for v in VOLUMES), check=False, timeout=60)
    for tag in stack.added_tags:
        docker("image", "rm", tag, check=False, timeout=60)
