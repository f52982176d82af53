"""The users file (Dovecot passwd-file): golden lines, and every malformed line by number."""

from __future__ import annotations

import pytest

from buzon.directory.users import (
    NO_PASSWORD,
    Entry,
    UsersFileError,
    alias_line,
    mailbox_line,
    parse,
)

HASH = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"
GOLDEN = f"""# Buzón users file
alice@example.org:{HASH}::::::

bob@example.org:{HASH}:1000:1000:Bob:/home/bob:/bin/false:userdb_quota_rule=*:storage=1G
sales@example.org:{{CRYPT}}!::::::nologin buzon_alias=alice@example.org,bob@example.org
  # an indented comment
@example.org:{{CRYPT}}!::::::nologin buzon_alias=alice@example.org
mañana@xn--bcher-kva.example:{HASH}
"""


def test_golden_file_parses_into_entries_with_their_line_numbers() -> None:
    entries = parse(GOLDEN, "users")
    assert [(e.line, e.local, e.domain, e.targets) for e in entries] == [
        (2, "alice", "example.org", ()),
        (4, "bob", "example.org", ()),
        (5, "sales", "example.org", ("alice@example.org", "bob@example.org")),
        (7, "", "example.org", ("alice@example.org",)),
        (8, "mañana", "xn--bcher-kva.example", ()),
    ]
    assert entries[0].password == HASH and entries[0].text == f"alice@example.org:{HASH}::::::"
    assert entries[2].address == "sales@example.org" and entries[2].is_alias
    assert entries[3].address == "@example.org"


def test_lines_written_by_the_helpers_parse_back() -> None:
    text = "\n".join([
        mailbox_line("alice@example.org", HASH),
        alias_line("sales@example.org", ["alice@example.org"]),
        alias_line("@example.org", ("alice@example.org",)),
    ]) + "\n"
    assert text.splitlines()[1] == (
        f"sales@example.org:{NO_PASSWORD}::::::nologin buzon_alias=alice@example.org")
    assert [e.address for e in parse(text)] == [
        "alice@example.org", "sales@example.org", "@example.org"]
    with pytest.raises(ValueError, match="':'"):
        mailbox_line("a@b.org", "{PLAIN}x:y")


def test_crlf_line_ends_are_read() -> None:
    assert [e.line for e in parse(f"alice@example.org:{HASH}\r\n\r\nb@x.org:{HASH}\r\n")] == [1, 3]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice@example.org", "expected user:password"),
        (f":{HASH}", "expected user:password"),
        (f"alice:{HASH}", "is not local@domain"),
        (f"alice@:{HASH}", "is not local@domain"),
        (f"Alice@example.org:{HASH}", "write the user as 'alice@example.org'"),
        (f"alice@Bücher.example:{HASH}", "'alice@xn--bcher-kva.example'"),
        (f"-rf@example.org:{HASH}", "leading hyphen"),
        (f"a b@example.org:{HASH}", "' '"),
        (f"a@[192.0.2.1]:{HASH}", "domain literal"),
        ("@example.org:{CRYPT}!::::::nologin", "catch-all @example.org needs buzon_alias"),
        (f"sales@example.org:{HASH}::::::buzon_alias=a@example.org", "must never log in"),
        ("sales@example.org:{CRYPT}!::::::buzon_alias=a@example.org", "must never log in"),
        ("sales@example.org:{CRYPT}!::::::nologin buzon_alias=", "has no targets"),
        ("sales@example.org:{CRYPT}!::::::nologin buzon_alias=a@x.org,@x.org", "no local part"),
        ("sales@example.org:{CRYPT}!::::::nologin buzon_alias=../etc@x.org", "leading dot"),
    ],
)
def test_a_malformed_line_is_refused_with_its_number(line: str, message: str) -> None:
    text = f"# header\nok@example.org:{HASH}\n{line}\n"
    with pytest.raises(UsersFileError, match=message) as caught:
        parse(text, "/etc/buzon/users")
    assert caught.value.line == 3
    assert str(caught.value).startswith("/etc/buzon/users, line 3: ")


def test_a_repeated_user_names_both_lines() -> None:
    with pytest.raises(UsersFileError, match=r"line 4: alice@example.org is already on line 2"):
        parse(f"#\nalice@example.org:{HASH}\n\nalice@example.org:{HASH}\n", "users")


def test_an_alias_lists_each_target_once_in_normal_form() -> None:
    (entry,) = parse("s@x.org:{CRYPT}!::::::nologin buzon_alias=A@X.org,a@x.org,b@X.ORG")
    assert entry == Entry(1, "s", "x.org", "{CRYPT}!", ("a@x.org", "b@x.org"), entry.text)
