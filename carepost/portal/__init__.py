"""The secure pickup portal: messages kept encrypted on the platform, read after a
one-time code (or a password), with replies, recall and expiry (docs/portal.md)."""
