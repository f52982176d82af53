"""Mailbox names: which folder under the mail root a recipient's mail goes to.

This module is the one home of the rule. :mod:`buzon.storage.maildir` checks
every name again before it builds a path, the queue record codec checks every
stored name on read, the recipient directory (:mod:`buzon.directory`) builds
names with :func:`mailbox_for`, and the SMTP side refuses an unsafe recipient
(``550 5.1.1``) at ``RCPT``, before anything is queued. Nothing here touches
the file system.

The name
--------
A mailbox is ``<domain>/<local>``, e.g. ``example.org/alice``, and its Maildir
is ``<mail root>/<domain>/<local>/{tmp,new,cur}``: Dovecot's
``mail_location = maildir:<mail root>/%d/%n`` finds it, with
``auth_username_chars`` empty so that non-ASCII names pass (issue 13).

``<domain>``
    the recipient's domain as lower-case IDNA A-labels (``Bücher.Example`` →
    ``xn--bcher-kva.example``), without a trailing dot: labels of ``a-z 0-9 -``,
    1-63 octets, not starting or ending with ``-``, at most 253 octets in all.
    Converted with Python's built-in ``idna`` codec (IDNA 2003, RFC 3490, with
    nameprep): it maps ``ß`` to ``ss`` and ``ς`` to ``σ`` where IDNA 2008 keeps
    them, so ``straße.de`` and ``strasse.de`` share a folder. Both spellings
    come to the same A-label everywhere Buzón compares them (settings, users
    file, RCPT), so this only widens what one configured domain accepts.
    A domain literal (``[192.0.2.1]``) is not a domain name and has no folder.

``<local>``
    the local part, unquoted, NFC-normalised (Unicode canonical composition,
    so ``é`` typed as ``e`` + accent and as one character are one name), then
    lower-cased, so ``Bob`` and ``bob`` share a folder. It is 1-64 octets of
    UTF-8 (RFC 5321 §4.5.3.1.1, RFC 6531 §3.3) made of

    * letters and digits: ``a-z 0-9`` and, for SMTPUTF8 addresses, any Unicode
      letter or digit (``str.isalnum``), plus combining marks after the first
      character (Unicode category M: the vowel signs of Devanagari or Thai
      names would otherwise be refused);
    * ``.`` ``_`` ``-``: the separators of real-world local parts
      (``john.doe``, ``no_reply``, ``mailer-daemon``);
    * ``+`` and ``=``: subaddresses (``a+tag``) and the tags of VERP/SRS bounce
      addresses (``bounce+x=example.org``);

    and it does not start with ``.`` or ``-``.

Everything else is refused, not escaped, so one name never maps onto another's
folder and a name is safe wherever an operator's tool puts it: ``/`` and ``\\``
would leave the mail root; a leading ``.`` hides a folder (and makes ``.`` and
``..``); a leading ``-`` reads as an option to ``rm``, ``tar`` or ``find``;
space (so no trailing space either), quotes and
``$ ` | ; & < > ( ) * ? [ ] { } ! # ~ % ^ @ , :`` mean something to a shell, a
glob, a Maildir file name (``:``) or an address parser; control and format
characters (ESC, CR, NUL, the bidirectional overrides) drive terminals and
forge log lines; unnormalised or upper-case text has several spellings of one
name. RFC 5321 allows more in a local part (any ``atext``, and anything
quoted); such a recipient gets ``550 5.1.1 ... unsafe mailbox name`` at
``RCPT``, before the client has sent anything it could lose.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "ALPHABET",
    "MAX_DOMAIN",
    "MAX_LOCAL_PART",
    "UnsafeMailbox",
    "check_domain",
    "check_local",
    "check_mailbox",
    "mailbox_for",
    "mailbox_name",
    "normal_domain",
    "normal_local",
    "split_address",
]

#: RFC 5321 §4.5.3.1.1; also keeps Maildir directory names short.
MAX_LOCAL_PART = 64
#: RFC 1035 §2.3.4 (255 octets on the wire: 253 written out, no trailing dot).
MAX_DOMAIN = 253
#: Every ASCII character a local part may hold (see the module docstring for why).
ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-+=")
_PUNCT = frozenset("._-+=")
_SAFE = re.compile(r"[a-z0-9_+=][a-z0-9._+=-]{0,63}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_UNQUOTE = re.compile(r"\\(.)")


class UnsafeMailbox(ValueError):
    """The recipient cannot safely name a directory under the mail root."""


def split_address(address: str) -> tuple[str, str]:
    """``(local part, domain)`` of an address as SMTP gave it; domain "" when absent.

    The local part keeps its quotes; the split is at the last ``@`` (a quoted
    local part may hold one).
    """
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


def normal_local(local: str) -> str:
    """A local part unquoted, NFC-normalised and lower-cased (not yet checked)."""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        local = _UNQUOTE.sub(r"\1", local[1:-1])
    if local.isascii():
        return local.lower()
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", local).lower())


def normal_domain(domain: str) -> str:
    """A domain as lower-case IDNA A-labels without a trailing dot, checked.

    Raises:
        UnsafeMailbox: a domain literal, an empty label, or text the IDNA codec
            or :func:`check_domain` refuses.
    """
    if domain.startswith("["):
        raise UnsafeMailbox("a domain literal names no mailbox domain")
    name = domain.removesuffix(".")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise UnsafeMailbox(f"domain is not valid IDNA: {error}") from None
    return check_domain(name.lower())


def check_domain(name: str) -> str:
    """Check a (normalised) domain: lower-case A-labels (module docstring).

    Raises:
        UnsafeMailbox: naming the fault.
    """
    if len(name) <= MAX_DOMAIN and _DOMAIN.fullmatch(name):
        return name
    if not name:
        raise UnsafeMailbox("empty domain")
    if len(name) > MAX_DOMAIN:
        raise UnsafeMailbox(f"domain longer than {MAX_DOMAIN} octets")
    raise UnsafeMailbox(f"domain {name[:60]!r} is not lower-case labels of a-z 0-9 -")


def check_local(name: str) -> str:
    """Check a (normalised) local part against the alphabet (module docstring).

    Raises:
        UnsafeMailbox: empty, over 64 octets, a leading dot or hyphen, upper case,
            not NFC, or a character outside the alphabet.
    """
    if _SAFE.fullmatch(name):
        return name
    if not name:
        raise UnsafeMailbox("empty local part")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_LOCAL_PART:
        raise UnsafeMailbox("local part longer than 64 octets")
    if name.startswith("."):
        raise UnsafeMailbox("leading dot")
    if name.startswith("-"):
        raise UnsafeMailbox("leading hyphen")
    for i, c in enumerate(name):
        if c.isascii():
            if c in ALPHABET:
                continue
            if not ("A" <= c <= "Z"):
                raise UnsafeMailbox(f"character {c!r} is not one of a-z 0-9 . _ - + =")
        elif not (c.isalnum() or (i and unicodedata.category(c).startswith("M"))):
            raise UnsafeMailbox(f"character {c!r} is not a letter, a digit or . _ - + =")
    if name != name.lower():
        raise UnsafeMailbox("not lower case")
    if name != unicodedata.normalize("NFC", name):
        raise UnsafeMailbox("not in Unicode normal form C")
    return name


def check_mailbox(name: str) -> str:
    """Check a stored mailbox name ``<domain>/<local>`` (e.g. from a queue record).

    Separate from :func:`mailbox_name` so a stored name can be checked again
    without being parsed as an address.

    Raises:
        UnsafeMailbox: no ``/``, or a domain or local part that fails its check.
    """
    domain, slash, local = name.partition("/")
    if not slash:
        raise UnsafeMailbox("not <domain>/<local>")
    check_domain(domain)
    check_local(local)
    return name


def mailbox_for(domain: str, local: str) -> str:
    """The mailbox of a normalised domain and local part, both checked.

    Raises:
        UnsafeMailbox: see :func:`check_domain`, :func:`check_local`.
    """
    return f"{check_domain(domain)}/{check_local(local)}"


def mailbox_name(address: str, default_domain: str) -> str:
    """The mailbox of a recipient address as it stands, with no directory in between.

    Args:
        address: as SMTP parsed it (``Bob@Example.org``, ``"j.doe"@x``, ``postmaster``).
        default_domain: the domain of an address without one (already normal).

    Raises:
        UnsafeMailbox: see :func:`normal_domain`, :func:`check_local`.
    """
    local, domain = split_address(address)
    domain = normal_domain(domain) if "@" in address else default_domain
    return mailbox_for(domain, normal_local(local))
