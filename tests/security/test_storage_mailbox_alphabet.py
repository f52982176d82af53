"""Finding 9 (issue 11), storage: mailbox names get a documented, safe alphabet.

Before, any printable ASCII but ``/`` and ``\\`` made a folder name: ``-rf``,
``$(id)``, ``a;b``, a name with spaces. Now a mailbox is ``a-z 0-9 . _ - + =``,
not starting with ``.`` or ``-`` (``storage/mailbox.py`` says why); any other
recipient gets the existing ``550 5.1.1 ... unsafe mailbox name`` at RCPT,
before anything is queued. Ordinary names, ``a+tag`` included, still work.
"""

from __future__ import annotations

import pytest
from helpers import LineClient, RunningServer, code

REFUSED = [
    "-rf@example.org", "--help@example.org", '"with space"@example.org',
    '"trailing "@example.org', '"$(id)"@example.org', "a$b@example.org", "a`b@example.org",
    "a|b@example.org", '"a;b"@example.org', "a&b@example.org", '"a<b"@example.org',
    '"a(b)"@example.org', "a*b@example.org", "a?b@example.org", '"a[b]"@example.org',
    "a{b}@example.org", "a!b@example.org", "a'b@example.org", '"a\\"b"@example.org',
    "a#b@example.org", "a~b@example.org", "a%b@example.org", "a^b@example.org",
    '"a@b"@example.org', '"a:2,S"@example.org',
]
KEPT = ["bob@example.org", "Bob@Example.org", "a+tag@example.org", "john.doe@example.org",
        "no_reply@example.org", "mailer-daemon@example.org", "bounce+x=example.net@example.org"]


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from helpers import settings_for

    server = RunningServer(settings_for(tmp_path_factory.mktemp("alphabet"))).start()
    try:
        replies = {}
        with LineClient(server.port) as c:
            c.reply()
            c.cmd("EHLO stranger.example")
            c.cmd("MAIL FROM:<a@example.org>")
            for rcpt in REFUSED + KEPT:
                replies[rcpt] = c.cmd(f"RCPT TO:<{rcpt}>")
            c.cmd("QUIT")
        return replies
    finally:
        server.stop()


@pytest.mark.parametrize("rcpt", REFUSED)
def test_a_recipient_outside_the_alphabet_is_refused_at_rcpt(
    answers: dict[str, str], rcpt: str,
) -> None:
    assert code(answers[rcpt]) == "550 5.1.1", answers[rcpt]
    assert "unsafe mailbox name" in answers[rcpt]


@pytest.mark.parametrize("rcpt", KEPT)
def test_ordinary_recipients_still_work(answers: dict[str, str], rcpt: str) -> None:
    assert code(answers[rcpt]) == "250 2.1.5", answers[rcpt]
