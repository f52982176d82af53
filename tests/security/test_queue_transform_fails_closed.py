"""Finding 9 (issue 11), queue: the default transform failure policy failed open.

With ``BUZON_TRANSFORM_FAILURE_POLICY`` unset, a message whose transform (the
spam filter, say) kept failing was delivered untransformed after the retry
window: stopping the filter was enough to get mail past it. The default is now
``hold`` (as Postfix's ``milter_default_action = tempfail``): the message stays
queued and is retried; ``deliver`` is an explicit operator choice.
"""

from __future__ import annotations

from collections.abc import Callable

from helpers import LineClient, RunningServer, code, maildir_files, wait_for

from buzon.config import ServerSettings


def test_the_default_policy_is_hold() -> None:
    assert ServerSettings.model_fields["transform_failure_policy"].default == "hold"


def test_a_message_whose_transform_keeps_failing_is_held_by_default(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(transform="false", transform_retry_window=0.2, retry_backoff=0.05)
    with LineClient(server.port) as c:
        c.reply()
        c.cmd("EHLO stranger.example")
        c.cmd("MAIL FROM:<spammer@example.org>")
        assert code(c.cmd("RCPT TO:<victim@example.org>")) == "250 2.1.5"
        c.cmd("DATA")
        assert code(c.cmd("Subject: buy now\r\n\r\nspam\r\n.")) == "250 2.0.0"
    counters = server.server.counters
    # Attempts at about 0, 0.05, 0.15, 0.35 s: the last two are past the 0.2 s window.
    assert wait_for(lambda: counters.transform_failed >= 4, 10)
    assert maildir_files(server.mail_root, "victim") == [], "delivered past the filter"
    assert counters.transform_fallback == 0
    assert server.server.delivery is not None and server.server.delivery.pending == 1
