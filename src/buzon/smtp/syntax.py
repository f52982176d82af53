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


def _valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    elif not domain or len(domain) > _MAX_DOMAIN:
        return False
    if not local or not (_DOT_STRING.match(local) or _QUOTED.match(local)):
        return False
    return not domain or bool(_DOMAIN.match(domain) or _LITERAL.match(domain))


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
        The sender ("" for ``<>``) and parameters.

    Raises:
        SyntaxFault: with 501 5.5.4 (no ``FROM:``), 501 5.1.7 (bad address),
            552 5.3.4 (declared size too big), 555/501 (parameters).
    """
    split = _parse(arg, "FROM:", replies.MAIL_SYNTAX)
    if split is None:
        raise SyntaxFault(str(replies.BAD_SENDER))
    path, rest, bracketed = split
    path = _ROUTE.sub("", path, count=1)
    # Only "<>" is the null sender; a bare "MAIL FROM:" names nobody.
    if (path and not _valid_address(path)) or (not path and not bracketed):
        raise SyntaxFault(str(replies.BAD_SENDER))
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
            raise SyntaxFault(str(replies.SMTPUTF8_UNSUPPORTED))
        else:
            raise SyntaxFault(replies.PARAM_UNKNOWN.format(_printable(key)))
    return MailArgs(path, params)


def parse_rcpt(arg: str | None, *, extended: bool) -> MailArgs:
    """Parse the argument of RCPT.

    Raises:
        SyntaxFault: 501 5.5.4 (no ``TO:``), 501 5.1.3 (bad or null address),
            555 (any parameter: we implement none, e.g. no DSN).
    """
    split = _parse(arg, "TO:", replies.RCPT_SYNTAX)
    if split is None:
        raise SyntaxFault(str(replies.BAD_RECIPIENT))
    path, rest, _ = split
    path = _ROUTE.sub("", path, count=1)
    if not path or not _valid_address(path):
        raise SyntaxFault(str(replies.BAD_RECIPIENT))
    params = _params(rest, extended)
    if params:
        raise SyntaxFault(replies.PARAM_UNKNOWN.format(_printable(next(iter(params)))))
    return MailArgs(path, params)
