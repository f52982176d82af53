"""The users file buzon-admin writes is one Dovecot authenticates from (passwd-file):
a private Dovecot on a free port, real IMAP logins. Needs Debian's dovecot-imapd."""

from __future__ import annotations

import grp
import imaplib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("dovecot") is None or not Path("/usr/lib/dovecot/imap").exists(),
    reason="Dovecot is not installed (apt-get install dovecot-imapd)",
)

CONFIG = """
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_username_chars =
auth_verbose = yes
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={base}/mail/%d/%n
}}
mail_location = maildir:{base}/mail/%d/%n
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


@pytest.fixture
def dovecot() -> Iterator[tuple[int, Path]]:
    # Dovecot's auth process runs as the user dovecot: it must reach the file, which
    # buzon-admin leaves 0640; its group is Dovecot's, as in a deployment.
    tmp_path = Path(tempfile.mkdtemp(prefix="buzon-dovecot-"))
    tmp_path.chmod(0o755)
    try:
        yield from _run_dovecot(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _run_dovecot(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    users, port = tmp_path / "users", free_port()
    env = {**os.environ, "BUZON_USERS_FILE": str(users), "BUZON_DOMAINS": "example.org",
           "BUZON_DATA_DIR": str(tmp_path / "data")}
    for args, password in [(("user", "add", "alice@example.org"), "s3cret\n"),
                           (("user", "add", "josé@example.org"), "pässword\n"),
                           (("alias", "add", "postmaster@example.org", "alice@example.org"), None),
                           (("alias", "add", "@example.org", "alice@example.org"), None)]:
        done = subprocess.run([sys.executable, "-m", "buzon.admin", *args], input=password,
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert users.stat().st_mode & 0o777 == 0o640
    os.chown(users, -1, grp.getgrnam("dovecot").gr_gid)
    conf = tmp_path / "dovecot.conf"
    conf.write_text(CONFIG.format(base=tmp_path, users=users, port=port))
    (tmp_path / "run").mkdir()
    (tmp_path / "state").mkdir()
    subprocess.run(["dovecot", "-c", str(conf)], check=True, timeout=30)
    try:
        assert wait_for(lambda: _listening(port), timeout=15), (tmp_path / "dovecot.log").read_text()
        yield port, tmp_path
    finally:
        subprocess.run(["doveadm", "-c", str(conf), "stop"], check=False, timeout=30)


def _listening(port: int) -> bool:
    try:
        imaplib.IMAP4("127.0.0.1", port, timeout=5).logout()
    except OSError:
        return False
    return True


class _From(imaplib.IMAP4):
    """IMAP from a chosen loopback source: Dovecot slows each failed login from one
    address more (its auth penalty), so each failing login comes from another."""

    source = "127.0.0.1"

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def _login(port: int, user: str, password: str, source: str = "127.0.0.1") -> str:
    _From.source = source
    client = _From("127.0.0.1", port, timeout=30)
    try:
        # SASL PLAIN (RFC 4616) is UTF-8: how a client logs in a non-ASCII user.
        sasl = b"\0" + user.encode() + b"\0" + password.encode()
        return client.authenticate("PLAIN", lambda _: sasl)[0]
    except imaplib.IMAP4.error as error:
        return str(error)
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            client.shutdown()


def test_dovecot_logs_mailboxes_in_and_never_aliases(dovecot: tuple[int, Path]) -> None:
    port, base = dovecot
    assert _login(port, "alice@example.org", "s3cret") == "OK"
    assert _login(port, "josé@example.org", "pässword") == "OK"  # SMTPUTF8 user, UTF-8 password
    assert "AUTHENTICATIONFAILED" in _login(port, "alice@example.org", "wrong", "127.0.0.2")
    assert "AUTHENTICATIONFAILED" in _login(port, "postmaster@example.org", "!", "127.0.0.3")
    assert "AUTHENTICATIONFAILED" in _login(port, "@example.org", "x", "127.0.0.4")
    log = (base / "dovecot.log").read_text()
    assert "Password mismatch" in log and "Error" not in log, log
