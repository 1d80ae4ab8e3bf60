"""The outbox write of a batch: PHI sealed ahead exactly as the columns would seal it,
one binary COPY on PostgreSQL (executemany on SQLite), read back intact by the ORM."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, upserts
from carepost.contacts import service as contacts
from carepost.contacts.activity_models import ContactEvent
from carepost.core.errors import CryptoError
from carepost.crypto.fields import EncryptedJSON, EncryptedString
from carepost.messages import sending
from carepost.messages.models import MESSAGES_TABLE, Message, MessageEvent
from carepost.messages.outbox import Sealer, outbox_writer
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, SendLimits, send_messages

V1 = "/api/v1"


def test_sealed_values_open_with_the_columns_own_types(runtime, tenant):
    keys = tenant[1]
    seal = Sealer(keys, MESSAGES_TABLE)
    body = {"html": "<p>Dé\u00e9jà \u2603</p>", "text": 'line "one"\nline two'}
    data = {"when": datetime(2027, 1, 2, tzinfo=UTC), "n": 1.5, "none": None}
    sealed_body = seal.json("body", body)
    sealed_data = seal.json("data", data)
    sealed_subject = seal.text("subject", "Über \u2603")
    assert seal.json("metadata", None) is None and seal.text("to_name", None) is None
    # Exactly the plaintext bytes the column types would seal (dates as ISO text).
    assert keys.decrypt("messages.body", sealed_body) == EncryptedJSON("messages.body")._dump(body)
    assert keys.decrypt("messages.data", sealed_data) == EncryptedJSON("messages.data")._dump(data)
    assert keys.decrypt("messages.subject", sealed_subject) == EncryptedString(
        "messages.subject"
    )._dump("Über \u2603")
    with pytest.raises(CryptoError):  # the label binds the column: no moving values
        keys.decrypt("messages.subject", sealed_body)


def test_a_batch_reads_back_through_the_orm_field_for_field(client, runtime, tenant, make_api_key):
    headers = make_api_key(tenant)
    send_at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    items = [
        {
            "to": f"r{n}@example.org",
            "to_name": f"Pat \u00e9 {n}",
            "from": "care@clinic.example",
            "from_name": "Riverside Clinic",
            "reply_to": "desk@clinic.example",
            "subject": "Hello {{ name }}",
            "html": "<p>Dear {{ name }} &amp; family</p>",
            "data": {"name": f"N\u00f8 {n}", "nested": {"a": [1, 2]}},
            "metadata": {"ref": f"x-{n}"},
            "tags": ["reminder", "t2"],
            "attachments": [{"filename": "a.txt", "content_type": "Text/Plain", "content": "aGk="}],
            "priority": "high",
            "send_at": send_at.isoformat(),
            "idempotency_key": f"outbox-{uuid.uuid4().hex}",
        }
        for n in range(3)
    ] + [{"to": "plain@example.org", "from": "care@clinic.example", "subject": "s", "text": "t"}]
    response = client.post(f"{V1}/messages/batch", json={"items": items}, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["queued"] == 4
    ids = [uuid.UUID(item["id"]) for item in answer["items"]]
    assert all(item["errors"] == [] and item["duplicate"] is False for item in answer["items"])
    with runtime.bound_session(tenant[1]) as session:
        stored = {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}
        first = stored[ids[1]]
        assert first.to_address == "r1@example.org" and first.to_name == "Pat \u00e9 1"
        assert first.subject == "Hello N\u00f8 1"
        assert first.body["html"] == "<p>Dear N\u00f8 1 &amp; family</p>"
        assert "Dear N\u00f8 1 & family" in first.body["text"]
        assert first.data == {"name": "N\u00f8 1", "nested": {"a": [1, 2]}}
        assert first.meta == {"ref": "x-1"}
        assert first.attachments == [
            {"filename": "a.txt", "content_type": "text/plain", "content": "aGk="}
        ]
        assert first.tags == ["reminder", "t2"] and first.priority == 0
        assert first.next_attempt_at == send_at and first.first_queued_at == send_at
        assert first.reply_to == "desk@clinic.example" and first.from_name == "Riverside Clinic"
        assert first.lease_until is None and first.lease_owner == "" and first.attempts == 0
        assert first.protection_reasons is None and first.state == "queued"
        plain = stored[ids[3]]
        assert plain.to_name is None and plain.data is None and plain.meta is None
        assert plain.attachments is None and plain.tags == [] and plain.body["html"] is None


def test_a_repeated_key_in_the_copy_is_an_integrity_error(runtime, tenant, monkeypatch):
    """The idempotency race relies on the write raising IntegrityError (then retried)."""
    keys = tenant[1]
    limits = SendLimits(max_attachment_bytes=1_000_000, base_url="https://carepost.test")
    request = MessageIn.model_validate(
        {"to": "dup@example.org", "from": "care@clinic.example", "subject": "s", "text": "t"}
    )
    key = f"race-{uuid.uuid4().hex}"
    with runtime.bound_session(keys) as session:
        send_messages(session, keys, [(request, key)], SendContext(actor=SYSTEM, limits=limits))
    # As a concurrent request would: it did not see the first one's key.
    monkeypatch.setattr(sending, "_find_existing", lambda *_args: {})
    with pytest.raises(IntegrityError), runtime.bound_session(keys) as session:
        send_messages(session, keys, [(request, key)], SendContext(actor=SYSTEM, limits=limits))


def _counts(runtime, tenant) -> tuple[int, int, int]:
    tenant_id = tenant[0].id
    with runtime.database.session() as session:
        return tuple(  # type: ignore[return-value]
            int(session.scalar(select(func.count()).select_from(model).where(where)) or 0)
            for model, where in (
                (Message, Message.tenant_id == tenant_id),
                (MessageEvent, MessageEvent.tenant_id == tenant_id),
                (ContactEvent, ContactEvent.tenant_id == tenant_id),
            )
        )


def test_a_streamed_batch_stores_each_message_with_its_event_and_timeline(
    client, runtime, tenant, make_api_key
):
    """Rendered and written one by one (PostgreSQL: streamed into the COPY), a bad item
    among them: every good message, its event and its contact's timeline entry are
    stored, and each result names its own message."""
    with runtime.bound_session(tenant[1]) as session:
        contact_id = contacts.create_contact(
            session,
            tenant[1],
            values={"email": "chunk@example.org", "first_name": "Cy"},
            actor=SYSTEM,
        ).id
    items = [
        {
            "from": "care@clinic.example",
            "subject": "Hi {{ contact.first_name }}" if n % 2 else "Hi {{ n }}",
            "text": "t",
            "data": {"n": n},
        }
        | ({"contact_id": str(contact_id)} if n % 2 else {"to": f"c{n}@example.org"})
        for n in range(10)
    ]
    items[4]["to"] = "broken"  # a bad item changes nothing for the others
    response = client.post(
        f"{V1}/messages/batch", json={"items": items}, headers=make_api_key(tenant)
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["queued"] == 9 and answer["failed"] == 1
    assert answer["items"][4]["errors"][0]["pointer"] == "#/body/items/4/to"
    assert _counts(runtime, tenant) == (9, 9, 5)
    with runtime.bound_session(tenant[1]) as session:
        for result, item in zip(answer["items"], items, strict=True):
            if result["id"] is None:
                continue
            stored = session.get(Message, uuid.UUID(result["id"]))
            assert stored is not None
            expected = "Hi Cy" if "contact_id" in item else f"Hi {item['data']['n']}"
            assert stored.subject == expected


def test_an_atomic_batch_failing_to_render_late_stores_nothing(
    client, runtime, tenant, make_api_key
):
    """The messages before the bad one were streamed already: the transaction rolls
    them back."""
    items = [
        {
            "to": f"a{n}@example.org",
            "from": "care@clinic.example",
            "subject": "s {{ n }}",
            "text": "t",
            "data": {"n": n},
        }
        for n in range(7)
    ]
    del items[5]["data"]  # renders with an undefined variable
    response = client.post(
        f"{V1}/messages/batch", json={"items": items, "atomic": True}, headers=make_api_key(tenant)
    )
    assert response.status_code == 422, response.text
    assert [e["pointer"] for e in response.json()["errors"]] == ["#/body/items/5/subject"]
    assert _counts(runtime, tenant) == (0, 0, 0)


def test_a_failure_while_streaming_abandons_the_write_and_propagates(runtime, tenant):
    """The caller's own exception comes out (the server is only told the batch was
    abandoned: an exception's message may quote a value), and nothing is stored."""
    keys = tenant[1]
    with (
        pytest.raises(ValueError, match=r"pat@example\.org"),
        runtime.bound_session(keys) as session,
        outbox_writer(session, MESSAGES_TABLE, sending.MESSAGE_COLUMNS) as write,
    ):
        assert callable(write)
        raise ValueError("cannot render for pat@example.org")
    assert _counts(runtime, tenant) == (0, 0, 0)


