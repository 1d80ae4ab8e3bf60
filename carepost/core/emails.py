"""The everyday email address, recognized without email-validator.

email-validator costs about 100 µs a call: most of an imported row's budget, and a
fifth of a delivered message's. Nearly every address carepost meets is an ASCII
dot-atom at a plain host name, which email-validator accepts and normalizes to itself
with its domain lower-cased; :func:`is_plain_email` recognizes exactly such addresses,
and the callers send everything else to email-validator as before.
tests/contacts/test_upsert_email.py and tests/delivery/test_mime_addresses.py prove
that both paths agree on this subset.
"""

from __future__ import annotations

import re

from email_validator import SPECIAL_USE_DOMAIN_NAMES

# An ASCII dot-atom local part of common characters, and a host name of
# letter/digit/hyphen labels (no "--": no Punycode, nothing RFC 5891 reserves) under
# an alphabetic top-level domain. Lengths stay well inside RFC 5321's (64 before the
# @, 63 per label, 254 in all).
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]{1,64}){0,10}"
    r"@(?:(?!-)(?:[A-Za-z0-9]|-(?!-)){1,63}(?<!-)\.){1,8}[A-Za-z]{2,63}"
)
_PLAIN_EMAIL_MAX = 200
_SPECIAL_USE_TLDS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def is_plain_email(address: str) -> bool:
    """Whether ``address`` (exactly as given: no blanks around it) is an everyday
    address that email-validator would accept as ``local@domain.lower()``."""
    if len(address) > _PLAIN_EMAIL_MAX or not _PLAIN_EMAIL.fullmatch(address):
        return False
    local, _, domain = address.partition("@")
    tld = domain.rpartition(".")[2].lower()
    return len(local) <= 64 and tld not in _SPECIAL_USE_TLDS
