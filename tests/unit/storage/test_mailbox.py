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
        ('"with space"@x.org', "with space"),
        ("a+tag@x.org", "a+tag"),
        ("x" * 64 + "@x.org", "x" * 64),
    ],
)
def test_mailbox_names(address: str, name: str) -> None:
    assert mailbox_name(address) == name


@pytest.mark.parametrize(
    "address",
    ['"../x"@y', '"a/b"@y', '"a\\\\b"@y', ".hidden@y", '".."@y', '"."@y', '""@y',
     "a\x00b@y", "a\x1bb@y", "a\x7fb@y", "x" * 65 + "@y", "ma\u00f1ana@y"],
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
    assert name and not name.startswith(".") and "/" not in name and "\\" not in name
    assert all(0x20 <= ord(c) < 0x7F for c in name) and len(name) <= 64


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


def test_quoted_local_parts_with_at_and_quote_keep_their_folder() -> None:
    assert mailbox_name('"a@b"@x.org') == "a@b"
    assert mailbox_name('"say \\"hi\\""@x.org') == 'say "hi"'
