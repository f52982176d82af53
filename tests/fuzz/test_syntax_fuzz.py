"""Fuzz target: the SMTP command-argument parsers and the mailbox-name guard.

``buzon.smtp.syntax`` is pure (strings in, values or a reply out), which makes
it the place where hostile input first becomes structure. Properties:

* ``parse_mail`` / ``parse_rcpt`` return a printable-ASCII address or raise
  :class:`SyntaxFault` whose reply is a 4xx/5xx line with an enhanced code and
  no line break; nothing else ever escapes. In a SMTPUTF8 transaction (RFC
  6531) the address may also hold UTF-8, never a control, a line or paragraph
  separator or a lone surrogate (bytes that were not UTF-8).
* ``mailbox_name`` returns ``<domain>/<local>``, safe as two directory levels
  under the mail root (local part non-empty, at most 64 octets, lower case, the
  storage alphabet, no slash, backslash or leading dot) or raises
  :class:`UnsafeMailbox`.
* every name ``mailbox_name`` returns is accepted by ``maildir.mailbox_path``,
  which checks it again at delivery (else: acked, then deferred forever);
* reply text is RFC 5321 textstring: no control character is echoed;
* ``mailbox_name`` raises only :class:`UnsafeMailbox`
  even for a str no socket can produce (lone surrogates).

Inputs mix arbitrary Unicode (surrogates and controls included), bytes decoded
the way aiosmtpd decodes them, and sequences of grammar tokens that reach deep
into the parser (quotes, escapes, routes, literals, parameters).
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from buzon.smtp.syntax import MailArgs, SyntaxFault, parse_mail, parse_rcpt
from buzon.storage import maildir
from buzon.storage.mailbox import ALPHABET, MAX_LOCAL_PART, UnsafeMailbox, mailbox_name

FUZZ = settings.get_profile("fuzz")
# Hypothesis imports libcst to write a patch of a failing example; its
# mypy_extensions import warns, which filterwarnings=error turns into an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")
_REPLY = re.compile(r"[45]\d\d [45]\.\d{1,3}\.\d{1,3} \S")
_TEXTSTRING = re.compile(r"[\t\x20-\x7e]*")  # RFC 5321 §4.2

TOKENS = [
    "FROM:", "TO:", "from:", "<", ">", "<>", "@", '"', "\\", "\\\"", ".", "..", ",", ":", " ",
    "  ", "\t", "=", "SIZE=", "SIZE=100", "SIZE=99999999999", "BODY=8BITMIME", "BODY=7BIT",
    "BODY=", "SMTPUTF8", "RET=HDRS", "[", "]", "[127.0.0.1]", "[IPv6:::1]", "@a,@b:",
    "example.org", "a", "Z", "0", "-", "_", "+", "%", "/", "../", "postmaster", "\x00",
    "\r", "\n", "\r\n", "\x1b[31m", "\x7f", "é", "\u2028", "\udcff", "x" * 64, "y" * 65,
]
# Any str at all, lone surrogates included (U+D800-U+DFFF).
_any_text = st.text(st.characters(exclude_categories=()), max_size=300)
# What a socket can produce: bytes decoded the way aiosmtpd decodes arguments
# (ASCII today; UTF-8 with surrogateescape under SMTPUTF8), so the only surrogates
# are U+DC80-U+DCFF, which encode back to bytes.
_wire_text = st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape"))
_grammar = st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=24).map("".join)
ARGS = _any_text | _wire_text | _grammar
WIRE_ARGS = st.text(max_size=300) | _wire_text | _grammar
SIZES = st.integers(min_value=0, max_value=1 << 31)


def _check_fault(fault: SyntaxFault) -> None:
    assert _REPLY.match(fault.reply), fault.reply
    assert "\r" not in fault.reply and "\n" not in fault.reply, fault.reply


def _check_args(args: MailArgs, null_ok: bool, utf8: bool = False) -> None:
    assert isinstance(args, MailArgs)
    assert args.address or null_ok
    # Printable ASCII; the space included, since a quoted local part may hold one
    # (RFC 5321 qtextSMTP is %d32-33 / %d35-91 / %d93-126): '" "@0' is an address.
    # Under SMTPUTF8 also any character past U+009F but U+2028/9 and surrogates.
    utf8 = utf8 or "SMTPUTF8" in args.params
    assert all(0x20 <= ord(c) < 0x7F or (utf8 and _utf8_ok(c)) for c in args.address), (
        repr(args.address))
    for key, value in args.params.items():
        assert re.fullmatch(r"[A-Z0-9][A-Z0-9-]*", key), key
        assert value is None or all(0x20 < ord(c) < 0x7F and c != "=" for c in value)


def _utf8_ok(c: str) -> bool:
    return ord(c) >= 0xA0 and c not in "\u2028\u2029" and not 0xD800 <= ord(c) <= 0xDFFF


def _check_name(mailbox: str) -> None:
    """``<domain>/<local>`` (issue 12): two safe folder levels under the mail root."""
    assert isinstance(mailbox, str) and mailbox
    domain, _, name = mailbox.partition("/")
    assert re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", domain) and domain[0] != "-", domain
    assert name and len(name.encode()) <= MAX_LOCAL_PART
    assert name == name.lower() and name[0] not in ".-"
    # a-z 0-9 . _ - + = and, for SMTPUTF8, letters, digits and marks: no shell metacharacter
    assert all(c in ALPHABET or (not c.isascii() and (c.isalnum() or
               unicodedata.category(c)[0] == "M")) for c in name), repr(name)
    assert "/" not in name and "\\" not in name
    root = "/srv/mail"
    assert os.path.dirname(os.path.dirname(os.path.normpath(os.path.join(root, mailbox)))) == root


@FUZZ
@given(ARGS, st.sampled_from(["FROM:", "", "FROM: ", "from:<"]), st.booleans(), SIZES)
def test_parse_mail_returns_an_address_or_raises_syntax_fault(
    arg: str, prefix: str, extended: bool, max_size: int,
) -> None:
    for text in (prefix + arg, arg):
        try:
            parsed = parse_mail(text, extended=extended, max_size=max_size)
        except SyntaxFault as fault:
            _check_fault(fault)
        else:
            _check_args(parsed, null_ok=True)
    with pytest.raises(SyntaxFault):
        parse_mail(None, extended=extended, max_size=max_size)


@FUZZ
@given(ARGS, st.sampled_from(["TO:", "", "TO: ", "to:<"]), st.booleans(), st.booleans())
@example(arg='TO:<" "@0>', prefix="TO:", extended=False, utf8=False)
@example(arg="TO:<jos\udce9@x>", prefix="TO:", extended=True, utf8=True)
def test_parse_rcpt_returns_an_address_or_raises_syntax_fault(
    arg: str, prefix: str, extended: bool, utf8: bool,
) -> None:
    for text in (prefix + arg, arg):
        try:
            parsed = parse_rcpt(text, extended=extended, utf8=utf8)
        except SyntaxFault as fault:
            _check_fault(fault)
            continue
        _check_args(parsed, null_ok=False, utf8=utf8)
        try:
            name = mailbox_name(parsed.address, "mx.test")
        except UnsafeMailbox:
            continue
        _check_name(name)


@FUZZ
@given(WIRE_ARGS)
@example("../../etc@x")
@example('"../x"@y')
@example('"a\\/b"@y')
@example("\x00@y")
def test_mailbox_name_is_safe_or_refused(address: str) -> None:
    try:
        name = mailbox_name(address, "mx.test")
    except UnsafeMailbox:
        return
    _check_name(name)


@FUZZ
@given(_any_text)
@example("\ud800")
@example("a\udfff@example.org")
def test_mailbox_name_raises_only_unsafe_mailbox_for_any_str(address: str) -> None:
    try:
        name = mailbox_name(address, "mx.test")
    except UnsafeMailbox:
        return
    _check_name(name)


@FUZZ
@given(WIRE_ARGS)
@example('"a@b"@example.org')
@example('"\\"x\\""@example.org')
@example('"A"@example.org')
def test_every_name_mailbox_name_returns_is_deliverable(address: str) -> None:
    """The delivery side re-checks the stored name (``maildir.mailbox_path``): it must agree.

    A name accepted at RCPT but refused at delivery means a message acked with
    250 and then deferred forever.
    """
    try:
        name = mailbox_name(address, "mx.test")
    except UnsafeMailbox:
        return
    path = maildir.mailbox_path(Path("/nonexistent-mail-root"), name)
    assert path == Path("/nonexistent-mail-root") / name


@FUZZ
@given(ARGS, st.booleans())
@example("FROM:<a@example.org> X\x01Y", True)
@example("FROM:<a@example.org> \x1b[2J", False)
def test_reply_text_is_printable(arg: str, extended: bool) -> None:
    for parse in (lambda a: parse_mail(a, extended=extended, max_size=1 << 20),
                  lambda a: parse_rcpt(a, extended=extended)):
        try:
            parse(arg)
        except SyntaxFault as fault:
            assert _TEXTSTRING.fullmatch(fault.reply), repr(fault.reply)
