"""Segments over the API: saving, validation errors that point at the bad node, the
live count, members with and without PHI, exports (permissions, audit, formula
neutralization), snapshots, and tenant isolation."""

from __future__ import annotations

import csv
import io
import uuid

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, lists, upserts
from carepost.contacts import service as contacts
from carepost.segments import service
from tests.canaries import phi_value

V1 = "/api/v1"
READER = ["contacts:read"]


def _setup(runtime, tenant, count: int = 3) -> dict:
    tenant_row, keys = tenant
    names = [phi_value("first") for _ in range(count)]
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
        custom_fields.create_field(
            session, tenant_row.id, key="zip", label="ZIP", type="string", phi=False, actor=SYSTEM
        )
        items = [
            {
                "email": f"{name.lower()}@example.org",
                "first_name": name,
                "custom": {"conditions": ["e11"] if n % 2 == 0 else ["i10"], "zip": f"7870{n}"},
            }
            for n, name in enumerate(names)
        ]
        results = upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
        ids = [r.id for r in results]
        listed = lists.create_list(session, tenant_row.id, name="l", description="", actor=SYSTEM)
        lists.change_members(
            session, tenant_row.id, listed.id, add=ids[:2], remove=[], actor=SYSTEM
        )
    return {"ids": ids, "names": names, "list_id": str(listed.id)}


DIABETICS = {"field": "conditions", "op": "contains_any", "value": ["e11"]}


def test_create_read_update_delete_a_segment(client, runtime, tenant, make_api_key, audit_trail):
    _setup(runtime, tenant)
    headers = make_api_key(tenant)
    body = {"name": "Diabetics", "description": "E11", "rule": DIABETICS}
    created = client.post(f"{V1}/segments", json=body, headers=headers)
    assert created.status_code == 201, created.text
    segment = created.json()
    assert segment["rule"] == DIABETICS and segment["created_by_type"] == "api_key"
    path = f"{V1}/segments/{segment['id']}"
    assert client.get(path, headers=headers).json()["name"] == "Diabetics"
    assert client.post(f"{V1}/segments", json=body, headers=headers).status_code == 409
    changed = client.patch(path, json={"rule": {"not": DIABETICS}}, headers=headers)
    assert changed.status_code == 200 and changed.json()["updated_by_type"] == "api_key"
    listed = client.get(f"{V1}/segments", headers=headers).json()
    assert [s["id"] for s in listed["items"]] == [segment["id"]]
    assert client.delete(path, headers=headers).status_code == 204
    assert client.get(path, headers=headers).status_code == 404
    actions = [e.action for e in audit_trail(tenant) if e.action.startswith("segment.")]
    assert actions == ["segment.create", "segment.update", "segment.delete"]


def test_an_invalid_rule_is_refused_with_pointers_to_the_bad_nodes(
    client, runtime, tenant, make_api_key
):
    _setup(runtime, tenant)
    headers = make_api_key(tenant)
    rule = {
        "all": [
            DIABETICS,
            {"field": "conditions", "op": "between", "value": [1, 2]},
            {"any": [{"field": "nope", "op": "equals", "value": "x"}]},
            {"list": str(uuid.uuid4())},
            {"event": {"kind": "never_seen"}},
            {"consent": {"channel": "fax", "purpose": "marketing", "status": "granted"}},
            {"bogus": 1},
        ]
    }
    response = client.post(f"{V1}/segments", json={"name": "x", "rule": rule}, headers=headers)
    assert response.status_code == 422
    problem = response.json()
    pointers = [e["pointer"] for e in problem["errors"]]
    assert pointers == [
        "#/body/rule/all/1/op",
        "#/body/rule/all/2/any/0/field",
        "#/body/rule/all/3/list",
        "#/body/rule/all/4/event/kind",
        "#/body/rule/all/5/consent/channel",
        "#/body/rule/all/6",
    ]
    assert "contains_all" in problem["errors"][0]["detail"]
    assert client.get(f"{V1}/segments", headers=headers).json()["items"] == []


