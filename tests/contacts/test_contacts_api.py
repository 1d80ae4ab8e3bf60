"""Contacts over the API: validation, uniqueness by blind index, PHI masking, PHI-view audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from tests.conftest import phi_value

CONTACTS = "/api/v1/contacts"
READ_ONLY = ["contacts:read"]
READ_PHI = ["contacts:read", "phi:read"]
WRITER = ["contacts:read", "contacts:write", "phi:read"]


def new_contact(**overrides):
    """A valid contact body whose every PHI value is a registered canary."""
    body = {
        "email": f"{phi_value('mail').lower()}@example.org",
        "phone": "+14155552671",
        "external_id": phi_value("mrn"),
        "first_name": phi_value("first"),
        "last_name": phi_value("last"),
        "birth_date": "1961-04-12",
    }
    return body | overrides


def create(client, headers, **overrides):
    body = new_contact(**overrides)
    response = client.post(CONTACTS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return body, response.json()


def test_create_normalizes_and_returns_phi_to_a_phi_reader(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    local = phi_value("mail").lower()
    body, created = create(
        client, headers, email=f"  {local}@EXAMPLE.org ", phone="+1 415-555-2671"
    )
    assert created["email"] == f"{local}@example.org"
    assert created["phone"] == "+14155552671"
    assert created["first_name"] == body["first_name"]
    assert created["birth_date"] == "1961-04-12"
    assert created["phi_redacted"] is False
    fetched = client.get(f"{CONTACTS}/{created['id']}", headers=headers).json()
    assert fetched == created


def test_create_is_audited_with_field_names_only(client, tenant, make_api_key, audit_trail):
    headers = make_api_key(tenant, WRITER)
    body, created = create(client, headers)
    [event] = audit_trail(tenant, "contact.create")
    assert event.object_id == created["id"]
    assert event.details == {"fields": sorted(body)}
    dumped = json.dumps(event.details) + event.reason + event.actor_label
    assert not any(str(value) in dumped for value in body.values())


def test_email_and_external_id_are_unique_per_tenant(client, make_tenant, make_api_key):
    tenant_a, tenant_b = make_tenant(), make_tenant()
    headers_a = make_api_key(tenant_a, WRITER)
    body, _ = create(client, headers_a)
    again = client.post(
        CONTACTS,
        json=new_contact(email=body["email"].upper()),
        headers=headers_a,
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["errors"][0]["pointer"] == "#/body/email"
    same_mrn = client.post(
        CONTACTS, json=new_contact(external_id=body["external_id"]), headers=headers_a
    )
    assert same_mrn.status_code == 409
    assert same_mrn.json()["errors"][0]["pointer"] == "#/body/external_id"
    # Phones are shared by families: not unique.
    create(client, headers_a, phone=body["phone"])
    # Another organization may hold the same person.
    create(client, make_api_key(tenant_b, WRITER), email=body["email"])


def test_update_cannot_take_another_contacts_email(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    first, _ = create(client, headers)
    _, second = create(client, headers)
    response = client.patch(
        f"{CONTACTS}/{second['id']}", json={"email": first["email"]}, headers=headers
    )
    assert response.status_code == 409
    assert response.json()["errors"][0]["pointer"] == "#/body/email"


def test_invalid_values_name_the_field_and_never_echo_the_value(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    secret = phi_value("bad")
    cases = {
        "email": f"{secret}-not-an-address",
        "phone": f"{secret}",
        "birth_date": tomorrow,
    }
    for field, value in cases.items():
        response = client.post(CONTACTS, json=new_contact(**{field: value}), headers=headers)
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        pointers = [e["pointer"] for e in response.json()["errors"]]
        assert pointers in (
            [f"#/{field}"],
            [f"#/body/{field}"],
        ), pointers
        assert secret not in response.text
    assert client.get(CONTACTS, headers=headers).json()["items"] == []


def test_phone_needs_international_format(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    for phone in ("4155552671", "+1 555", "+999 1234567"):
        response = client.post(CONTACTS, json=new_contact(phone=phone), headers=headers)
        assert response.status_code == 422, phone
        assert response.json()["errors"][0]["pointer"] == "#/body/phone"


def test_birth_date_must_be_an_iso_date(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    for value in (19610412, "12/04/1961", "1961-13-01", "1700-01-01", True):
        response = client.post(CONTACTS, json=new_contact(birth_date=value), headers=headers)
        assert response.status_code == 422, value
        assert response.json()["errors"][0]["pointer"].endswith("/birth_date")


def test_reader_without_phi_permission_sees_masked_contacts(
    client, tenant, make_api_key, audit_trail
):
    writer = make_api_key(tenant, WRITER)
    body, created = create(client, writer)
    reader = make_api_key(tenant, READ_ONLY)
    views_before = len(audit_trail(tenant, "contact.view_phi"))
    one = client.get(f"{CONTACTS}/{created['id']}", headers=reader)
    assert one.status_code == 200
    page = client.get(CONTACTS, headers=reader).json()
    for shown in (one.json(), page["items"][0]):
        assert shown["phi_redacted"] is True
        assert shown["id"] == created["id"]
        for field in body:
            assert shown[field] is None
    assert not any(str(v) in one.text + json.dumps(page) for v in body.values())
    assert len(audit_trail(tenant, "contact.view_phi")) == views_before


def test_every_phi_view_is_audited_without_values(client, tenant, make_api_key, audit_trail):
    writer = make_api_key(tenant, WRITER)
    _body, created = create(client, writer)
    reader = make_api_key(tenant, READ_PHI)
    assert client.get(f"{CONTACTS}/{created['id']}", headers=reader).json()["email"]
    [view] = audit_trail(tenant, "contact.view_phi")
    assert view.object_type == "contact" and view.object_id == created["id"]
    assert view.actor_type == "api_key"
    assert view.details == {"via": "get"}


def test_list_views_are_audited_once_per_page_with_count_and_ids(
    client, tenant, make_api_key, audit_trail
):
    writer = make_api_key(tenant, WRITER)
    ids = [create(client, writer)[1]["id"] for _ in range(5)]
    reader = make_api_key(tenant, READ_PHI)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(CONTACTS, params=params, headers=reader).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    views = audit_trail(tenant, "contact.view_phi")
    assert len(views) == pages == 3
    assert [v.details["count"] for v in views] == [2, 2, 1]
    assert [i for v in views for i in v.details["contact_ids"]] == ids
    assert all(v.details["via"] == "list" for v in views)


def test_lookup_by_email_uses_the_body_and_is_audited(client, tenant, make_api_key, audit_trail):
    writer = make_api_key(tenant, WRITER)
    body, created = create(client, writer)
    create(client, writer)
    reader = make_api_key(tenant, READ_PHI)
    found = client.post(f"{CONTACTS}/lookup", json={"email": body["email"].upper()}, headers=reader)
    assert found.status_code == 200
    assert [c["id"] for c in found.json()["items"]] == [created["id"]]
    [view] = audit_trail(tenant, "contact.view_phi")
    assert view.details == {"via": "lookup", "count": 1, "contact_ids": [created["id"]]}
    none = client.post(f"{CONTACTS}/lookup", json={"external_id": "nobody"}, headers=reader)
    assert none.json() == {"items": []}
    by_phone = client.post(f"{CONTACTS}/lookup", json={"phone": "+1 415 555 2671"}, headers=reader)
    assert len(by_phone.json()["items"]) == 2


def test_lookup_needs_phi_permission_and_exactly_one_criterion(client, tenant, make_api_key):
    masked = make_api_key(tenant, READ_ONLY)
    response = client.post(f"{CONTACTS}/lookup", json={"email": "a@b.example"}, headers=masked)
    assert response.status_code == 403
    reader = make_api_key(tenant, READ_PHI)
    for body in ({}, {"email": "a@b.example", "phone": "+14155552671"}):
        assert client.post(f"{CONTACTS}/lookup", json=body, headers=reader).status_code == 422


def test_phi_in_a_query_string_is_refused(client, tenant, make_api_key):
    reader = make_api_key(tenant, READ_PHI)
    response = client.get(CONTACTS, params={"email": "someone@example.org"}, headers=reader)
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/query/email"
    assert "someone@example.org" not in response.text


def test_update_changes_and_clears_fields_and_audits_names(
    client, tenant, make_api_key, audit_trail
):
    headers = make_api_key(tenant, WRITER)
    body, created = create(client, headers)
    new_name = phi_value("first")
    response = client.patch(
        f"{CONTACTS}/{created['id']}",
        json={"first_name": new_name, "phone": None, "last_name": body["last_name"]},
        headers=headers,
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["first_name"] == new_name and updated["phone"] is None
    assert updated["email"] == body["email"] and updated["updated_at"]
    [event] = audit_trail(tenant, "contact.update")
    assert event.details == {"fields": ["first_name", "phone"]}
    assert new_name not in json.dumps(event.details)
    # The answer carried stored PHI: a view.
    assert audit_trail(tenant, "contact.view_phi")[-1].details == {"via": "update"}
    # Nothing changed: nothing to audit.
    client.patch(f"{CONTACTS}/{created['id']}", json={"first_name": new_name}, headers=headers)
    assert len(audit_trail(tenant, "contact.update")) == 1


def test_delete_removes_the_contact_and_is_audited(client, tenant, make_api_key, audit_trail):
    headers = make_api_key(tenant, WRITER)
    _, created = create(client, headers)
    response = client.delete(f"{CONTACTS}/{created['id']}", headers=headers)
    assert response.status_code == 204 and response.content == b""
    assert client.get(f"{CONTACTS}/{created['id']}", headers=headers).status_code == 404
    assert client.delete(f"{CONTACTS}/{created['id']}", headers=headers).status_code == 404
    [event] = audit_trail(tenant, "contact.delete")
    assert event.object_id == created["id"]


def test_writes_need_contacts_write(client, tenant, make_api_key):
    writer = make_api_key(tenant, WRITER)
    _, created = create(client, writer)
    reader = make_api_key(tenant, READ_PHI)
    assert client.post(CONTACTS, json=new_contact(), headers=reader).status_code == 403
    path = f"{CONTACTS}/{created['id']}"
    assert client.patch(path, json={"first_name": "X"}, headers=reader).status_code == 403
    assert client.delete(path, headers=reader).status_code == 403


def test_writer_without_phi_read_gets_a_masked_answer(client, tenant, make_api_key):
    headers = make_api_key(tenant, ["contacts:write"])
    response = client.post(CONTACTS, json=new_contact(), headers=headers)
    assert response.status_code == 201
    assert response.json()["phi_redacted"] is True and response.json()["email"] is None


def test_identifiers_are_stored_as_ciphertext_and_keyed_tokens(
    runtime, client, tenant, make_api_key
):
    headers = make_api_key(tenant, WRITER)
    body, created = create(client, headers)
    contact_id = created["id"].replace("-", "") if runtime.database.is_sqlite else created["id"]
    with runtime.database.engine.connect() as connection:
        row = (
            connection.execute(text("SELECT * FROM contacts WHERE id = :id"), {"id": contact_id})
            .mappings()
            .one()
        )
    stored = repr(dict(row))
    for value in body.values():
        assert str(value) not in stored
    assert len(row["email_index"]) == 40 and row["email_index"] != row["external_id_index"]
