"""The everyday address skips email-validator on the way out (carepost/core/emails.py):
the MIME writer's address check and the SMTP envelope's must give exactly what they
gave through email-validator and aiosmtplib's address parser (``quoted_as_given``),
for every address."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carepost.core.emails import is_plain_email
from carepost.delivery.mime import LINE_BREAKS, MessageError, _address
from carepost.delivery.smtp_session import quoted_as_given, sendable
from tests.email_strategies import LABEL_CHARS, LOCAL_CHARS, addresses


def reference_address(value: str) -> str | None:
    """``_address`` before the fast path (None: refused)."""
    if any(c in LINE_BREAKS for c in value):
        return None
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return checked.ascii_email or checked.normalized


def ours(value: str) -> str | None:
    try:
        return _address(value, "to")
    except MessageError:
        return None


@settings(max_examples=3000, deadline=None)
@given(addresses)
@example("Pat.Doe@Example.ORG")
@example("a@b.test")
@example("a@xn--bcher-kva.example")
@example("first.last+tag@mail.example-clinic.com")
def test_the_mime_writer_checks_addresses_as_email_validator_does(address):
    assert ours(address) == reference_address(address)
    assert sendable(address) == quoted_as_given(address)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=LOCAL_CHARS + LABEL_CHARS + "@.<>\r\n", max_size=40))
def test_any_text_is_checked_as_before(text):
    assert ours(text) == reference_address(text)
    assert sendable(text) == quoted_as_given(text)


@pytest.mark.parametrize("address", ["Pat.Doe@Example.ORG", "bounce+x1y2@bounces.clinic.example"])
def test_everyday_addresses_keep_their_local_part_and_lower_their_domain(address):
    assert is_plain_email(address)
    local, _, domain = address.partition("@")
    assert _address(address, "to") == f"{local}@{domain.lower()}"
    assert sendable(address)
