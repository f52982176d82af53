"""A real Postfix relays to Buzón with ``smtp_tls_security_level = encrypt`` and verifies its CA.

scripts/postfix-relay.sh runs a private Postfix instance (root needed, as for
scripts/postfix-instance.sh) whose only next hop is the Buzón under test. The
test sends one message to Postfix with smtplib and waits for it in Buzón's
Maildir; Postfix's own log must show the trusted TLS session and the 250.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, ServerProcess, free_port, server_process, wait_for
from tls_kit import HOST, delivered

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance runs as root"),
    pytest.mark.skipif(shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists(),
                       reason="postfix is not installed (scripts/provision-test-tools.sh)"),
]
SCRIPT = REPO / "scripts" / "postfix-relay.sh"


@pytest.fixture
def buzon(tmp_path: Path) -> Iterator[ServerProcess]:
    with server_process(tmp_path / "data", free_port()) as running:
        yield running


@pytest.fixture
def relay_base() -> Iterator[Path]:
    # Postfix's daemons drop to the postfix user: its queue (and the CA file)
    # must be reachable by it, which pytest's 0700 tmp_path is not.
    base = Path(tempfile.mkdtemp(prefix="buzon-relay-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(base)], check=False, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_postfix_relays_over_verified_tls(buzon: ServerProcess, relay_base: Path) -> None:
    ca = relay_base / "ca.pem"
    shutil.copyfile(buzon.data_dir / "tls" / "ca.pem", ca)
    ca.chmod(0o644)
    port = free_port()
    subprocess.run(["bash", str(SCRIPT), "start", str(relay_base), str(port), str(buzon.port), str(ca)],
                   check=True, capture_output=True, timeout=60)
    token = uuid.uuid4().hex
    with smtplib.SMTP(HOST, port, timeout=30) as client:
        client.sendmail("alice@example.org", ["bob@example.org"],
                        f"From: alice@example.org\r\nSubject: {token}\r\n\r\nvia postfix\r\n")
    found = wait_for(lambda: [p for p in delivered(buzon.data_dir / "mail") if token.encode() in p.read_bytes()],
                     timeout=60)
    log = relay_base / "log" / "postfix.log"
    assert found, log.read_text() if log.exists() else "no postfix log"
    assert wait_for(lambda: "status=sent (250 2.0.0 Ok: queued as " in log.read_text(), timeout=30), log.read_text()
    text = log.read_text()
    established = f"TLS connection established to 127.0.0.1[127.0.0.1]:{buzon.port}: TLSv1."
    assert f"Trusted {established}" in text or f"Verified {established}" in text, text
    assert f"relay=127.0.0.1[127.0.0.1]:{buzon.port}" in text
