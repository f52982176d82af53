"""`python -m buzon` runs the SMTP server."""

from buzon.app.main import main

raise SystemExit(main())
