"""Finding 1 and the sidecar half of finding 8 (issue 11), checked on the Compose stack.

Before the fix every sidecar mounted the whole data volume read-write and sat on
one flat network: the spamassassin container could read the 0600 monitor token
and every mailbox, and any container could send any sidecar a request. Now each
sidecar mounts only the transform work area and the key (read-only), is on a
network only smtp shares, and answers nothing that is not sealed with the key.

The first test reads ``docker compose config`` (no stack needed); the others run
commands in the stack's containers.
"""

from __future__ import annotations

import json

import pytest
from system.compose_stack import Stack, compose_config, require_docker

pytestmark = pytest.mark.docker

SIDECARS = ("spamassassin", "transform-tac")
KEY_FILE = "/var/lib/buzon-key/sidecar.key"


def test_each_sidecar_mounts_only_the_work_area_and_the_key_and_shares_a_network_with_smtp(
) -> None:
    require_docker()
    config = compose_config()
    services, networks = config["services"], config["networks"]
    for name in SIDECARS:
        sidecar = services[name]
        mounts = {v["source"]: (v["target"], v.get("read_only", False))
                  for v in sidecar["volumes"]}
        assert mounts == {"buzon-work": ("/var/lib/buzon/work", False),
                          "buzon-key": ("/var/lib/buzon-key", True)}, (name, mounts)
        assert sidecar["environment"]["BUZON_SIDECAR_KEY_FILE"] == KEY_FILE
        assert sidecar["depends_on"]["keygen"]["condition"] == "service_completed_successfully"
        (network,) = sidecar["networks"]  # one network, its own
        members = {s for s, svc in services.items() if network in (svc.get("networks") or {})}
        assert members == {"smtp", name}, (network, members)
        assert networks[network].get("internal") is True
    smtp = services["smtp"]
    assert smtp["environment"]["BUZON_TRANSFORM_KEY_FILE"] == KEY_FILE
    assert {(v["source"], v.get("read_only", False)) for v in smtp["volumes"]} == {
        ("buzon-data", False), ("buzon-work", False), ("buzon-key", True),
        ("buzon-mail", False), ("buzon-tls", False), ("buzon-users", True)}
    # Dovecot reads and flags the Maildirs, reads the users file and smtp's certificate,
    # and nothing else: not the queue, the work area or the sidecar key.
    assert {(v["source"], v.get("read_only", False)) for v in services["imap"]["volumes"]} == {
        ("buzon-mail", False), ("buzon-tls", True), ("buzon-users", True)}
    # Only the one-shot users-init and admin write the users file.
    writers = {s for s, svc in services.items()
               for v in svc.get("volumes", [])
               if v.get("source") == "buzon-users" and not v.get("read_only", False)}
    assert writers == {"users-init", "admin"}
    # Only smtp (and monitor-client, read-only, for the token) mount the data volume.
    data = {s for s, svc in services.items()
            if any(v.get("source") == "buzon-data" for v in svc.get("volumes", []))}
    assert data == {"smtp", "monitor-client"}
    keygen = services["keygen"]
    assert keygen["network_mode"] == "none"
    assert [(v["source"], v["target"]) for v in keygen["volumes"]] == [
        ("buzon-key", "/var/lib/buzon-key")]


_PROBE = r"""
import json, os, socket, sys
result = {}
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
        result[path] = "opened"
    except OSError as error:
        result[path] = type(error).__name__
print(json.dumps(result))
"""


def _probe(stack: Stack, service: str, *paths: str) -> dict[str, str]:
    out = stack.compose("exec", "-T", service, "python3", "-c", _PROBE, *paths).stdout
    return dict(json.loads(out))


def test_spamassassin_cannot_open_the_monitor_token_or_a_mailbox(
    stack: Stack, marker: str
) -> None:
    stack.set_transforms(False)
    stack.send(["isolated@example.org"], f"isolation {marker}", "private\n")
    [message] = stack.wait_for_mail("isolated", marker)
    token, mailbox = "/var/lib/buzon/monitor.token", "/var/lib/buzon/mail/example.org/isolated/" + message.name
    targets = (token, mailbox, "/var/lib/buzon/mail", "/var/lib/buzon/spool/queue",
               "/var/lib/buzon/state.json")
    # They exist, and smtp opens them ...
    assert set(_probe(stack, "smtp", *targets).values()) == {"opened"}
    # ... but in the spamassassin container they are not there at all.
    for service in SIDECARS:
        seen = _probe(stack, service, *targets)
        assert set(seen.values()) == {"FileNotFoundError"}, (service, seen)
        # The key is readable (it must be) but not writable.
        assert _probe(stack, service, KEY_FILE) == {KEY_FILE: "opened"}
        denied = stack.compose("exec", "-T", service, "sh", "-c",
                               f"echo x >> {KEY_FILE}", check=False)
        assert denied.returncode != 0


_CONNECT = r"""
import socket, sys
for host in sys.argv[1:]:
    try:
        socket.create_connection((host, 7000), timeout=3).close()
        print(host, "reachable")
    except OSError:
        print(host, "unreachable")
"""

_STRANGER = r"""
import socket
with socket.create_connection(("spamassassin", 7000), timeout=10) as s:
    s.sendall(b'{"v":1,"op":"transform","input":"w0/X.in","output":"w0/X.out"}\n')
    s.shutdown(socket.SHUT_WR)
    print(s.recv(4096).decode().strip())
"""


def test_each_sidecar_is_reachable_from_smtp_alone(stack: Stack) -> None:
    # Another sidecar, and a container on the default network, cannot even connect.
    tac = stack.compose("exec", "-T", "transform-tac", "python3", "-c", _CONNECT,
                        "spamassassin").stdout.split()
    assert tac == ["spamassassin", "unreachable"]
    other = stack.compose("run", "--rm", "-T", "--no-deps", "--entrypoint", "python3",
                          "monitor-client", "-c", _CONNECT, "spamassassin", "transform-tac")
    assert other.stdout.split() == ["spamassassin", "unreachable", "transform-tac",
                                    "unreachable"]
    # smtp can; and even from there, a request without the key is refused.
    answer = json.loads(stack.compose("exec", "-T", "smtp", "python3", "-c", _STRANGER).stdout)
    assert (answer["status"], answer["kind"]) == ("error", "auth"), answer
