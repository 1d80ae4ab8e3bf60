"""Custom contact fields and upserts over the API: types, tokens, idempotency, batches."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from carepost.contacts.models import ContactStageHistory, ContactToken
from tests.conftest import phi_value

V1 = "/api/v1"
FIELDS = f"{V1}/contact-fields"
WRITER = ["contacts:read", "contacts:write", "phi:read"]


def define(client, headers, **body):
    response = client.post(FIELDS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def email() -> str:
    return f"{phi_value('mail').lower()}@example.org"


def schema(client, headers):
    define(
        client,
        headers,
        key="conditions",
        label="Conditions",
        type="multi_choice",
        choices=["e11", "i10", "j45"],
    )
    define(client, headers, key="weight", label="Weight", type="number", granularity="0.1")
    define(client, headers, key="last_visit", label="Last visit", type="date", past_only=True)
    define(client, headers, key="smoker", label="Smoker", type="boolean", phi=False)
    define(client, headers, key="notes", label="Notes", type="string", sealed=True)


def token_count(runtime, tenant, key=None):
    query = (
        select(func.count()).select_from(ContactToken).where(ContactToken.tenant_id == tenant[0].id)
    )
    if key:
        query = query.where(ContactToken.field_key == key)
    with runtime.database.session() as session:
        return session.scalar(query)


def tokens_of(runtime, tenant, key):
    query = select(ContactToken.token).where(
        ContactToken.tenant_id == tenant[0].id, ContactToken.field_key == key
    )
    with runtime.database.session() as session:
        return sorted(session.scalars(query))


def test_fields_are_defined_listed_changed_and_removed(client, tenant, make_api_key, audit_trail):
    headers = make_api_key(tenant, WRITER)
    made = define(
        client,
        headers,
        key="insurance",
        label="Insurance",
        type="choice",
        choices=["medicare", "medicaid"],
        phi=False,
    )
    assert made["granularity"] is None and made["phi"] is False
    dated = define(client, headers, key="seen", label="Seen", type="date")
    assert dated["granularity"] == "day"
    listed = client.get(FIELDS, headers=headers).json()["items"]
    assert [f["key"] for f in listed] == ["insurance", "seen"]
    path = f"{FIELDS}/{made['id']}"
    changed = client.patch(
        path, json={"label": "Plan", "choices": ["medicare", "medicaid", "va"]}, headers=headers
    )
    assert changed.status_code == 200 and changed.json()["label"] == "Plan"
    assert client.get(path, headers=headers).json()["choices"][-1] == "va"
    assert client.delete(path, headers=headers).status_code == 204
    assert client.get(path, headers=headers).status_code == 404
    actions = [e.action for e in audit_trail(tenant) if e.action.startswith("contact_field.")]
    assert actions == ["contact_field.create"] * 2 + [
        "contact_field.update",
        "contact_field.delete",
    ]


def test_bad_field_definitions_name_the_field(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    cases = [
        ({"key": "Bad Key", "label": "x", "type": "string"}, "#/body/key"),
        ({"key": "email", "label": "x", "type": "string"}, "#/body/key"),
        ({"key": "w", "label": "x", "type": "number", "granularity": "day"}, "#/body/granularity"),
        ({"key": "s", "label": "x", "type": "string", "granularity": "1"}, "#/body/granularity"),
        ({"key": "c", "label": "x", "type": "choice"}, "#/body/choices"),
        ({"key": "c", "label": "x", "type": "choice", "choices": ["a", "a"]}, "#/body/choices"),
        ({"key": "n", "label": "x", "type": "number", "past_only": True}, "#/body/past_only"),
        ({"key": "t", "label": "x", "type": "colour"}, "#/body/type"),
    ]
    for body, pointer in cases:
        response = client.post(FIELDS, json=body, headers=headers)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["pointer"] == pointer, body
    define(client, headers, key="dup", label="x", type="string")
    again = client.post(
        FIELDS, json={"key": "dup", "label": "y", "type": "string"}, headers=headers
    )
    assert again.status_code == 409


def test_a_field_with_data_keeps_its_type_and_granularity(client, tenant, make_api_key, runtime):
    headers = make_api_key(tenant, WRITER)
    weight = define(client, headers, key="weight", label="Weight", type="number")
    path = f"{FIELDS}/{weight['id']}"
    # No data yet: anything may change.
    assert client.patch(path, json={"granularity": "10"}, headers=headers).status_code == 200
    body = {"match": "email", "contact": {"email": email(), "custom": {"weight": 71}}}
    assert client.put(f"{V1}/contacts/upsert", json=body, headers=headers).status_code == 201
    for change, pointer in (({"type": "string"}, "type"), ({"granularity": "1"}, "granularity")):
        refused = client.patch(path, json=change, headers=headers)
        assert refused.status_code == 409, change
        assert "hold values" in refused.json()["detail"]
        assert refused.json()["errors"][0]["pointer"] == f"#/body/{pointer}"
    # Sealing replaces the bucket token by the presence marker: the value is still set.
    assert tokens_of(runtime, tenant, "weight") != ["*"]
    assert token_count(runtime, tenant, "weight") == 1
    assert client.patch(path, json={"sealed": True}, headers=headers).status_code == 200
    assert tokens_of(runtime, tenant, "weight") == ["*"]
    assert client.patch(path, json={"sealed": False}, headers=headers).status_code == 409


def test_upsert_creates_then_updates_and_is_idempotent(
    client, tenant, make_api_key, runtime, audit_trail
):
    headers = make_api_key(tenant, WRITER)
    schema(client, headers)
    mrn = phi_value("mrn")
    contact = {
        "email": email(),
        "external_ids": {"mrn": mrn},
        "birth_date": "1960-05-06",
        "custom": {
            "conditions": ["i10", "e11", "i10"],
            "weight": 80.25,
            "smoker": False,
            "notes": phi_value("note"),
        },
        "journey_stage": "active",
        "language": "es-MX",
        "timezone": "America/Chicago",
    }
    first = client.put(
        f"{V1}/contacts/upsert", json={"match": "mrn", "contact": contact}, headers=headers
    )
    assert first.status_code == 201, first.text
    shown = first.json()
    assert shown["custom"]["conditions"] == ["e11", "i10"]
    assert shown["external_ids"] == {"mrn": mrn}
    assert shown["journey_stage"] == "active" and shown["timezone"] == "America/Chicago"
    tokens = token_count(runtime, tenant)
    again = client.put(
        f"{V1}/contacts/upsert", json={"match": "mrn", "contact": contact}, headers=headers
    )
    assert again.status_code == 200 and again.json() == shown
    assert token_count(runtime, tenant) == tokens
    change = {"external_ids": {"mrn": mrn}, "custom": {"weight": None}, "journey_stage": "at-risk"}
    updated = client.put(
        f"{V1}/contacts/upsert", json={"match": "mrn", "contact": change}, headers=headers
    ).json()
    assert "weight" not in updated["custom"] and updated["custom"]["smoker"] is False
    assert token_count(runtime, tenant, "weight") == 0
    with runtime.database.session() as session:
        stages = session.scalars(
            select(ContactStageHistory.stage)
            .where(ContactStageHistory.contact_id == uuid.UUID(shown["id"]))
            .order_by(ContactStageHistory.changed_at)
        ).all()
    assert stages == ["active", "at-risk"]
    # The trail names fields, never values; the update answer is an audited PHI view.
    events = audit_trail(tenant, "contact.batch_upsert")
    assert len(events) == 3 and "custom/notes" in events[0].details["fields"]
    assert not any(mrn in json.dumps(e.details) for e in events)
    assert len(audit_trail(tenant, "contact.view_phi")) == 2


def test_wrong_values_per_field_type_are_refused_without_echo(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    schema(client, headers)
    secret = phi_value("bad")
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    cases = {
        "conditions": [secret],
        "weight": secret,
        "last_visit": tomorrow,
        "smoker": "yes",
        "notes": 12,
        "unknown_field": secret,
    }
    for key, value in cases.items():
        body = {"match": "email", "contact": {"email": email(), "custom": {key: value}}}
        response = client.put(f"{V1}/contacts/upsert", json=body, headers=headers)
        assert response.status_code == 422, key
        assert response.json()["errors"][0]["pointer"] == f"#/body/contact/custom/{key}"
        assert secret not in response.text
    for value in (True, "12", [1]):
        body = {"match": "email", "contact": {"email": email(), "custom": {"weight": value}}}
        assert client.put(f"{V1}/contacts/upsert", json=body, headers=headers).status_code == 422


def test_a_batch_reports_each_item_and_applies_the_good_ones(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    schema(client, headers)
    shared = email()
    items = [
        {"email": email(), "custom": {"weight": 60}},
        {"email": shared, "first_name": phi_value("first")},
        {"email": email(), "birth_date": "2999-01-01"},
        {"email": shared, "last_name": phi_value("last")},
        {"first_name": phi_value("first")},
        {"email": email(), "custom": {"conditions": ["zzz"]}},
    ]
    response = client.post(
        f"{V1}/contacts/batch", json={"match": "email", "items": items}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["failed"]) == (1, 5)
    by_index = {item["index"]: item for item in body["items"]}
    assert by_index[0]["status"] == "created"
    assert by_index[1]["errors"][0]["pointer"] == "#/body/items/1/email"
    assert "item 3 has the same email" in by_index[1]["errors"][0]["detail"]
    assert by_index[2]["errors"][0]["pointer"] == "#/body/items/2/birth_date"
    assert by_index[4]["errors"][0]["pointer"] == "#/body/items/4/email"
    assert by_index[5]["errors"][0]["pointer"] == "#/body/items/5/custom/conditions"
    again = client.post(
        f"{V1}/contacts/batch", json={"match": "email", "items": items[:1]}, headers=headers
    ).json()
    assert again["items"][0]["status"] == "unchanged"


def test_a_batch_cannot_take_another_contacts_identifier(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    taken_mrn = phi_value("mrn")
    first = {"email": email(), "external_ids": {"mrn": taken_mrn}}
    client.post(f"{V1}/contacts/batch", json={"match": "email", "items": [first]}, headers=headers)
    items = [{"email": email(), "external_ids": {"mrn": taken_mrn}}]
    body = client.post(
        f"{V1}/contacts/batch", json={"match": "email", "items": items}, headers=headers
    ).json()
    assert body["items"][0]["errors"][0] == {
        "pointer": "#/body/items/0/external_ids/mrn",
        "detail": "another contact has this mrn",
    }


def test_a_batch_over_ten_thousand_items_is_refused(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    items = [{"external_id": f"x{i}"} for i in range(10_001)]
    response = client.post(
        f"{V1}/contacts/batch", json={"match": "external_id", "items": items}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/body/items"
    assert "10000" in response.json()["errors"][0]["detail"]


def test_a_full_batch_of_ten_thousand_applies(client, tenant, make_api_key, runtime):
    headers = make_api_key(tenant, WRITER)
    define(client, headers, key="score", label="Score", type="number")
    items = [{"external_id": f"b{i}", "custom": {"score": i % 50}} for i in range(10_000)]
    body = client.post(
        f"{V1}/contacts/batch", json={"match": "external_id", "items": items}, headers=headers
    ).json()
    assert body["created"] == 10_000
    assert token_count(runtime, tenant, "score") == 10_000  # one bucket token each
