"""Lists over the API: CRUD, set-based membership changes, per-id errors, audit."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event, insert, select

from carepost.audit.service import SYSTEM
from carepost.contacts import lists
from carepost.contacts.activity_models import ListMembership
from carepost.contacts.models import Contact
from carepost.core.database import new_id

V1 = "/api/v1"
WRITER = ["contacts:read", "contacts:write"]


def make_contacts(runtime, tenant, count: int) -> list[uuid.UUID]:
    """Bare contacts (no PHI), inserted in one statement."""
    ids = [new_id() for _ in range(count)]
    with runtime.bound_session(tenant[1]) as session:
        session.execute(
            insert(Contact),
            [{"id": i, "tenant_id": tenant[0].id, "journey_stage": "new"} for i in ids],
        )
    return ids


def new_list(client, headers, name="Diabetes outreach"):
    response = client.post(f"{V1}/lists", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def members(client, headers, list_id):
    found, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"{V1}/lists/{list_id}/members", params=params, headers=headers).json()
        found += [item["contact_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return found


def test_a_list_is_created_read_renamed_listed_and_deleted(
    client, tenant, make_api_key, audit_trail
):
    headers = make_api_key(tenant, WRITER)
    made = new_list(client, headers)
    assert made["member_count"] == 0 and made["description"] == ""
    path = f"{V1}/lists/{made['id']}"
    assert client.get(path, headers=headers).json()["name"] == "Diabetes outreach"
    renamed = client.patch(path, json={"name": "Outreach", "description": "Q3"}, headers=headers)
    assert renamed.status_code == 200 and renamed.json()["updated_at"] is not None
    assert [i["name"] for i in client.get(f"{V1}/lists", headers=headers).json()["items"]] == [
        "Outreach"
    ]
    assert client.delete(path, headers=headers).status_code == 204
    assert client.get(path, headers=headers).status_code == 404
    actions = [e.action for e in audit_trail(tenant) if e.action.startswith("list.")]
    assert actions == ["list.create", "list.update", "list.delete"]
    update = audit_trail(tenant, "list.update")[0]
    assert update.details == {"fields": ["description", "name"]}


def test_list_names_are_unique_per_tenant(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    new_list(client, headers, "A")
    other = new_list(client, headers, "B")
    again = client.post(f"{V1}/lists", json={"name": "A"}, headers=headers)
    assert again.status_code == 409 and again.json()["errors"][0]["pointer"] == "#/body/name"
    clash = client.patch(f"{V1}/lists/{other['id']}", json={"name": "A"}, headers=headers)
    assert clash.status_code == 409


def test_members_are_added_listed_and_removed_with_history(
    client, runtime, tenant, make_api_key, audit_trail
):
    headers = make_api_key(tenant, WRITER)
    made = new_list(client, headers)
    path = f"{V1}/lists/{made['id']}/members"
    a, b, c = (str(i) for i in make_contacts(runtime, tenant, 3))
    added = client.post(path, json={"add": [a, b, c]}, headers=headers).json()
    assert added == {"added": 3, "removed": 0, "unchanged": 0, "failed": 0, "errors": []}
    assert sorted(members(client, headers, made["id"])) == sorted([a, b, c])
    # Re-adding is a no-op; removing ends the stint; removing again is a no-op.
    again = client.post(path, json={"add": [a], "remove": [b]}, headers=headers).json()
    assert (again["added"], again["removed"], again["unchanged"]) == (0, 1, 1)
    twice = client.post(path, json={"remove": [b]}, headers=headers).json()
    assert (twice["removed"], twice["unchanged"]) == (0, 1)
    assert sorted(members(client, headers, made["id"])) == sorted([a, c])
    assert client.get(f"{V1}/lists/{made['id']}", headers=headers).json()["member_count"] == 2
    # Rejoining starts a new stint; the old one keeps its left_at.
    client.post(path, json={"add": [b]}, headers=headers)
    with runtime.database.session() as session:
        stints = session.execute(
            select(ListMembership.joined_at, ListMembership.left_at)
            .where(ListMembership.contact_id == uuid.UUID(b))
            .order_by(ListMembership.id)
        ).all()
    assert len(stints) == 2 and stints[0].left_at is not None and stints[1].left_at is None
    details = [e.details for e in audit_trail(tenant, "list.members")]
    assert details[0] == {"added": 3, "removed": 0, "unchanged": 0, "failed": 0}
    assert a not in str(details)


def test_bad_ids_get_their_own_errors_and_the_others_apply(
    client, runtime, tenant, make_tenant, make_api_key
):
    headers = make_api_key(tenant, WRITER)
    made = new_list(client, headers)
    good, twice, both = (str(i) for i in make_contacts(runtime, tenant, 3))
    [foreign] = (str(i) for i in make_contacts(runtime, make_tenant("Other"), 1))
    unknown = str(uuid.uuid4())
    body = {"add": [good, twice, foreign, twice, unknown, both], "remove": [both]}
    outcome = client.post(f"{V1}/lists/{made['id']}/members", json=body, headers=headers).json()
    assert outcome["added"] == 1 and outcome["failed"] == 6
    assert outcome["errors"] == [
        {"pointer": "#/body/add/1", "detail": "this id appears more than once"},
        {"pointer": "#/body/add/2", "detail": "no such contact"},
        {"pointer": "#/body/add/3", "detail": "this id appears more than once"},
        {"pointer": "#/body/add/4", "detail": "no such contact"},
        {"pointer": "#/body/add/5", "detail": "this id is both added and removed"},
        {"pointer": "#/body/remove/0", "detail": "this id is both added and removed"},
    ]
    # Another tenant's contact and an unknown id answer alike: nothing leaks.
    assert members(client, headers, made["id"]) == [good]


def test_more_than_10000_changes_or_bad_ids_are_refused(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    made = new_list(client, headers)
    path = f"{V1}/lists/{made['id']}/members"
    too_many = {
        "add": [str(uuid.uuid4()) for _ in range(6000)],
        "remove": [str(uuid.uuid4()) for _ in range(4001)],
    }
    refused = client.post(path, json=too_many, headers=headers)
    assert refused.status_code == 422
    assert client.post(path, json={"add": ["not-an-id"]}, headers=headers).status_code == 422
    assert client.post(path, json={"drop": []}, headers=headers).status_code == 422
    assert client.get(f"{V1}/lists/{uuid.uuid4()}", headers=headers).status_code == 404
    missing = client.post(f"{V1}/lists/{uuid.uuid4()}/members", json={}, headers=headers)
    assert missing.status_code == 404


def test_bad_cursor_is_a_problem(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    made = new_list(client, headers)
    answer = client.get(
        f"{V1}/lists/{made['id']}/members", params={"cursor": "***"}, headers=headers
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["pointer"] == "#/query/cursor"


@pytest.mark.parametrize("count", [5000])
def test_adding_5000_members_is_a_bounded_number_of_statements(runtime, tenant, count):
    ids = make_contacts(runtime, tenant, count)
    statements: list[str] = []

    def count_statement(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = runtime.database.engine
    with runtime.bound_session(tenant[1]) as session:
        row = lists.create_list(session, tenant[0].id, name="Big", description="", actor=SYSTEM)
        session.flush()
        event.listen(engine, "before_cursor_execute", count_statement)
        try:
            outcome = lists.change_members(
                session, tenant[0].id, row.id, add=ids, remove=ids[:0], actor=SYSTEM
            )
            removed = lists.change_members(
                session, tenant[0].id, row.id, add=[], remove=ids[:2500], actor=SYSTEM
            )
        finally:
            event.remove(engine, "before_cursor_execute", count_statement)
    assert outcome.added == count and not outcome.errors
    assert removed.removed == 2500
    # Per call: read the list, one classifying SELECT, one INSERT…SELECT (or UPDATE)
    # in a savepoint, and the audit event's three statements; none per contact.
    assert len(statements) <= 2 * 8, statements
    writes = [s for s in statements if "list_memberships (" in s or "UPDATE list_memberships" in s]
    assert len(writes) == 2 and "SELECT" in writes[0], writes
