"""Journey stages over the API: an organization lists its stages and defines its own
(``/journey-stages``); keys are lower-case slugs, unique, immutable; built-in stages
never change; another organization never sees them."""

from __future__ import annotations

from carepost.contacts.models import BUILT_IN_STAGES
from tests.conftest import phi_value

V1 = "/api/v1"
STAGES = f"{V1}/journey-stages"
READER = ["contacts:read"]
WRITER = ["contacts:read", "contacts:write"]
PROBLEM = "application/problem+json"


def define(client, headers, key: str, label: str) -> dict:
    response = client.post(STAGES, json={"key": key, "label": label}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def listed(client, headers) -> list[dict]:
    response = client.get(STAGES, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def upsert_in_stage(client, headers, stage: str):
    contact = {"email": f"{phi_value('mail').lower()}@example.org", "journey_stage": stage}
    return client.put(
        f"{V1}/contacts/upsert", json={"match": "email", "contact": contact}, headers=headers
    )


def test_a_new_organization_has_the_built_in_stages(client, tenant, make_api_key):
    items = listed(client, make_api_key(tenant, READER))
    assert [(s["key"], s["built_in"], s["contact_count"]) for s in items] == [
        (key, True, 0) for key in BUILT_IN_STAGES
    ]


def test_define_list_rename_and_use_a_stage(client, tenant, make_api_key, audit_trail):
    headers = make_api_key(tenant, WRITER)
    made = define(client, headers, "post-op", "After surgery")
    assert made["key"] == "post-op" and made["label"] == "After surgery"
    assert made["built_in"] is False and made["contact_count"] == 0 and made["created_at"]
    define(client, headers, "pre_op", "Before surgery")
    # Built-in stages first in journey order, then the organization's own by label.
    assert [s["key"] for s in listed(client, headers)] == [*BUILT_IN_STAGES, "post-op", "pre_op"]

    # Contacts can move to it at once, and the list counts them.
    assert upsert_in_stage(client, headers, "post-op").status_code == 201
    counts = {s["key"]: s["contact_count"] for s in listed(client, headers)}
    assert counts["post-op"] == 1 and counts["pre_op"] == 0

    renamed = client.patch(f"{STAGES}/post-op", json={"label": "Recovery"}, headers=headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["label"] == "Recovery" and renamed.json()["contact_count"] == 1
    assert "Recovery" in {s["label"] for s in listed(client, headers)}

    events = [e for e in audit_trail(tenant) if e.action.startswith("journey_stage.")]
    assert [(e.action, e.details) for e in events] == [
        ("journey_stage.create", {"key": "post-op"}),
        ("journey_stage.create", {"key": "pre_op"}),
        ("journey_stage.update", {"key": "post-op", "changed": ["label"]}),
    ]
    assert events[0].object_type == "journey_stage"


def test_a_duplicate_key_is_a_conflict_naming_the_key(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    define(client, headers, "post-op", "After surgery")
    for key in ("post-op", "at-risk", "new"):
        response = client.post(STAGES, json={"key": key, "label": "Again"}, headers=headers)
        assert response.status_code == 409, key
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["status"] == 409
        assert [e["pointer"] for e in problem["errors"]] == ["#/body/key"], key
    assert [s["label"] for s in listed(client, headers)].count("After surgery") == 1


def test_bad_input_is_refused_naming_the_field(client, tenant, make_api_key, audit_trail):
    headers = make_api_key(tenant, WRITER)
    cases = [
        ({"key": "Post-Op", "label": "x"}, "#/body/key"),
        ({"key": "post op", "label": "x"}, "#/body/key"),
        ({"key": "post--op", "label": "x"}, "#/body/key"),
        ({"key": "-post", "label": "x"}, "#/body/key"),
        ({"key": "2nd-visit", "label": "x"}, "#/body/key"),
        ({"key": "café", "label": "x"}, "#/body/key"),
        ({"key": "k" * 41, "label": "x"}, "#/body/key"),
        ({"key": "", "label": "x"}, "#/body/key"),
        ({"key": "ok", "label": "   "}, "#/body/label"),
        ({"key": "ok", "label": "two\nlines"}, "#/body/label"),
        ({"key": "ok"}, "#/body/label"),
        ({"key": "ok", "label": "x", "colour": "red"}, "#/body/colour"),
    ]
    for body, pointer in cases:
        response = client.post(STAGES, json=body, headers=headers)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["errors"][0]["pointer"] == pointer, (body, response.json())
    assert [s["key"] for s in listed(client, headers)] == list(BUILT_IN_STAGES)
    assert not audit_trail(tenant, "journey_stage.create")


def test_built_in_stages_never_change_and_unknown_ones_are_not_found(client, tenant, make_api_key):
    headers = make_api_key(tenant, WRITER)
    built_in = client.patch(f"{STAGES}/at-risk", json={"label": "Risky"}, headers=headers)
    assert built_in.status_code == 409 and built_in.headers["content-type"] == PROBLEM
    assert built_in.json()["errors"][0]["pointer"] == "#/path/stage_key"
    missing = client.patch(f"{STAGES}/no-such", json={"label": "x"}, headers=headers)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    define(client, headers, "post-op", "After surgery")
    blank = client.patch(f"{STAGES}/post-op", json={"label": " "}, headers=headers)
    assert blank.status_code == 422
    assert blank.json()["errors"][0]["pointer"] == "#/body/label"


def test_changing_stages_needs_contacts_write(
    client, tenant, make_api_key, make_user, sign_in, audit_trail
):
    define(client, make_api_key(tenant, WRITER), "post-op", "After surgery")
    analyst_id, _email, _password = make_user(tenant, "analyst")
    for headers in (make_api_key(tenant, READER), sign_in(tenant, analyst_id)):
        assert len(listed(client, headers)) == len(BUILT_IN_STAGES) + 1
        refused = [
            client.post(STAGES, json={"key": "pre-op", "label": "x"}, headers=headers),
            client.patch(f"{STAGES}/post-op", json={"label": "x"}, headers=headers),
        ]
        for response in refused:
            assert response.status_code == 403
            assert response.headers["content-type"] == PROBLEM
    nothing = client.get(STAGES, headers=make_api_key(tenant, ["consent:read"]))
    assert nothing.status_code == 403
    assert [e.details for e in audit_trail(tenant, "journey_stage.create")] == [{"key": "post-op"}]
    assert not audit_trail(tenant, "journey_stage.update")


def test_another_organization_never_sees_or_uses_the_stage(client, make_tenant, make_api_key):
    a, b = make_tenant("Clinic A"), make_tenant("Clinic B")
    a_headers, b_headers = make_api_key(a, WRITER), make_api_key(b, WRITER)
    define(client, a_headers, "post-op", "After surgery")
    assert "post-op" not in {s["key"] for s in listed(client, b_headers)}
    # B cannot rename A's stage, nor put its contacts in it...
    renamed = client.patch(f"{STAGES}/post-op", json={"label": "Mine"}, headers=b_headers)
    assert renamed.status_code == 404
    refused = upsert_in_stage(client, b_headers, "post-op")
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["pointer"].endswith("journey_stage")
    # ...and may define a stage with the same key, its own.
    define(client, b_headers, "post-op", "Post-operative")
    assert {s["key"]: s["label"] for s in listed(client, a_headers)}["post-op"] == "After surgery"
    assert {s["key"]: s["label"] for s in listed(client, b_headers)}["post-op"] == "Post-operative"
