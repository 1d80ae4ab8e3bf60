"""The benchmark data set reads back through the services exactly as they would have
written it: ciphertext, blind indexes, tokens, identifiers, consent, lists, events."""

from __future__ import annotations

import uuid
from collections import Counter

from sqlalchemy import func, select

from bench import datagen
from bench.people import AS_OF, contact_items, people
from carepost.consent import service as consent
from carepost.consent.models import ConsentCurrent, ConsentRecord
from carepost.contacts import custom_fields, events, sync
from carepost.contacts import service as contacts
from carepost.contacts.activity_models import ContactEvent, ContactList, ListMembership
from carepost.contacts.fields import normalize_email, normalize_phone
from carepost.contacts.models import Contact, ContactStageHistory, ContactToken
from carepost.contacts.values import normalize_custom

CONTACTS, EVENTS, SEED = 500, 5000, 7


def count(session, model, tenant_id, *conditions):
    return session.scalar(
        select(func.count()).select_from(model).where(model.tenant_id == tenant_id, *conditions)
    )


def test_people_are_deterministic_and_valid_input():
    first = list(people(SEED, 300))
    assert first == list(people(SEED, 300))
    assert list(people(SEED, 5, start=298)) == [*first[298:], *people(SEED, 3, start=300)]
    assert list(contact_items(SEED, 2)) == [p.upsert_item() for p in first[:2]]
    for person in first:
        if person.email:
            assert normalize_email(person.email) == person.email
        if person.phone:
            assert normalize_phone(person.phone) == person.phone
    assert len({p.id for p in first}) == 300
    emails = [p.email for p in first if p.email]
    assert len(set(emails)) == len(emails)


def test_generated_data_reads_back_through_the_services(runtime):
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    tenant_id, info = datagen.ensure_dataset(
        runtime,
        contacts=CONTACTS,
        events=EVENTS,
        seed=SEED,
        slug=slug,
        progress=lines.append,
        workers=1,
    )
    assert info["generated_seconds"] > 0 and lines[-1].startswith("datagen: 500/500 contacts")
    expected = {person.id: person for person in people(SEED, CONTACTS)}

    with runtime.tenant_session(tenant_id) as session:
        keys = runtime.keyring.load(session, tenant_id)
        schema = custom_fields.load_schema(session, tenant_id)
        stored = contacts.list_contacts(session, tenant_id, limit=CONTACTS + 1)
        assert {c.id for c in stored} == set(expected)
        identifiers = sync.identifiers_of(session, tenant_id, list(expected))
        tokens: dict[uuid.UUID, set[tuple[str, str]]] = {}
        for row in session.execute(
            select(ContactToken.contact_id, ContactToken.field_key, ContactToken.token).where(
                ContactToken.tenant_id == tenant_id
            )
        ):
            tokens.setdefault(row.contact_id, set()).add((row.field_key, row.token))
        for contact in stored:
            person = expected[contact.id]
            assert (contact.email, contact.phone) == (person.email, person.phone)
            assert (contact.first_name, contact.last_name) == (person.first_name, person.last_name)
            assert contact.birth_date == person.birth_date
            assert contact.custom == normalize_custom(schema, person.custom, now=AS_OF)
            assert contact.journey_stage == person.journey_stage
            assert contact.created_at == person.created_at
            assert identifiers.get(contact.id, {}).get("mrn") == person.mrn
            computed = set(sync.contact_tokens(keys, schema, contact.custom, contact.birth_date))
            assert tokens[contact.id] == computed
        # Blind indexes: look-ups by email and phone find the contact.
        sample = next(p for p in expected.values() if p.email and p.phone)
        by_email = contacts.find_contacts(session, keys, field="email", value=sample.email)
        by_phone = contacts.find_contacts(session, keys, field="phone", value=sample.phone)
        assert [c.id for c in by_email] == [sample.id]
        assert sample.id in {c.id for c in by_phone}

        assert count(session, ContactEvent, tenant_id) == EVENTS
        kinds = Counter(
            session.scalars(select(ContactEvent.kind_id).where(ContactEvent.tenant_id == tenant_id))
        )
        by_key = {key: kinds[kind_id] for key, kind_id in info["event_kinds"].items()}
        assert by_key["email_opened"] > by_key["email_clicked"] > 0
        assert by_key["appointment_kept"] > 0 and by_key["form_submitted"] > 0
        # One of this data set's contacts with events (other tests' events share the table).
        active = session.scalars(
            select(ContactEvent.contact_id).where(ContactEvent.tenant_id == tenant_id).limit(1)
        ).one()
        timeline = events.contact_timeline(
            session, tenant_id, active, kind=None, before=None, limit=10, with_properties=False
        )
        assert timeline

        # Consent: the current row is the latest record, ~60% of contacts.
        assert 0.45 * CONTACTS < count(session, ConsentCurrent, tenant_id) < 0.75 * CONTACTS
        for row in session.scalars(
            select(ConsentCurrent).where(ConsentCurrent.tenant_id == tenant_id).limit(50)
        ):
            [latest, *_] = consent.consent_history(session, tenant_id, row.contact_id)
            assert (latest.id, latest.status) == (row.record_id, row.status)
        assert count(session, ConsentRecord, tenant_id) >= count(session, ConsentCurrent, tenant_id)

        # Lists: about a fifth in the diabetes programme; stage history for everyone.
        program = session.scalar(
            select(ContactList.id).where(
                ContactList.tenant_id == tenant_id, ContactList.name == "diabetes-program"
            )
        )
        members = count(
            session,
            ListMembership,
            tenant_id,
            ListMembership.list_id == program,
            ListMembership.left_at.is_(None),
        )
        assert 0.1 * CONTACTS < members < 0.3 * CONTACTS
        assert count(session, ContactStageHistory, tenant_id) >= CONTACTS

        # Keys were not checked per row while loading: check them now.
        orphans = (
            select(func.count())
            .select_from(ContactEvent)
            .where(
                ContactEvent.tenant_id == tenant_id,
                ContactEvent.contact_id.not_in(select(Contact.id)),
            )
        )
        assert session.scalar(orphans) == 0

    # The same request again reuses the data set.
    again_id, again = datagen.ensure_dataset(
        runtime, contacts=CONTACTS, events=EVENTS, seed=SEED, slug=slug, progress=lines.append
    )
    assert again_id == tenant_id and again["generated_seconds"] == 0.0
    assert again["lists"] == info["lists"]
