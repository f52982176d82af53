"""Every SMTP reply line Buzón sends, in one table (SPEC §2, RFC 5321, RFC 3463).

Theory of operation
-------------------
Code and tests share these constants, so a reply's wording lives in one place.
aiosmtpd writes its own replies inline, without enhanced status codes; rather
than re-implementing each of its commands, :func:`translate` maps every literal
reply aiosmtpd can produce onto a :class:`Reply` here, at the single boundary
where lines leave the server (``BuzonSMTP.push``). Since we advertise
``ENHANCEDSTATUSCODES``, RFC 2034 §3 requires an enhanced code on every reply
except the greeting and the HELO/EHLO reply; 354 is an intermediate reply that
MTAs (Postfix included) send bare, and so do we.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

__all__ = ["Reply", "translate"] + [
    # the constants below
    "MAIL_OK", "RCPT_OK", "DATA_GO", "QUEUED", "OK", "BYE", "BAD_SYNTAX", "BAD_RECIPIENT",
    "BAD_SENDER", "UNKNOWN_COMMAND", "NEED_RCPT", "NEED_MAIL", "NESTED_MAIL", "TOO_BIG",
    "LINE_TOO_LONG", "TOO_MANY_RECIPIENTS", "TIMEOUT", "DATA_TIMEOUT", "TOO_MANY_CONNECTIONS",
    "UNSAFE_MAILBOX", "MAIL_SYNTAX", "RCPT_SYNTAX", "PARAM_UNKNOWN", "PARAM_SYNTAX",
    "BODY_SYNTAX", "STORAGE_FULL", "QUEUE_FULL", "QUEUE_ERROR", "SHUTTING_DOWN",
    "LOCAL_ERROR", "DATA_SYNTAX", "BAD_HELO", "HELP", "HELP_SYNTAX", "HELP_UNKNOWN",
    "TOO_MANY_FROM_CLIENT", "TOO_MANY_MESSAGES", "SESSION_TOO_LONG", "NO_MEMORY",
    "TLS_ACTIVE", "NEED_SMTPUTF8", "HELO_NOT_ASCII", "RELAY_DENIED", "USER_UNKNOWN",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply line."""

    code: int
    """Three-digit basic reply code (RFC 5321 §4.2)."""
    enhanced: str
    """Enhanced status code (RFC 3463), or "" for the greeting, HELO/EHLO and 354."""
    text: str
    """Human-readable text; may hold ``{}`` fields filled by :meth:`format`."""

    def __str__(self) -> str:
        if self.enhanced:
            return f"{self.code} {self.enhanced} {self.text}"
        return f"{self.code} {self.text}"

    def format(self, *args: object) -> str:
        """The reply line with the text's ``{}`` fields filled in."""
        return str(Reply(self.code, self.enhanced, self.text.format(*args)))


# --- successes (SPEC §2 wording) -------------------------------------------------------
MAIL_OK = Reply(250, "2.1.0", "Ok")
RCPT_OK = Reply(250, "2.1.5", "Ok")
DATA_GO = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
QUEUED = Reply(250, "2.0.0", "Ok: queued as {}")
OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")

# --- the seed's errors, all kept ------------------------------------------------------
BAD_SYNTAX = Reply(500, "5.5.2", "Error: bad syntax")
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
UNKNOWN_COMMAND = Reply(502, "5.5.2", "Error: command not recognized")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")

# --- limits and safety ---------------------------------------------------------------
TOO_BIG = Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size")
LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")
TIMEOUT = Reply(421, "4.4.2", "{} Error: timeout exceeded")
DATA_TIMEOUT = Reply(421, "4.4.2", "{} Error: data transfer took too long")
TOO_MANY_CONNECTIONS = Reply(421, "4.3.2", "{} Error: too many connections, try again later")
# The address is not echoed: it may hold control characters.
UNSAFE_MAILBOX = Reply(550, "5.1.1", "Recipient address rejected: unsafe mailbox name")
SHUTTING_DOWN = Reply(421, "4.3.2", "{} Service shutting down, try again later")
# The recipient directory (issue 12), in Postfix's words; {} is the address, printable only.
RELAY_DENIED = Reply(550, "5.7.1", "<{}>: Relay access denied")
USER_UNKNOWN = Reply(550, "5.1.1", "<{}>: Recipient address rejected: User unknown")
# Fair shares (issue 11): one client may not hold every slot, every message or all memory.
TOO_MANY_FROM_CLIENT = Reply(
    421, "4.7.0", "{} Error: too many connections from your address, try again later"
)
TOO_MANY_MESSAGES = Reply(
    421, "4.7.0", "{} Error: too many messages in one session, reconnect to send more"
)
SESSION_TOO_LONG = Reply(421, "4.7.0", "{} Error: session lasted too long, reconnect to go on")
NO_MEMORY = Reply(452, "4.3.1", "Error: insufficient system resources, try again later")

