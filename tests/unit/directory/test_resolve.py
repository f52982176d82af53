"""Where a recipient's mail goes: one table of (address, answer) per directory."""

from __future__ import annotations

import pytest

from buzon.directory import (
    Directory,
    Incomplete,
    Lookup,
    Refusal,
    UsersFileError,
    accept_all,
    build,
    parse,
    parse_domains,
)

H = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA"
USERS = f"""alice@example.org:{H}::::::
bob@example.org:{H}::::::
carol@example.org:{H}::::::
a+b@example.org:{H}::::::
dora@sub.example.net:{H}::::::
josé@xn--bcher-kva.example:{H}::::::
sales@example.org:{{CRYPT}}!::::::nologin buzon_alias=alice@example.org,bob@example.org
team@example.org:{{CRYPT}}!::::::nologin buzon_alias=sales@example.org,carol@example.org,alice@example.org
tagged@example.org:{{CRYPT}}!::::::nologin buzon_alias=carol+lists@example.org
postmaster@example.org:{{CRYPT}}!::::::nologin buzon_alias=carol@example.org
@xn--bcher-kva.example:{{CRYPT}}!::::::nologin buzon_alias=josé@xn--bcher-kva.example
"""
DOMAINS = "example.org, *.example.net, Bücher.Example"


def _directory(**kwargs: object) -> Directory:
    args: dict[str, object] = dict(
        domains=parse_domains(DOMAINS), default_domain="example.org",
        postmaster="alice@example.org", source="users")
    args.update(kwargs)
    return build(parse(USERS, "users"), **args)  # type: ignore[arg-type]


def ok(*mailboxes: str) -> Lookup:
    return Lookup(mailboxes)


RELAY, UNKNOWN, UNSAFE = (Lookup(refusal=r) for r in (Refusal.RELAY, Refusal.UNKNOWN, Refusal.UNSAFE))

WITH_USERS = [
    ("alice@example.org", ok("example.org/alice")),
    ("Alice@EXAMPLE.ORG", ok("example.org/alice")),  # case folded, both sides
    ("alice@example.org.", ok("example.org/alice")),
    ('"alice"@example.org', ok("example.org/alice")),
    ("nobody@example.org", UNKNOWN),
    ("alice@example.com", RELAY),  # not accepted
    ("alice@[192.0.2.1]", RELAY),  # a domain literal is no accepted domain
    ("dora@sub.example.net", ok("sub.example.net/dora")),  # *.example.net
    ("x@deep.sub.example.net", UNKNOWN),  # accepted, nobody there
    ("dora@example.net", RELAY),  # the wildcard is subdomains only
    ("josé@Bücher.example", ok("xn--bcher-kva.example/josé")),  # IDN, SMTPUTF8
    ("JOSÉ@xn--bcher-kva.example", ok("xn--bcher-kva.example/josé")),
    ("anyone@bücher.example", ok("xn--bcher-kva.example/josé")),  # catch-all
    ("alice+news@example.org", ok("example.org/alice")),  # subaddress
    ("alice+news+more@example.org", ok("example.org/alice")),
    ("a+b@example.org", ok("example.org/a+b")),  # an exact name wins over the subaddress
    ("a+c@example.org", UNKNOWN),  # base "a" is nobody
    ("+x@example.org", UNKNOWN),  # nothing before the delimiter: no subaddress
    ("sales@example.org", ok("example.org/alice", "example.org/bob")),  # fan-out
    ("sales+q@example.org", ok("example.org/alice", "example.org/bob")),
    # alias of aliases, each mailbox once, in first-seen order
    ("team@example.org", ok("example.org/alice", "example.org/bob", "example.org/carol")),
    ("tagged@example.org", ok("example.org/carol")),  # a target's subaddress is dropped
    ("postmaster@example.org", ok("example.org/carol")),  # its own line wins
    ("POSTMASTER@example.org", ok("example.org/carol")),
    ("postmaster", ok("example.org/carol")),  # bare: the default domain (RFC 5321 §4.5.1)
    ("postmaster@sub.example.net", ok("example.org/alice")),  # BUZON_POSTMASTER
    ("postmaster@bücher.example", ok("example.org/alice")),  # before the catch-all
    ("carol", ok("example.org/carol")),  # a bare local part: the default domain
    ("-rf@example.org", UNSAFE),
    ('"a b"@example.org', UNSAFE),
    ("x@-bad-.example.org", RELAY),
]


@pytest.mark.parametrize(("address", "expected"), WITH_USERS)
def test_resolution_with_a_users_file(address: str, expected: Lookup) -> None:
    assert _directory().resolve(address) == expected


WITHOUT_USERS = [
    ("Bob@Example.org", ok("example.org/bob")),
    ("bob+tag@example.org", ok("example.org/bob")),
    ("anyone@sub.example.net", ok("sub.example.net/anyone")),
    ("bob@example.com", RELAY),
    ("postmaster@example.org", ok("example.org/boss")),
    ("postmaster", ok("example.org/boss")),
]


