"""The reply table and the translation of aiosmtpd's own replies."""

from __future__ import annotations

import inspect
import re

import aiosmtpd.smtp
import pytest

from buzon.smtp import replies
from buzon.smtp.replies import translate

ENHANCED = re.compile(r"^\d{3} [245]\.\d{1,3}\.\d{1,3} ")


@pytest.mark.parametrize(
    ("aiosmtpd_line", "ours"),
    [
        ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
        ('500 Error: command "FOO" not recognized', "502 5.5.2 Error: command not recognized"),
        ("500 Command line too long", "500 5.5.2 Error: line too long"),
        ("500 Line too long (see RFC5321 4.5.3.1.6)", "500 5.5.2 Error: line too long"),
        ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
        ("552 Error: Too much mail data", str(replies.TOO_BIG)),
        ("250 Supported commands: DATA EHLO", "250 2.0.0 Supported commands: DATA EHLO"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("250 OK", "250 2.0.0 Ok"),
    ],
)
def test_translation_of_aiosmtpd_replies(aiosmtpd_line: str, ours: str) -> None:
    assert translate(aiosmtpd_line) == ours


@pytest.mark.parametrize(
    "line",
    ["220 mx.test ESMTP", "250 mx.test", "250-PIPELINING", "354 End data with <CR><LF>.<CR><LF>",
     "250 2.1.0 Ok", "421 4.7.0 MAIL sent too many times"],
)
def test_lines_that_pass_unchanged(line: str) -> None:
    assert translate(line) == line


def test_an_unknown_error_line_still_gets_a_class_code(caplog: pytest.LogCaptureFixture) -> None:
    assert translate("599 Something new") == "599 5.0.0 Something new"
    assert translate("451 Later") == "451 4.0.0 Later"
    assert "without an enhanced code" in caplog.text


def test_every_error_literal_in_aiosmtpd_gets_an_enhanced_code() -> None:
    """Guards an aiosmtpd upgrade: every 4xx/5xx literal it can push leaves with a code.

    (Those of code paths we replace, MAIL/RCPT parsing and AUTH, get the class default.)
    """
    source = inspect.getsource(aiosmtpd.smtp)
    literals = set(re.findall(r"""push\(\s*f?['"]([45]\d\d [^'"{]*)""", source))
    assert len(literals) > 20
    for literal in literals:
        out = translate(literal)
        assert ENHANCED.match(out), (literal, out)


def test_table_constants_render_as_the_spec_lines() -> None:
    assert str(replies.MAIL_OK) == "250 2.1.0 Ok"
    assert str(replies.RCPT_OK) == "250 2.1.5 Ok"
    assert str(replies.DATA_GO) == "354 End data with <CR><LF>.<CR><LF>"
    assert replies.QUEUED.format("ABC") == "250 2.0.0 Ok: queued as ABC"
    assert str(replies.BYE) == "221 2.0.0 Bye"
