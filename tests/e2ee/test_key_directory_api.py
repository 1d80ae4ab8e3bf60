"""/api/v1/keys end to end: upload (PEM, DER, armored), list with and without
phi:read, problem+json naming the field, lookup (with WKD against a loopback
server), import from a received message, signing identities, delete; audited."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import pysequoia
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from carepost.e2ee.api import WkdAccess, get_wkd_access
from carepost.e2ee.wkd import wkd_urls
from tests.canaries import PHI_CANARIES, phi_value
from tests.e2ee.conftest import CLINIC
from tests.e2ee.wkd_server import serving

V1 = "/api/v1"


def patient_address() -> str:
    local = phi_value("mailbox").lower()
    address = f"{local}@patient.example"
    # The local part travels alone in WKD URLs (?l=): it must not be logged either.
    PHI_CANARIES.update({address, local})
    return address


def test_upload_list_lookup_delete(client, make_tenant, make_api_key, test_ca, audit_trail):
    tenant = make_tenant()
    headers = make_api_key(tenant)
    reader = make_api_key(tenant, scopes=["recipient_keys:read"])
    address = patient_address()
    certificate = test_ca.issue(address)
    der = base64.b64encode(test_ca.issue(address).certificate.public_bytes(Encoding.DER))
    armored = str(pysequoia.Tsk.generate(f"P <{address}>").extract_certificate())

    created = []
    for material in (certificate.cert_pem.decode(), der.decode(), armored):
        response = client.post(
            f"{V1}/keys", json={"address": address, "material": material}, headers=headers
        )
        assert response.status_code == 201, response.text
        created.append(response.json())
    assert [key["kind"] for key in created] == ["smime", "smime", "openpgp"]
    assert all(key["source"] == "upload" and key["address"] == address for key in created)

    listed = client.get(f"{V1}/keys", headers=headers).json()["items"]
    assert {key["id"] for key in listed} == {key["id"] for key in created}
    assert {key["address"] for key in listed} == {address}
    hidden = client.get(f"{V1}/keys", headers=reader).json()["items"]
    assert {key["address"] for key in hidden} == {None}
    assert (
        client.post(f"{V1}/keys/lookup", json={"address": address}, headers=reader).status_code
        == 403
    )

    found = client.post(f"{V1}/keys/lookup", json={"address": address}, headers=headers).json()
    assert len(found["items"]) == 3
    later = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    found = client.post(
        f"{V1}/keys/lookup", json={"address": address, "at": later}, headers=headers
    ).json()
    assert [key["kind"] for key in found["items"]] == ["openpgp"]

    assert client.delete(f"{V1}/keys/{created[0]['id']}", headers=reader).status_code == 403
    assert client.delete(f"{V1}/keys/{created[0]['id']}", headers=headers).status_code == 204
    assert client.delete(f"{V1}/keys/{created[0]['id']}", headers=headers).status_code == 404
    revoked = client.post(f"{V1}/keys/{created[2]['id']}/revoke", headers=headers).json()
    assert revoked["revoked"] is True
    found = client.post(f"{V1}/keys/lookup", json={"address": address}, headers=headers).json()
    assert [key["id"] for key in found["items"]] == [created[1]["id"]]

    actions = [event.action for event in audit_trail(tenant)]
    assert actions.count("recipient_key.add") == 3
    assert "recipient_key.delete" in actions and "recipient_key.revoke" in actions
    for event in audit_trail(tenant):
        assert address not in str(event.details)


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"address": "p@patient.example", "material": "not a key at all"}, "#/body/material"),
        (
            {
                "address": "p@patient.example",
                "material": "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----",
            },
            "#/body/material",
        ),
        ({"address": "p@patient.example", "material": "x", "kind": "x509"}, "#/body/kind"),
        ({"address": "p@patient.example"}, "#/body/material"),
    ],
)
def test_bad_uploads_are_problems_naming_the_field(
    client, make_tenant, make_api_key, body, pointer
):
    headers = make_api_key(make_tenant())
    response = client.post(f"{V1}/keys", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in [error["pointer"] for error in response.json()["errors"]]


def test_a_certificate_for_another_address_is_refused(client, make_tenant, make_api_key, test_ca):
    headers = make_api_key(make_tenant())
    address = patient_address()
    response = client.post(
        f"{V1}/keys",
        json={"address": address, "material": test_ca.issue("x@other.example").cert_pem.decode()},
        headers=headers,
    )
    assert response.status_code == 422
    assert [error["pointer"] for error in response.json()["errors"]] == ["#/body/address"]
    assert address not in response.text


def test_lookup_asks_the_web_key_directory(app, client, make_tenant, make_api_key):
    headers = make_api_key(make_tenant())
    address = patient_address()
    cert = pysequoia.Tsk.generate(f"P <{address}>", profile=pysequoia.Profile.RFC4880)
    advanced, _direct = wkd_urls(address)
    with serving({advanced[1]: bytes(cert.extract_certificate())}) as (origin, asked):

        def loopback_wkd():
            with httpx.Client(timeout=5) as wkd_client:
                yield WkdAccess(wkd_client, {advanced[0]: origin})

        app.dependency_overrides[get_wkd_access] = loopback_wkd
        try:
            response = client.post(
                f"{V1}/keys/lookup", json={"address": address, "wkd": True}, headers=headers
            )
        finally:
            app.dependency_overrides.pop(get_wkd_access)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(key["kind"], key["source"]) for key in items] == [("openpgp", "wkd")]
    assert asked == [advanced[1]]


def test_signing_identities_and_import_from_a_message(client, make_tenant, make_api_key, test_ca):
    tenant = make_tenant()
    headers = make_api_key(tenant)
    marketer = make_api_key(tenant, scopes=["recipient_keys:write", "recipient_keys:read"])
    sender = test_ca.issue(CLINIC)
    body = {
        "address": "*",
        "certificate": sender.cert_pem.decode(),
        "private_key": sender.key_pem.decode(),
    }
    assert client.post(f"{V1}/keys/signing/smime", json=body, headers=marketer).status_code == 403
    created = client.post(f"{V1}/keys/signing/smime", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert "PRIVATE" not in created.text
    other_key = test_ca.issue(CLINIC).key_pem.decode()
    mismatch = client.post(
        f"{V1}/keys/signing/smime", json={**body, "private_key": other_key}, headers=headers
    )
    again = client.post(f"{V1}/keys/signing/smime", json=body, headers=headers)
    assert again.status_code == 409
    assert [e["pointer"] for e in again.json()["errors"]] == ["#/body/certificate"]
    assert mismatch.status_code == 422
    assert [e["pointer"] for e in mismatch.json()["errors"]] == ["#/body/private_key"]
    pgp = client.post(
        f"{V1}/keys/signing/openpgp", json={"address": CLINIC, "name": "Clinic"}, headers=headers
    )
    assert pgp.status_code == 201 and "PGP PUBLIC KEY BLOCK" in pgp.json()["certificate"]
    listed = client.get(f"{V1}/keys/signing", headers=headers).json()["items"]
    assert [item["kind"] for item in listed] == ["smime", "openpgp"]
    assert "PRIVATE" not in str(listed)

    address = patient_address()
    keydata = base64.b64encode(
        bytes(pysequoia.Tsk.generate(f"P <{address}>").extract_certificate())
    ).decode()
    received = (
        f"From: {address}\r\nTo: {CLINIC}\r\nSubject: hello\r\n"
        f"Autocrypt: addr={address}; keydata={keydata}\r\n\r\nhello\r\n"
    )
    imported = client.post(
        f"{V1}/keys/import-message", json={"message": received}, headers=marketer
    )
    assert imported.status_code == 201, imported.text
    assert [(k["kind"], k["source"], k["address"]) for k in imported.json()["items"]] == [
        ("openpgp", "received", None)
    ]
