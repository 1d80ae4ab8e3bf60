"""No segmentation token outlives its contact (contact_tokens has no foreign key to
contacts since migration 0017: every deletion path deletes the tokens itself)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, inspect, select

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, merge, upserts
from carepost.contacts import service as contacts
from carepost.contacts.models import Contact, ContactToken
from tests.conftest import phi_value


def _orphans(session) -> int:
    known = select(Contact.id).where(Contact.id == ContactToken.contact_id).exists()
    return session.scalar(select(func.count()).select_from(ContactToken).where(~known))


def _tokens(session, contact_id: uuid.UUID) -> int:
    return session.scalar(
        select(func.count()).select_from(ContactToken).where(ContactToken.contact_id == contact_id)
    )


def test_deleting_and_merging_contacts_leaves_no_orphan_token(runtime, tenant):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        custom_fields.create_field(
            session,
            tenant_row.id,
            key="conditions",
            label="Conditions",
            type="multi_choice",
            choices=["e11", "i10"],
            actor=SYSTEM,
        )
        items = [
            {
                "email": f"{phi_value('mail').lower()}{n}@example.org",
                "birth_date": "1960-01-0" + str(n + 1),
                "custom": {"conditions": ["e11", "i10"][: n % 2 + 1]},
            }
            for n in range(4)
        ]
        results = upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
        ids = [result.id for result in results]
        assert all(_tokens(session, contact_id) > 0 for contact_id in ids)
    deleted, survivor, duplicate, untouched = ids
    with runtime.bound_session(keys) as session:
        contacts.delete_contact(session, tenant_id=tenant_row.id, contact_id=deleted, actor=SYSTEM)
    with runtime.bound_session(keys) as session:
        merge.merge_contacts(session, keys, survivor, [duplicate], actor=SYSTEM)
    with runtime.bound_session(keys) as session:
        assert _orphans(session) == 0
        assert _tokens(session, deleted) == 0 and _tokens(session, duplicate) == 0
        assert _tokens(session, survivor) > 0 and _tokens(session, untouched) > 0


def test_contact_tokens_have_no_foreign_key_to_contacts(runtime):
    """What migration 0017 removed (each key cost a check per imported token row)."""
    with runtime.database.engine.connect() as connection:
        keys = inspect(connection).get_foreign_keys(
            "contact_tokens", schema=runtime.settings.database_schema or None
        )
    assert [key for key in keys if key["referred_table"] == "contacts"] == []
