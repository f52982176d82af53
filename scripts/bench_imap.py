#!/usr/bin/env python3
"""How fast the imap service (Dovecot) reads a big mailbox that Buzón wrote.

    python3 scripts/bench_imap.py [--messages 10000] [--image buzon-imap:local]

Writes N messages (1-4 KB, varied) into one mailbox with Buzón's own Maildir writer
(``buzon.storage.maildir.deliver``, names as the server gives them), writes a users file
with ``buzon-admin``'s hash, starts the imap image on them (rootless, read-only root, as
compose.yaml runs it), then times over IMAPS from the host, three rounds:

* ``LOGIN`` + ``SELECT INBOX`` (round 1 builds Dovecot's index: the first login after
  a big delivery; rounds 2-3 read the index);
* ``FETCH 1:* (FLAGS RFC822.SIZE)``, checking that every size equals the file's size
  (Dovecot counts CRLF line ends as written, so a mismatch would be a format problem).

Prints one line per round and the medians. The container and the temporary directory
are removed at the end. Needs the image (``docker compose build imap``).
"""

from __future__ import annotations

import argparse
import imaplib
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from buzon.admin.cli import hash_password
from buzon.spool import new_queue_id
from buzon.storage import maildir
from buzon.tls.certs import ensure_generated


def _message(index: int) -> bytes:
    body = f"line of text for message {index}, padded to vary the size a little\r\n" * (
        15 + index % 45)
    return (f"From: sender{index % 97}@example.net\r\nTo: bench@example.org\r\n"
            f"Subject: message {index}\r\nDate: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
            f"Message-ID: <{index}.{secrets.token_hex(4)}@example.net>\r\n\r\n{body}").encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--image", default="buzon-imap:local")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-imap-"))
    name = f"bench-imap-{secrets.token_hex(3)}"
    try:
        mail, users, tls = work / "mail", work / "users", work / "tls"
        for folder in (mail, users, tls):
            folder.mkdir()
        start = time.monotonic()
        sizes = {}
        for i in range(args.messages):
            data = _message(i)
            file_name = maildir.message_name(time.time(), new_queue_id(), 0, "bench")
            maildir.deliver(mail, "example.org/bench", file_name, [data], fsync=False)
            sizes[i] = len(data)
        print(f"wrote {args.messages} messages in {time.monotonic() - start:.1f} s")
        password = secrets.token_hex(8)
        (users / "users").write_text(f"bench@example.org:{hash_password(password)}::::::\n")
        ensure_generated(tls, "localhost")
        subprocess.run(["chown", "-R", "10025:10025", str(work)], check=True)
        subprocess.run(
            ["docker", "run", "-d", "--name", name, "--cap-drop", "ALL", "--read-only",
             "--security-opt", "no-new-privileges:true",
             "--tmpfs", "/tmp", "--tmpfs", "/run/dovecot:uid=10025,gid=10025,mode=0755",
             "--tmpfs", "/run/buzon-health:uid=10025,gid=10025,mode=0700",
             "-v", f"{mail}:/var/lib/buzon/mail", "-v", f"{users}:/etc/buzon:ro",
             "-v", f"{tls}:/var/lib/buzon/tls:ro", args.image],
            check=True, capture_output=True)
        address = subprocess.run(
            ["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name],
            check=True, capture_output=True, text=True).stdout.strip()
        context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        context.check_hostname = False  # a container address, not a name in the certificate
        deadline = time.monotonic() + 30
        while True:
            try:
                imaplib.IMAP4_SSL(address, 1993, ssl_context=context, timeout=5).logout()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        selects, fetches = [], []
        for round_ in range(1, args.rounds + 1):
            with imaplib.IMAP4_SSL(address, 1993, ssl_context=context, timeout=300) as imap:
                t0 = time.perf_counter()
                imap.login("bench@example.org", password)
                status, data = imap.select("INBOX", readonly=True)
                t1 = time.perf_counter()
                assert status == "OK" and int(data[0]) == args.messages, data
                status, rows = imap.fetch("1:*", "(FLAGS RFC822.SIZE)")
                t2 = time.perf_counter()
                assert status == "OK" and len(rows) == args.messages
                got = sorted(int(r.split(b"RFC822.SIZE ")[1].rstrip(b")")) for r in rows)
                assert got == sorted(sizes.values()), "RFC822.SIZE differs from the files"
            selects.append(t1 - t0)
            fetches.append(t2 - t1)
            print(f"round {round_}: LOGIN+SELECT {t1 - t0:.3f} s, "
                  f"FETCH 1:* (FLAGS RFC822.SIZE) {t2 - t1:.3f} s")
        print(f"{args.messages} messages: first SELECT {selects[0]:.3f} s (index built); "
              f"median SELECT {statistics.median(selects[1:] or selects):.3f} s, "
              f"median FETCH {statistics.median(fetches):.3f} s; sizes all equal")
        return 0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
