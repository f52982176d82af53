"""Who a recipient is: accepted domains, mailboxes, aliases, catch-alls, postmaster.

Theory of operation
-------------------
Pure: a :class:`Directory` is built once from the settings and the parsed
users file (:func:`build`), checked whole, then only read. ``RCPT`` asks
:meth:`Directory.resolve`, which answers a :class:`Lookup`: the mailboxes
(``<domain>/<local>``, :mod:`buzon.storage.mailbox`) the message goes to, or
why not. The order of the rules, first match wins:

1. the domain: the recipient's, in IDNA A-labels; none (``RCPT TO:<postmaster>``,
   RFC 5321 §4.5.1) means the default domain (the first accepted domain, else
   the host name), which is this server's own and so always accepted. Not
   accepted → :attr:`Refusal.RELAY` (``550 5.7.1``).
   ``example.org`` accepts that domain, ``*.example.org`` every subdomain of it
   (not example.org itself, as Postfix's ``.example.org``); no domains configured
   accepts every domain (development only). A domain literal (``[192.0.2.1]``)
   is accepted only then, as the default domain.
2. the local part, lower-cased and NFC; a name the storage rule refuses →
   :attr:`Refusal.UNSAFE` (``550 5.1.1``).
3. ``postmaster``: its own line in the users file, else ``BUZON_POSTMASTER``.
   Every accepted domain has one (checked by :func:`build`).
4. the exact address: a mailbox line, or an alias line (its targets,
   followed through other aliases at build time).
5. the address without its subaddress: ``alice+tag`` → ``alice`` (the local part
   up to the first of the ``recipient_delimiter`` characters, as Postfix does;
   not when that leaves nothing).
6. the domain's catch-all (``@example.org``).
7. otherwise → :attr:`Refusal.UNKNOWN` (``550 5.1.1``).

Without a users file every local part of an accepted domain is a mailbox
(rules 4-6 become "the mailbox of the address, subaddress dropped").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from buzon.directory.users import Entry, UsersFileError
from buzon.storage.mailbox import (
    UnsafeMailbox,
    check_local,
    mailbox_for,
    normal_domain,
    normal_local,
    split_address,
)

__all__ = [
    "Directory", "Domains", "Incomplete", "Lookup", "Refusal", "accept_all", "build",
    "host_domain", "parse_domains",
]

_MAX_DEPTH = 8  # aliases of aliases, as deep as anyone writes them


class Incomplete(UsersFileError):
    """A users file that is well formed but lacks what every server needs (a postmaster,
    any mailbox): the server refuses it; ``buzon-admin`` writes it with a warning, since
    the next edit may be the one that completes it."""


class Refusal(enum.Enum):
    """Why a recipient is refused; the SMTP side picks the reply."""

    RELAY = "domain not accepted"
    UNKNOWN = "user unknown"
    UNSAFE = "unsafe mailbox name"


@dataclass(frozen=True, slots=True)
class Lookup:
    """The answer for one recipient: mailboxes, or a refusal."""

    mailboxes: tuple[str, ...] = ()
    refusal: Refusal | None = None


@dataclass(frozen=True, slots=True)
class Domains:
    """The accepted domains: exact names and ``*.`` suffixes; none at all accepts every one."""

    exact: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    """Each with its leading dot (``.example.org``)."""

    @property
    def every(self) -> bool:
        return not (self.exact or self.suffixes)

    def accepts(self, domain: str) -> bool:
        return self.every or domain in self.exact or domain.endswith(self.suffixes)


def parse_domains(text: str) -> Domains:
    """``BUZON_DOMAINS``: comma-separated ``example.org`` or ``*.example.org``.

    Raises:
        ValueError: an entry that is not a domain name, naming it.
    """
    exact: list[str] = []
    suffixes: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        wild = item.startswith("*.")
        try:
            name = normal_domain(item[2:] if wild else item)
        except UnsafeMailbox as error:
            raise ValueError(f"{item!r} is not a domain (or *.domain): {error}") from None
        bucket, value = (suffixes, "." + name) if wild else (exact, name)
        if value not in bucket:
            bucket.append(value)
    return Domains(tuple(exact), tuple(suffixes))


@dataclass(frozen=True)
class Directory:
    """Every recipient rule, built and checked by :func:`build`; read-only after."""

    domains: Domains
    default_domain: str
    delimiters: str = "+"
    table: dict[str, tuple[str, ...]] | None = None
    """Normal address (``@domain`` for a catch-all) → mailboxes; None: no users file."""
    postmaster: tuple[str, ...] = ()
    """Mailboxes of ``BUZON_POSTMASTER``, () when unset."""
    users: int = 0
    aliases: int = 0

    def _base(self, local: str) -> str | None:
        """The local part without its subaddress, None if it has none."""
        cut = min((i for i in map(local.find, self.delimiters) if i > 0), default=-1)
        return local[:cut] if cut > 0 else None

    def resolve(self, address: str) -> Lookup:
        """Where mail for ``address`` (as SMTP parsed it) goes, or why it is refused."""
        raw_local, raw_domain = split_address(address)
        if not raw_domain:
            domain = self.default_domain  # ours by definition, even if only *. domains are listed
        elif raw_domain.startswith("["):
            if not self.domains.every:
                return Lookup(refusal=Refusal.RELAY)
            domain = self.default_domain
        else:
            try:
                domain = normal_domain(raw_domain)
            except UnsafeMailbox:
                return Lookup(refusal=Refusal.UNSAFE if self.domains.every else Refusal.RELAY)
        if raw_domain and not self.domains.accepts(domain):
            return Lookup(refusal=Refusal.RELAY)
        try:
            local = check_local(normal_local(raw_local))
        except UnsafeMailbox:
            return Lookup(refusal=Refusal.UNSAFE)
        table = self.table
        if local == "postmaster":
            found = table.get(f"postmaster@{domain}") if table is not None else None
            if found or self.postmaster:
                return Lookup(found or self.postmaster)
        if table is None:
            return Lookup((mailbox_for(domain, self._base(local) or local),))
        found = table.get(f"{local}@{domain}")
        if found is None:
            base = self._base(local)
            if base is not None:
                found = table.get(f"{base}@{domain}")
            if found is None:
                found = table.get(f"@{domain}")
                if found is None:
                    return Lookup(refusal=Refusal.UNKNOWN)
        return Lookup(found)


def _expand(
    address: str, entries: dict[str, Entry], boxes: dict[str, tuple[str, ...]],
    delimiters: str, source: str, depth: int = 0,
) -> tuple[str, ...]:
    """Mailboxes of an address in the file (exact, then subaddress dropped): () if none."""
    if address in boxes:
        return boxes[address]
    entry = entries.get(address)
    if entry is None:
        local, _, domain = address.partition("@")
        cut = min((i for i in map(local.find, delimiters) if i > 0), default=-1)
        return _expand(f"{local[:cut]}@{domain}", entries, boxes, delimiters, source, depth) \
            if cut > 0 else ()
    if not entry.is_alias:
        return (mailbox_for(entry.domain, entry.local),)
    if depth >= _MAX_DEPTH:
        raise UsersFileError(source, entry.line, f"aliases nest deeper than {_MAX_DEPTH} (a loop?)")
    result: list[str] = []
    for target in entry.targets:
        found = _expand(target, entries, boxes, delimiters, source, depth + 1)
        if not found:
            raise UsersFileError(
                source, entry.line, f"alias target {target} is neither a mailbox nor an alias"
            )
        result.extend(m for m in found if m not in result)
    boxes[address] = tuple(result)
    return boxes[address]


def build(
    entries: Iterable[Entry] | None,
    *,
    domains: Domains,
    default_domain: str,
    delimiters: str = "+",
    postmaster: str | None = None,
    source: str = "users file",
) -> Directory:
    """Check the entries against the settings and build the directory.

    Args:
        entries: the parsed users file, or None when there is none (every local
            part of an accepted domain is then a mailbox).
        domains: from :func:`parse_domains`.
        default_domain: normal domain of an address without one.
        delimiters: subaddress delimiter characters ("" for none).
        postmaster: ``BUZON_POSTMASTER``, or None.
        source: the file's name in messages.

    Raises:
        UsersFileError: a line whose domain is not accepted, an alias whose target
            is nowhere, a loop, an accepted domain without a postmaster, or
            ``BUZON_POSTMASTER`` not in the file (message names line or setting).
    """
    delimiters = delimiters or ""
    pm_boxes: tuple[str, ...] = ()
    if entries is None:
        if postmaster:
            pm = Directory(domains, default_domain, delimiters).resolve(postmaster)
            if pm.refusal is not None:
                raise UsersFileError("BUZON_POSTMASTER", None, f"{postmaster}: {pm.refusal.value}")
            pm_boxes = pm.mailboxes
        return Directory(domains, default_domain, delimiters, None, pm_boxes)
    by_address = {e.address: e for e in entries}
    for entry in by_address.values():
        if not domains.accepts(entry.domain):
            raise UsersFileError(source, entry.line, f"domain {entry.domain} is not in BUZON_DOMAINS")
    boxes: dict[str, tuple[str, ...]] = {}
    table = {a: _expand(a, by_address, boxes, delimiters, source) for a in by_address}
    users = sum(1 for e in by_address.values() if not e.is_alias)
    if not users:
        raise Incomplete(source, None, "holds no mailbox (an empty or cut-short file?)")
    if postmaster:
        try:
            local, domain = split_address(postmaster)
            key = f"{check_local(normal_local(local))}@{normal_domain(domain)}"
        except UnsafeMailbox as error:
            raise UsersFileError("BUZON_POSTMASTER", None, f"{postmaster}: {error}") from None
        pm_boxes = _expand(key, by_address, boxes, delimiters, source)
        if not pm_boxes:
            raise Incomplete(
                "BUZON_POSTMASTER", None, f"{postmaster} is neither a mailbox nor an alias in {source}"
            )
    else:
        first = domains.exact[0] if domains.exact else default_domain
        missing = [d for d in domains.exact if f"postmaster@{d}" not in table]
        if missing:
            raise Incomplete(
                source, None,
                f"no postmaster for {missing[0]} (RFC 5321 §4.5.1 requires one for every "
                f"accepted domain): add an alias (buzon-admin alias add "
                f"postmaster@{missing[0]} you@{first}) or set BUZON_POSTMASTER=you@{first}",
            )
        if domains.every or domains.suffixes:
            which = "BUZON_DOMAINS is unset (every domain)" if domains.every else \
                "BUZON_DOMAINS has " + ", ".join("*" + x for x in domains.suffixes)
            raise Incomplete(
                source, None,
                f"{which}, and so postmaster@ of domains no line can name (RFC 5321 §4.5.1): "
                f"set BUZON_POSTMASTER=you@{first}",
            )
    return Directory(
        domains, default_domain, delimiters, table, pm_boxes,
        users=users, aliases=len(by_address) - users,
    )


def host_domain(hostname: str) -> str:
    """The server's host name as a mailbox domain ("localhost" if it is not a domain name)."""
    try:
        return normal_domain(hostname)
    except UnsafeMailbox:
        return "localhost"


def accept_all(hostname: str) -> Directory:
    """Every address of every domain is a mailbox: no BUZON_DOMAINS, no users file."""
    return Directory(Domains(), host_domain(hostname))
