"""Buzón: an SMTP server that queues safely, transforms through sidecars and delivers to Maildir."""

__version__ = "0.1.0"
