"""The recipient directory: accepted domains, mailboxes, aliases, catch-alls, postmaster.

:mod:`.users` reads and writes the users file (Dovecot's passwd-file format),
:mod:`.resolve` decides where a recipient's mail goes (pure), :mod:`.reload`
keeps the live directory in step with the file. See docs/directory.md.
"""

from buzon.directory.reload import DirectoryConfig, Recipients, load
from buzon.directory.resolve import (
    Directory,
    Domains,
    Incomplete,
    Lookup,
    Refusal,
    accept_all,
    build,
    parse_domains,
)
from buzon.directory.users import Entry, UsersFileError, alias_line, mailbox_line, parse

__all__ = [
    "Directory",
    "DirectoryConfig",
    "Domains",
    "Entry",
    "Incomplete",
    "Lookup",
    "Recipients",
    "Refusal",
    "UsersFileError",
    "accept_all",
    "alias_line",
    "build",
    "load",
    "mailbox_line",
    "parse",
    "parse_domains",
]
