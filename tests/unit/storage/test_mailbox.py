"""Mailbox names ``<domain>/<local>`` (the storage rule): tables and properties, no files."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buzon.storage.mailbox import (
    UnsafeMailbox,
    check_domain,
    check_local,
    check_mailbox,
    mailbox_name,
    normal_domain,
)


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("Bob@Example.org", "example.org/bob"),
        ("theo", "mx.test/theo"),  # no domain: the default one
        ('"John.Doe"@x.org', "x.org/john.doe"),
        ("a+tag@x.org", "x.org/a+tag"),
        ("bounce+user=example.org@x.org", "x.org/bounce+user=example.org"),
        ("no_reply@x.org", "x.org/no_reply"),
        ("mailer-daemon@x.org", "x.org/mailer-daemon"),
        ('"plain"@x.org', "x.org/plain"),
        ("x" * 64 + "@x.org", "x.org/" + "x" * 64),
        ("a@X.Org.", "x.org/a"),  # a trailing dot is the same domain
        # SMTPUTF8: NFC, lower case, IDNA A-labels for the domain
        ("Mañana@Bücher.Example", "xn--bcher-kva.example/mañana"),
        ("man\u0303ana@x.org", "x.org/mañana"),  # decomposed ñ composed
        ("ÉLODIE@x.org", "x.org/élodie"),
        ("हिन्दी@x.org", "x.org/हिन्दी"),  # a combining vowel sign after the first letter
        ("用户@例子.测试", "xn--fsqu00a.xn--0zwm56d/用户"),
    ],
)
def test_mailbox_names(address: str, name: str) -> None:
    assert mailbox_name(address, "mx.test") == name


@pytest.mark.parametrize(
    "address",
    ['"../x"@y', '"a/b"@y', '"a\\\\b"@y', ".hidden@y", '".."@y', '"."@y', '""@y',
     "a\x00b@y", "a\x1bb@y", "a\x7fb@y", "x" * 65 + "@y", "é" * 33 + "@y",  # 66 octets
     '"with space"@y', '"trailing "@y', "-rf@y", "--help@y", '"a@b"@y', "a:2,s@y",
     *(f'"a{c}b"@y' for c in "$`|;&<>()*?[]{}!'#~%^,"), '"a\\"b"@y',
     "a\u202eb@y", "a\u200bb@y", "a\u2028b@y", "\u0303a@y",  # bidi, zero width, mark first
     "a@[192.0.2.1]", "a@-x.org", "a@x_y.org", "a@x..org", "a@"],
)
def test_unsafe_mailbox_names(address: str) -> None:
    with pytest.raises(UnsafeMailbox):
        mailbox_name(address, "mx.test")


@given(st.text(max_size=100))
def test_mailbox_name_is_safe_or_refused(local: str) -> None:
    try:
        name = mailbox_name(local + "@x.org", "mx.test")
    except UnsafeMailbox:
        return
    domain, _, part = name.partition("/")
    assert domain == "x.org"
    assert part and part[0] not in ".-" and len(part.encode()) <= 64
    assert "/" not in part and "\\" not in part and ":" not in part
    assert part == part.lower() == unicodedata.normalize("NFC", part)
    assert all(c.isalnum() or c in "._-+=" or unicodedata.category(c)[0] == "M" for c in part)


@given(st.text(max_size=80), st.sampled_from(["x.org", "Bücher.example", "A.B.C"]))
def test_a_derived_mailbox_name_passes_the_storage_check(local: str, domain: str) -> None:
    """Regression: '"a@b"@x' gave "a@b", which the storage re-derived as "a" and
    refused, deferring an acknowledged message forever."""
    for address in (f"{local}@{domain}", f'"{local}"@{domain}'):
        try:
            name = mailbox_name(address, "mx.test")
        except UnsafeMailbox:
            continue
        assert check_mailbox(name) == name


def test_quoted_local_parts_are_unquoted_then_held_to_the_alphabet() -> None:
    assert mailbox_name('"Jane.Doe"@x.org', "d") == "x.org/jane.doe"
    with pytest.raises(UnsafeMailbox, match="'@'"):
        mailbox_name('"a@b"@x.org', "d")  # was the folder "a@b"
    with pytest.raises(UnsafeMailbox, match="' '"):
        mailbox_name('"say \\"hi\\""@x.org', "d")  # was 'say "hi"'


@pytest.mark.parametrize(
    ("name", "why"),
    [("", "empty"), (".x", "leading dot"), ("-x", "leading hyphen"), ("Ab", "not lower case"),
     ("a b", "' '"), ("a$", "'\\$'"), ("x" * 65, "longer than 64"), ("Ñ", "not lower case"),
     ("man\u0303ana", "normal form C"), ("a\u202e", "not a letter")],
)
def test_check_local_names_the_fault(name: str, why: str) -> None:
    with pytest.raises(UnsafeMailbox, match=why):
        check_local(name)


@pytest.mark.parametrize(
    ("name", "why"),
    [("example.org", "not <domain>/<local>"), ("Example.org/a", "not lower-case"),
     ("example.org/A", "not lower case"), ("/a", "empty domain"), ("x.org/", "empty local"),
     ("x.org/a/b", "'/'"), ("../a", "not lower-case labels"), ("x.org/..", "leading dot")],
)
def test_check_mailbox_names_the_fault(name: str, why: str) -> None:
    with pytest.raises(UnsafeMailbox, match=why):
        check_mailbox(name)


def test_domains_are_idna_a_labels_with_the_built_in_codec() -> None:
    assert normal_domain("Bücher.Example.") == "xn--bcher-kva.example"
    assert normal_domain("xn--bcher-kva.example") == "xn--bcher-kva.example"
    # IDNA 2003 (Python's codec) maps ß to ss: one folder for both spellings.
    assert normal_domain("straße.de") == normal_domain("strasse.de") == "strasse.de"
    assert check_domain("a" * 63 + ".org")
    with pytest.raises(UnsafeMailbox, match="longer than 253"):
        check_domain(".".join(["a" * 63] * 4) + ".org")
    with pytest.raises(UnsafeMailbox):
        normal_domain("a" * 64 + ".org")
