"""The ``Received:`` trace field of RFC 5321 §4.4, built from what the session knows.

Theory of operation
-------------------
Pure functions: the session's facts in, the header's bytes out; no socket, clock
or setting is read here (the time and the TLS facts are passed in). The handler
prepends the field to the message at ``DATA``, before the message is queued, so
every transform (SpamAssassin first) sees the client's address in the form
filters parse (``UNPARSEABLE_RELAY`` and ``NO_RELAYS`` came from the old
``(127.0.0.1:54054)`` form, written after the transforms)::

    Received: from <helo> (<name or unknown> [<address literal>])
    \tby <host> (Buzon) with <protocol> id <queue id>
    \t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256)      with TLS only
    \tfor <recipient>; <date>                                          one recipient
    \t<date>                                                           else: ";" ends
                                                                     the line before

* ``from``: the HELO name with anything but printable ASCII (and the comment
  delimiters ``( ) \\``) dropped; without HELO, the client's name, as Postfix
  writes it. The comment holds the forward-confirmed DNS name (or ``unknown``)
  and the address as an RFC 5321 §4.1.3 literal: ``[192.0.2.1]``,
  ``[IPv6:2001:db8::1]`` (an IPv4-mapped IPv6 address is written as IPv4).
* TLS: a comment with the version, cipher and secret bits, in the form and
  place Sendmail, Gmail and Proofpoint write it (after ``id``, before ``for``),
  which trace parsers such as SpamAssassin's know. (Postfix writes
  ``(using TLSv1.3 with cipher ... (256/256 bits))`` after ``from``.)
* ``with``: RFC 3848 and RFC 6531 §4.3 types: ``SMTP`` after HELO, ``ESMTP``
  after EHLO, ``S`` appended under TLS, ``UTF8SMTP``/``UTF8SMTPS`` when MAIL
  carried ``SMTPUTF8`` (RFC 6531 §3.7.3).
* ``for``: only with exactly one recipient, as Postfix does: naming one of
  several would tell each recipient who else got the message.
* the date: RFC 5322 §3.3 in UTC, with fixed English names (``strftime``'s
  ``%a``/``%b`` follow the locale).
"""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TlsFacts",
    "address_literal",
    "clean_name",
    "peer_ip",
    "protocol",
    "received_header",
    "rfc5322_date",
    "tls_facts",
]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Printable ASCII without space and the comment delimiters of RFC 5322 §3.2.2.
_NAME_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - set("()\\")
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What ``Received:`` says about the TLS session."""

    version: str
    """e.g. ``TLSv1.3`` (``SSLObject.version()``)."""
    cipher: str
    """e.g. ``TLS_AES_256_GCM_SHA384`` (``SSLObject.cipher()[0]``)."""
    bits: int
    """Secret bits of the cipher (``SSLObject.cipher()[2]``)."""


def tls_facts(ssl_object: Any) -> TlsFacts | None:
    """The facts of an ``ssl.SSLObject``/``SSLSocket``, or None without TLS.

    Reads only ``version()`` and ``cipher()``, so any object with those works.
    """
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    if not cipher or not version:  # handshake not finished
        return None
    return TlsFacts(clean_name(str(version)), clean_name(str(cipher[0])), int(cipher[2] or 0))


def clean_name(text: str | None) -> str:
    """``text`` with every character but visible ASCII (and ``( ) \\``) dropped, ≤255."""
    if not text:
        return ""
    if text.isascii() and text.isprintable() and " " not in text and _clean(text):
        return text[:_MAX_NAME]
    return "".join(c for c in text if c in _NAME_CHARS)[:_MAX_NAME]


def _clean(text: str) -> bool:
    return "(" not in text and ")" not in text and "\\" not in text


def peer_ip(peername: Any) -> str | None:
    """The address of a socket peer name without port, scope or brackets; None if none.

    The kernel writes peer names in canonical form, so checking one with
    ``inet_pton`` suffices (``ipaddress`` would cost 2 µs a message).
    """
    if not (isinstance(peername, tuple) and peername and isinstance(peername[0], str)):
        return None
    host = peername[0].partition("%")[0]
    try:
        if ":" not in host:
            socket.inet_pton(socket.AF_INET, host)
            return host
        socket.inet_pton(socket.AF_INET6, host)
    except (OSError, ValueError):  # ValueError: a NUL in the string
        return None
    if host[:7].lower() == "::ffff:" and "." in host:  # IPv4-mapped: write it as IPv4
        return host[7:]
    return host


def address_literal(ip: str | None) -> str:
    """RFC 5321 §4.1.3: ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``; ``unknown`` without one."""
    if not ip:
        return "unknown"
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def protocol(*, esmtp: bool, tls: bool, utf8: bool) -> str:
    """The ``with`` keyword (RFC 3848, RFC 6531 §4.3); SMTPUTF8 implies EHLO."""
    if utf8:
        return "UTF8SMTPS" if tls else "UTF8SMTP"
    if not esmtp:
        return "SMTP"
    return "ESMTPS" if tls else "ESMTP"


def rfc5322_date(when: float) -> str:
    """``Sun, 29 Nov 2026 14:49:33 +0000``: RFC 5322 §3.3, UTC, locale-free."""
    return _date(int(when))


@functools.lru_cache(maxsize=8)  # every message of one second shares its date
def _date(when: int) -> str:
    t = time.gmtime(when)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


def received_header(
    *,
    helo: str | None,
    client_name: str,
    ip: str | None,
    host: str,
    queue_id: str,
    esmtp: bool,
    tls: TlsFacts | None,
    utf8: bool,
    recipients: Sequence[str],
    when: float,
) -> bytes:
    """The ``Received:`` field (folded, CRLF-ended) for one message.

    Args:
        helo: the HELO/EHLO name as sent, or None.
        client_name: the forward-confirmed DNS name, or "unknown".
        ip: the client's address (:func:`peer_ip`), or None.
        host: our own name (``BUZON_HOSTNAME``).
        queue_id: the message's queue id.
        esmtp: whether the client said EHLO.
        tls: the TLS facts (:func:`tls_facts`), or None in clear text.
        utf8: whether MAIL carried ``SMTPUTF8``.
        recipients: the envelope recipients; named only if there is one.
        when: seconds since the epoch (the time of the ``250``).

    Returns:
        The field as UTF-8 (non-ASCII only in a SMTPUTF8 recipient, RFC 6531 §3.7.3).
    """
    name = clean_name(client_name) or "unknown"
    sender_name = clean_name(helo) or name
    lines = [
        f"Received: from {sender_name} ({name} {address_literal(ip)})",
        (f"\tby {clean_name(host) or 'localhost'} (Buzon) with "
         f"{protocol(esmtp=esmtp, tls=tls is not None, utf8=utf8)} id {queue_id}"),
    ]
    if tls is not None:
        lines.append(f"\t(version={tls.version} cipher={tls.cipher} bits={tls.bits})")
    date = rfc5322_date(when)
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
