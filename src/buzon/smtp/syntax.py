"""Pure parsing of MAIL/RCPT arguments: strings in, values or a Reply out.

Theory of operation
-------------------
RFC 5321 §4.1.2 grammar, kept to what a receiving MTA needs:

    MAIL FROM:<reverse-path> [SP mail-parameters]
    RCPT TO:<forward-path> [SP rcpt-parameters]

Like Postfix (``strict_rfc821_envelopes = no``) we also take an address without
angle brackets and a bare local part (the seed's ``MAIL FROM: emilio``). The
null reverse-path ``<>`` is valid for MAIL (bounces must be accepted, RFC 5321
§4.5.5) and never for RCPT. Source routes (``<@a,@b:user@c>``) are accepted
and their route dropped (§4.1.1.3 says to ignore them).

SMTPUTF8 (RFC 6531): ``MAIL ... SMTPUTF8`` (no value) opens an internationalized
transaction, in which addresses may hold UTF-8: ``atext`` and quoted text gain
every non-ASCII character (§3.3) and a domain label may be a U-label. A non-ASCII
address in a transaction without it gets ``553 5.6.7`` (Postfix's reply): §3.4
says the client MUST declare it, and a message we accept must be one we can
hand on and bounce under the same rules. Bytes that are not UTF-8 reach us as
lone surrogates (aiosmtpd decodes arguments with ``surrogateescape``) and make
the address a syntax error, as do C1 controls.

Failures raise :class:`SyntaxFault` carrying the reply to send, so the I/O side
only translates one exception into one line. Nothing here touches a socket or
the file system, which is what lets the fuzz tests hammer it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from buzon.smtp import replies
from buzon.smtp.replies import Reply

__all__ = [
    "MailArgs",
    "SyntaxFault",
    "escape_controls",
    "has_controls",
    "parse_mail",
    "parse_rcpt",
]

_MAX_DOMAIN = 255

# atext from RFC 5322 §3.2.3, for dot-atom local parts.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]\Z")
_ROUTE = re.compile(rf"@{_LABEL}(?:\.{_LABEL})*(?:,@{_LABEL}(?:\.{_LABEL})*)*:")
_PARAM = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?\Z")
# RFC 6531 §3.3 (UTF8-non-ascii from RFC 6532): any character past ASCII but the C1
# controls, the line and paragraph separators (U+2028, U+2029: line breaks to some
# readers), and the lone surrogates of bytes that were not UTF-8.
_U = "\u00a0-\u2027\u202a-\ud7ff\ue000-\U0010ffff"
_UTEXT = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_U}]"
_U_DOT_STRING = re.compile(rf"{_UTEXT}+(?:\.{_UTEXT}+)*\Z")
_U_QUOTED = re.compile(rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_U}]|\\[\x20-\x7e{_U}])*"\Z')
_U_LABEL = re.compile(rf"[A-Za-z0-9{_U}](?:[A-Za-z0-9{_U}-]*[A-Za-z0-9{_U}])?\Z")


# C0 controls, DEL and C1 controls, as \\xNN: what a client sends must never reach a
# log or terminal raw (an ESC sequence, a CR that rewrites the line, a NUL).
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as ``\\xNN``."""
    return text.translate(_ESCAPES)


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a control character (C0, DEL or C1)."""
    return _CONTROL.search(text) is not None


class NeedsUtf8(Exception):
    """A well-formed non-ASCII address outside an SMTPUTF8 transaction."""


class SyntaxFault(Exception):
    """A command argument that cannot be accepted; ``reply`` is what to send."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class MailArgs:
    """A parsed MAIL or RCPT argument."""

    address: str
    """The address as given (route dropped); "" for the null reverse-path."""
    params: dict[str, str | None]
    """ESMTP parameters, keyword upper-cased, value as sent (None when absent)."""


def _split_path(arg: str) -> tuple[str, str, bool] | None:
    """Split ``<path> params`` or ``path params`` into (path, params, bracketed).

    None when an opening bracket never closes.
    """
    arg = arg.strip()
    if arg.startswith("<"):
        end = arg.find(">")
        if end < 0:
            return None
        return arg[1:end], arg[end + 1:], True
    path, _, rest = arg.partition(" ")
    return path, rest, False


def _valid_address(address: str, utf8: bool = False) -> bool:
    """Whether ``address`` is a mailbox (RFC 5321 §4.1.2, RFC 6531 §3.3).

    Raises:
        NeedsUtf8: it is a valid internationalized address and ``utf8`` is false.
    """
    if not address.isascii():
        if not _valid_utf8_address(address):
            return False
        if not utf8:
            raise NeedsUtf8
        return True
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    elif not domain or len(domain) > _MAX_DOMAIN:
        return False
    if not local or not (_DOT_STRING.match(local) or _QUOTED.match(local)):
        return False
    return not domain or bool(_DOMAIN.match(domain) or _LITERAL.match(domain))


