"""Finding 8 of issue 11: every container runs with the least it needs.

Before, no service dropped capabilities, none had ``no-new-privileges`` (setuid
binaries are present in the images), every root file system was writable, and no
memory or process limit was set. The first test reads ``docker compose config``
(every service, the tools profile included); the second inspects the running
containers, so a setting Compose accepted but Docker did not apply is caught too.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from system.compose_stack import Stack, compose_config, require_docker

pytestmark = pytest.mark.docker

SERVICES = ("smtp", "transform-tac", "spamassassin", "keygen", "monitor-client")
RUNNING = ("smtp", "transform-tac", "spamassassin")


def test_every_service_is_locked_down_in_the_compose_file() -> None:
    require_docker()
    services = compose_config()["services"]
    assert set(SERVICES) <= services.keys()
    for name, svc in services.items():
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert svc.get("read_only") is True, name
        assert not svc.get("privileged") and not svc.get("cap_add"), name
        limits = svc["deploy"]["resources"]["limits"]
        assert 0 < int(limits["memory"]) <= 2 << 30, (name, limits)
        assert 0 < int(limits["pids"]) <= 512, (name, limits)


def test_the_running_containers_have_the_limits(stack: Stack) -> None:
    for service in RUNNING:
        cid = stack.compose("ps", "-q", service).stdout.strip()
        host = json.loads(subprocess.run(
            ["docker", "inspect", "--format", "{{json .HostConfig}}", cid],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout)
        assert host["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        assert host["ReadonlyRootfs"] is True, service
        assert host["Memory"] > 0 and host["PidsLimit"] > 0, service
        # The kernel agrees: no effective capability, no privilege gain.
        status = stack.compose("exec", "-T", service, "cat", "/proc/self/status").stdout
        assert "CapEff:\t0000000000000000" in status, service
        assert "NoNewPrivs:\t1" in status, service
        # And the root file system really is read-only.
        probe = stack.compose("exec", "-T", service, "sh", "-c",
                              "touch /opt/probe 2>&1; echo rc=$?", check=False).stdout
        assert "Read-only file system" in probe, (service, probe)
