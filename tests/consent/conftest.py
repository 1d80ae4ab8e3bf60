"""Fixtures of the consent tests: a tenant with an all-scopes key and a contact."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from carepost.audit.service import SYSTEM
from carepost.contacts import service as contacts
from tests.canaries import phi_value


@dataclass
class Clinic:
    tenant: tuple
    headers: dict[str, str]
    contact_id: uuid.UUID
    email: str
    phone: str

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.tenant[0].id

    @property
    def keys(self):
        return self.tenant[1]


@pytest.fixture
def make_contact(runtime):
    def make(tenant, *, email: str | None = None, phone: str | None = "+14155550123"):
        _row, keys = tenant
        email = email or f"{phi_value('mail').lower()}@example.org"
        values = {"email": email, "phone": phone, "first_name": phi_value("first")}
        with runtime.bound_session(keys) as session:
            contact = contacts.create_contact(session, keys, values=values, actor=SYSTEM)
            return contact.id, email

    return make


@pytest.fixture
def clinic(tenant, make_api_key, make_contact) -> Clinic:
    contact_id, email = make_contact(tenant)
    return Clinic(tenant, make_api_key(tenant), contact_id, email, "+14155550123")
