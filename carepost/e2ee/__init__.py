"""End-to-end encryption of outgoing mail: S/MIME (RFC 8551), OpenPGP PGP/MIME
(RFC 3156) and the per-tenant key directory they draw recipients' keys from.

See docs/encryption.md ("End-to-end encryption").
"""