# --- argument syntax (RFC 5321 §4.1.1.2-3, RFC 1869) ------------------------------------
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
DATA_SYNTAX = Reply(501, "5.5.4", "Syntax: DATA")
PARAM_UNKNOWN = Reply(555, "5.5.4", "Unsupported option: {}")
PARAM_SYNTAX = Reply(501, "5.5.4", "Bad parameter syntax: {}")
BODY_SYNTAX = Reply(501, "5.5.4", "Error: BODY can only be one of 7BIT, 8BITMIME")
# The name is not echoed: it holds control characters.
BAD_HELO = Reply(501, "5.5.2", "Error: control characters in the HELO/EHLO name")
# RFC 6531 §3.7.1: EHLO names are ASCII (IDNs as A-labels), SMTPUTF8 or not.
HELO_NOT_ASCII = Reply(501, "5.5.2", "Error: HELO/EHLO name must be ASCII (IDN as A-labels)")
# RFC 6531 §3.4-3.5: a UTF-8 address in a transaction whose MAIL lacked SMTPUTF8
# (Postfix's wording).
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")

# --- HELP (RFC 5321 §4.1.1.8: 214 on success, 504 for an unknown topic) ----------------
HELP = Reply(214, "2.0.0", "Supported commands: {}")
HELP_SYNTAX = Reply(214, "2.0.0", "Syntax: {}")
HELP_UNKNOWN = Reply(504, "5.5.4", "Unknown HELP topic; supported commands: {}")

# --- our side failing: always temporary, the client keeps the message ----------------
STORAGE_FULL = Reply(452, "4.3.1", "Error: insufficient system storage")
#: The queue is at BUZON_QUEUE_LIMIT: delivery is behind, the client retries later.
QUEUE_FULL = Reply(452, "4.3.1", "Error: queue full, try again later")
QUEUE_ERROR = Reply(451, "4.3.0", "Error: queue file write error")
LOCAL_ERROR = Reply(451, "4.3.0", "Error: local error in processing")
TLS_ACTIVE = Reply(503, "5.5.1", "Error: TLS already active")  # STARTTLS twice (RFC 3207)


# aiosmtpd's own literal replies (1.4.x), matched by prefix, in the order tried.
_AIOSMTPD: tuple[tuple[str, Reply], ...] = (
    ("500 Error: bad syntax", BAD_SYNTAX),
    ("500 Error: command ", UNKNOWN_COMMAND),
    ("500 Command line too long", LINE_TOO_LONG),
    ("500 Line too long", LINE_TOO_LONG),
    ("500 Error: strict ASCII mode", Reply(500, "5.6.7", "Error: 8-bit data in a command line")),
    ("501 Syntax: HELO", Reply(501, "5.5.4", "Syntax: HELO hostname")),
    ("501 Syntax: EHLO", Reply(501, "5.5.4", "Syntax: EHLO hostname")),
    ("501 Syntax: QUIT", Reply(501, "5.5.4", "Syntax: QUIT")),
    ("501 Syntax: RSET", Reply(501, "5.5.4", "Syntax: RSET")),
    ("501 Syntax: DATA", DATA_SYNTAX),
    ("501 Syntax: STARTTLS", Reply(501, "5.5.4", "Syntax: STARTTLS")),
    ("501 Syntax: VRFY", Reply(501, "5.5.4", "Syntax: VRFY <address>")),
    ("502 Could not VRFY", Reply(502, "5.5.2", "Could not VRFY that address")),
    ("252 Cannot VRFY", Reply(252, "2.5.0", "Cannot VRFY user, but will accept message")),
    ("502 EXPN not implemented", Reply(502, "5.5.1", "EXPN not implemented")),
    ("250 Syntax: ", Reply(250, "2.0.0", "Syntax: {}")),
    ("250 Supported commands: ", Reply(250, "2.0.0", "Supported commands: {}")),
    ("501 Supported commands: ", Reply(501, "5.5.4", "Supported commands: {}")),
    ("454 TLS not available", Reply(454, "4.7.0", "TLS not available")),
    ("220 Ready to start TLS", Reply(220, "2.0.0", "Ready to start TLS")),
    ("530 Must issue a STARTTLS", Reply(530, "5.7.0", "Must issue a STARTTLS command first")),
    ("554 Command refused", Reply(554, "5.7.0", "Command refused due to lack of security")),
    ("503 Error: need RCPT", NEED_RCPT),
    ("503 Error: need MAIL", NEED_MAIL),
    ("503 Error: nested MAIL", NESTED_MAIL),
    ("552 Error: Too much mail data", TOO_BIG),
    ("552 Error: message size exceeds", TOO_BIG),
    ("221 Bye", BYE),
    ("250 OK", OK),
)

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


def translate(line: str) -> str:
    """Give a reply line aiosmtpd produced the enhanced code and wording of this table.

    Lines that already carry an enhanced code, continuation lines of a multi-line
    reply (EHLO), and 2xx/3xx lines not in the table (greeting, HELO, 354) pass
    through unchanged. An unknown 4xx/5xx line gets the class default (``4.0.0``,
    ``5.0.0``, RFC 3463 §3.1) and a warning, so a new aiosmtpd release cannot make
    us send a reply without one.

    Args:
        line: one reply line without CRLF.

    Returns:
        The line to send.
    """
    if len(line) < 4 or line[3] == "-" or _HAS_ENHANCED.match(line):
        return line
    for prefix, reply in _AIOSMTPD:
        if line.startswith(prefix):
            if "{}" in reply.text:
                return reply.format(line[len(prefix):])
            return str(reply)
    if line[0] in "45":
        log.warning("reply without an enhanced code from aiosmtpd: %r", line)
        return f"{line[:3]} {line[0]}.0.0 {line[4:]}"
    return line