@pytest.mark.parametrize(("address", "expected"), WITHOUT_USERS)
def test_resolution_without_a_users_file(address: str, expected: Lookup) -> None:
    directory = build(None, domains=parse_domains(DOMAINS), default_domain="example.org",
                      postmaster="boss@example.org")
    assert directory.resolve(address) == expected


EVERYONE = [
    ("bob@Example.org", ok("example.org/bob")),
    ("bob@anything.test", ok("anything.test/bob")),  # no longer one folder for all domains
    ("bob", ok("mx.test/bob")),  # bare: the host name
    ("postmaster", ok("mx.test/postmaster")),
    ("bob@[192.0.2.1]", ok("mx.test/bob")),  # development: a literal is this host
    ("a+tag@example.org", ok("example.org/a")),
    ("x@a..b", UNSAFE),
]


@pytest.mark.parametrize(("address", "expected"), EVERYONE)
def test_resolution_with_nothing_configured_accepts_every_domain(
    address: str, expected: Lookup,
) -> None:
    assert accept_all("MX.test").resolve(address) == expected


def test_a_bare_postmaster_is_accepted_when_only_subdomains_are_listed() -> None:
    directory = build(None, domains=parse_domains("*.example.org"), default_domain="vm",
                      postmaster="root@a.example.org")
    assert directory.resolve("postmaster") == ok("a.example.org/root")
    assert directory.resolve("postmaster@vm") == RELAY


def test_no_delimiter_means_no_subaddress() -> None:
    with pytest.raises(UsersFileError, match="line 9: alias target carol[+]lists@"):
        _directory(delimiters="")  # that target only exists as a subaddress
    directory = build(parse(USERS.replace("carol+lists", "carol")), delimiters="",
                      domains=parse_domains(DOMAINS), default_domain="example.org",
                      postmaster="alice@example.org")
    assert directory.resolve("alice+news@example.org") == UNKNOWN
    assert build(None, domains=parse_domains(""), default_domain="h",
                 delimiters="").resolve("a+b@x.org") == ok("x.org/a+b")
    assert _directory(delimiters="-+").resolve("alice-x@example.org") == ok("example.org/alice")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", ((), ())), (" example.org , *.Example.NET,example.org", (("example.org",), (".example.net",))),
     ("Bücher.example", (("xn--bcher-kva.example",), ()))],
)
def test_domains_setting(text: str, expected: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
    domains = parse_domains(text)
    assert (domains.exact, domains.suffixes) == expected


@pytest.mark.parametrize("text", ["exa mple.org", "[192.0.2.1]", "*.", "a..b", "-x.org"])
def test_a_bad_domain_setting_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="is not a domain"):
        parse_domains(text)


@pytest.mark.parametrize(
    ("extra", "kwargs", "error", "message"),
    [
        ("x@other.org:{P}\n", {}, UsersFileError, "line 12: domain other.org is not in BUZON_DOMAINS"),
        ("l@example.org:{CRYPT}!::::::nologin buzon_alias=nobody@example.org\n", {},
         UsersFileError, "line 12: alias target nobody@example.org is neither"),
        ("l@example.org:{CRYPT}!::::::nologin buzon_alias=m@example.org\n"
         "m@example.org:{CRYPT}!::::::nologin buzon_alias=l@example.org\n", {},
         UsersFileError, "nest deeper than 8"),
        ("", {"postmaster": "nobody@example.org"}, Incomplete, "BUZON_POSTMASTER: nobody@"),
        ("", {"postmaster": None}, Incomplete, "no postmaster for xn--bcher-kva.example"),
        ("postmaster@xn--bcher-kva.example:{P}\n", {"postmaster": None}, Incomplete,
         r"BUZON_DOMAINS has \*.example.net.*set BUZON_POSTMASTER=you@example.org"),
    ],
)
def test_a_directory_that_breaks_a_rule_is_refused(
    extra: str, kwargs: dict[str, object], error: type[Exception], message: str,
) -> None:
    args: dict[str, object] = dict(domains=parse_domains(DOMAINS), default_domain="example.org",
                                   postmaster="alice@example.org", source="users")
    args.update(kwargs)
    with pytest.raises(error, match=message):
        build(parse(USERS + extra.replace("{P}", H), "users"), **args)  # type: ignore[arg-type]


def test_every_accepted_domain_needs_a_postmaster() -> None:
    entries = parse(USERS.replace("postmaster@example.org", "pm@example.org"), "users")
    with pytest.raises(Incomplete, match="no postmaster for example.org.*BUZON_POSTMASTER=you@"):
        build(entries, domains=parse_domains(DOMAINS), default_domain="example.org")
    with pytest.raises(Incomplete, match="BUZON_DOMAINS is unset"):
        build(entries, domains=parse_domains(""), default_domain="mx.test")
    with pytest.raises(Incomplete, match="holds no mailbox"):
        build(parse("# all gone\n"), domains=parse_domains("example.org"),
              default_domain="example.org", postmaster="a@example.org")
    assert (_directory().users, _directory().aliases) == (6, 5)
