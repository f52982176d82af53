"""A real Postfix with ``smtputf8_enable = yes`` relays UTF-8 mail to Buzón (issue 12).

Before SMTPUTF8, Postfix bounced such mail with ``5.6.7 SMTPUTF8 is required,
but was not offered`` (and its bounce bounced for the same reason). Here a
private Postfix instance (``postfix -c DIR start``, root needed) accepts a message for
``josé@example.org`` with a UTF-8 Subject from smtplib and relays it to the
Buzón under test (scripts/postfix-relay.sh: ``relayhost = [127.0.0.1]:<port>``,
TLS verified against Buzón's generated CA). The message must
land in the recipient's mailbox byte-exact and Postfix's log must show
``status=sent`` with Buzón's 250.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import smtplib
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, RunningServer, free_port, settings_for, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance runs as root"),
    pytest.mark.skipif(shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists(),
                       reason="postfix is not installed (scripts/provision-test-tools.sh)"),
]

SCRIPT = REPO / "scripts" / "postfix-relay.sh"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = RunningServer(settings_for(tmp_path, reverse_dns=False)).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def relay(server: RunningServer) -> Iterator[tuple[Path, int]]:
    """scripts/postfix-relay.sh (smtputf8_enable = yes, TLS that must verify against the
    CA Buzón generated) relaying everything to ``server``; stopped in any case."""
    # Postfix's daemons drop to the postfix user: its queue (and the CA file) must be
    # reachable by it, which pytest's 0700 tmp_path is not.
    base = Path(tempfile.mkdtemp(prefix="buzon-utf8-relay-", dir="/tmp"))
    base.chmod(0o755)
    ca = base / "ca.pem"
    shutil.copyfile(server.settings.data_dir / "tls" / "ca.pem", ca)
    ca.chmod(0o644)
    port = free_port()
    try:
        subprocess.run(["bash", str(SCRIPT), "start", str(base), str(port), str(server.port),
                        str(ca)], check=True, capture_output=True, timeout=60,
                       env={**os.environ, "POSTFIX_SMTPUTF8": "yes"})
        yield base, port
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(base)], check=False, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_postfix_relays_a_utf8_address_and_subject_to_its_mailbox(
    server: RunningServer, relay: tuple[Path, int],
) -> None:
    base, port = relay
    token = uuid.uuid4().hex
    subject = f"Café con José ✓ {token}"
    message = (f"From: Zoë <zoë@example.org>\r\nTo: José <josé@example.org>\r\n"
               f"Subject: {subject}\r\nMIME-Version: 1.0\r\n"
               f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
               f"\r\nHola José, ¿qué tal?\r\n").encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.has_extn("smtputf8")
        refused = client.sendmail("zoë@example.org", ["josé@example.org"], message,
                                  mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert refused == {}
    log = base / "log" / "postfix.log"

    def mine() -> list[Path]:
        return [p for p in server.mail_root.rglob("new/*") if token.encode() in p.read_bytes()]

    found = wait_for(mine, timeout=60)
    assert found, log.read_text() if log.exists() else "no postfix log"
    (path,) = found
    assert "josé" in str(path.relative_to(server.mail_root)), path  # the recipient's own mailbox
    data = path.read_bytes()
    # Postfix adds its own Received:, Message-ID: and Date: (for its local client) in
    # front of the header block; every line the client wrote arrives byte-exact.
    head, _, body = message.partition(b"\r\n\r\n")
    assert data.endswith(b"\r\n\r\n" + body), data
    for line in head.split(b"\r\n"):
        assert b"\r\n" + line + b"\r\n" in data, (line, data)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Subject"] == subject and parsed["Delivered-To"] == "josé@example.org"
    # Buzón's Received names Postfix's relay and the internationalized transaction.
    assert " with UTF8SMTPS id " in str(parsed.get_all("Received")[0])
    assert wait_for(lambda: "status=sent (250 2.0.0 Ok: queued as " in log.read_text(),
                    timeout=30), log.read_text()
    sent = [line for line in log.read_text().splitlines() if "status=sent" in line]
    assert f"relay=127.0.0.1[127.0.0.1]:{server.port}" in sent[0], sent
    assert "<josé@example.org>" in sent[0], sent
    print(sent[0])  # the report quotes it
