"""The users file: Dovecot's passwd-file format, read and written. Text in, entries out.

Theory of operation
-------------------
One file serves two programs: Buzón reads who may receive mail, and Dovecot
(``passdb``/``userdb`` driver ``passwd-file``) authenticates IMAP logins from
the same lines. Dovecot's format is ``/etc/passwd``'s with extra fields::

    user:password:uid:gid:gecos:home:shell:extra_fields

``extra_fields`` is a space-separated list of ``key=value`` (or bare ``key``)
items; empty lines and lines starting with ``#`` are ignored (Dovecot's
passwd-file documentation says both). Buzón uses three kinds of line:

``alice@example.org:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$...::::::``
    a mailbox: mail for the address goes to ``example.org/alice``; the password
    is for Dovecot (any scheme it knows; ``buzon-admin`` writes ``{ARGON2ID}``).
``sales@example.org:{CRYPT}!::::::nologin buzon_alias=alice@example.org,bob@example.org``
    an alias: mail goes to each target (mailboxes or other aliases). It can
    never log in: ``{CRYPT}!`` matches no password and Dovecot's ``nologin``
    extra field refuses the login even if one did.
``@example.org:{CRYPT}!::::::nologin buzon_alias=alice@example.org``
    the catch-all of a domain: any address there with no line of its own.

The user field must be written in its normal form (local part lower-case and
NFC, domain in lower-case IDNA A-labels), so Buzón and Dovecot look up one
spelling of each name; a line that is not is refused with the form to write.
Dovecot ignores ``buzon_alias`` (an extra field it does not know is passed
on, never acted upon). uid, gid, gecos, home and shell are left empty by
``buzon-admin`` and ignored by Buzón.

Nothing here touches a file: :func:`parse` takes the text and a name for
messages; :mod:`buzon.directory.resolve` gives the entries their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from buzon.storage.mailbox import UnsafeMailbox, check_local, normal_domain, normal_local

__all__ = [
    "ALIAS_FIELD",
    "NO_PASSWORD",
    "Entry",
    "UsersFileError",
    "alias_line",
    "mailbox_line",
    "normal_address",
    "parse",
]

#: The password of an alias or catch-all line: CRYPT with salt ``!``, which no
#: password hashes to (the ``!`` of a locked account in ``/etc/shadow``).
NO_PASSWORD = "{CRYPT}!"
#: Our extra field: comma-separated target addresses.
ALIAS_FIELD = "buzon_alias"
_FIELDS = 8  # user password uid gid gecos home shell extra_fields


class UsersFileError(ValueError):
    """A users file that cannot be used; the message names the file and the line."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source, self.line, self.problem = source, line, problem
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One mailbox, alias or catch-all line."""

    line: int
    """Line number in the file, from 1."""
    local: str
    """Normal local part; "" for a catch-all."""
    domain: str
    """Normal domain (IDNA A-labels)."""
    password: str
    """The password field as written (for Dovecot)."""
    targets: tuple[str, ...]
    """Normal addresses of an alias or catch-all; () for a mailbox."""
    text: str
    """The line as written, without its newline."""

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def is_alias(self) -> bool:
        return bool(self.targets)


def normal_address(address: str) -> str:
    """``local@domain`` in normal form, the local part checked; "@domain" stays a catch-all.

    Raises:
        UnsafeMailbox: no ``@``, an empty domain, or a name the storage rule refuses.
    """
    local, at, domain = address.rpartition("@")
    if not at or not domain:
        raise UnsafeMailbox(f"{address!r} is not local@domain")
    domain = normal_domain(domain)
    if not local:
        return f"@{domain}"
    return f"{check_local(normal_local(local))}@{domain}"


def _extra(fields: str) -> dict[str, str]:
    items: dict[str, str] = {}
    for item in fields.split():
        key, _, value = item.partition("=")
        items[key] = value
    return items


def _entry(number: int, text: str, source: str) -> Entry:
    fields = text.split(":", _FIELDS - 1)
    if len(fields) < 2 or not fields[0]:
        raise UsersFileError(source, number, "expected user:password[:uid:gid:gecos:home:shell:extra]")
    user, password = fields[0], fields[1]
    try:
        normal = normal_address(user)
    except UnsafeMailbox as error:
        raise UsersFileError(source, number, f"user {user!r}: {error}") from None
    if normal != user:
        raise UsersFileError(
            source, number, f"write the user as {normal!r} (its normal form), not {user!r}"
        )
    extra = _extra(fields[7]) if len(fields) == _FIELDS else {}
    local, _, domain = normal.rpartition("@")
    if ALIAS_FIELD not in extra:
        if not local:
            raise UsersFileError(source, number, f"catch-all {user} needs {ALIAS_FIELD}=<targets>")
        return Entry(number, local, domain, password, (), text)
    if password != NO_PASSWORD or "nologin" not in extra:
        raise UsersFileError(
            source, number,
            f"alias {user} must never log in: give it the password {NO_PASSWORD} "
            "and the extra field nologin",
        )
    targets: list[str] = []
    for target in filter(None, extra[ALIAS_FIELD].split(",")):
        try:
            normal_target = normal_address(target)
        except UnsafeMailbox as error:
            raise UsersFileError(source, number, f"alias target {target!r}: {error}") from None
        if normal_target.startswith("@"):
            raise UsersFileError(source, number, f"alias target {target!r} has no local part")
        if normal_target not in targets:
            targets.append(normal_target)
    if not targets:
        raise UsersFileError(source, number, f"alias {user} has no targets in {ALIAS_FIELD}=")
    return Entry(number, local, domain, password, tuple(targets), text)


def parse(text: str, source: str = "users file") -> list[Entry]:
    """Every entry of a users file, in file order.

    Args:
        text: the whole file, decoded.
        source: how messages name the file (its path).

    Raises:
        UsersFileError: the first malformed or repeated line, by number.
    """
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = _entry(number, line, source)
        first = seen.setdefault(entry.address, number)
        if first != number:
            raise UsersFileError(source, number, f"{entry.address} is already on line {first}")
        entries.append(entry)
    return entries


def mailbox_line(address: str, password_hash: str) -> str:
    """The line of a mailbox (``address`` normal, ``password_hash`` with its ``{SCHEME}``)."""
    if ":" in password_hash or "\n" in password_hash:
        raise ValueError("a password hash cannot hold ':' or a newline")
    return f"{address}:{password_hash}::::::"


def alias_line(address: str, targets: list[str] | tuple[str, ...]) -> str:
    """The line of an alias or catch-all (``@domain``); targets normal addresses."""
    return f"{address}:{NO_PASSWORD}::::::nologin {ALIAS_FIELD}={','.join(targets)}"
