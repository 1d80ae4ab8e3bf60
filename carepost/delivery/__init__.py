"""Outgoing email delivery: SMTP transport, MIME, DKIM, bounces and feedback (issue 5)."""
