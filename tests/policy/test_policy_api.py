"""The policy routes: the defaults until changed, replacement validated field by field
and audited with what changed, optimistic concurrency, reset, and the dry-run decision."""

from __future__ import annotations

import uuid

from sqlalchemy import text

V1 = "/api/v1/policy"


def test_defaults_then_a_change_audited_with_its_sections(
    client, tenant, make_api_key, audit_trail
):
    headers = make_api_key(tenant)
    initial = client.get(V1, headers=headers).json()
    assert initial["revision"] == 0 and initial["updated_at"] is None
    assert initial["document"]["defaults"]["phi_without_tls"] == "portal"
    document = {
        "defaults": {"phi_without_tls": "block", "block_detectors": ["credit_card", "ssn"]},
        "domains": {"partner.example.org": {"phi_tls_minimum": "starttls"}},
    }
    changed = client.put(V1, json={"document": document, "expected_revision": 0}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["revision"] == 1
    assert (
        client.get(V1, headers=headers).json()["document"]["defaults"]["phi_without_tls"] == "block"
    )
    [event] = audit_trail(tenant, "policy.update")
    assert event.details == {
        "revision": 1,
        "changed": [
            "defaults.block_detectors",
            "defaults.phi_without_tls",
            "domains.partner.example.org",
        ],
    }


def test_a_stale_revision_is_a_conflict_and_changes_nothing(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    client.put(V1, json={"document": {}}, headers=headers)
    stale = client.put(
        V1,
        json={"document": {"defaults": {"phi_without_tls": "block"}}, "expected_revision": 0},
        headers=headers,
    )
    assert stale.status_code == 409
    assert stale.json()["errors"][0]["pointer"] == "#/body/revision"
    assert (
        client.get(V1, headers=headers).json()["document"]["defaults"]["phi_without_tls"]
        == "portal"
    )


def test_invalid_documents_are_refused_naming_the_field(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    response = client.put(
        V1,
        json={"document": {"defaults": {"phi_without_tls": "plaintext"}}},
        headers=headers,
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["pointer"] == "#/body/document/defaults/phi_without_tls"
    detectors = client.put(
        V1, json={"document": {"defaults": {"block_detectors": ["psychic"]}}}, headers=headers
    )
    assert detectors.json()["errors"][0]["pointer"].startswith(
        "#/body/document/defaults/block_detectors"
    )


def test_reset_goes_back_to_the_defaults_and_is_audited(
    client, runtime, tenant, make_api_key, audit_trail
):
    headers = make_api_key(tenant)
    client.put(V1, json={"document": {"defaults": {"phi_requires_e2e": True}}}, headers=headers)
    reset = client.delete(V1, headers=headers)
    assert reset.status_code == 200 and reset.json()["revision"] == 0
    assert [e.action for e in audit_trail(tenant) if e.action.startswith("policy.")] == [
        "policy.update",
        "policy.reset",
    ]
    with runtime.database.session() as session:
        count = session.execute(
            text("SELECT count(*) FROM policy_documents WHERE tenant_id = :t"),
            {
                "t": tenant[0].id.hex
                if runtime.database.engine.dialect.name == "sqlite"
                else tenant[0].id
            },
        ).scalar()
    assert count == 0


def test_dry_run_decision_uses_the_stored_policy(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    body = {"recipient_domain": "example.org", "findings": {"ssn": 0.95}, "mta_sts": "none"}
    portal = client.post(f"{V1}/decide", json=body, headers=headers).json()
    assert portal["method"] == "portal" and portal["phi"] is True
    assert "fallback.portal" in portal["reasons"]
    template = str(uuid.uuid4())
    client.put(
        V1,
        json={"document": {"templates": {template: {"phi_without_tls": "block"}}}},
        headers=headers,
    )
    blocked = client.post(
        f"{V1}/decide", json={**body, "template_id": template}, headers=headers
    ).json()
    assert blocked["method"] == "block"
    verified = client.post(
        f"{V1}/decide", json={**body, "mta_sts": "enforce"}, headers=headers
    ).json()
    assert (verified["method"], verified["tls"]) == ("tls_required", "verified")
    unknown = client.post(
        f"{V1}/decide", json={**body, "findings": {"psychic": 1}}, headers=headers
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["pointer"] == "#/body/findings"
