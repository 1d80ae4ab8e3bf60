"""The fast path of email normalization gives exactly what email-validator gives."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carepost.contacts.fields import normalize_email
from carepost.core.emails import is_plain_email
from carepost.core.errors import ValidationFailed
from tests.email_strategies import LABEL_CHARS, LOCAL_CHARS, addresses


def reference_normalize(value: str) -> str | None:
    """normalize_email before the fast path: email-validator alone (None: refused)."""
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    return checked.normalized.lower()


def ours(value: str) -> str | None:
    try:
        return normalize_email(value)
    except ValidationFailed:
        return None


@settings(max_examples=3000, deadline=None)
@given(addresses)
@example("Pat@Example.org")
@example("a" * 64 + "@example.org")
@example("a" * 65 + "@example.org")
@example("a@" + "b" * 63 + ".org")
@example("a@" + "b" * 64 + ".org")
@example("a@xn--bcher-kva.example")
@example("ab@cd--ef.org")
@example("a@b.test")
def test_structured_addresses_normalize_like_email_validator(address):
    assert ours(address) == reference_normalize(address)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=LOCAL_CHARS + LABEL_CHARS + "@.", max_size=40))
def test_any_text_normalizes_like_email_validator(text):
    assert ours(text) == reference_normalize(text)


@pytest.mark.parametrize(
    "address",
    ["patient1@example.org", "first.last+tag@mail.example-clinic.com", "A_B@X.ORG"],
)
def test_everyday_addresses_take_the_fast_path(address):
    assert is_plain_email(address)
    assert normalize_email(address) == reference_normalize(address)


@pytest.mark.parametrize(
    "address", ["a@b.test", "a@xn--bcher-kva.example", "a..b@example.org", "é@example.org"]
)
def test_unusual_addresses_go_to_email_validator(address):
    assert not is_plain_email(address)
