"""Several SMTP worker processes under one supervisor (``BUZON_WORKERS`` > 1)."""
