"""The contacts service and its field rules, below the API."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carepost.audit.service import SYSTEM
from carepost.contacts import service
from carepost.contacts.fields import (
    normalize_birth_date,
    normalize_email,
    normalize_phone,
)
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from tests.conftest import phi_value


def test_a_concurrent_duplicate_becomes_a_conflict_not_a_crash(runtime, tenant, monkeypatch):
    """Two writers pass the pre-check at once; the unique index stops the second,
    and the savepoint turns its IntegrityError into the same 409."""
    _tenant_row, keys = tenant
    email = f"{phi_value('mail').lower()}@example.org"
    with runtime.bound_session(keys) as session:
        service.create_contact(session, keys, values={"email": email}, actor=SYSTEM)
    real_check = service._check_unique
    calls = []

    def blind_first_check(session, contact, *, exclude_id=None):
        calls.append(exclude_id)
        if len(calls) > 1:
            real_check(session, contact, exclude_id=exclude_id)

    monkeypatch.setattr(service, "_check_unique", blind_first_check)
    with runtime.bound_session(keys) as session:
        with pytest.raises(Conflict) as refused:
            service.create_contact(session, keys, values={"email": email}, actor=SYSTEM)
        assert refused.value.errors[0].field == "email"
        # The transaction is still usable after the savepoint rolled back.
        assert len(service.list_contacts(session, keys.tenant_id)) == 1


def test_lookups_normalize_the_value_and_stay_in_the_tenant(runtime, make_tenant):
    _tenant_a, keys_a = make_tenant()
    _tenant_b, keys_b = make_tenant()
    with runtime.bound_session(keys_a) as session:
        contact = service.create_contact(
            session,
            keys_a,
            values={"email": "Pat@Example.org", "phone": "+44 20 7946 0958"},
            actor=SYSTEM,
        )
        assert [
            c.id
            for c in service.find_contacts(
                session, keys_a, field="email", value=" PAT@example.ORG "
            )
        ] == [contact.id]
        assert [
            c.id
            for c in service.find_contacts(session, keys_a, field="phone", value="+442079460958")
        ] == [contact.id]
        with pytest.raises(ValidationFailed):
            service.find_contacts(session, keys_a, field="first_name", value="Pat")
    with runtime.bound_session(keys_b) as session:
        assert service.find_contacts(session, keys_b, field="email", value="pat@example.org") == []
        with pytest.raises(NotFound):
            service.get_contact(session, keys_b.tenant_id, contact.id)


def test_blind_indexes_differ_between_tenants(runtime, make_tenant):
    (_a, keys_a), (_b, keys_b) = make_tenant(), make_tenant()
    tokens = set()
    for keys in (keys_a, keys_b):
        with runtime.bound_session(keys) as session:
            contact = service.create_contact(
                session, keys, values={"email": "same@example.org"}, actor=SYSTEM
            )
            tokens.add(contact.email_index)
    assert len(tokens) == 2


def test_unknown_fields_are_refused(runtime, tenant):
    _tenant_row, keys = tenant
    with runtime.bound_session(keys) as session, pytest.raises(ValidationFailed) as refused:
        service.create_contact(session, keys, values={"ssn": "123-45-6789"}, actor=SYSTEM)
    assert refused.value.errors[0].field == "ssn"


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Every message a normalizer may give: fixed texts, so none can carry the value.
REFUSALS = {
    "not a valid email address",
    "not a valid phone number: use the international format, e.g. +14155552671",
    "use an ISO date: YYYY-MM-DD",
    "the birth date is in the future",
    "the birth date is before 1880-01-01",
}


@FUZZ
@given(st.text(max_size=60))
def test_normalizers_accept_or_refuse_cleanly_and_never_echo_the_value(value):
    for normalize in (normalize_email, normalize_phone, normalize_birth_date):
        try:
            normalized = normalize(value)
        except ValidationFailed as refused:
            assert refused.detail in REFUSALS
            continue
        # Normal forms are stable.
        assert normalize(normalized) == normalized


@FUZZ
@given(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True))
def test_valid_phone_numbers_come_back_as_e164(value):
    try:
        normalized = normalize_phone(value)
    except ValidationFailed:
        return  # not an allocated number range
    assert normalized.startswith("+") and normalized[1:].isdigit() and len(normalized) <= 16


@FUZZ
@given(st.emails())
def test_generated_addresses_normalize_to_lower_case(value):
    try:
        normalized = normalize_email(value)
    except ValidationFailed:
        return  # email-validator is stricter than RFC 5322 about some forms
    assert normalized == normalized.lower() and "@" in normalized
