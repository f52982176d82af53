"""GTUBE through the Compose stack: SpamAssassin scores it with Buzón's Received: in place.

Issue 12: Buzón used to write ``Received: from vm (172.19.0.1:59238)`` after the
transforms, so SpamAssassin scored every message ``NO_RECEIVED``/``NO_RELAYS``, and
the port inside the parentheses made ``UNPARSEABLE_RELAY``. Now the field is added
at intake in the RFC 5321 form, so the message SpamAssassin scores holds it.

The stack's chain is ``spamassassin`` then ``transform-tac``: the delivered file is
``Return-Path:`` and ``Delivered-To:`` followed by the scored message with its lines
reversed. Reversing them back gives the message as SpamAssassin returned it: its
``X-Spam-*`` fields on top of the message it was given, whose first line must be our
``Received:``.

The second test needs only the stack's SpamAssassin image (SpamAssassin 4.0.1, the
stack's ``local.cf``): it scores what a real in-process Buzón queued, next to the two
forms of before (no ``Received:`` when the filter ran; the port in the comment),
so each rule is shown to fire when it should.
"""

from __future__ import annotations

import base64
import json
import os
import re
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import RunningServer, settings_for
from system.compose_stack import BUILD_TIMEOUT, IMAGE_TAG, REPO, Stack, require_docker

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

# Every delivered file holding the marker, wherever the mailbox layout puts it.
_FIND = """
import base64, glob, json, os, sys
root = os.path.join(os.environ.get("BUZON_DATA_DIR", "/var/lib/buzon"), "mail")
found = {}
for path in glob.glob(os.path.join(root, "**", "new", "*"), recursive=True):
    with open(path, "rb") as f:
        data = f.read()
    if sys.argv[1].encode() in data:
        found[os.path.relpath(path, root)] = base64.b64encode(data).decode()
print(json.dumps(found))
"""


def _wait_for(stack: Stack, marker: str, timeout: float = 90.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        result = stack.compose("exec", "-T", "smtp", "python3", "-c", _FIND, marker)
        found = json.loads(result.stdout)
        if found:
            [data] = found.values()
            return base64.b64decode(data)
        assert time.monotonic() < deadline, f"no message with {marker!r} after {timeout:.0f} s"
        time.sleep(0.5)


def _untac(delivered: bytes) -> list[bytes]:
    """The scored message's lines in their order before tac, after our two delivery fields."""
    lines = delivered.split(b"\r\n")
    assert lines[0].startswith(b"Return-Path: ") and lines[1].startswith(b"Delivered-To: ")
    assert lines[-1] == b""
    return lines[2:-1][::-1]


def test_gtube_is_scored_with_our_received_and_no_relay_rules(stack: Stack, marker: str) -> None:
    stack.set_transforms(True)
    try:
        stack.send(["gtube-trace@example.org"], f"gtube {marker}", f"{GTUBE}\n")
        delivered = _wait_for(stack, marker)
    finally:
        stack.set_transforms(False)
    scored = _untac(delivered)
    text = b"\n".join(scored).decode("utf-8", "replace")
    # SpamAssassin ran, found GTUBE, and listed its tests.
    status = re.search(r"^X-Spam-Status: (.*(?:\n[ \t].*)*)", text, re.MULTILINE)
    assert status, text
    tests = re.sub(r"\s+", "", status.group(1).split("tests=", 1)[1].split("autolearn=")[0])
    assert "GTUBE" in tests.split(","), tests
    # ... and saw a relay it could parse: none of the rules of a missing or broken trace.
    for rule in ("NO_RECEIVED", "NO_RELAYS", "UNPARSEABLE_RELAY"):
        assert rule not in text, (rule, tests)
    # SpamAssassin put its X-Spam-* fields on top of the message it was given, whose
    # first line is our Received: (so it was there when the message was scored).
    spam = 0
    while scored[spam].startswith(b"X-Spam-") or scored[spam][:1] in (b" ", b"\t"):
        spam += 1
    assert spam > 0, scored[:6]
    assert re.match(rb"Received: from client\.test \(\S+ \[[0-9a-fA-F.:IPv6]+\]\)$",
                    scored[spam]), scored[:spam + 4]
    assert scored[spam + 1].startswith(b"\tby mx.system.test (Buzon) with ESMTP id ")
    assert sum(line.startswith(b"Received: ") for line in scored) == 1


@pytest.fixture(scope="module")
def spamassassin_image() -> str:
    """The stack's SpamAssassin image, built (from cache when the stack was) if missing."""
    require_docker()
    image = f"buzon-spamassassin:{IMAGE_TAG}"
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                           timeout=30, check=False)
    if found.returncode != 0:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUZON_", "COMPOSE_"))}
        env.update(BUZON_IMAGE_TAG=IMAGE_TAG, COMPOSE_BAKE="false",
                   BUZON_BASE_IMAGE=os.environ.get("BUZON_BASE_IMAGE", "buzon-base:bookworm"))
        subprocess.run(["docker", "compose", "-p", f"buzonsa{os.getpid()}", "build", "spamassassin"],
                       cwd=REPO, env=env, check=True, capture_output=True, timeout=BUILD_TIMEOUT)
    return image


