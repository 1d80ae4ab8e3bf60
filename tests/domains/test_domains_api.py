"""The /api/v1/domains routes end to end: add, read the records, check DNS against a
real loopback DNS server, rotate and promote keys, delete; private keys never leave."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from carepost.domains.models import DkimKey
from tests.conftest import secret_value
from tests.dns_server import app_resolving_with

V1 = "/api/v1"


@pytest.fixture
def loopback_dns(app):
    """The API's DNS checks ask a DNS server on loopback for this test."""
    with app_resolving_with(app) as zone:
        yield zone


def private_key_bodies(runtime, tenant) -> list[str]:
    """Every private key of the tenant, registered as a secret for the log scan."""
    with runtime.bound_session(tenant[1]) as session:
        pems = session.scalars(
            select(DkimKey.private_key).where(DkimKey.tenant_id == tenant[0].id)
        ).all()
    bodies = ["".join(pem.splitlines()[1:-1]) for pem in pems if pem]
    for body in bodies:
        secret_value(body)
    return bodies


def test_add_read_check_rotate_promote_delete(
    client, runtime, make_tenant, make_api_key, loopback_dns, audit_trail
):
    tenant = make_tenant()
    headers = make_api_key(tenant)
    created = client.post(f"{V1}/domains", json={"name": "Clinic.Example"}, headers=headers)
    assert created.status_code == 201, created.text
    detail = created.json()
    domain_id = detail["id"]
    assert detail["name"] == "clinic.example" and detail["state"] == "pending"
    assert {k["algorithm"] for k in detail["keys"]} == {"rsa-sha256", "ed25519-sha256"}
    assert {r["kind"] for r in detail["records"]} == {"dkim", "spf", "dmarc"}
    rsa_record = next(r for r in detail["records"] if r["kind"] == "dkim" and "k=rsa" in r["value"])
    assert rsa_record["name"].endswith("._domainkey.clinic.example")
    assert len(rsa_record["strings"]) == 2 and "".join(rsa_record["strings"]) == rsa_record["value"]
    secrets = private_key_bodies(runtime, tenant)
    assert len(secrets) == 2

    # Before anything is published, the check says what to do.
    checked = client.post(f"{V1}/domains/{domain_id}/check", headers=headers)
    assert checked.status_code == 200 and checked.json()["level"] == "error"
    assert client.get(f"{V1}/domains/{domain_id}", headers=headers).json()["state"] == "pending"

    # The admin publishes exactly what carepost showed.
    for record in detail["records"]:
        loopback_dns.txt(record["name"] + ".", record["value"])
    checked = client.post(f"{V1}/domains/{domain_id}/check", headers=headers).json()
    assert checked["level"] == "warning"  # DMARC p=none: monitoring only
    assert {(f["kind"], f["level"]) for f in checked["findings"]} == {
        ("spf", "ok"),
        ("dkim", "ok"),
        ("dmarc", "warning"),
    }
    read = client.get(f"{V1}/domains/{domain_id}", headers=headers).json()
    assert read["state"] == "verified" and read["last_check"]["level"] == "warning"
    listed = client.get(f"{V1}/domains", headers=headers).json()["items"]
    assert [(d["name"], d["state"], d["check_level"]) for d in listed] == [
        ("clinic.example", "verified", "warning")
    ]

    rotated = client.post(f"{V1}/domains/{domain_id}/rotate", headers=headers)
    assert rotated.status_code == 200
    next_keys = [k for k in rotated.json()["keys"] if k["state"] == "next"]
    assert len(next_keys) == 2
    assert client.post(f"{V1}/domains/{domain_id}/rotate", headers=headers).status_code == 409
    promoted = client.post(f"{V1}/domains/{domain_id}/promote", headers=headers).json()
    assert sorted(k["state"] for k in promoted["keys"]) == [
        "active",
        "active",
        "retired",
        "retired",
    ]
    # The new selectors are not published yet: the check now fails and says where.
    failing = client.post(f"{V1}/domains/{domain_id}/check", headers=headers).json()
    assert failing["level"] == "error"
    assert client.get(f"{V1}/domains/{domain_id}", headers=headers).json()["state"] == "failing"
    secrets += private_key_bodies(runtime, tenant)

    responses = [created, rotated]
    assert all(body[:64] not in r.text for r in responses for body in secrets)
    assert "PRIVATE" not in created.text + rotated.text

    assert client.delete(f"{V1}/domains/{domain_id}", headers=headers).status_code == 204
    assert client.get(f"{V1}/domains/{domain_id}", headers=headers).status_code == 404
    actions = [e.action for e in audit_trail(tenant) if e.action.startswith(("domain", "dkim"))]
    assert actions.count("dkim_key.create") == 4 and "domain.delete" in actions


def test_bad_input_gets_problem_details(client, make_tenant, make_api_key):
    headers = make_api_key(make_tenant())
    invalid = client.post(f"{V1}/domains", json={"name": "not a domain"}, headers=headers)
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    assert (
        client.post(f"{V1}/domains", json={"name": "x.example"}, headers=headers).status_code == 201
    )
    duplicate = client.post(f"{V1}/domains", json={"name": "X.example."}, headers=headers)
    assert duplicate.status_code == 409
    assert (
        client.post(
            f"{V1}/domains", json={"name": "a.example", "x": 1}, headers=headers
        ).status_code
        == 422
    )


def test_readers_see_domains_but_only_managers_change_them(client, make_tenant, make_user, sign_in):
    tenant = make_tenant()
    owner = sign_in(tenant, make_user(tenant, "owner")[0])
    analyst = sign_in(tenant, make_user(tenant, "analyst")[0])
    domain_id = client.post(f"{V1}/domains", json={"name": "c.example"}, headers=owner).json()["id"]
    assert client.get(f"{V1}/domains/{domain_id}", headers=analyst).status_code == 200
    for path in ("/rotate", "/check", "/promote"):
        assert client.post(f"{V1}/domains/{domain_id}{path}", headers=analyst).status_code == 403
    assert (
        client.post(f"{V1}/domains", json={"name": "d.example"}, headers=analyst).status_code == 403
    )
