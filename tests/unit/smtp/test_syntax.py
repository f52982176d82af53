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
        ("FROM:<a@example.org> SMTPUTF8=yes", "501 5.5.4 Bad parameter syntax: SMTPUTF8=yes"),
    ],
)
def test_mail_parameters_refused(arg: str, start: str) -> None:
    with pytest.raises(SyntaxFault) as info:
        parse_mail(arg, extended=True, max_size=1000)
    assert info.value.reply.startswith(start)


# --- SMTPUTF8 (RFC 6531) ---------------------------------------------------------------------
UTF8_OK = [
    "josé@example.org",  # UTF-8 local part
    "user@bücher.example",  # U-label domain
    "用户@例子.广告",  # both, CJK
    '"jo sé"@example.org',  # quoted, with UTF-8 qtext
    "ünïcödé",  # a bare local part, as for ASCII
    "a@xn--bcher-kva.example",  # A-labels are ASCII anyway
]


@pytest.mark.parametrize("address", UTF8_OK)
def test_utf8_addresses_accepted_in_a_smtputf8_transaction(address: str) -> None:
    mail = parse_mail(f"FROM:<{address}> SMTPUTF8", extended=True, max_size=1000)
    assert (mail.address, mail.params) == (address, {"SMTPUTF8": None})
    assert parse_rcpt(f"TO:<{address}>", extended=True, utf8=True).address == address


@pytest.mark.parametrize("address", [a for a in UTF8_OK if not a.isascii()])
def test_utf8_addresses_without_smtputf8_get_553_5_6_7(address: str) -> None:
    for parse in (lambda: parse_mail(f"FROM:<{address}>", extended=True, max_size=1000),
                  lambda: parse_mail(f"FROM:<{address}> BODY=8BITMIME", extended=True,
                                     max_size=1000),
                  lambda: parse_rcpt(f"TO:<{address}>", extended=True),
                  # after HELO there is no SMTPUTF8 transaction at all
                  lambda: parse_rcpt(f"TO:<{address}>", extended=False, utf8=False)):
        with pytest.raises(SyntaxFault) as info:
            parse()
        assert info.value.reply == str(replies.NEED_SMTPUTF8)
        assert info.value.reply == "553 5.6.7 Must declare SMTPUTF8 to send unicode address"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("jos\udce9@example.org", "Latin-1 é: not UTF-8, a lone surrogate after decoding"),
        ("a\x85b@example.org", "C1 control NEL"),
        ("a\u2028b@example.org", "line separator"),
        ("josé@-bücher.example", "label starting with a hyphen"),
        ("josé@bü..example", "empty label"),
        ("jo sé@example.org", "space outside quotes"),
        ("josé@" + "ü" * 70 + ".example", "label over 63 octets as an A-label"),
    ],
)
def test_malformed_utf8_addresses_are_syntax_errors(address: str, why: str) -> None:
    with pytest.raises(SyntaxFault) as info:
        parse_rcpt(f"TO:<{address}>", extended=True, utf8=True)
    assert info.value.reply == str(replies.BAD_RECIPIENT), why
    with pytest.raises(SyntaxFault) as info:
        parse_mail(f"FROM:<{address}> SMTPUTF8", extended=True, max_size=1000)
    assert info.value.reply == str(replies.BAD_SENDER), why


def test_smtputf8_needs_ehlo() -> None:
    with pytest.raises(SyntaxFault) as info:
        parse_mail("FROM:<a@example.org> SMTPUTF8", extended=False, max_size=1000)
    assert info.value.reply == "555 5.5.4 Unsupported option: SMTPUTF8"
    with pytest.raises(SyntaxFault) as info:
        parse_mail("FROM:<josé@example.org> SMTPUTF8", extended=False, max_size=1000)
    assert info.value.reply == str(replies.NEED_SMTPUTF8)


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