def test_limits_are_enforced(client, runtime, tenant, make_api_key):
    _setup(runtime, tenant)
    headers = make_api_key(tenant)
    deep: dict = DIABETICS
    for _ in range(9):
        deep = {"not": deep}
    wide = {"any": [DIABETICS] * 201}
    many = {"field": "zip", "op": "in", "value": [str(n) for n in range(1001)]}
    for rule, pointer in (
        (deep, "#/body/rule" + "/not" * 8),
        (wide, "#/body/rule/any/199"),
        (many, "#/body/rule/value"),
    ):
        answer = client.post(f"{V1}/segments/preview", json={"rule": rule}, headers=headers)
        assert answer.status_code == 200
        assert answer.json()["valid"] is False
        assert answer.json()["errors"][0]["pointer"] == pointer


def test_preview_counts_live_and_reports_errors(client, runtime, tenant, make_api_key):
    world = _setup(runtime, tenant)
    headers = make_api_key(tenant, READER)
    rule = {"all": [DIABETICS, {"list": world["list_id"]}]}
    answer = client.post(f"{V1}/segments/preview", json={"rule": rule}, headers=headers)
    assert answer.json() == {"valid": True, "count": 1, "errors": []}
    bad = client.post(
        f"{V1}/segments/preview",
        json={"rule": {"field": "zip", "op": "contains_any", "value": ["x"]}},
        headers=headers,
    ).json()
    assert bad["valid"] is False and bad["count"] is None
    assert bad["errors"][0]["pointer"] == "#/body/rule/op"


def test_count_members_and_phi_audit(client, runtime, tenant, make_api_key, audit_trail):
    world = _setup(runtime, tenant, count=5)
    writer = make_api_key(tenant)
    segment = client.post(
        f"{V1}/segments", json={"name": "d", "rule": DIABETICS}, headers=writer
    ).json()
    path = f"{V1}/segments/{segment['id']}"
    assert client.get(f"{path}/count", headers=writer).json()["count"] == 3
    plain = client.get(f"{path}/members", headers=make_api_key(tenant, READER))
    assert plain.status_code == 200
    assert [m["phi_redacted"] for m in plain.json()["items"]] == [True] * 3
    assert not any(name in plain.text for name in world["names"])
    assert audit_trail(tenant, "contact.view_phi") == []
    first = client.get(f"{path}/members", params={"limit": 2}, headers=writer).json()
    rest = client.get(
        f"{path}/members", params={"cursor": first["next_cursor"]}, headers=writer
    ).json()
    shown = [m["id"] for m in first["items"] + rest["items"]]
    assert shown == sorted(str(i) for i in world["ids"][::2])
    assert first["items"][0]["first_name"] in world["names"]
    views = audit_trail(tenant, "contact.view_phi")
    assert [v.details["via"] for v in views] == ["segment", "segment"]
    assert views[0].details["count"] == 2 and views[0].details["segment_id"] == segment["id"]
    # Dynamic: a change in the data shows at once.
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        contacts.delete_contact(
            session, tenant_id=tenant_row.id, contact_id=world["ids"][0], actor=SYSTEM
        )
    assert client.get(f"{path}/count", headers=writer).json()["count"] == 2


def _read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_export_needs_phi_export_for_phi_columns_and_is_audited(
    client, runtime, tenant, make_api_key, audit_trail
):
    world = _setup(runtime, tenant)
    writer = make_api_key(tenant)
    segment = client.post(
        f"{V1}/segments", json={"name": "d", "rule": DIABETICS}, headers=writer
    ).json()
    path = f"{V1}/segments/{segment['id']}/export"
    no_export = make_api_key(tenant, ["contacts:read", "phi:read"])
    refused = client.post(path, json={"columns": ["id", "first_name"]}, headers=no_export)
    assert refused.status_code == 403
    plain = client.post(path, json={"columns": ["id", "custom.zip"]}, headers=no_export)
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/csv")
    assert _read_csv(plain.text)[0] == ["id", "custom.zip"]
    assert len(_read_csv(plain.text)) == 3
    full = client.post(
        path, json={"columns": ["id", "first_name", "custom.conditions"]}, headers=writer
    )
    rows = _read_csv(full.text)
    assert sorted(r[1] for r in rows[1:]) == sorted([world["names"][0], world["names"][2]])
    assert rows[1][2] == "e11"
    exports = audit_trail(tenant, "segment.export")
    assert [e.details["rows"] for e in exports] == [2, 2]
    assert exports[1].details["phi_columns"] == ["first_name", "custom.conditions"]
    for event in exports:
        assert not any(name in str(event.details) for name in world["names"])
    unknown = client.post(path, json={"columns": ["id", "ssn"]}, headers=writer)
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["pointer"] == "#/body/columns/1"


