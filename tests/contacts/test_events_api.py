"""Contact events over the API: batches with per-item errors, kinds, timeline, PHI."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from carepost.contacts.activity_models import ContactEvent, EventKind
from tests.conftest import phi_value

V1 = "/api/v1"
WRITER = ["contacts:read", "contacts:write"]
PHI_WRITER = [*WRITER, "phi:read"]


def contact(client, headers) -> dict:
    body = {
        "email": f"{phi_value('mail').lower()}@example.org",
        "external_id": phi_value("mrn"),
    }
    response = client.post(f"{V1}/contacts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return body | {"id": response.json()["id"]}


def at(minutes_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def test_one_event_is_recorded_by_contact_id(client, tenant, make_api_key, audit_trail):
    headers = make_api_key(tenant, WRITER)
    person = contact(client, headers)
    body = {"contact_id": person["id"], "kind": "portal_login", "occurred_at": at(1)}
    response = client.post(f"{V1}/events", json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["contact_id"] == person["id"]
    [batch] = audit_trail(tenant, "contact_event.batch")
    assert batch.details == {"created": 1, "failed": 0, "kinds": 1}


def test_a_bad_single_event_is_a_problem_and_keeps_nothing(runtime, client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    person = contact(client, headers)
    body = {"contact_id": person["id"], "kind": "x", "occurred_at": "2026-01-05T10:00:00"}
    response = client.post(f"{V1}/events", json=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "pointer": "#/body/occurred_at",
            "detail": "the time needs a UTC offset (such as Z or +02:00)",
        }
    ]
    with runtime.database.session() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(EventKind)
                .where(EventKind.tenant_id == tenant[0].id)
            )
            == 0
        )


def test_a_batch_keeps_the_good_items_and_points_at_the_bad(
    runtime, client, tenant, make_tenant, make_api_key
):
    headers = make_api_key(tenant, WRITER)
    person = contact(client, headers)
    stranger = contact(client, make_api_key(make_tenant("Other"), WRITER))
    future = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    items = [
        {"contact_id": person["id"], "kind": "portal_login", "occurred_at": at(5)},
        {
            "email": person["email"].upper(),
            "kind": "form_submitted",
            "occurred_at": at(4),
            "source": "crm",
            "properties": {"form": "intake"},
        },
        {"external_id": person["external_id"], "kind": "appointment_kept", "occurred_at": at(3)},
        {"contact_id": person["id"], "kind": "portal_login", "occurred_at": "2026-01-05T10:00"},
        {"contact_id": person["id"], "kind": "portal_login", "occurred_at": future},
        {"contact_id": str(uuid.uuid4()), "kind": "portal_login", "occurred_at": at(1)},
        {"contact_id": stranger["id"], "kind": "portal_login", "occurred_at": at(1)},
        {"email": stranger["email"], "kind": "portal_login", "occurred_at": at(1)},
        {
            "contact_id": person["id"],
            "kind": "portal_login",
            "occurred_at": at(1),
            "properties": {"blob": "x" * 5000},
        },
        {"contact_id": person["id"], "email": person["email"], "kind": "a", "occurred_at": at(1)},
        {"contact_id": person["id"], "kind": "Bad Kind!", "occurred_at": at(1), "extra": 1},
        {"contact_id": person["id"], "kind": "portal_login", "occurred_at": at(1)},
    ]
    response = client.post(f"{V1}/events", json={"items": items}, headers=headers)
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert (outcome["created"], outcome["failed"]) == (4, 8)
    errors = {i["index"]: [e["pointer"] for e in i["errors"]] for i in outcome["items"]}
    assert errors == {
        0: [],
        1: [],
        2: [],
        11: [],
        3: ["#/body/items/3/occurred_at"],
        4: ["#/body/items/4/occurred_at"],
        5: ["#/body/items/5/contact_id"],
        6: ["#/body/items/6/contact_id"],
        7: ["#/body/items/7/email"],
        8: ["#/body/items/8/properties"],
        9: ["#/body/items/9/contact_id"],
        10: ["#/body/items/10/extra", "#/body/items/10/kind"],
    }
    assert outcome["items"][1]["contact_id"] == person["id"]
    assert person["email"] not in response.text and stranger["email"] not in response.text
    with runtime.bound_session(tenant[1]) as session:
        rows = session.execute(
            select(ContactEvent.sealed_properties, ContactEvent.properties, ContactEvent.source)
            .order_by(ContactEvent.id)
            .where(ContactEvent.tenant_id == tenant[0].id)
        ).all()
        kinds = session.scalars(select(EventKind.key).where(EventKind.tenant_id == tenant[0].id))
        assert sorted(kinds) == ["appointment_kept", "form_submitted", "portal_login"]
    # Properties are stored encrypted, never in the clear column.
    assert [(r.sealed_properties, r.properties) for r in rows][1] == ({"form": "intake"}, None)
    assert rows[1].source == "crm" and rows[0].source == "api"


def test_10001_items_or_an_empty_batch_are_refused(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    item = {"contact_id": str(uuid.uuid4()), "kind": "k", "occurred_at": at(1)}
    too_many = client.post(f"{V1}/events", json={"items": [item] * 10_001}, headers=headers)
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["pointer"] == "#/body/items"
    empty = client.post(f"{V1}/events", json={"items": []}, headers=headers)
    assert empty.status_code == 422


def test_the_timeline_is_newest_first_paged_filtered_and_hides_properties(
    client, tenant, make_api_key, audit_trail
):
    headers = make_api_key(tenant, WRITER)
    person = contact(client, headers)
    note = phi_value("note")
    items = [
        {"contact_id": person["id"], "kind": "portal_login", "occurred_at": at(30)},
        {
            "contact_id": person["id"],
            "kind": "appointment_kept",
            "occurred_at": at(20),
            "properties": {"note": note},
        },
        {"contact_id": person["id"], "kind": "portal_login", "occurred_at": at(10)},
    ]
    assert client.post(f"{V1}/events", json={"items": items}, headers=headers).json()["failed"] == 0
    path = f"{V1}/contacts/{person['id']}/events"
    first = client.get(path, params={"limit": 2}, headers=headers).json()
    assert [e["kind"] for e in first["items"]] == ["portal_login", "appointment_kept"]
    assert first["items"][1]["properties"] is None and first["items"][1]["properties_redacted"]
    rest = client.get(path, params={"cursor": first["next_cursor"]}, headers=headers).json()
    assert [e["kind"] for e in rest["items"]] == ["portal_login"] and rest["next_cursor"] is None
    logins = client.get(path, params={"kind": "portal_login"}, headers=headers).json()
    assert len(logins["items"]) == 2
    assert audit_trail(tenant, "contact.view_phi") == []
    # With phi:read the properties show, and the view is audited.
    reader = make_api_key(tenant, PHI_WRITER)
    shown = client.get(path, headers=reader).json()
    assert shown["items"][1]["properties"] == {"note": note}
    [view] = audit_trail(tenant, "contact.view_phi")
    assert view.object_id == person["id"] and view.details == {"via": "events"}
    bad = client.get(path, params={"cursor": "!!"}, headers=headers)
    assert bad.status_code == 422


def test_another_tenants_contact_timeline_is_not_found(client, make_tenant, make_api_key):
    a, b = make_tenant("A"), make_tenant("B")
    person = contact(client, make_api_key(b, WRITER))
    response = client.get(f"{V1}/contacts/{person['id']}/events", headers=make_api_key(a, WRITER))
    assert response.status_code == 404
