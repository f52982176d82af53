"""``python -m buzon.admin``: the same as the ``buzon-admin`` command."""

from buzon.admin.cli import main

raise SystemExit(main())
