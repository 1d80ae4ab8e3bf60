"""POST /messages and /messages/batch: validation, personalization, consent, idempotency."""

from __future__ import annotations

import base64
import threading
import uuid

from sqlalchemy import func, select

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent import suppression as suppressions
from carepost.consent.service import ConsentChange
from carepost.contacts import service as contacts
from carepost.messages.models import Message, MessageEvent
from tests.conftest import phi_value

V1 = "/api/v1"


def _raw(**extra):
    return {
        "to": f"r-{uuid.uuid4().hex[:8]}@example.org",
        "from": "care@clinic.example",
        "subject": "Your appointment",
        "text": "See you soon.",
    } | extra


def _message_count(runtime, tenant) -> int:
    with runtime.database.session() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Message).where(Message.tenant_id == tenant[0].id)
            )
            or 0
        )


def _stored(runtime, tenant, message_id) -> Message:
    with runtime.bound_session(tenant[1]) as session:
        message = session.get(Message, uuid.UUID(message_id))
        assert message is not None
        _ = (message.subject, message.body, message.to_address, message.data)
        return message


def _contact(runtime, tenant, **values):
    with runtime.bound_session(tenant[1]) as session:
        return contacts.create_contact(session, tenant[1], values=values, actor=SYSTEM).id


def test_one_message_is_queued_encrypted_with_its_event(client, runtime, tenant, make_api_key):
    headers = make_api_key(tenant)
    response = client.post(f"{V1}/messages", json=_raw(tags=["reminder"]), headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["state"] == "queued" and body["duplicate"] is False
    stored = _stored(runtime, tenant, body["id"])
    assert stored.subject == "Your appointment" and stored.body["text"] == "See you soon."
    assert stored.priority == 1 and stored.purpose == "transactional"
    with runtime.database.engine.connect() as connection:
        raw = connection.exec_driver_sql(
            "SELECT to_address, subject FROM messages WHERE to_index = ?"
            if runtime.database.is_sqlite
            else "SELECT to_address, subject FROM messages WHERE to_index = %s",
            (stored.to_index,),
        ).one()
    assert b"appointment" not in bytes(raw[1]) and b"example.org" not in bytes(raw[0])
    shown = client.get(f"{V1}/messages/{body['id']}", headers=headers).json()
    assert [e["kind"] for e in shown["events"]] == ["queued"]
    assert shown["tags"] == ["reminder"] and shown["subject"] == "Your appointment"


def test_raw_content_is_personalized_from_the_contact_and_data(
    client, runtime, tenant, make_api_key
):
    first = phi_value("first")
    contact_id = _contact(runtime, tenant, email="pat@example.org", first_name=first)
    message = _raw(
        to=None,
        contact_id=str(contact_id),
        subject="Hello {{ contact.first_name }}",
        html="<p>Dear {{ contact.first_name }}, your visit is on {{ day }}.</p>",
        text=None,
        data={"day": "Tuesday"},
    )
    response = client.post(f"{V1}/messages", json=message, headers=make_api_key(tenant))
    assert response.status_code == 201, response.text
    stored = _stored(runtime, tenant, response.json()["id"])
    assert stored.subject == f"Hello {first}"
    assert stored.body["html"] == f"<p>Dear {first}, your visit is on Tuesday.</p>"
    assert stored.body["text"].strip() == f"Dear {first}, your visit is on Tuesday."
    assert stored.contact_id == contact_id and stored.uses_phi is True
    assert stored.to_address == "pat@example.org"


def test_an_unknown_variable_is_refused_before_anything_is_queued(
    client, runtime, tenant, make_api_key
):
    message = _raw(subject="Hi {{ frist_name }}")
    response = client.post(f"{V1}/messages", json=message, headers=make_api_key(tenant))
    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"][0]["pointer"] == "#/body/subject"
    assert "frist_name" in problem["detail"]
    syntax = client.post(
        f"{V1}/messages",
        json=_raw(html="<p>\n{{ oops </p>", text=None),
        headers=make_api_key(tenant),
    )
    assert syntax.status_code == 422 and "line 2" in syntax.json()["detail"]
    assert _message_count(runtime, tenant) == 0


def test_bad_addresses_and_oversized_attachments_are_named(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    bad_to = client.post(f"{V1}/messages", json=_raw(to="not-an-address"), headers=headers)
    assert bad_to.status_code == 422 and bad_to.json()["errors"][0]["pointer"] == "#/body/to"
    assert "not-an-address" not in bad_to.text
    bad_from = client.post(f"{V1}/messages", json=_raw(**{"from": "x@"}), headers=headers)
    assert bad_from.json()["errors"][0]["pointer"] == "#/body/from"
    big = base64.b64encode(b"x" * (7 * 1024 * 1024 + 1)).decode()
    oversized = client.post(
        f"{V1}/messages",
        json=_raw(
            attachments=[
                {"filename": "scan.pdf", "content_type": "application/pdf", "content": big}
            ]
        ),
        headers=headers,
    )
    assert oversized.status_code == 422
    assert oversized.json()["errors"][0]["pointer"] == "#/body/attachments"
    assert "at most" in oversized.json()["detail"]
    not_b64 = client.post(
        f"{V1}/messages",
        json=_raw(attachments=[{"filename": "a.txt", "content": "***"}]),
        headers=headers,
    )
    assert not_b64.json()["errors"][0]["pointer"] == "#/body/attachments/0/content"
    template = client.post(
        f"{V1}/messages",
        json={"to": "a@example.org", "from": "c@clinic.example", "template_id": str(uuid.uuid4())},
        headers=headers,
    )
    assert template.status_code == 422
    assert template.json()["errors"][0]["pointer"] == "#/body/template_id"


def test_suppressed_addresses_are_stored_as_suppressed_with_the_reason(
    client, runtime, tenant, make_api_key
):
    _tenant, keys = tenant
    with runtime.bound_session(keys) as session:
        suppressions.add_suppression(
            session,
            keys,
            address="gone@example.org",
            reason="hard_bounce",
            source="api",
            actor=SYSTEM,
        )
    response = client.post(
        f"{V1}/messages", json=_raw(to="Gone@Example.org"), headers=make_api_key(tenant)
    )
    assert response.status_code == 201
    assert response.json()["state"] == "suppressed"
    assert response.json()["reason"] == "suppressed:hard_bounce"


def test_marketing_needs_consent_and_phi_marketing_needs_authorization(
    client, runtime, tenant, make_api_key
):
    headers = make_api_key(tenant)
    contact_id = _contact(runtime, tenant, email="m@example.org", first_name="Mo")
    base = _raw(to=None, contact_id=str(contact_id), purpose="marketing", priority="bulk")
    refused = client.post(f"{V1}/messages", json=base, headers=headers).json()
    assert refused["state"] == "suppressed" and refused["reason"] == "consent_missing:marketing"
    with runtime.bound_session(tenant[1]) as session:
        consent.record_consent(
            session,
            tenant[0].id,
            contact_id=contact_id,
            change=ConsentChange(
                channel="email", purpose="marketing", status="granted", source="api"
            ),
            actor=SYSTEM,
        )
    allowed = client.post(f"{V1}/messages", json=base, headers=headers).json()
    assert allowed["state"] == "queued"
    personal = base | {"subject": "For you, {{ contact.first_name }}"}
    phi = client.post(f"{V1}/messages", json=personal, headers=headers).json()
    assert phi["state"] == "suppressed" and phi["reason"] == "phi_authorization_missing"


def test_a_repeated_idempotency_key_returns_the_first_result(client, runtime, tenant, make_api_key):
    headers = make_api_key(tenant) | {"Idempotency-Key": "order-42"}
    first = client.post(f"{V1}/messages", json=_raw(), headers=headers)
    again = client.post(f"{V1}/messages", json=_raw(subject="Changed"), headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
    assert _message_count(runtime, tenant) == 1


def test_concurrent_repeats_of_one_key_make_one_message(client, runtime, tenant, make_api_key):
    headers = make_api_key(tenant) | {"Idempotency-Key": "burst-1"}
    answers: list = []
    start = threading.Barrier(6)

    def send() -> None:
        start.wait()
        answers.append(client.post(f"{V1}/messages", json=_raw(), headers=headers))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201]
    assert _message_count(runtime, tenant) == 1


def test_a_batch_queues_the_valid_items_and_reports_the_others_by_index(
    client, runtime, tenant, make_api_key
):
    items = [_raw() for _ in range(5)]
    items[1]["to"] = "broken"
    items[3]["subject"] = "{{ missing }}"
    items[4]["idempotency_key"] = items[0]["idempotency_key"] = "same"
    response = client.post(
        f"{V1}/messages/batch", json={"items": items}, headers=make_api_key(tenant)
    )
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert (outcome["queued"], outcome["failed"], outcome["duplicates"]) == (2, 2, 1)
    results = outcome["items"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert results[1]["errors"][0]["pointer"] == "#/body/items/1/to"
    assert results[3]["errors"][0]["pointer"] == "#/body/items/3/subject"
    assert results[4]["id"] == results[0]["id"] and results[4]["duplicate"] is True
    assert _message_count(runtime, tenant) == 2


def test_an_atomic_batch_with_one_bad_item_queues_nothing(client, runtime, tenant, make_api_key):
    items = [_raw() for _ in range(3)]
    items[2]["to"] = "broken"
    response = client.post(
        f"{V1}/messages/batch", json={"items": items, "atomic": True}, headers=make_api_key(tenant)
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"pointer": "#/body/items/2/to", "detail": "not a valid email address"}
    ]
    assert _message_count(runtime, tenant) == 0


def test_a_batch_of_10001_is_refused_naming_the_field(client, tenant, make_api_key):
    item = _raw()
    response = client.post(
        f"{V1}/messages/batch", json={"items": [item] * 10_001}, headers=make_api_key(tenant)
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["pointer"] == "#/body/items"


def test_a_batch_of_10000_is_accepted(client, runtime, tenant, make_api_key):
    items = [
        _raw(to=f"p{n}@example.org", subject="Hi {{ n }}", data={"n": n}) for n in range(10_000)
    ]
    response = client.post(
        f"{V1}/messages/batch", json={"items": items}, headers=make_api_key(tenant)
    )
    assert response.status_code == 200
    assert response.json()["queued"] == 10_000
    assert _message_count(runtime, tenant) == 10_000
    with runtime.database.session() as session:
        events = session.scalar(
            select(func.count())
            .select_from(MessageEvent)
            .where(MessageEvent.tenant_id == tenant[0].id)
        )
    assert events == 10_000


def test_messages_are_searched_by_recipient_in_the_body_never_the_url(
    client, runtime, tenant, make_api_key
):
    headers = make_api_key(tenant)
    for to, tag in (("a@example.org", "x"), ("b@example.org", "y"), ("A@example.org", "y")):
        client.post(f"{V1}/messages", json=_raw(to=to, tags=[tag]), headers=headers)
    found = client.post(f"{V1}/messages/search", json={"to": "a@EXAMPLE.org"}, headers=headers)
    assert found.status_code == 200
    assert [m["to"] for m in found.json()["items"]] == ["a@example.org", "a@example.org"]
    tagged = client.post(
        f"{V1}/messages/search", json={"to": "a@example.org", "tag": "y"}, headers=headers
    ).json()["items"]
    assert len(tagged) == 1
    by_tag = client.get(f"{V1}/messages", params={"tag": "y", "limit": 1}, headers=headers).json()
    assert len(by_tag["items"]) == 1 and by_tag["next_cursor"]
    rest = client.get(
        f"{V1}/messages", params={"tag": "y", "cursor": by_tag["next_cursor"]}, headers=headers
    ).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    in_url = client.get(f"{V1}/messages", params={"to": "a@example.org"}, headers=headers)
    assert in_url.status_code == 422 and "a@example.org" not in in_url.text
    queued = client.get(f"{V1}/messages", params={"state": "queued"}, headers=headers).json()
    assert len(queued["items"]) == 3


def test_the_log_hides_recipients_and_subjects_without_phi_read(
    client, runtime, tenant, make_api_key
):
    sent = client.post(f"{V1}/messages", json=_raw(), headers=make_api_key(tenant)).json()
    analyst = make_api_key(tenant, ["reports:read"])
    shown = client.get(f"{V1}/messages/{sent['id']}", headers=analyst).json()
    assert shown["to"] is None and shown["subject"] is None and shown["phi_redacted"] is True
    assert (
        client.post(
            f"{V1}/messages/search", json={"to": "a@example.org"}, headers=analyst
        ).status_code
        == 403
    )


def test_a_batch_body_error_names_the_item_and_field_and_queues_nothing(
    client, runtime, tenant, make_api_key
):
    headers = make_api_key(tenant)
    items = [_raw() for _ in range(3)]
    items[2]["priority"] = "urgent"
    del items[1]["from"]
    response = client.post(f"{V1}/messages/batch", json={"items": items}, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert pointers == {"#/body/items/1/from", "#/body/items/2/priority"}
    assert "urgent" not in response.text
    broken = client.post(
        f"{V1}/messages/batch",
        content=b'{"items": [',
        headers=headers | {"Content-Type": "application/json"},
    )
    assert broken.status_code == 422
    assert broken.json()["errors"][0]["pointer"].startswith("#/body")
    form = client.post(f"{V1}/messages/batch", content=b"items=1", headers=headers)
    assert form.status_code == 422 and form.json()["errors"][0]["pointer"] == "#/body"
    assert _message_count(runtime, tenant) == 0


def test_the_garbage_collector_runs_again_after_a_batch(client, tenant, make_api_key):
    import gc

    response = client.post(
        f"{V1}/messages/batch", json={"items": [_raw()]}, headers=make_api_key(tenant)
    )
    assert response.status_code == 200 and gc.isenabled()
