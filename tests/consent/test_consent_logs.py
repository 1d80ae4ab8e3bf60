"""Consent paths never write PHI (addresses, evidence) or recipient link tokens to the
logs: on success, on refusal, in imports with rejected lines, and on the public pages
(access logs name the route template, never the token)."""

from __future__ import annotations

from carepost.consent import links
from carepost.consent.links import LinkKind
from tests.canaries import phi_value, secret_value
from tests.security.test_no_phi_in_logs import LogWindow, log_window  # noqa: F401

V1 = "/api/v1"


def test_consent_and_suppression_paths_log_no_phi(client, clinic, log_window):  # noqa: F811
    evidence = phi_value("evidence")
    address = f"{phi_value('addr').lower()}@example.org"
    bad = f"{phi_value('bad')}@@example.org"
    headers = clinic.headers
    consents = f"{V1}/contacts/{clinic.contact_id}/consents"
    body = {"channel": "email", "purpose": "marketing", "status": "granted", "evidence": evidence}
    assert client.post(consents, json=body, headers=headers).status_code == 201
    assert client.post(consents, json=body | {"channel": "x"}, headers=headers).status_code == 422
    assert client.get(consents, headers=headers).status_code == 200
    assert (
        client.post(f"{V1}/suppressions", json={"address": address}, headers=headers).status_code
        == 201
    )
    assert (
        client.post(f"{V1}/suppressions", json={"address": bad}, headers=headers).status_code == 422
    )
    check = {"address": address}
    assert client.post(f"{V1}/suppressions/check", json=check, headers=headers).status_code == 200
    upload = f"address\n{bad}\n{address}\n".encode()
    imported = client.post(
        f"{V1}/suppressions/import", files={"file": ("x.csv", upload, "text/csv")}, headers=headers
    )
    assert imported.json()["rejected"] == 1
    content = log_window.assert_clean(evidence, address, bad, clinic.email)
    assert "/suppressions/check" in content  # the window did capture the requests


def test_recipient_pages_log_no_token_or_address(client, clinic, log_window):  # noqa: F811
    unsubscribe = secret_value(
        links.make_token(clinic.keys, LinkKind.UNSUBSCRIBE, clinic.contact_id, "email")
    )
    preferences = secret_value(
        links.make_token(clinic.keys, LinkKind.PREFERENCES, clinic.contact_id, "email")
    )
    assert client.get(f"/u/{unsubscribe}").status_code == 200
    assert (
        client.post(f"/u/{unsubscribe}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    )
    assert (
        client.post(f"/p/{preferences}", data={"consent": ["marketing:email"]}).status_code == 200
    )
    assert client.get(f"/p/{unsubscribe}").status_code == 404
    content = log_window.assert_clean(unsubscribe, preferences, clinic.email)
    assert "/u/{token}" in content
