"""No request of one organization reads or changes another's data, through any route.

The routes are enumerated from the application itself. Every route that
addresses an object by id is called by tenant A (an all-scopes API key, and an
owner's console session) with the id of an object of tenant B: the answer must
be 404 (not 403: A must not even learn that the id exists), and B's object and
B's audit trail must be unchanged afterwards. Routes without an id act on the
caller's own organization; each has a check that B's data stays out of sight.

A route that appears in the application without an entry here fails
``test_every_route_is_covered``: add its factory (or check) when you add the route.
Console pages are inventoried and attacked the same way by the console's generic
suite (tests/web/console_cases.py, test_console_generic.py): a console route counts
as covered here when that inventory lists it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.security.conftest import Objects, Target, TenantPair
from tests.security.route_inventory import RouteKey, app_routes, openapi_operations

V1 = "/api/v1"


@dataclass(frozen=True)
class RouteCase:
    """How to aim a route at another tenant's object: which factory makes the object
    (a method of ``Objects``), and a valid body so that only tenancy can refuse."""

    factory: str
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    # A body that names other objects of B (from the target's facts), instead of ``json``.
    body: Callable[[Target], dict[str, Any]] | None = None


# API routes with a path parameter, by (method, path template).
API_CASES: dict[RouteKey, RouteCase] = {
    RouteKey("GET", f"{V1}/users/{{user_id}}"): RouteCase("user"),
    RouteKey("PATCH", f"{V1}/users/{{user_id}}"): RouteCase(
        "user", {"name": "Mallory", "role": "owner", "status": "disabled"}
    ),
    RouteKey("POST", f"{V1}/users/{{user_id}}/reset-mfa"): RouteCase("user"),
    RouteKey("POST", f"{V1}/users/{{user_id}}/sign-out-everywhere"): RouteCase("user"),
    RouteKey("GET", f"{V1}/api-keys/{{key_id}}"): RouteCase("api_key"),
    RouteKey("DELETE", f"{V1}/api-keys/{{key_id}}"): RouteCase("api_key"),
    RouteKey("GET", f"{V1}/contacts/{{contact_id}}"): RouteCase("contact"),
    RouteKey("PATCH", f"{V1}/contacts/{{contact_id}}"): RouteCase(
        "contact", {"first_name": "Mallory", "email": None}
    ),
    RouteKey("DELETE", f"{V1}/contacts/{{contact_id}}"): RouteCase("contact"),
    RouteKey("GET", f"{V1}/audit/events/{{event_id}}"): RouteCase("audit_event"),
    RouteKey("GET", f"{V1}/contact-fields/{{field_id}}"): RouteCase("contact_field"),
    RouteKey("PATCH", f"{V1}/contact-fields/{{field_id}}"): RouteCase(
        "contact_field", {"label": "Mallory", "sealed": True}
    ),
    RouteKey("DELETE", f"{V1}/contact-fields/{{field_id}}"): RouteCase("contact_field"),
    RouteKey("PATCH", f"{V1}/journey-stages/{{stage_key}}"): RouteCase(
        "journey_stage", {"label": "Mallory"}
    ),
    RouteKey("GET", f"{V1}/contacts/{{contact_id}}/consents"): RouteCase("consenting_contact"),
    RouteKey("POST", f"{V1}/contacts/{{contact_id}}/consents"): RouteCase(
        "consenting_contact", {"channel": "email", "purpose": "marketing", "status": "revoked"}
    ),
    RouteKey("DELETE", f"{V1}/suppressions/{{suppression_id}}"): RouteCase(
        "suppression", {"reason": "the patient asked"}
    ),
    RouteKey("GET", f"{V1}/lists/{{list_id}}"): RouteCase("contact_list"),
    RouteKey("PATCH", f"{V1}/lists/{{list_id}}"): RouteCase(
        "contact_list", {"name": "Mallory", "description": "taken over"}
    ),
    RouteKey("DELETE", f"{V1}/lists/{{list_id}}"): RouteCase("contact_list"),
    RouteKey("GET", f"{V1}/lists/{{list_id}}/members"): RouteCase("contact_list"),
    RouteKey("POST", f"{V1}/lists/{{list_id}}/members"): RouteCase(
        "contact_list", {"add": [], "remove": []}
    ),
    RouteKey("GET", f"{V1}/contacts/{{contact_id}}/events"): RouteCase("contact_with_events"),
    RouteKey("GET", f"{V1}/segments/{{segment_id}}"): RouteCase("segment"),
    RouteKey("PATCH", f"{V1}/segments/{{segment_id}}"): RouteCase(
        "segment", {"name": "Mallory", "rule": {"field": "email", "op": "is_not_set"}}
    ),
    RouteKey("DELETE", f"{V1}/segments/{{segment_id}}"): RouteCase("segment"),
    RouteKey("GET", f"{V1}/segments/{{segment_id}}/count"): RouteCase("segment"),
    RouteKey("GET", f"{V1}/segments/{{segment_id}}/members"): RouteCase("segment"),
    RouteKey("POST", f"{V1}/segments/{{segment_id}}/export"): RouteCase(
        "segment", {"columns": ["id", "email", "first_name"]}
    ),
    RouteKey("POST", f"{V1}/segments/{{segment_id}}/snapshots"): RouteCase(
        "segment", {"reason": "taken over"}
    ),
    RouteKey("GET", f"{V1}/segments/{{segment_id}}/snapshots/{{snapshot_id}}"): RouteCase(
        "segment_snapshot"
    ),
    RouteKey("GET", f"{V1}/imports/{{job_id}}"): RouteCase("import_job"),
    RouteKey("GET", f"{V1}/imports/{{job_id}}/errors"): RouteCase("import_job"),
    RouteKey("GET", f"{V1}/imports/{{job_id}}/errors.csv"): RouteCase("import_job"),
    RouteKey("POST", f"{V1}/imports/{{job_id}}/cancel"): RouteCase("import_job"),
    RouteKey("GET", f"{V1}/templates/{{template_id}}"): RouteCase("template"),
    RouteKey("PATCH", f"{V1}/templates/{{template_id}}"): RouteCase(
        "template", {"name": "Mallory", "subject": "Taken over"}
    ),
    RouteKey("DELETE", f"{V1}/templates/{{template_id}}"): RouteCase("template"),
    RouteKey("GET", f"{V1}/templates/{{template_id}}/versions"): RouteCase("template"),
    RouteKey("POST", f"{V1}/templates/{{template_id}}/preview"): RouteCase("template", {}),
    RouteKey("GET", f"{V1}/templates/{{template_id}}/variants"): RouteCase("template"),
    RouteKey("POST", f"{V1}/templates/{{template_id}}/variants"): RouteCase(
        "template", {"key": "m", "subject": "Mallory", "percent": 10}
    ),
    RouteKey("PATCH", f"{V1}/templates/{{template_id}}/variants/{{variant_id}}"): RouteCase(
        "template", {"subject": "Mallory", "percent": 0}
    ),
    RouteKey("DELETE", f"{V1}/templates/{{template_id}}/variants/{{variant_id}}"): RouteCase(
        "template"
    ),
    RouteKey("GET", f"{V1}/template-layouts/{{layout_id}}"): RouteCase("template_layout"),
    RouteKey("PATCH", f"{V1}/template-layouts/{{layout_id}}"): RouteCase(
        "template_layout", {"name": "Mallory", "html": "{{ content }} pwned"}
    ),
    RouteKey("DELETE", f"{V1}/template-layouts/{{layout_id}}"): RouteCase("template_layout"),
    RouteKey("GET", f"{V1}/domains/{{domain_id}}"): RouteCase("sending_domain"),
    RouteKey("DELETE", f"{V1}/domains/{{domain_id}}"): RouteCase("sending_domain"),
    RouteKey("POST", f"{V1}/domains/{{domain_id}}/check"): RouteCase("sending_domain"),
    RouteKey("POST", f"{V1}/domains/{{domain_id}}/rotate"): RouteCase("sending_domain"),
    RouteKey("POST", f"{V1}/domains/{{domain_id}}/promote"): RouteCase("rotated_domain"),
    RouteKey("GET", f"{V1}/gateway/clients/{{client_id}}"): RouteCase("gateway_client"),
    RouteKey("DELETE", f"{V1}/gateway/clients/{{client_id}}"): RouteCase("gateway_client"),
    RouteKey("PATCH", f"{V1}/gateway/clients/{{client_id}}"): RouteCase(
        "gateway_client", {"name": "Mallory", "networks": ["198.51.100.0/24"]}
    ),
    RouteKey("POST", f"{V1}/gateway/clients/{{client_id}}/secret"): RouteCase("gateway_client"),
    RouteKey("GET", f"{V1}/dlp/dictionaries/{{rule_id}}"): RouteCase("dlp_rule"),
    RouteKey("PATCH", f"{V1}/dlp/dictionaries/{{rule_id}}"): RouteCase(
        "dlp_rule", {"terms": ["mallory"], "severity": "low"}
    ),
    RouteKey("DELETE", f"{V1}/dlp/dictionaries/{{rule_id}}"): RouteCase("dlp_rule"),
    RouteKey("DELETE", f"{V1}/keys/{{key_id}}"): RouteCase("recipient_key"),
    RouteKey("POST", f"{V1}/keys/{{key_id}}/revoke"): RouteCase("recipient_key"),
    # B's survivor with B's own duplicate: only tenancy can refuse (A's own ids: test_merge).
    RouteKey("POST", f"{V1}/contacts/{{contact_id}}/merge"): RouteCase(
        "duplicate_contacts", body=lambda target: {"duplicate_ids": [target.facts["duplicate_id"]]}
    ),
    RouteKey("GET", f"{V1}/messages/{{message_id}}"): RouteCase("message"),
    RouteKey("GET", f"{V1}/campaigns/{{campaign_id}}"): RouteCase("campaign"),
    RouteKey("PATCH", f"{V1}/campaigns/{{campaign_id}}"): RouteCase(
        "campaign", {"name": "Mallory", "subject": "Taken over"}
    ),
    RouteKey("POST", f"{V1}/campaigns/{{campaign_id}}/schedule"): RouteCase("campaign", {}),
    RouteKey("POST", f"{V1}/campaigns/{{campaign_id}}/pause"): RouteCase("scheduled_campaign"),
    RouteKey("POST", f"{V1}/campaigns/{{campaign_id}}/resume"): RouteCase("paused_campaign"),
    RouteKey("POST", f"{V1}/campaigns/{{campaign_id}}/cancel"): RouteCase("campaign"),
}
WORKFLOW = f"{V1}/workflows/{{workflow_id}}"
API_CASES |= {
    RouteKey("GET", WORKFLOW): RouteCase("workflow"),
    RouteKey("PATCH", WORKFLOW): RouteCase("workflow", {"name": "Mallory"}),
    RouteKey("POST", f"{WORKFLOW}/validate"): RouteCase(
        "workflow", {"draft": {"steps": [{"id": "end", "type": "exit"}]}}
    ),
    RouteKey("POST", f"{WORKFLOW}/activate"): RouteCase("workflow"),
    RouteKey("POST", f"{WORKFLOW}/pause"): RouteCase("active_workflow"),
    RouteKey("POST", f"{WORKFLOW}/resume"): RouteCase("paused_workflow"),
    RouteKey("POST", f"{WORKFLOW}/archive"): RouteCase("active_workflow"),
    RouteKey("POST", f"{WORKFLOW}/enroll"): RouteCase(
        "active_workflow", body=lambda t: {"contact_ids": [t.params["contact_id"]]}
    ),
    RouteKey("DELETE", f"{WORKFLOW}/runs/{{contact_id}}"): RouteCase("active_workflow"),
    RouteKey("GET", f"{WORKFLOW}/runs"): RouteCase("active_workflow"),
    RouteKey("GET", f"{WORKFLOW}/runs/{{contact_id}}/history"): RouteCase("active_workflow"),
    RouteKey("GET", f"{WORKFLOW}/counts"): RouteCase("active_workflow"),
    RouteKey("POST", f"{WORKFLOW}/simulate"): RouteCase(
        "active_workflow", body=lambda t: {"contact_id": t.params["contact_id"]}
    ),
}
API_CASES |= {
    RouteKey("GET", f"{WORKFLOW}/trigger"): RouteCase("workflow"),
    RouteKey("PUT", f"{WORKFLOW}/trigger"): RouteCase(
        "workflow", {"trigger": {"kind": "event", "name": "portal_login"}}
    ),
}
WEBHOOK = f"{V1}/webhooks/{{endpoint_id}}"
DELIVERY = f"{WEBHOOK}/deliveries/{{delivery_id}}"
API_CASES |= {
    RouteKey("GET", WEBHOOK): RouteCase("webhook_endpoint"),
    RouteKey("PATCH", WEBHOOK): RouteCase(
        "webhook_endpoint", {"url": "https://mallory.example/x", "include_phi": True}
    ),
    RouteKey("DELETE", WEBHOOK): RouteCase("webhook_endpoint"),
    RouteKey("POST", f"{WEBHOOK}/rotate-secret"): RouteCase("webhook_endpoint"),
    RouteKey("POST", f"{WEBHOOK}/test"): RouteCase("webhook_endpoint"),
    RouteKey("GET", f"{WEBHOOK}/deliveries"): RouteCase("webhook_endpoint"),
    RouteKey("GET", DELIVERY): RouteCase("webhook_endpoint"),
    RouteKey("POST", f"{DELIVERY}/replay"): RouteCase("webhook_endpoint"),
}
API_CASES |= {
    RouteKey("GET", f"{V1}/portal/messages/{{portal_item_id}}"): RouteCase("portal_item"),
    RouteKey("POST", f"{V1}/portal/messages/{{portal_item_id}}/recall"): RouteCase("portal_item"),
    RouteKey("POST", f"{V1}/portal/messages/{{portal_item_id}}/question"): RouteCase(
        "portal_item", {"question": "Your pet's name?", "answer": "Mallory"}
    ),
}


@dataclass
class World:
    """Tenant A (the caller) and tenant B (the victim), with one object of each kind in B."""

    client: Any
    objects: Objects
    a: TenantPair
    b: TenantPair
    a_headers: dict[str, str]
    b_targets: dict[str, Target] = field(default_factory=dict)

    def target(self, kind: str) -> Target:
        if kind not in self.b_targets:
            self.b_targets[kind] = getattr(self.objects, kind)(self.b)
        return self.b_targets[kind]


def _call(world: World, key: RouteKey, case: RouteCase, target: Target) -> Any:
    path = key.path.format(**target.params)
    headers = dict(world.a_headers)
    if case.form is not None:
        form = dict(case.form)
        if "X-CSRF-Token" in headers:
            form["csrf_token"] = headers["X-CSRF-Token"]
        return world.client.request(key.method, path, data=form, headers=headers)
    body = case.body(target) if case.body is not None else case.json
    return world.client.request(key.method, path, json=body, headers=headers)


def assert_isolated(world: World, key: RouteKey, case: RouteCase) -> None:
    target = world.target(case.factory)
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    response = _call(world, key, case, target)
    assert response.status_code == 404, f"{key} as another tenant: {response.status_code}"
    if key.kind == "api":
        assert response.headers["content-type"] == "application/problem+json"
    for value in target.facts.values():
        assert str(value) not in response.text
    assert target.snapshot() == before, f"{key} changed another tenant's object"
    assert world.objects.audit_count(world.b) == b_trail, f"{key} wrote to B's audit trail"


# --- routes without an object id: they act on the caller's organization -----------


def _all_pages(world: World, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"cursor": cursor} if cursor else {}
        page = world.client.get(path, params=params, headers=world.a_headers).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def _check_me(world: World) -> None:
    me = world.client.get(f"{V1}/me", headers=world.a_headers).json()
    assert me["tenant_id"] == str(world.a[0].id)


def _check_user_list(world: World) -> None:
    b_user = world.target("user").params["user_id"]
    assert b_user not in {u["id"] for u in _all_pages(world, f"{V1}/users")}


def _check_user_create(world: World) -> None:
    # B's user's email is free in A: a 409 would tell A that B has such a user.
    target = world.target("user")
    before = target.snapshot()
    body = {"email": target.facts["email"], "role": "analyst"}
    response = world.client.post(f"{V1}/users", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert target.snapshot() == before


def _check_key_list(world: World) -> None:
    b_key = world.target("api_key").params["key_id"]
    listed = world.client.get(f"{V1}/api-keys", headers=world.a_headers).json()
    assert b_key not in {k["id"] for k in listed}


def _check_key_create(world: World) -> None:
    b_trail = world.objects.audit_count(world.b)
    body = {"name": "a's key", "scopes": ["contacts:read"]}
    assert (
        world.client.post(f"{V1}/api-keys", json=body, headers=world.a_headers).status_code == 201
    )
    assert world.objects.audit_count(world.b) == b_trail


def _check_tenant_read(world: World) -> None:
    shown = world.client.get(f"{V1}/tenant", headers=world.a_headers).json()
    assert shown["id"] == str(world.a[0].id)


def _check_tenant_update(world: World) -> None:
    b_trail = world.objects.audit_count(world.b)
    body = {"name": "Renamed", "session_idle_minutes": 5}
    response = world.client.patch(f"{V1}/tenant", json=body, headers=world.a_headers)
    assert response.status_code == 200 and response.json()["id"] == str(world.a[0].id)
    with world.objects.runtime.database.session() as session:
        from carepost.tenancy.models import Tenant

        b = session.get(Tenant, world.b[0].id)
        assert b is not None and b.name != "Renamed" and b.session_idle_minutes != 5
    assert world.objects.audit_count(world.b) == b_trail


def _check_contact_list(world: World) -> None:
    b_contact = world.target("contact").params["contact_id"]
    assert b_contact not in {c["id"] for c in _all_pages(world, f"{V1}/contacts")}


def _check_contact_create(world: World) -> None:
    target = world.target("contact")
    before = target.snapshot()
    body = {"email": target.facts["email"], "external_id": target.facts["external_id"]}
    response = world.client.post(f"{V1}/contacts", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert target.snapshot() == before


def _check_contact_lookup(world: World) -> None:
    target = world.target("contact")
    for criterion in ("email", "external_id", "phone"):
        body = {criterion: target.facts[criterion]}
        response = world.client.post(f"{V1}/contacts/lookup", json=body, headers=world.a_headers)
        assert response.status_code == 200
        assert target.params["contact_id"] not in response.text


def _check_field_list(world: World) -> None:
    target = world.target("contact_field")
    listed = world.client.get(f"{V1}/contact-fields", headers=world.a_headers).json()
    assert target.params["field_id"] not in {f["id"] for f in listed["items"]}
    assert target.facts["key"] not in {f["key"] for f in listed["items"]}


def _check_field_create(world: World) -> None:
    # B's key is free in A: the schemas of organizations are separate.
    target = world.target("contact_field")
    before = target.snapshot()
    body = {"key": target.facts["key"], "label": "Mine", "type": "string"}
    response = world.client.post(f"{V1}/contact-fields", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert target.snapshot() == before


def _check_stage_list(world: World) -> None:
    target = world.target("journey_stage")
    listed = world.client.get(f"{V1}/journey-stages", headers=world.a_headers).json()
    assert target.params["stage_key"] not in {s["key"] for s in listed["items"]}
    # B's contact in that stage is not counted in A either.
    assert all(s["contact_count"] == 0 for s in listed["items"])


def _check_stage_create(world: World) -> None:
    # B's key is free in A: the stages of organizations are separate.
    target = world.target("journey_stage")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {"key": target.params["stage_key"], "label": "Mine"}
    response = world.client.post(f"{V1}/journey-stages", json=body, headers=world.a_headers)
    assert response.status_code == 201, response.text
    assert response.json()["contact_count"] == 0
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_contact_upsert(world: World) -> None:
    # Upserting B's contact's email in A creates A's own contact; B's is untouched.
    target = world.target("contact")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {"match": "email", "contact": {"email": target.facts["email"], "first_name": "M"}}
    response = world.client.put(f"{V1}/contacts/upsert", json=body, headers=world.a_headers)
    assert response.status_code == 201, response.text
    assert response.json()["id"] != target.params["contact_id"]
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_contact_batch(world: World) -> None:
    target = world.target("contact")
    before = target.snapshot()
    items = [{"external_id": target.facts["external_id"], "last_name": "M"}]
    response = world.client.post(
        f"{V1}/contacts/batch",
        json={"match": "external_id", "items": items},
        headers=world.a_headers,
    )
    assert response.status_code == 200
    [item] = response.json()["items"]
    assert item["status"] == "created" and item["id"] != target.params["contact_id"]
    assert target.snapshot() == before


def _check_audit_list(world: World) -> None:
    b_event = world.target("audit_event").params["event_id"]
    listed = _all_pages(world, f"{V1}/audit/events")
    assert listed and b_event not in {e["id"] for e in listed}
    assert {e["tenant_id"] for e in listed} == {str(world.a[0].id)}


def _check_audit_export(world: World) -> None:
    target = world.target("audit_event")
    b_trail = world.objects.audit_count(world.b)
    for fmt in ("csv", "jsonl"):
        response = world.client.get(
            f"{V1}/audit/export", params={"format": fmt}, headers=world.a_headers
        )
        assert response.status_code == 200
        assert target.params["event_id"] not in response.text
        assert target.facts["hash"] not in response.text
    assert world.objects.audit_count(world.b) == b_trail


def _check_audit_verify(world: World) -> None:
    target = world.target("audit_event")
    b_trail = world.objects.audit_count(world.b)
    body = world.client.get(f"{V1}/audit/verify", headers=world.a_headers).json()
    assert body["ok"] is True and body["head_hash"] != target.facts["hash"]
    assert world.objects.audit_count(world.b) == b_trail


def _check_topic_list(world: World) -> None:
    b_tenant, b_keys = world.b
    with world.objects.runtime.bound_session(b_keys) as session:
        from carepost.audit.service import SYSTEM
        from carepost.consent import service as consent

        consent.create_topic(session, b_tenant.id, key="b-secret", name="B only", actor=SYSTEM)
    listed = world.client.get(f"{V1}/topics", headers=world.a_headers).json()
    assert "b-secret" not in {t["key"] for t in listed["items"]}


def _check_topic_create(world: World) -> None:
    b_trail = world.objects.audit_count(world.b)
    body = {"key": "flu-shots", "name": "Flu shots"}
    response = world.client.post(f"{V1}/topics", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert world.objects.audit_count(world.b) == b_trail


def _check_suppression_list(world: World) -> None:
    target = world.target("suppression")
    listed = _all_pages(world, f"{V1}/suppressions")
    assert target.params["suppression_id"] not in {e["id"] for e in listed}
    assert all(target.facts["address"] != e["address"] for e in listed)


def _check_suppression_create(world: World) -> None:
    # B's suppressed address is not suppressed in A: A's entry is new, B's unchanged.
    target = world.target("suppression")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {"address": target.facts["address"], "reason": "hard_bounce"}
    response = world.client.post(f"{V1}/suppressions", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert response.json()["id"] != target.params["suppression_id"]
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_suppression_check(world: World) -> None:
    target = world.target("suppression")
    body = {"address": target.facts["address"], "purpose": "transactional"}
    answer = world.client.post(f"{V1}/suppressions/check", json=body, headers=world.a_headers)
    assert answer.status_code == 200
    assert answer.json() == {"suppressed": False, "listed": False, "reason": None, "scope": None}


def _check_suppression_import(world: World) -> None:
    target = world.target("suppression")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    csv_text = f"address,reason\n{target.facts['address']},complaint\n"
    response = world.client.post(
        f"{V1}/suppressions/import",
        files={"file": ("list.csv", csv_text.encode(), "text/csv")},
        headers=world.a_headers,
    )
    assert response.status_code == 200 and response.json()["imported"] == 1
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_list_list(world: World) -> None:
    target = world.target("contact_list")
    listed = _all_pages(world, f"{V1}/lists")
    assert target.params["list_id"] not in {item["id"] for item in listed}
    assert target.facts["name"] not in {item["name"] for item in listed}


def _check_list_create(world: World) -> None:
    # B's list name is free in A; B's list is untouched.
    target = world.target("contact_list")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {"name": target.facts["name"]}
    response = world.client.post(f"{V1}/lists", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert response.json()["id"] != target.params["list_id"]
    # A's own list cannot take B's contact in either.
    members = world.client.post(
        f"{V1}/lists/{response.json()['id']}/members",
        json={"add": [target.facts["member_id"]]},
        headers=world.a_headers,
    )
    assert members.status_code == 200
    assert members.json()["added"] == 0
    assert members.json()["errors"] == [{"pointer": "#/body/add/0", "detail": "no such contact"}]
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_event_post(world: World) -> None:
    target = world.target("contact_with_events")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    items = [
        {"contact_id": target.params["contact_id"]},
        {"email": target.facts["email"]},
        {"external_id": target.facts["external_id"]},
    ]
    event = {"kind": "portal_login", "occurred_at": "2026-01-05T10:00:00Z"}
    response = world.client.post(
        f"{V1}/events", json={"items": [item | event for item in items]}, headers=world.a_headers
    )
    assert response.status_code == 200
    outcome = response.json()
    assert outcome["created"] == 0 and outcome["failed"] == 3
    assert [i["errors"][0]["detail"] for i in outcome["items"]] == ["no such contact"] * 3
    for value in target.facts.values():
        assert str(value) not in response.text
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_segment_list(world: World) -> None:
    target = world.target("segment")
    listed = _all_pages(world, f"{V1}/segments")
    assert target.params["segment_id"] not in {item["id"] for item in listed}
    assert target.facts["name"] not in {item["name"] for item in listed}


def _check_segment_create(world: World) -> None:
    # B's segment name is free in A; a rule naming B's list is refused as unknown.
    target = world.target("segment")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    rule = {"field": "email", "op": "is_set"}
    body = {"name": target.facts["name"], "rule": rule}
    response = world.client.post(f"{V1}/segments", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert response.json()["id"] != target.params["segment_id"]
    stolen = {"name": "stolen", "rule": {"list": target.facts["list_id"]}}
    refused = world.client.post(f"{V1}/segments", json=stolen, headers=world.a_headers)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["pointer"] == "#/body/rule/list"
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_import_list(world: World) -> None:
    target = world.target("import_job")
    listed = _all_pages(world, f"{V1}/imports")
    assert target.params["job_id"] not in {item["id"] for item in listed}


def _check_import_upload(world: World) -> None:
    # A's upload of B's contact's address makes A's own job; B's job is untouched.
    target = world.target("import_job")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    response = world.client.post(
        f"{V1}/imports",
        params={"match": "email"},
        content=f"email\n{target.facts['email']}\n".encode(),
        headers={**world.a_headers, "content-type": "text/csv"},
    )
    assert response.status_code == 202
    assert response.json()["id"] != target.params["job_id"]
    assert target.facts["email"] not in response.text
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_segment_preview(world: World) -> None:
    # B's contacts are never counted in A, and B's list is unknown in A.
    target = world.target("segment")
    b_trail = world.objects.audit_count(world.b)
    body = {"rule": {"field": "email", "op": "is_set"}}
    answer = world.client.post(f"{V1}/segments/preview", json=body, headers=world.a_headers)
    assert answer.status_code == 200 and answer.json()["count"] == 0
    body = {"rule": {"list": target.facts["list_id"]}}
    answer = world.client.post(f"{V1}/segments/preview", json=body, headers=world.a_headers)
    assert answer.json()["valid"] is False
    assert world.objects.audit_count(world.b) == b_trail


def _check_template_list(world: World) -> None:
    template, layout = world.target("template"), world.target("template_layout")
    listed = _all_pages(world, f"{V1}/templates")
    assert template.params["template_id"] not in {item["id"] for item in listed}
    layouts = _all_pages(world, f"{V1}/template-layouts")
    assert layout.params["layout_id"] not in {item["id"] for item in layouts}


def _check_template_create(world: World) -> None:
    # B's template name is free in A; B's layout cannot be used by A's template.
    template, layout = world.target("template"), world.target("template_layout")
    before = (template.snapshot(), layout.snapshot())
    b_trail = world.objects.audit_count(world.b)
    body = {"name": template.facts["name"], "subject": "Hi", "text": "Hello"}
    response = world.client.post(f"{V1}/templates", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert response.json()["id"] != template.params["template_id"]
    stolen = body | {"name": "stolen", "layout_id": layout.params["layout_id"]}
    refused = world.client.post(f"{V1}/templates", json=stolen, headers=world.a_headers)
    assert refused.status_code == 404
    assert (template.snapshot(), layout.snapshot()) == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_layout_create(world: World) -> None:
    layout = world.target("template_layout")
    body = {"name": layout.facts["name"], "html": "{{ content }}"}
    response = world.client.post(f"{V1}/template-layouts", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert response.json()["id"] != layout.params["layout_id"]


def _check_template_draft_preview(world: World) -> None:
    # B's contact and B's layout are not found from A; nothing is audited in B.
    contact, layout = world.target("contact"), world.target("template_layout")
    b_trail = world.objects.audit_count(world.b)
    body = {"subject": "Hi", "html": "{{ contact.first_name }}"}
    for extra in (
        {"contact_id": contact.params["contact_id"]},
        {"layout_id": layout.params["layout_id"]},
    ):
        answer = world.client.post(
            f"{V1}/templates/preview", json=body | extra, headers=world.a_headers
        )
        assert answer.status_code == 404
        for value in contact.facts.values():
            assert str(value) not in answer.text
    assert world.objects.audit_count(world.b) == b_trail


def _check_webhook_list(world: World) -> None:
    target = world.target("webhook_endpoint")
    listed = world.client.get(f"{V1}/webhooks", headers=world.a_headers)
    assert listed.status_code == 200
    assert target.params["endpoint_id"] not in listed.text
    assert target.facts["secret"] not in listed.text


def _check_webhook_create(world: World) -> None:
    # A's endpoint gets A's events only: an event of B is never queued to it.
    target = world.target("webhook_endpoint")
    before = target.snapshot()
    body = {"url": "https://mallory.example/hook", "event_types": ["*"]}
    created = world.client.post(f"{V1}/webhooks", json=body, headers=world.a_headers)
    assert created.status_code == 201
    from carepost.webhooks import service as webhooks

    _b_tenant, b_keys = world.b
    with world.objects.runtime.bound_session(b_keys) as session:
        assert webhooks.emit(session, b_keys.tenant_id, "message.bounced", {"x": 1}) == 1
    deliveries = world.client.get(
        f"{V1}/webhooks/{created.json()['id']}/deliveries", headers=world.a_headers
    ).json()
    assert deliveries["items"] == []
    assert target.snapshot() != before  # B's own endpoint got B's event, as it should


def _check_tracking_read(world: World) -> None:
    from carepost.audit.service import SYSTEM
    from carepost.tracking import service as tracking

    _b_tenant, b_keys = world.b
    with world.objects.runtime.bound_session(b_keys) as session:
        tracking.update_tracking(
            session, b_keys.tenant_id, track_opens=False, track_clicks=False, actor=SYSTEM
        )
    shown = world.client.get(f"{V1}/tracking/settings", headers=world.a_headers).json()
    assert shown == {"track_opens": True, "track_clicks": True}


def _check_tracking_update(world: World) -> None:
    from carepost.tracking import service as tracking

    b_trail = world.objects.audit_count(world.b)
    body = {"track_opens": False, "track_clicks": False}
    response = world.client.put(f"{V1}/tracking/settings", json=body, headers=world.a_headers)
    assert response.status_code == 200
    with world.objects.runtime.database.session() as session:
        assert tracking.tracking_choice(session, world.b[0].id) == tracking.TrackingChoice()
    assert world.objects.audit_count(world.b) == b_trail


def _check_domain_list(world: World) -> None:
    target = world.target("sending_domain")
    listed = world.client.get(f"{V1}/domains", headers=world.a_headers).json()["items"]
    assert target.params["domain_id"] not in {item["id"] for item in listed}
    assert target.facts["name"] not in {item["name"] for item in listed}


def _check_domain_create(world: World) -> None:
    # B's domain is free in A (a 409 would tell A that B sends from it); B's is untouched.
    target = world.target("sending_domain")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {"name": target.facts["name"]}
    response = world.client.post(f"{V1}/domains", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert response.json()["id"] != target.params["domain_id"]
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_gateway_client_list(world: World) -> None:
    target = world.target("gateway_client")
    listed = world.client.get(f"{V1}/gateway/clients", headers=world.a_headers).json()["items"]
    assert target.params["client_id"] not in {item["id"] for item in listed}


def _check_gateway_client_create(world: World) -> None:
    # A may not relay for B's domain: refused, and B's client untouched.
    target = world.target("gateway_client")
    before = target.snapshot()
    from uuid import uuid4

    from tests.conftest import add_verified_domains

    b_domain = f"b-{uuid4().hex[:8]}.example"
    with world.objects.runtime.database.session() as session:
        add_verified_domains(session, world.b[0].id, [b_domain])
    body = {"name": "Mine", "sender_domains": [b_domain]}
    response = world.client.post(f"{V1}/gateway/clients", json=body, headers=world.a_headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert target.snapshot() == before


def _check_message_send(world: World) -> None:
    # B's contact is unknown in A; B's message and audit trail are untouched.
    contact_id = world.target("contact").params["contact_id"]
    target = world.target("message")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {"contact_id": contact_id, "from": "x@a.example", "subject": "s", "text": "t"}
    response = world.client.post(f"{V1}/messages", json=body, headers=world.a_headers)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"pointer": "#/body/contact_id", "detail": "no such contact"}
    ]
    # The same address B wrote to is A's own new message.
    mine = world.client.post(
        f"{V1}/messages",
        json={"to": target.facts["to"], "from": "x@a.example", "subject": "s", "text": "t"},
        headers=world.a_headers,
    )
    assert mine.status_code == 201 and mine.json()["id"] != target.params["message_id"]
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_message_batch(world: World) -> None:
    contact_id = world.target("contact").params["contact_id"]
    target = world.target("message")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    items = [{"contact_id": contact_id, "from": "x@a.example", "subject": "s", "text": "t"}]
    response = world.client.post(
        f"{V1}/messages/batch", json={"items": items}, headers=world.a_headers
    )
    assert response.status_code == 200 and response.json()["failed"] == 1
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_message_list(world: World) -> None:
    target = world.target("message")
    listed = _all_pages(world, f"{V1}/messages")
    assert target.params["message_id"] not in {m["id"] for m in listed}


def _check_message_search(world: World) -> None:
    target = world.target("message")
    b_trail = world.objects.audit_count(world.b)
    response = world.client.post(
        f"{V1}/messages/search", json={"to": target.facts["to"]}, headers=world.a_headers
    )
    assert response.status_code == 200
    assert target.params["message_id"] not in response.text
    assert world.objects.audit_count(world.b) == b_trail


def _check_campaign_list(world: World) -> None:
    target = world.target("campaign")
    listed = _all_pages(world, f"{V1}/campaigns")
    assert target.params["campaign_id"] not in {c["id"] for c in listed}
    assert target.facts["name"] not in {c["name"] for c in listed}


def _check_campaign_create(world: World) -> None:
    # A campaign of A cannot address B's list.
    target = world.target("campaign")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {
        "name": "stolen",
        "list_id": target.facts["list_id"],
        "from": "x@a.example",
        "subject": "s",
        "text": "t",
    }
    response = world.client.post(f"{V1}/campaigns", json=body, headers=world.a_headers)
    assert response.status_code == 404
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_dlp_rule_list(world: World) -> None:
    target = world.target("dlp_rule")
    listed = world.client.get(f"{V1}/dlp/dictionaries", headers=world.a_headers).json()["items"]
    assert target.params["rule_id"] not in {item["id"] for item in listed}
    assert target.facts["name"] not in {item["name"] for item in listed}


def _check_dlp_rule_create(world: World) -> None:
    # B's rule name is free in A; B's rule is untouched.
    target = world.target("dlp_rule")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {"name": target.facts["name"], "kind": "dictionary", "terms": ["other"]}
    response = world.client.post(f"{V1}/dlp/dictionaries", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_dlp_scan(world: World) -> None:
    # B's dictionary terms do not match in A's scan.
    target = world.target("dlp_rule")
    body = {"text": f"about {target.facts['term']} today"}
    response = world.client.post(f"{V1}/dlp/scan", json=body, headers=world.a_headers)
    assert response.status_code == 200
    assert not [f for f in response.json()["findings"] if f["detector"].startswith("keyword:")]


def _policy_of_b(world: World) -> Any:
    from carepost.policy import service as policy

    with world.objects.runtime.bound_session(world.b[1]) as session:
        found = policy.get_policy(session, world.b[0].id)
        return found.revision, found.document


def _check_policy_read(world: World) -> None:
    response = world.client.get(f"{V1}/policy", headers=world.a_headers)
    assert response.status_code == 200
    assert response.json()["document"]["domains"] == {}


def _check_policy_write(world: World) -> None:
    before, b_trail = _policy_of_b(world), world.objects.audit_count(world.b)
    body = {"document": {"defaults": {"phi_without_tls": "block"}}}
    assert world.client.put(f"{V1}/policy", json=body, headers=world.a_headers).status_code == 200
    assert world.client.delete(f"{V1}/policy", headers=world.a_headers).status_code == 200
    assert _policy_of_b(world) == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_policy_decide(world: World) -> None:
    body = {"recipient_domain": "example.org", "template_phi": True}
    response = world.client.post(f"{V1}/policy/decide", json=body, headers=world.a_headers)
    assert response.status_code == 200
    assert response.json()["method"] == "portal"


def _check_recipient_key_list(world: World) -> None:
    target = world.target("recipient_key")
    listed = world.client.get(f"{V1}/keys", headers=world.a_headers).json()["items"]
    assert target.params["key_id"] not in {item["id"] for item in listed}
    assert target.facts["address"] not in {item["address"] for item in listed}


def _check_recipient_key_upload(world: World) -> None:
    # B's recipient and certificate are A's own new row; B's is untouched.
    target = world.target("recipient_key")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {"address": target.facts["address"], "material": target.facts["certificate"]}
    response = world.client.post(f"{V1}/keys", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert response.json()["id"] != target.params["key_id"]
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _check_recipient_key_lookup(world: World) -> None:
    target = world.target("recipient_key")
    b_trail = world.objects.audit_count(world.b)
    body = {"address": target.facts["address"]}
    response = world.client.post(f"{V1}/keys/lookup", json=body, headers=world.a_headers)
    assert response.status_code == 200
    assert target.params["key_id"] not in {item["id"] for item in response.json()["items"]}
    assert world.objects.audit_count(world.b) == b_trail


def _check_recipient_key_import(world: World) -> None:
    import base64

    import pysequoia

    target = world.target("recipient_key")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    address = target.facts["address"]
    keydata = base64.b64encode(
        bytes(pysequoia.Tsk.generate(f"R <{address}>").extract_certificate())
    )
    message = f"From: {address}\r\nAutocrypt: addr={address}; keydata={keydata.decode()}\r\n\r\nx"
    response = world.client.post(
        f"{V1}/keys/import-message", json={"message": message}, headers=world.a_headers
    )
    assert response.status_code == 201 and len(response.json()["items"]) == 1
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


def _b_signing_key(world: World) -> str:
    from carepost.audit.service import SYSTEM
    from carepost.e2ee import directory

    with world.objects.runtime.bound_session(world.b[1]) as session:
        row = directory.create_openpgp_signing_key(
            session, world.b[0].id, address="care@b.example", name="B", actor=SYSTEM
        )
        return str(row.id)


def _check_signing_key_list(world: World) -> None:
    b_key = _b_signing_key(world)
    listed = world.client.get(f"{V1}/keys/signing", headers=world.a_headers).json()["items"]
    assert b_key not in {item["id"] for item in listed}


def _check_signing_key_create(world: World) -> None:
    b_trail = world.objects.audit_count(world.b)
    body = {"address": "care@b.example", "name": "Mallory"}
    response = world.client.post(f"{V1}/keys/signing/openpgp", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert world.objects.audit_count(world.b) == b_trail


def _check_smime_signing_upload(world: World) -> None:
    from tests.e2ee.e2ee_pki import TestCA

    b_trail = world.objects.audit_count(world.b)
    issued = TestCA().issue("care@b.example")
    body = {
        "address": "care@b.example",
        "certificate": issued.cert_pem.decode(),
        "private_key": issued.key_pem.decode(),
    }
    response = world.client.post(f"{V1}/keys/signing/smime", json=body, headers=world.a_headers)
    assert response.status_code == 201
    assert world.objects.audit_count(world.b) == b_trail


def _check_workflow_list(world: World) -> None:
    target = world.target("workflow")
    listed = _all_pages(world, f"{V1}/workflows")
    assert target.params["workflow_id"] not in {w["id"] for w in listed}
    assert target.facts["name"] not in {w["name"] for w in listed}


def _check_workflow_create(world: World) -> None:
    # B's workflow name is free in A (a 409 would tell A it exists in B).
    target = world.target("workflow")
    body = {
        "name": target.facts["name"],
        "sender_address": "care@clinic.example",
        "draft": {"steps": [{"id": "end", "type": "exit"}]},
    }
    response = world.client.post(f"{V1}/workflows", json=body, headers=world.a_headers)
    assert response.status_code == 201


def _check_workflow_event(world: World) -> None:
    # An event naming B's contact is "no such contact" to A; B's run keeps waiting.
    target = world.target("active_workflow")
    before = target.snapshot()
    b_trail = world.objects.audit_count(world.b)
    body = {"contact_id": target.params["contact_id"], "name": "portal_login"}
    response = world.client.post(f"{V1}/workflows/events", json=body, headers=world.a_headers)
    assert response.status_code == 422
    assert target.snapshot() == before
    assert world.objects.audit_count(world.b) == b_trail


SCOPED_CHECKS: dict[RouteKey, Callable[[World], None]] = {
    RouteKey("GET", f"{V1}/workflows"): _check_workflow_list,
    RouteKey("POST", f"{V1}/workflows"): _check_workflow_create,
    RouteKey("POST", f"{V1}/workflows/events"): _check_workflow_event,
    RouteKey("GET", f"{V1}/templates"): _check_template_list,
    RouteKey("POST", f"{V1}/templates"): _check_template_create,
    RouteKey("POST", f"{V1}/templates/preview"): _check_template_draft_preview,
    RouteKey("GET", f"{V1}/template-layouts"): _check_template_list,
    RouteKey("POST", f"{V1}/template-layouts"): _check_layout_create,
    RouteKey("GET", f"{V1}/webhooks"): _check_webhook_list,
    RouteKey("POST", f"{V1}/webhooks"): _check_webhook_create,
    RouteKey("GET", f"{V1}/tracking/settings"): _check_tracking_read,
    RouteKey("PUT", f"{V1}/tracking/settings"): _check_tracking_update,
    RouteKey("GET", f"{V1}/gateway/clients"): _check_gateway_client_list,
    RouteKey("POST", f"{V1}/gateway/clients"): _check_gateway_client_create,
    RouteKey("GET", f"{V1}/domains"): _check_domain_list,
    RouteKey("POST", f"{V1}/domains"): _check_domain_create,
    RouteKey("GET", f"{V1}/keys"): _check_recipient_key_list,
    RouteKey("POST", f"{V1}/keys"): _check_recipient_key_upload,
    RouteKey("POST", f"{V1}/keys/lookup"): _check_recipient_key_lookup,
    RouteKey("POST", f"{V1}/keys/import-message"): _check_recipient_key_import,
    RouteKey("GET", f"{V1}/keys/signing"): _check_signing_key_list,
    RouteKey("POST", f"{V1}/keys/signing/openpgp"): _check_signing_key_create,
    RouteKey("POST", f"{V1}/keys/signing/smime"): _check_smime_signing_upload,
    RouteKey("POST", f"{V1}/messages"): _check_message_send,
    RouteKey("POST", f"{V1}/messages/batch"): _check_message_batch,
    RouteKey("GET", f"{V1}/messages"): _check_message_list,
    RouteKey("POST", f"{V1}/messages/search"): _check_message_search,
    RouteKey("GET", f"{V1}/campaigns"): _check_campaign_list,
    RouteKey("POST", f"{V1}/campaigns"): _check_campaign_create,
    RouteKey("GET", f"{V1}/lists"): _check_list_list,
    RouteKey("GET", f"{V1}/segments"): _check_segment_list,
    RouteKey("POST", f"{V1}/segments"): _check_segment_create,
    RouteKey("POST", f"{V1}/segments/preview"): _check_segment_preview,
    RouteKey("GET", f"{V1}/imports"): _check_import_list,
    RouteKey("POST", f"{V1}/imports"): _check_import_upload,
    RouteKey("POST", f"{V1}/lists"): _check_list_create,
    RouteKey("POST", f"{V1}/events"): _check_event_post,
    RouteKey("GET", f"{V1}/topics"): _check_topic_list,
    RouteKey("POST", f"{V1}/topics"): _check_topic_create,
    RouteKey("GET", f"{V1}/suppressions"): _check_suppression_list,
    RouteKey("POST", f"{V1}/suppressions"): _check_suppression_create,
    RouteKey("POST", f"{V1}/suppressions/check"): _check_suppression_check,
    RouteKey("POST", f"{V1}/suppressions/import"): _check_suppression_import,
    RouteKey("GET", f"{V1}/me"): _check_me,
    RouteKey("GET", f"{V1}/users"): _check_user_list,
    RouteKey("POST", f"{V1}/users"): _check_user_create,
    RouteKey("GET", f"{V1}/api-keys"): _check_key_list,
    RouteKey("POST", f"{V1}/api-keys"): _check_key_create,
    RouteKey("GET", f"{V1}/tenant"): _check_tenant_read,
    RouteKey("PATCH", f"{V1}/tenant"): _check_tenant_update,
    RouteKey("GET", f"{V1}/contacts"): _check_contact_list,
    RouteKey("POST", f"{V1}/contacts"): _check_contact_create,
    RouteKey("POST", f"{V1}/contacts/lookup"): _check_contact_lookup,
    RouteKey("GET", f"{V1}/audit/events"): _check_audit_list,
    RouteKey("GET", f"{V1}/audit/export"): _check_audit_export,
    RouteKey("GET", f"{V1}/audit/verify"): _check_audit_verify,
    RouteKey("GET", f"{V1}/contact-fields"): _check_field_list,
    RouteKey("POST", f"{V1}/contact-fields"): _check_field_create,
    RouteKey("GET", f"{V1}/journey-stages"): _check_stage_list,
    RouteKey("POST", f"{V1}/journey-stages"): _check_stage_create,
    RouteKey("PUT", f"{V1}/contacts/upsert"): _check_contact_upsert,
    RouteKey("POST", f"{V1}/contacts/batch"): _check_contact_batch,
    RouteKey("GET", f"{V1}/dlp/dictionaries"): _check_dlp_rule_list,
    RouteKey("POST", f"{V1}/dlp/dictionaries"): _check_dlp_rule_create,
    RouteKey("POST", f"{V1}/dlp/scan"): _check_dlp_scan,
    RouteKey("GET", f"{V1}/policy"): _check_policy_read,
    RouteKey("PUT", f"{V1}/policy"): _check_policy_write,
    RouteKey("DELETE", f"{V1}/policy"): _check_policy_write,
    RouteKey("POST", f"{V1}/policy/decide"): _check_policy_decide,
}


def _check_portal_list(world: World) -> None:
    target = world.target("portal_item")
    listed = _all_pages(world, f"{V1}/portal/messages")
    assert target.params["portal_item_id"] not in {i["id"] for i in listed}


def _check_portal_settings_read(world: World) -> None:
    response = world.client.get(f"{V1}/portal/settings", headers=world.a_headers)
    assert response.status_code == 200
    assert world.b[0].name not in response.json()["effective_notice_subject"]


def _check_portal_settings_write(world: World) -> None:
    from carepost.portal.models import PortalSettings

    b_trail = world.objects.audit_count(world.b)
    body = {"notice_subject": "Mallory says hi", "expiry_days": 2}
    response = world.client.put(f"{V1}/portal/settings", json=body, headers=world.a_headers)
    assert response.status_code == 200
    with world.objects.runtime.database.session() as session:
        assert session.get(PortalSettings, world.b[0].id) is None
    assert world.objects.audit_count(world.b) == b_trail


def _b_inbound_route(world: World) -> tuple[Any, ...]:
    from carepost.audit.service import SYSTEM
    from carepost.gateway import replies

    with world.objects.runtime.database.session() as session:
        if replies.get_route(session, world.b[0].id) is None:
            replies.set_route(
                session, world.b[0].id, host="mx.b-clinic.example", port=2525, actor=SYSTEM
            )
    with world.objects.runtime.database.session() as session:
        row = replies.get_route(session, world.b[0].id)
        assert row is not None
        return (row.host, row.port, row.tls_mode, row.enabled)


def _check_inbound_route_read(world: World) -> None:
    before = _b_inbound_route(world)
    response = world.client.get(f"{V1}/gateway/inbound-route", headers=world.a_headers)
    assert response.status_code == 200
    assert "b-clinic" not in response.text
    assert _b_inbound_route(world) == before


def _check_inbound_route_write(world: World) -> None:
    before = _b_inbound_route(world)
    b_trail = world.objects.audit_count(world.b)
    body = {"host": "mallory.example", "port": 25}
    assert (
        world.client.put(
            f"{V1}/gateway/inbound-route", json=body, headers=world.a_headers
        ).status_code
        == 200
    )
    assert (
        world.client.delete(f"{V1}/gateway/inbound-route", headers=world.a_headers).status_code
        == 204
    )
    assert _b_inbound_route(world) == before
    assert world.objects.audit_count(world.b) == b_trail


SCOPED_CHECKS |= {
    RouteKey("GET", f"{V1}/gateway/inbound-route"): _check_inbound_route_read,
    RouteKey("PUT", f"{V1}/gateway/inbound-route"): _check_inbound_route_write,
    RouteKey("DELETE", f"{V1}/gateway/inbound-route"): _check_inbound_route_write,
}

SCOPED_CHECKS |= {
    RouteKey("GET", f"{V1}/portal/messages"): _check_portal_list,
    RouteKey("GET", f"{V1}/portal/settings"): _check_portal_settings_read,
    RouteKey("PUT", f"{V1}/portal/settings"): _check_portal_settings_write,
}


def _console_inventory() -> set[RouteKey]:
    """Console routes whose cross-tenant, CSRF and role checks live in tests/web/."""
    from tests.web.console_cases import ACTIONS, PAGES, RECIPIENT_ROUTES, SIGN_IN_ROUTES

    known = {RouteKey("GET", page.path) for page in PAGES}
    known |= {RouteKey("POST", action.path) for action in ACTIONS}
    return known | {RouteKey(method, path) for method, path in SIGN_IN_ROUTES | RECIPIENT_ROUTES}


# --- the inventory ------------------------------------------------------------------


def uncovered_routes(app) -> list[str]:
    """Routes of ``app`` that have neither a cross-tenant case nor a scoped check."""
    missing = []
    for key in app_routes(app):
        if key.kind == "public":
            continue
        if key.kind == "api":
            covered = key in API_CASES if key.parameters else key in SCOPED_CHECKS
        else:
            covered = key in _console_inventory()
        if not covered:
            missing.append(str(key))
    return missing


def test_every_route_is_covered(app):
    """A route without a factory or a check fails here, so none escapes the suite."""
    routes = app_routes(app)
    assert routes, "the route inventory found nothing: has FastAPI changed how it nests routers?"
    # Cross-check the walk against the OpenAPI document: nothing hides in a router.
    assert openapi_operations(app) <= set(routes)
    missing = uncovered_routes(app)
    assert not missing, (
        "routes without a cross-tenant case in tests/security/test_tenant_isolation.py: "
        + ", ".join(missing)
    )
    stale = {*API_CASES, *SCOPED_CHECKS} - set(routes)
    assert not stale, f"cases for routes that no longer exist: {sorted(map(str, stale))}"


def test_a_new_route_without_a_case_is_caught(runtime):
    from fastapi import APIRouter

    from carepost.api.app import create_app

    app = create_app(runtime)
    extra = APIRouter(prefix=V1)
    extra.add_api_route("/widgets/{widget_id}", lambda widget_id: {}, methods=["GET"])
    extra.add_api_route("/widgets", lambda: [], methods=["POST"])
    app.include_router(extra)
    app.add_api_route("/console/widgets/{widget_id}", lambda widget_id: {}, methods=["GET"])
    assert sorted(uncovered_routes(app)) == [
        f"GET {V1}/widgets/{{widget_id}}",
        "GET /console/widgets/{widget_id}",
        f"POST {V1}/widgets",
    ]


def test_every_case_names_a_known_factory():
    for case in API_CASES.values():
        assert callable(getattr(Objects, case.factory, None)), case.factory


# --- the attacks --------------------------------------------------------------------

CALLERS = ("api_key", "session")


@pytest.fixture(params=CALLERS)
def world(request, client, objects, make_tenant, make_api_key, make_user, sign_in) -> World:
    a, b = make_tenant("Clinic A"), make_tenant("Clinic B")
    if request.param == "api_key":
        headers = make_api_key(a)
    else:
        owner_id, _email, _password = make_user(a, "owner")
        headers = sign_in(a, owner_id)
    return World(client=client, objects=objects, a=a, b=b, a_headers=headers)


@pytest.mark.parametrize("key", sorted(API_CASES), ids=str)
def test_another_tenants_object_is_not_found(world, key):
    assert_isolated(world, key, API_CASES[key])


@pytest.mark.parametrize("key", sorted(SCOPED_CHECKS), ids=str)
def test_routes_without_an_id_stay_in_the_callers_tenant(world, key):
    SCOPED_CHECKS[key](world)


def test_the_victims_object_is_reachable_by_its_own_tenant(
    client, objects, make_tenant, make_api_key
):
    """Guards the suite itself: the ids it aims at are real, so a 404 means isolation."""
    b = make_tenant()
    headers = make_api_key(b)
    for key, case in sorted(API_CASES.items()):
        if key.method != "GET":
            continue
        target: Target = getattr(objects, case.factory)(b)
        response = client.get(key.path.format(**target.params), headers=headers)
        assert response.status_code == 200, str(key)
