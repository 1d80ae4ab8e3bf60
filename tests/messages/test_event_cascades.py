"""Events go with what they belong to. ``message_events`` and ``contact_events`` have no
foreign key to ``tenants`` (migration 0032): a message's events are deleted with the
message, a contact's timeline with the contact, and a tenant's with both."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select

from carepost.audit.service import SYSTEM
from carepost.contacts import service as contacts
from carepost.contacts.activity_models import ContactEvent
from carepost.messages.models import Message, MessageEvent
from carepost.tenancy.models import Tenant
from tests.conftest import phi_value


def _count(session, model, *where) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _send_to_contact(client, runtime, tenant, make_api_key) -> tuple[uuid.UUID, uuid.UUID]:
    with runtime.bound_session(tenant[1]) as session:
        contact_id = contacts.create_contact(
            session,
            tenant[1],
            values={"email": f"{uuid.uuid4().hex[:8]}@example.org"},
            actor=SYSTEM,
        ).id
    response = client.post(
        "/api/v1/messages",
        json={
            "contact_id": str(contact_id),
            "from": "care@clinic.example",
            "subject": "Your appointment",
            "text": f"See you soon, {phi_value('first')}.",
        },
        headers=make_api_key(tenant),
    )
    assert response.status_code == 201, response.text
    return contact_id, uuid.UUID(response.json()["id"])


def test_a_contact_takes_its_timeline_and_a_message_its_events(
    client, runtime, tenant, make_api_key
):
    contact_id, message_id = _send_to_contact(client, runtime, tenant, make_api_key)
    with runtime.database.session() as session:
        assert _count(session, MessageEvent, MessageEvent.message_id == message_id) == 1
        assert _count(session, ContactEvent, ContactEvent.contact_id == contact_id) == 1
    with runtime.bound_session(tenant[1]) as session:
        contacts.delete_contact(
            session, tenant_id=tenant[0].id, contact_id=contact_id, actor=SYSTEM
        )
    with runtime.database.session() as session:
        assert _count(session, ContactEvent, ContactEvent.contact_id == contact_id) == 0
        # The message stays (its contact forgotten) with its own history.
        contact_of_message = select(Message.contact_id).where(Message.id == message_id)
        assert session.execute(contact_of_message).one() == (None,)
        assert _count(session, MessageEvent, MessageEvent.message_id == message_id) == 1
        session.execute(delete(Message).where(Message.id == message_id))
    with runtime.database.session() as session:
        assert _count(session, MessageEvent, MessageEvent.message_id == message_id) == 0


def test_deleting_a_tenant_deletes_its_messages_contacts_and_their_events(
    client, runtime, make_tenant, make_api_key
):
    doomed, kept = make_tenant(), make_tenant()
    _send_to_contact(client, runtime, doomed, make_api_key)
    _send_to_contact(client, runtime, kept, make_api_key)
    with runtime.database.session() as session:
        session.execute(delete(Tenant).where(Tenant.id == doomed[0].id))
    with runtime.database.session() as session:
        for model in (MessageEvent, ContactEvent, Message):
            assert _count(session, model, model.tenant_id == doomed[0].id) == 0, model
            assert _count(session, model, model.tenant_id == kept[0].id) == 1, model
