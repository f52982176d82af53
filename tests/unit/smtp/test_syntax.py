"""The pure MAIL/RCPT parser: tables, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buzon.smtp import replies
from buzon.smtp.syntax import SyntaxFault, parse_mail, parse_rcpt

MAIL_OK = [
    ("FROM:<alice@example.org>", "alice@example.org", {}),
    ("from:<alice@example.org>", "alice@example.org", {}),
    ("FROM: <alice@example.org>", "alice@example.org", {}),
    ("FROM:<>", "", {}),
    ("FROM:alice@example.org", "alice@example.org", {}),
    ("FROM: emilio", "emilio", {}),
    ("FROM:<@relay.one,@relay.two:alice@example.org>", "alice@example.org", {}),
    ('FROM:<"john doe"@example.org>', '"john doe"@example.org', {}),
    ("FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]", {}),
    ("FROM:<a@example.org> SIZE=100 BODY=8BITMIME", "a@example.org", {"SIZE": "100", "BODY": "8BITMIME"}),
    ("FROM:<a@example.org> body=7bit", "a@example.org", {"BODY": "7bit"}),
]


@pytest.mark.parametrize(("arg", "address", "params"), MAIL_OK)
def test_mail_arguments_accepted(arg: str, address: str, params: dict[str, str]) -> None:
    parsed = parse_mail(arg, extended=True, max_size=1000)
    assert (parsed.address, parsed.params) == (address, params)


MAIL_BAD = [
    (None, replies.MAIL_SYNTAX),
    ("", replies.MAIL_SYNTAX),
    ("TO:<a@example.org>", replies.MAIL_SYNTAX),
    ("FROM:", replies.BAD_SENDER),
    ("FROM:<a@example.org", replies.BAD_SENDER),
    ("FROM:<a@@example.org>", replies.BAD_SENDER),
    ("FROM:<a@>", replies.BAD_SENDER),
    ("FROM:<@example.org>", replies.BAD_SENDER),
    ("FROM:<a..b@example.org>", replies.BAD_SENDER),
    ("FROM:<a@-bad-.org>", replies.BAD_SENDER),
    ("FROM:<a@example.org> SIZE=1001", replies.TOO_BIG),
    ("FROM:<a@example.org> BODY=BINARYMIME", replies.BODY_SYNTAX),
]


@pytest.mark.parametrize(("arg", "reply"), MAIL_BAD)
def test_mail_arguments_refused_with_their_reply(arg: str | None, reply: replies.Reply) -> None:
    with pytest.raises(SyntaxFault) as info:
        parse_mail(arg, extended=True, max_size=1000)
    assert info.value.reply == str(reply)


@pytest.mark.parametrize(
    ("arg", "start"),
    [
        ("FROM:<a@example.org> SIZE=", "501 5.5.4 Bad parameter syntax"),
        ("FROM:<a@example.org> SIZE=12x", "501 5.5.4 Bad parameter syntax"),
        ("FROM:<a@example.org> X-FOO", "555 5.5.4 Unsupported option: X-FOO"),
        ("FROM:<a@example.org> SMTPUTF8", "555 5.6.7"),
    ],
)
def test_mail_parameters_refused(arg: str, start: str) -> None:
    with pytest.raises(SyntaxFault) as info:
        parse_mail(arg, extended=True, max_size=1000)
    assert info.value.reply.startswith(start)


def test_parameters_need_ehlo() -> None:
    with pytest.raises(SyntaxFault) as info:
        parse_mail("FROM:<a@example.org> SIZE=10", extended=False, max_size=1000)
    assert info.value.reply == "555 5.5.4 Unsupported option: SIZE=10"


@pytest.mark.parametrize(
    ("arg", "reply"),
    [
        ("TO:<>", replies.BAD_RECIPIENT),
        ("TO:<b@@x.org>", replies.BAD_RECIPIENT),
        ("TO:<b@x.org", replies.BAD_RECIPIENT),
        ("FROM:<b@x.org>", replies.RCPT_SYNTAX),
        (None, replies.RCPT_SYNTAX),
    ],
)
def test_rcpt_refusals(arg: str | None, reply: replies.Reply) -> None:
    with pytest.raises(SyntaxFault) as info:
        parse_rcpt(arg, extended=True)
    assert info.value.reply == str(reply)


def test_rcpt_parameters_are_not_implemented() -> None:
    with pytest.raises(SyntaxFault) as info:
        parse_rcpt("TO:<b@x.org> NOTIFY=NEVER", extended=True)
    assert info.value.reply.startswith("555 5.5.4")


@given(st.text(max_size=200), st.sampled_from(["FROM:", "TO:", ""]), st.booleans())
def test_parsers_only_ever_raise_syntax_fault(arg: str, keyword: str, extended: bool) -> None:
    for parse in (
        lambda a: parse_mail(a, extended=extended, max_size=10**6),
        lambda a: parse_rcpt(a, extended=extended),
    ):
        try:
            parsed = parse(keyword + arg)
        except SyntaxFault as fault:
            assert fault.reply[:1] in "45" and "\n" not in fault.reply
        else:
            assert "\r" not in parsed.address and "\n" not in parsed.address


def test_parameters_echoed_in_replies_are_printable() -> None:
    with pytest.raises(SyntaxFault) as info:
        parse_mail("FROM:<a@example.org> X\x1b[31m=1", extended=True, max_size=1000)
    assert "\x1b" not in info.value.reply
