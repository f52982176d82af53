"""The reply table and the translation of aiosmtpd's own replies."""

from __future__ import annotations

import ast
import inspect
import re

import aiosmtpd.smtp
import pytest

from buzon.smtp import replies
from buzon.smtp.handler import Handler
from buzon.smtp.replies import translate
from buzon.smtp.session import BuzonSMTP

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


# --- every literal reply aiosmtpd can send through BuzonSMTP -------------------------------
# The scan below reads aiosmtpd's SMTP class with ``ast`` and finds every reply
# it writes itself (a string, f-string or ``"..." + x`` starting with a code).
# Each one we can reach must leave with an enhanced code taken from the table in
# replies.py: the class-default fallback (``5.0.0`` and a warning) does not
# count, so emptying the table fails this test for every line it covers.

# Methods whose replies never reach a client, and why. Methods BuzonSMTP
# overrides are found by the scan itself (see _replaced).
_UNREACHABLE = {
    "handle_exception": "Handler.handle_exception answers instead (asserted below)",
    "smtp_AUTH": "out of the command table: an unknown command (test_session: test_auth_is_refused)",
    "challenge_auth": "an AUTH mechanism: needs TLS",
    "auth_PLAIN": "an AUTH mechanism: needs TLS",
    "auth_LOGIN": "an AUTH mechanism: needs TLS",
}
# Lines RFC 2034 §3 exempts from enhanced codes: the greeting and HELO/EHLO.
_EXEMPT = {
    ("_handle_client", "220 {} {}"),
    ("smtp_HELO", "250 {}"),
    ("smtp_EHLO", "250 HELP"),  # dropped by Handler.handle_EHLO anyway
}
# Reached only if Handler.handle_exception itself raises: RFC 3463's class
# default 5.0.0 (what translate gives an unknown line) is the right code there.
_CLASS_DEFAULT = {
    ("_handle_client", "500 Error: ({}) {}"),
    ("_handle_client", "500 Error: Cannot describe error"),
}
# Templates whose code is itself a placeholder, and the codes it takes.
_CODES = {"{} Supported commands: {}": ("250", "501")}

_REPLY = re.compile(r"^(\d{3}|\{\})[ -]")


# Methods overridden only to refuse some input first: aiosmtpd's replies stay reachable.
_DELEGATING = {"smtp_HELO", "smtp_EHLO", "smtp_STARTTLS"}  # STARTTLS: smtp/starttls.py


def _replaced() -> set[str]:
    """Names BuzonSMTP (or a class between it and SMTP) defines itself, not delegating."""
    mro = BuzonSMTP.__mro__
    names = {name for cls in mro[: mro.index(aiosmtpd.smtp.SMTP)] for name in vars(cls)}
    return names - _DELEGATING


def _templates(function: ast.AST) -> set[str]:
    """The reply literals in one method, with ``{}`` where a value goes."""
    found, inner = set(), set()
    for node in ast.walk(function):
        if isinstance(node, ast.JoinedStr):
            inner.update(id(v) for v in node.values)
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
              and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)):
            inner.add(id(node.left))
            text = node.left.value + "{}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inner:
            text = node.value
        else:
            continue
        if _REPLY.match(text):
            found.add(text)
    return found


def _aiosmtpd_replies() -> dict[tuple[str, str], list[str]]:
    """(method, template) -> the concrete lines to translate, for every literal found."""
    tree = ast.parse(inspect.getsource(aiosmtpd.smtp))
    smtp = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SMTP")
    out = {}
    for function in smtp.body:
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for template in _templates(function):
                line = template.replace("{}", "x")
                codes = _CODES.get(template)
                lines = [code + line[1:] for code in codes] if codes else [line]
                out[(function.name, template)] = lines
    return out


_FOUND = _aiosmtpd_replies()
_CHECKED = sorted(
    key for key in _FOUND
    if key[0] not in _UNREACHABLE and key[0] not in _replaced()
    and key not in _EXEMPT and key[1][3] != "-"  # continuation lines: EHLO's, exempt
)


def test_the_scan_finds_aiosmtpd_replies_and_the_exceptions_are_current() -> None:
    assert len(_CHECKED) >= 25, _CHECKED
    methods = {name for name, _ in _FOUND}
    assert set(_UNREACHABLE) <= methods, set(_UNREACHABLE) - methods
    assert _EXEMPT | _CLASS_DEFAULT <= set(_FOUND), (_EXEMPT | _CLASS_DEFAULT) - set(_FOUND)
    assert set(_CODES) <= {template for _, template in _FOUND}
    assert all(key[1].startswith(tuple("012345")) or key[1] in _CODES for key in _FOUND)
    assert "handle_exception" in vars(Handler)


@pytest.mark.parametrize("key", _CHECKED, ids=[f"{name}:{template}" for name, template in _CHECKED])
def test_every_aiosmtpd_reply_we_can_send_takes_its_enhanced_code_from_the_table(
    key: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Guards an aiosmtpd upgrade and the table: a new or unmatched literal fails here."""
    for line in _FOUND[key]:
        caplog.clear()
        out = translate(line)
        assert ENHANCED.match(out), (line, out)
        if key in _CLASS_DEFAULT:
            assert out.startswith(f"{line[:3]} {line[0]}.0.0 "), (line, out)
        else:
            assert "without an enhanced code" not in caplog.text, (line, out)


def test_table_constants_render_as_the_spec_lines() -> None:
    assert str(replies.MAIL_OK) == "250 2.1.0 Ok"
    assert str(replies.RCPT_OK) == "250 2.1.5 Ok"
    assert str(replies.DATA_GO) == "354 End data with <CR><LF>.<CR><LF>"
    assert replies.QUEUED.format("ABC") == "250 2.0.0 Ok: queued as ABC"
    assert str(replies.BYE) == "221 2.0.0 Bye"
