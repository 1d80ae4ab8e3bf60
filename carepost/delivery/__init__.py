"""Email delivery: MIME building, DKIM, SMTP transport, bounces."""