def _valid_utf8_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if not local or not (_U_DOT_STRING.match(local) or _U_QUOTED.match(local)):
        return False
    if not at:
        return True
    if not domain or _LITERAL.match(domain):
        return bool(domain)
    labels = domain[:-1].split(".") if domain.endswith(".") else domain.split(".")
    if not all(_U_LABEL.match(label) for label in labels):
        return False
    try:  # the A-label form must fit DNS's limits (RFC 5890 §2.3.2.1)
        ascii_form = domain.encode("idna")
    except UnicodeError:
        return False
    return len(ascii_form) <= _MAX_DOMAIN


def _parse(arg: str | None, keyword: str, syntax: Reply) -> tuple[str, str, bool] | None:
    if arg is None or arg[: len(keyword)].upper() != keyword:
        raise SyntaxFault(str(syntax))
    return _split_path(arg[len(keyword):])


def _printable(text: str) -> str:
    """Client text made safe to echo in a reply (RFC 5321 §4.2: printable ASCII)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:64]


def _params(text: str, extended: bool) -> dict[str, str | None]:
    words = text.split()
    if words and not extended:
        # RFC 1869 §6: parameters only after EHLO.
        raise SyntaxFault(replies.PARAM_UNKNOWN.format(_printable(words[0])))
    params: dict[str, str | None] = {}
    for word in words:
        match = _PARAM.match(word)
        if not match:
            raise SyntaxFault(replies.PARAM_SYNTAX.format(_printable(word)))
        params[match.group(1).upper()] = match.group(2)
    return params


def parse_mail(arg: str | None, *, extended: bool, max_size: int) -> MailArgs:
    """Parse the argument of MAIL and check its parameters.

    Args:
        arg: the text after ``MAIL`` (aiosmtpd strips the verb), or None.
        extended: whether the session said EHLO (parameters allowed).
        max_size: the SIZE limit; ``SIZE=`` above it is refused up front.

    Returns:
        The sender ("" for ``<>``) and parameters (``SMTPUTF8`` among them when
        the transaction is internationalized).

    Raises:
        SyntaxFault: with 501 5.5.4 (no ``FROM:``), 501 5.1.7 (bad address),
            553 5.6.7 (a UTF-8 address without ``SMTPUTF8``), 552 5.3.4
            (declared size too big), 555/501 (parameters).
    """
    split = _parse(arg, "FROM:", replies.MAIL_SYNTAX)
    if split is None:
        raise SyntaxFault(str(replies.BAD_SENDER))
    path, rest, bracketed = split
    path = _ROUTE.sub("", path, count=1)
    # The parameters first: SMTPUTF8 among them allows a UTF-8 address.
    utf8 = extended and any(w.partition("=")[0].upper() == "SMTPUTF8" for w in rest.split())
    try:
        # Only "<>" is the null sender; a bare "MAIL FROM:" names nobody.
        if (path and not _valid_address(path, utf8)) or (not path and not bracketed):
            raise SyntaxFault(str(replies.BAD_SENDER))
    except NeedsUtf8:
        raise SyntaxFault(str(replies.NEED_SMTPUTF8)) from None
    params = _params(rest, extended)
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                raise SyntaxFault(replies.PARAM_SYNTAX.format(_printable(f"SIZE={value or ''}")))
            if int(value) > max_size:
                raise SyntaxFault(str(replies.TOO_BIG))
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise SyntaxFault(str(replies.BODY_SYNTAX))
        elif key == "SMTPUTF8":
            if value is not None:  # RFC 6531 §3.4: it takes no value
                raise SyntaxFault(replies.PARAM_SYNTAX.format(_printable(f"SMTPUTF8={value}")))
        else:
            raise SyntaxFault(replies.PARAM_UNKNOWN.format(_printable(key)))
    return MailArgs(path, params)


def parse_rcpt(arg: str | None, *, extended: bool, utf8: bool = False) -> MailArgs:
    """Parse the argument of RCPT.

    Args:
        arg: the text after ``RCPT``, or None.
        extended: whether the session said EHLO (parameters allowed).
        utf8: whether this transaction's MAIL carried ``SMTPUTF8``.

    Raises:
        SyntaxFault: 501 5.5.4 (no ``TO:``), 501 5.1.3 (bad or null address),
            553 5.6.7 (a UTF-8 address without ``SMTPUTF8``), 555 (any
            parameter: we implement none, e.g. no DSN).
    """
    split = _parse(arg, "TO:", replies.RCPT_SYNTAX)
    if split is None:
        raise SyntaxFault(str(replies.BAD_RECIPIENT))
    path, rest, _ = split
    path = _ROUTE.sub("", path, count=1)
    try:
        if not path or not _valid_address(path, utf8):
            raise SyntaxFault(str(replies.BAD_RECIPIENT))
    except NeedsUtf8:
        raise SyntaxFault(str(replies.NEED_SMTPUTF8)) from None
    params = _params(rest, extended)
    if params:
        raise SyntaxFault(replies.PARAM_UNKNOWN.format(_printable(next(iter(params)))))
    return MailArgs(path, params)