def test_export_neutralizes_formula_cells(client, runtime, tenant, make_api_key):
    _setup(runtime, tenant, count=0)
    _tenant_row, keys = tenant
    dangerous = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain"]
    with runtime.bound_session(keys) as session:
        upserts.upsert_contacts(
            session,
            keys,
            [
                {"email": f"f{n}@example.org", "custom": {"zip": value, "conditions": ["e11"]}}
                for n, value in enumerate(dangerous)
                if value.strip()
            ],
            match="email",
            actor=SYSTEM,
        )
    headers = make_api_key(tenant)
    segment = client.post(
        f"{V1}/segments", json={"name": "f", "rule": DIABETICS}, headers=headers
    ).json()
    answer = client.post(
        f"{V1}/segments/{segment['id']}/export", json={"columns": ["custom.zip"]}, headers=headers
    )
    cells = sorted(row[0] for row in _read_csv(answer.text)[1:])
    # Stored strings are trimmed, so the tab and CR cases arrive as plain "x".
    assert cells == sorted(
        ['\'=HYPERLINK("http://x")', "'+1+1", "'-2", "'@SUM(A1)", "x", "x", "plain"]
    )


def test_every_formula_trigger_is_neutralized():
    for trigger in ("=", "+", "-", "@", "\t", "\r"):
        assert service.neutralise_cell(f"{trigger}cmd") == f"'{trigger}cmd"
    assert service.neutralise_cell("safe=1") == "safe=1"


def test_a_snapshot_freezes_the_members(client, runtime, tenant, make_api_key, audit_trail):
    world = _setup(runtime, tenant, count=4)
    headers = make_api_key(tenant)
    segment = client.post(
        f"{V1}/segments", json={"name": "d", "rule": DIABETICS}, headers=headers
    ).json()
    path = f"{V1}/segments/{segment['id']}"
    taken = client.post(f"{path}/snapshots", json={"reason": "campaign 1"}, headers=headers)
    assert taken.status_code == 201 and taken.json()["member_count"] == 2
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        upserts.upsert_contacts(
            session,
            keys,
            [{"email": "new@example.org", "custom": {"conditions": ["e11"]}}],
            match="email",
            actor=SYSTEM,
        )
    assert client.get(f"{path}/count", headers=headers).json()["count"] == 3
    again = client.get(f"{path}/snapshots/{taken.json()['id']}", headers=headers)
    assert again.json()["member_count"] == 2
    with runtime.bound_session(keys) as session:
        frozen = list(
            service.snapshot_member_ids(session, tenant_row.id, uuid.UUID(taken.json()["id"]))
        )
    assert frozen == sorted(world["ids"][::2])
    [event] = audit_trail(tenant, "segment.snapshot")
    assert event.details["members"] == 2


def test_segments_of_another_tenant_are_not_found(client, runtime, make_tenant, make_api_key):
    a, b = make_tenant(), make_tenant()
    b_world = _setup(runtime, b)
    _setup(runtime, a)
    b_segment = client.post(
        f"{V1}/segments", json={"name": "b", "rule": DIABETICS}, headers=make_api_key(b)
    ).json()
    headers = make_api_key(a)
    for method, suffix, body in (
        ("GET", "", None),
        ("GET", "/count", None),
        ("GET", "/members", None),
        ("POST", "/export", {}),
        ("POST", "/snapshots", {"reason": "x"}),
        ("PATCH", "", {"name": "mine"}),
        ("DELETE", "", None),
    ):
        answer = client.request(
            method, f"{V1}/segments/{b_segment['id']}{suffix}", json=body, headers=headers
        )
        assert answer.status_code == 404, (method, suffix)
    # A's rule cannot name B's list: it is unknown in A.
    answer = client.post(
        f"{V1}/segments/preview", json={"rule": {"list": b_world["list_id"]}}, headers=headers
    ).json()
    assert answer["valid"] is False and answer["errors"][0]["pointer"] == "#/body/rule/list"