def _spam_status(image: str, message: bytes) -> list[str]:
    """The tests= list SpamAssassin (local tests, the image's config) gives ``message``."""
    result = subprocess.run(
        ["docker", "run", "--rm", "-i", "--network", "none", "--entrypoint", "spamassassin",
         image, "-L", "-t"],
        input=message, capture_output=True, timeout=180, check=True,
    )
    text = result.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: (.*(?:\n[ \t].*)*)", text, re.MULTILINE)
    assert status, text[:2000]
    return re.sub(r"\s+", "", status.group(1).split("tests=", 1)[1].split("autolearn=")[0]).split(",")


@pytest.fixture
def queued_gtube(tmp_path: Path) -> Iterator[bytes]:
    """A GTUBE message as a real Buzón queued it (what the transform stage is given)."""
    server = RunningServer(settings_for(tmp_path, transform_enabled=False)).start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.example",
                          timeout=30) as client:
            client.sendmail("a@example.org", ["gtube@example.org"],
                            f"From: a@example.org\r\nTo: gtube@example.org\r\n"
                            f"Subject: test\r\n\r\n{GTUBE}\r\n".encode())
        server.wait_idle()
        (path,) = server.mail_root.rglob("new/*")
        # Return-Path and Delivered-To are added at delivery, after the transforms.
        yield path.read_bytes().split(b"\r\n", 2)[2]
    finally:
        server.stop()


def test_spamassassin_parses_the_received_buzon_queues(
    spamassassin_image: str, queued_gtube: bytes,
) -> None:
    assert queued_gtube.startswith(b"Received: from client.example (localhost [127.0.0.1])\r\n")
    tests = _spam_status(spamassassin_image, queued_gtube)
    assert "GTUBE" in tests
    assert not {"NO_RECEIVED", "NO_RELAYS", "UNPARSEABLE_RELAY"} & set(tests), tests
    assert "ALL_TRUSTED" in tests, tests  # one relay, from loopback: parsed and trusted

    received_end = queued_gtube.index(b"\r\nDate: ") + 2
    without = queued_gtube[received_end:]  # what SpamAssassin saw before: no Received at all
    assert {"NO_RECEIVED", "NO_RELAYS"} <= set(_spam_status(spamassassin_image, without))
    old_form = (b"Received: from client.example (127.0.0.1:54054)\r\n"
                b"\tby mx.test (Buzon) with ESMTP id AGRCP2BYRWZ5YCRC\r\n"
                b"\tfor <gtube@example.org>; Sun, 29 Nov 2026 15:24:19 +0000\r\n") + without
    assert "UNPARSEABLE_RELAY" in _spam_status(spamassassin_image, old_form)