def test_contacts_are_read_only_as_far_as_the_contents_need(client, runtime, tenant, make_api_key):
    """Standard fields only: the fields read, as ContactView.of keeps them (an empty one
    is undefined); a custom field, or ``contact`` as a whole, reads the whole record."""
    with runtime.bound_session(tenant[1]) as session:
        custom_fields.create_field(
            session, tenant[0].id, key="zip", label="ZIP", type="string", actor=SYSTEM
        )
        [created] = upserts.upsert_contacts(
            session,
            tenant[1],
            [{"email": "read@example.org", "first_name": "Ro", "custom": {"zip": "02139"}}],
            match="email",
            actor=SYSTEM,
        )
    contact_id = str(created.id)
    base = {"contact_id": contact_id, "from": "care@clinic.example", "text": "t"}
    batches = {
        "first": [base | {"subject": "Hi {{ contact.first_name }}"}],
        "default": [base | {"subject": "Hi {{ contact.last_name | default('there') }}"}],
        "undefined": [base | {"subject": "Hi {{ contact.last_name }}"}],
        "custom": [
            base | {"subject": "Hi {{ contact.first_name }}"},
            base | {"subject": "Zip {{ contact.custom.zip }} {{ contact.zip }}"},
        ],
    }
    answers = {
        name: client.post(
            f"{V1}/messages/batch", json={"items": items}, headers=make_api_key(tenant)
        ).json()
        for name, items in batches.items()
    }
    assert answers["undefined"]["failed"] == 1
    assert [answers[n]["failed"] for n in ("first", "default", "custom")] == [0, 0, 0], answers
    assert (
        "contact.last_name is undefined" in answers["undefined"]["items"][0]["errors"][0]["detail"]
    )
    subjects = {}
    with runtime.bound_session(tenant[1]) as session:
        for name in ("first", "default", "custom"):
            for result in answers[name]["items"]:
                stored = session.get(Message, uuid.UUID(result["id"]))
                assert stored is not None
                subjects.setdefault(name, []).append(stored.subject)
    assert subjects == {
        "first": ["Hi Ro"],
        "default": ["Hi there"],
        "custom": ["Hi Ro", "Zip 02139 02139"],
    }
