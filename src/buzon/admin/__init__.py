"""``buzon-admin``: the users file's editor and the Maildir migration (docs/directory.md)."""

from buzon.admin.cli import hash_password, main

__all__ = ["hash_password", "main"]
