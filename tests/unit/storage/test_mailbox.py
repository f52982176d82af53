"""Mailbox names (the storage rule SMTP asks at RCPT): tables and properties, no files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buzon.storage.mailbox import UnsafeMailbox, check_mailbox, mailbox_name


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("Bob@Example.org", "bob"),
        ("theo", "theo"),
        ('"John.Doe"@x.org', "john.doe"),
        ("a+tag@x.org", "a+tag"),
        ("bounce+user=example.org@x.org", "bounce+user=example.org"),
        ("no_reply@x.org", "no_reply"),
        ("mailer-daemon@x.org", "mailer-daemon"),
        ('"plain"@x.org', "plain"),
        ("x" * 64 + "@x.org", "x" * 64),
    ],
)
def test_mailbox_names(address: str, name: str) -> None:
    assert mailbox_name(address) == name


@pytest.mark.parametrize(
    "address",
    ['"../x"@y', '"a/b"@y', '"a\\\\b"@y', ".hidden@y", '".."@y', '"."@y', '""@y',
     "a\x00b@y", "a\x1bb@y", "a\x7fb@y", "x" * 65 + "@y", "ma\u00f1ana@y",
     # refused on purpose since the alphabet became a-z 0-9 . _ - + =
     '"with space"@y', '"trailing "@y', "-rf@y", "--help@y", '"a@b"@y', "a:2,s@y",
     *(f'"a{c}b"@y' for c in "$`|;&<>()*?[]{}!'#~%^,"), '"a\\"b"@y'],
)
def test_unsafe_mailbox_names(address: str) -> None:
    with pytest.raises(UnsafeMailbox):
        mailbox_name(address)


@given(st.text(max_size=100))
def test_mailbox_name_is_safe_or_refused(local: str) -> None:
    try:
        name = mailbox_name(local + "@x.org")
    except UnsafeMailbox:
        return
    assert name and name[0] not in ".-" and len(name) <= 64
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-+=")


@given(st.text(max_size=80))
def test_a_derived_mailbox_name_passes_the_storage_check(local: str) -> None:
    """Regression: '"a@b"@x' gave "a@b", which the storage re-derived as "a" and
    refused, deferring an acknowledged message forever."""
    for address in (local + "@x.org", f'"{local}"@x.org'):
        try:
            name = mailbox_name(address)
        except UnsafeMailbox:
            continue
        assert check_mailbox(name) == name


def test_quoted_local_parts_are_unquoted_then_held_to_the_alphabet() -> None:
    assert mailbox_name('"Jane.Doe"@x.org') == "jane.doe"
    with pytest.raises(UnsafeMailbox, match="'@'"):
        mailbox_name('"a@b"@x.org')  # was the folder "a@b"
    with pytest.raises(UnsafeMailbox, match="' '"):
        mailbox_name('"say \\"hi\\""@x.org')  # was 'say "hi"'


@pytest.mark.parametrize(
    ("name", "why"),
    [("", "empty"), (".x", "leading dot"), ("-x", "leading hyphen"), ("Ab", "not lower case"),
     ("a b", "' '"), ("a$", "'\\$'"), ("x" * 65, "longer than 64")],
)
def test_check_mailbox_names_the_fault(name: str, why: str) -> None:
    with pytest.raises(UnsafeMailbox, match=why):
        check_mailbox(name)
