"""Junk filing: the route a header gives a transformed message (delivery/junk.py)."""

from __future__ import annotations

import pytest

from buzon.delivery.junk import JunkRule, Route, header_value, route, score_of

SA_SPAM = (b"Received: from x (localhost [127.0.0.1])\r\n\tby mx with ESMTP id A\r\n"
           b"X-Spam-Flag: YES\r\n"
           b"X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE,\r\n"
           b"\tNO_RELAYS autolearn=no autolearn_force=no version=4.0.1\r\n"
           b"Subject: test\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST\r\n")
SA_HAM = (b"X-Spam-Status: No, score=-0.1 required=5.0 tests=ALL_TRUSTED\r\n"
          b"Subject: hi\r\n\r\nbody\r\n")

RULE = JunkRule()
DISCARDING = JunkRule(discard=15.0)


@pytest.mark.parametrize(
    ("content", "rule", "expected"),
    [
        (SA_SPAM, RULE, (Route.JUNK, 1000.0)),
        (SA_SPAM, DISCARDING, (Route.DISCARD, 1000.0)),
        (SA_HAM, RULE, (Route.INBOX, -0.1)),
        (SA_HAM, DISCARDING, (Route.INBOX, -0.1)),
        # exactly at the threshold: junk (SpamAssassin's "score >= required")
        (b"X-Spam-Status: Yes, score=5.0 required=5.0\r\n\r\nb", RULE, (Route.JUNK, 5.0)),
        (b"X-Spam-Status: No, score=4.9 required=5.0\r\n\r\nb", RULE, (Route.INBOX, 4.9)),
        # another filter's header, a bare number (rspamd's X-Spam-Score style)
        (b"X-Spam-Score: 7.25\r\n\r\nb", JunkRule(header="X-Spam-Score"), (Route.JUNK, 7.25)),
        (b"x-spam-score:   16\r\n\r\nb", JunkRule(header="X-Spam-Score", discard=15.0),
         (Route.DISCARD, 16.0)),
        # a flag with no score: junk at the threshold, never discarded
        (b"X-Spam-Flag: YES\r\n\r\nb", JunkRule(header="X-Spam-Flag", discard=5.0),
         (Route.DISCARD, 5.0)),
        (b"X-Spam-Flag: YES\r\n\r\nb", JunkRule(header="X-Spam-Flag", discard=6.0),
         (Route.JUNK, 5.0)),
        (b"X-Spam-Flag: NO\r\n\r\nb", JunkRule(header="X-Spam-Flag"), (Route.INBOX, None)),
        # no header, no header block, the header only in the body, garbage values
        (b"Subject: x\r\n\r\nbody\r\n", RULE, (Route.INBOX, None)),
        (b"no header block at all\r\n", RULE, (Route.INBOX, None)),
        (b"Subject: x\r\n\r\nX-Spam-Status: Yes, score=99\r\n", RULE, (Route.INBOX, None)),
        (b"X-Spam-Status: Yes, score=lots\r\n\r\nb", RULE, (Route.INBOX, None)),
        (b"X-Spam-Status-Extra: score=99\r\n\r\nb", RULE, (Route.INBOX, None)),
        # LF-only line ends
        (b"X-Spam-Status: Yes, score=8.0\n\nbody\n", RULE, (Route.JUNK, 8.0)),
    ],
)
def test_route(content: bytes, rule: JunkRule, expected: tuple[Route, float | None]) -> None:
    assert route(content, rule) == expected


def test_the_first_occurrence_decides() -> None:
    # The filter adds its header on top; a sender's forged copy further down loses.
    content = (b"X-Spam-Status: Yes, score=9.0 required=5.0\r\n"
               b"X-Spam-Status: No, score=-50 required=5.0\r\n\r\nb")
    assert route(content, RULE) == (Route.JUNK, 9.0)


def test_folded_value_is_unfolded() -> None:
    value = header_value(SA_SPAM, "x-spam-status")
    assert value is not None
    assert value.startswith(b"Yes, score=1000.0") and value.endswith(b"version=4.0.1")
    assert b"\r" not in value and b"\n" not in value


def test_score_of_prefers_score_equals() -> None:
    assert score_of(b"Yes, hits=3 score=12.5 required=5", 5.0) == 12.5
    assert score_of(b"true", 3.0) == 3.0
    assert score_of(b"maybe", 3.0) is None
