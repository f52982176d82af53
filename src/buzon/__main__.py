"""`python -m buzon` runs the SMTP server."""

from buzon.smtp.main import main

raise SystemExit(main())
