"""Batches prepared ahead (possibly in another process) and the bulk row writer."""

from __future__ import annotations

import pickle

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, sync, upserts
from carepost.contacts.models import Contact, ContactIdentifier, ContactStageHistory, ContactToken
from carepost.contacts.prepare import PreparedContact, prepare_batch
from carepost.contacts.sealing import KeyMaterial, seal_batch
from carepost.core.bulk import write_rows
from carepost.core.database import utcnow
from carepost.core.errors import Conflict
from tests.conftest import phi_value


def _define_fields(session, tenant_id):
    custom_fields.create_field(
        session,
        tenant_id,
        key="conditions",
        label="Conditions",
        type="multi_choice",
        choices=["e11", "i10", "j45"],
        actor=SYSTEM,
    )
    custom_fields.create_field(
        session,
        tenant_id,
        key="a1c",
        label="A1c",
        type="number",
        granularity="0.1",
        actor=SYSTEM,
    )
    custom_fields.create_field(
        session, tenant_id, key="zip", label="ZIP", type="string", actor=SYSTEM
    )


def _items(count):
    return [
        {
            "email": f"{phi_value('mail').lower()}{n}@example.org",
            "phone": "+14155552671",
            "first_name": phi_value("first"),
            "birth_date": "1961-07-04",
            "external_ids": {"mrn": f"{phi_value('mrn')}{n}"},
            "language": "es-MX",
            "journey_stage": "active",
            "custom": {"conditions": ["i10", "e11"], "a1c": 7.2 + n / 10, "zip": "02139"},
        }
        for n in range(count)
    ]


@pytest.mark.parametrize("ahead", ["checked", "sealed", "sealed_stale_version"])
def test_a_prepared_batch_stores_what_upsert_contacts_stores(runtime, tenant, ahead):
    """Checked ahead, and also sealed ahead (ciphertexts, blind indexes and tokens
    made by a worker process holding the keys): the same rows as upsert_contacts."""
    _tenant_row, keys = tenant
    items = [*_items(3), {"email": "not an address"}]
    with runtime.bound_session(keys) as session:
        _define_fields(session, keys.tenant_id)
        context = upserts.load_context(session, keys.tenant_id)
    # As a worker process would hand it over.
    batch = pickle.loads(pickle.dumps(prepare_batch(items, context, now=utcnow())))
    sealed = None
    if ahead != "checked":
        material = pickle.loads(pickle.dumps(KeyMaterial.of(keys)))
        assert "key=" not in repr(material) and str(keys.tenant_id) in repr(material)
        sealed = pickle.loads(pickle.dumps(seal_batch(batch, material.keys())))
        assert sealed.items[3] is None
        if ahead == "sealed_stale_version":  # sealed before a key rotation: not used
            sealed.version += 1
    with runtime.bound_session(keys) as session:
        results = upserts.upsert_prepared(
            session, keys, batch, match="email", actor=SYSTEM, sealed=sealed
        )
    assert [r.status for r in results] == ["created", "created", "created", "error"]
    assert results[3].errors[0].field == "email"
    assert isinstance(batch.items[0], PreparedContact)
    with runtime.bound_session(keys) as session:
        # The same raw items through upsert_contacts find nothing to change...
        again = upserts.upsert_contacts(session, keys, items[:3], match="email", actor=SYSTEM)
        assert [r.status for r in again] == ["unchanged"] * 3
        # ...and the same prepared (and sealed) batch sent twice neither.
        twice = upserts.upsert_prepared(
            session, keys, batch, match="email", actor=SYSTEM, sealed=sealed
        )
        assert [r.status for r in twice[:3]] == ["unchanged"] * 3
        schema = custom_fields.load_schema(session, keys.tenant_id)
        for result, item in zip(results[:3], items[:3], strict=True):
            contact = session.get(Contact, result.id)
            assert contact is not None
            assert (contact.email, contact.phone, contact.first_name, contact.birth_date) == (
                item["email"],
                "+14155552671",
                item["first_name"],
                "1961-07-04",
            )
            assert contact.email_index == keys.blind_index("contacts.email", item["email"])
            assert contact.custom == {**item["custom"], "conditions": ["e11", "i10"]}
            assert contact.journey_stage == "active" and contact.language == "es-MX"
            expected = sync.contact_tokens(keys, schema, contact.custom, contact.birth_date)
            query = select(ContactToken.field_key, ContactToken.token).where(
                ContactToken.contact_id == result.id
            )
            assert sorted(tuple(row) for row in session.execute(query)) == sorted(expected)
            identifier = session.scalars(
                select(ContactIdentifier).where(ContactIdentifier.contact_id == result.id)
            ).one()
            assert (identifier.kind, identifier.value) == ("mrn", item["external_ids"]["mrn"])
            assert identifier.value_index == sync.identifier_token(keys, "mrn", identifier.value)
            history = session.scalars(
                select(ContactStageHistory).where(ContactStageHistory.contact_id == result.id)
            ).one()
            assert (history.stage, history.previous_stage) == ("active", None)


def test_a_batch_prepared_before_the_fields_changed_is_refused(runtime, tenant):
    _tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        context = upserts.load_context(session, keys.tenant_id)
    batch = prepare_batch(_items(1)[:1], context, now=utcnow())
    with runtime.bound_session(keys) as session:
        _define_fields(session, keys.tenant_id)
    with runtime.bound_session(keys) as session:
        with pytest.raises(Conflict) as refused:
            upserts.upsert_prepared(session, keys, batch, match="email", actor=SYSTEM)
        assert "prepare it again" in refused.value.detail


def test_the_bulk_writer_reports_a_duplicate_as_an_integrity_error(runtime, tenant):
    """The upsert's savepoint turns this into a 409, as it did for an INSERT."""
    _tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        _define_fields(session, keys.tenant_id)
        created = upserts.upsert_contacts(session, keys, _items(1), match="email", actor=SYSTEM)
        row = (keys.tenant_id, created[0].id, "zip", "0" * 40)
        write_rows(session, sync.TOKEN_TABLE, sync.TOKEN_COLUMNS, [row])
        with pytest.raises(IntegrityError), session.begin_nested():
            write_rows(session, sync.TOKEN_TABLE, sync.TOKEN_COLUMNS, [row])
        # The transaction goes on after the savepoint rolled back.
        count = session.scalars(
            select(ContactToken.token).where(ContactToken.contact_id == created[0].id)
        ).all()
        assert "0" * 40 in count
