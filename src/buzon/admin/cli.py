"""``buzon-admin``: add, remove and list users and aliases; move old Maildirs.

Theory of operation
-------------------
Every command reads the server's own settings (``BUZON_USERS_FILE``,
``BUZON_DOMAINS``, ``BUZON_POSTMASTER``, ``BUZON_RECIPIENT_DELIMITER``,
``BUZON_MAIL_ROOT``/``BUZON_DATA_DIR``), so it checks an edit exactly as the
server will when it rereads the file (:mod:`buzon.admin.usersfile`).
Passwords are hashed with Argon2id in Dovecot's ``{ARGON2ID}`` scheme
(m=64 MiB, t=3, p=1: what ``doveadm pw -s ARGON2ID`` writes; libsodium,
which Dovecot verifies with, computes one lane).

Exit status: 0 done; 1 refused (the address exists or does not, a domain not
in ``BUZON_DOMAINS``, an alias target that is nowhere, old mailboxes left
behind by a migration); 2 usage or settings error (``BUZON_USERS_FILE``
unset, a bad argument); 3 the users file, its lock or the mail root could not
be read or written.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from buzon.admin.usersfile import UsersFile, edit, read
from buzon.config import ServerSettings, exit_on_invalid
from buzon.directory import DirectoryConfig, UsersFileError, alias_line, mailbox_line
from buzon.directory.resolve import host_domain, parse_domains
from buzon.directory.users import NO_PASSWORD, normal_address
from buzon.storage.layout import migrate
from buzon.storage.mailbox import UnsafeMailbox, normal_domain

__all__ = ["hash_password", "main"]

REFUSED, USAGE, IO_ERROR = 1, 2, 3


class Refused(Exception):
    """The command cannot be done as asked; the message says why."""


def hash_password(password: str) -> str:
    """``{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$...``: Dovecot's scheme, libsodium's lanes."""
    from argon2 import PasswordHasher

    return "{ARGON2ID}" + PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1).hash(
        password)


def _fail(status: int, message: str) -> NoReturn:
    print(f"buzon-admin: {message}", file=sys.stderr)
    raise SystemExit(status)


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        try:
            text = Path(args.password_file).read_text("utf-8")
        except OSError as error:
            _fail(IO_ERROR, f"cannot read {args.password_file}: {error.strerror}")
        password = text.split("\n", 1)[0].rstrip("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            _fail(REFUSED, "the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        _fail(REFUSED, "empty password")
    return password


def _address(config: DirectoryConfig, text: str, *, catch_all: bool = False) -> str:
    try:
        address = normal_address(text)
    except UnsafeMailbox as error:
        _fail(USAGE, f"{text!r}: {error}")
    if address.startswith("@") and not catch_all:
        _fail(USAGE, f"{text!r} has no local part")
    domain = address.rpartition("@")[2]
    if not config.domains.accepts(domain):
        _fail(REFUSED, f"{domain} is not in BUZON_DOMAINS")
    return address


# -- the commands: each edits a UsersFile (under the lock) or reads one -------------------
def _user_add(users: UsersFile, address: str, hashed: str) -> None:
    if users.find(address) is not None:
        raise Refused(f"{address} already exists")
    users.lines.append(mailbox_line(address, hashed))


def _user_remove(users: UsersFile, address: str) -> None:
    entry = users.find(address)
    if entry is None or entry.is_alias:
        raise Refused(f"{address} is not a mailbox in {users.path}")
    users.replace(entry, None)


def _user_passwd(users: UsersFile, address: str, hashed: str) -> None:
    entry = users.find(address)
    if entry is None or entry.is_alias:
        raise Refused(f"{address} is not a mailbox in {users.path}")
    user, _, rest = entry.text.split(":", 2)
    users.replace(entry, f"{user}:{hashed}:{rest}")


def _alias_add(users: UsersFile, address: str, targets: list[str]) -> None:
    entry = users.find(address)
    if entry is not None and not entry.is_alias:
        raise Refused(f"{address} is a mailbox, not an alias")
    merged = list(entry.targets) if entry else []
    merged += [t for t in targets if t not in merged]
    line = alias_line(address, merged)
    if entry is None:
        users.lines.append(line)
    else:
        users.replace(entry, line)


def _alias_remove(users: UsersFile, address: str, targets: list[str]) -> None:
    entry = users.find(address)
    if entry is None or not entry.is_alias:
        raise Refused(f"{address} is not an alias in {users.path}")
    missing = [t for t in targets if t not in entry.targets]
    if missing:
        raise Refused(f"{address} does not go to {', '.join(missing)}")
    kept = [t for t in entry.targets if t not in targets] if targets else []
    users.replace(entry, alias_line(address, kept) if kept else None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buzon-admin",
        description="Edit Buzón's users file (BUZON_USERS_FILE) and move old Maildirs.",
        epilog="Exit status: 0 done, 1 refused, 2 usage or settings error, 3 I/O error.",
    )
    parser.add_argument("--users-file", type=Path, help="instead of BUZON_USERS_FILE")
    sub = parser.add_subparsers(dest="what", required=True)
    user = sub.add_parser("user", help="mailboxes").add_subparsers(dest="verb", required=True)
    for verb in ("add", "passwd"):
        p = user.add_parser(verb, help=f"{verb} a mailbox's password" if verb == "passwd"
                            else "add a mailbox (password from --password-file, a prompt or stdin)")
        p.add_argument("address")
        p.add_argument("--password-file", help="read the password from this file's first line")
    user.add_parser("remove", help="remove a mailbox (its mail stays on disk)").add_argument(
        "address")
    user.add_parser("list", help="list the mailboxes")
    alias = sub.add_parser("alias", help="aliases and catch-alls (@domain)").add_subparsers(
        dest="verb", required=True)
    p = alias.add_parser("add", help="create an alias, or give it more targets")
    p.add_argument("address", help="alias@domain, or @domain for the domain's catch-all")
    p.add_argument("targets", nargs="+", metavar="target")
    p = alias.add_parser("remove", help="remove an alias, or only some of its targets")
    p.add_argument("address")
    p.add_argument("targets", nargs="*", metavar="target")
    alias.add_parser("list", help="list the aliases and their targets")
    sub.add_parser("init", help=(
        "create the users file if it is missing: a postmaster@ mailbox for the first "
        "domain of BUZON_DOMAINS (no login until `user passwd`), postmaster@ the others "
        "as aliases of it; an existing file is left alone"))
    p = sub.add_parser("migrate-mailboxes",
                       help="move <mail root>/<local>/ to <mail root>/<domain>/<local>/")
    p.add_argument("--domain", required=True)
    p.add_argument("--dry-run", action="store_true", help="print the moves, make none")
    p.add_argument("--mail-root", type=Path, help="instead of BUZON_MAIL_ROOT")
    return parser


def _settings() -> tuple[ServerSettings, DirectoryConfig]:
    try:
        s = ServerSettings()
    except ValidationError as error:
        exit_on_invalid(error, "BUZON_")
    try:
        domains = parse_domains(s.domains)
    except ValueError as error:
        _fail(USAGE, f"BUZON_DOMAINS: {error}")
    config = DirectoryConfig(
        domains=domains,
        default_domain=domains.exact[0] if domains.exact else host_domain(s.hostname),
        delimiters=s.recipient_delimiter, postmaster=s.postmaster, users_file=s.users_file)
    return s, config


def _migrate(args: argparse.Namespace, s: ServerSettings, config: DirectoryConfig) -> int:
    try:
        domain = normal_domain(args.domain)
    except UnsafeMailbox as error:
        _fail(USAGE, f"--domain {args.domain}: {error}")
    if not config.domains.accepts(domain):
        _fail(REFUSED, f"{domain} is not in BUZON_DOMAINS")
    root = args.mail_root or s.mail_dir
    prefix = "would be " if args.dry_run else ""
    try:
        left = migrate(root, domain, dry_run=args.dry_run,
                       report=lambda line: print(prefix + line, flush=True))
    except UnsafeMailbox as error:
        _fail(REFUSED, str(error))
    except OSError as error:
        _fail(IO_ERROR, f"migration stopped (what is printed above was done): {error}")
    if left:
        print(f"{left} entr{'y' if left == 1 else 'ies'} left in place (see above)",
              file=sys.stderr)
        return REFUSED
    return 0


def _init(path: Path, config: DirectoryConfig) -> int:
    """``init``: a users file the server accepts, for a first start (Compose's users-init).

    The server refuses a users file with no postmaster (RFC 5321 §4.5.1), so a
    new deployment starts with one: a mailbox that receives mail at once and
    can log in once someone gives it a password.
    """
    if not config.domains.exact:
        _fail(USAGE, "init needs BUZON_DOMAINS to name at least one domain (not only *.)")
    first, *others = config.domains.exact
    postmaster = f"postmaster@{first}"

    def create(users: UsersFile) -> None:
        if users.lines:
            raise _Exists
        users.lines.append(mailbox_line(postmaster, NO_PASSWORD))
        users.lines.extend(alias_line(f"postmaster@{d}", [postmaster]) for d in others)

    try:
        edit(path, create, config, warn=lambda text: print(f"buzon-admin: warning: {text}",
                                                            file=sys.stderr))
    except _Exists:
        print(f"{path}: exists; left as it is")
        return 0
    except UsersFileError as error:
        _fail(REFUSED, f"not created: {error}")
    except OSError as error:
        _fail(IO_ERROR, f"{error.filename or path}: {error.strerror}")
    print(f"{path}: created with the mailbox {postmaster} (give it a password: "
          f"buzon-admin user passwd {postmaster})")
    return 0


class _Exists(Exception):
    """``init`` found a users file with lines in it."""


def main(argv: list[str] | None = None) -> int:
    """The ``buzon-admin`` command; see the module docstring for the exit statuses."""
    args = _parser().parse_args(argv)
    s, config = _settings()
    if args.what == "migrate-mailboxes":
        return _migrate(args, s, config)
    path = args.users_file or s.users_file
    if path is None:
        _fail(USAGE, "no users file: set BUZON_USERS_FILE (or pass --users-file)")
    if args.what == "init":
        return _init(path, config)
    try:
        if args.verb == "list":
            for entry in read(path).entries():
                if args.what == "user" and not entry.is_alias:
                    print(entry.address)
                elif args.what == "alias" and entry.is_alias:
                    print(f"{entry.address} -> {', '.join(entry.targets)}")
            return 0
        catch_all = args.what == "alias"
        address = _address(config, args.address, catch_all=catch_all)
        change: Callable[[UsersFile], None]
        if args.what == "user" and args.verb in ("add", "passwd"):
            hashed = hash_password(_password(args))
            verb = _user_add if args.verb == "add" else _user_passwd
            change = lambda users: verb(users, address, hashed)
        elif args.what == "user":
            change = lambda users: _user_remove(users, address)
        else:
            targets = [_address(config, t) for t in args.targets]
            verb = _alias_add if args.verb == "add" else _alias_remove
            change = lambda users: verb(users, address, targets)
        edit(path, change, config, warn=lambda text: print(f"buzon-admin: warning: {text}",
                                                            file=sys.stderr))
    except Refused as error:
        _fail(REFUSED, str(error))
    except UsersFileError as error:
        _fail(REFUSED, f"not changed: {error}")
    except OSError as error:
        _fail(IO_ERROR, f"{error.filename or path}: {error.strerror}")
    print(f"{path}: {args.what} {args.verb} {address}: done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
