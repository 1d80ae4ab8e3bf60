"""FHIR R4 files through the import jobs: the API upload, the worker, the CLI."""

from __future__ import annotations

import json

from carepost.audit.service import SYSTEM
from carepost.consent import suppression
from carepost.contacts import custom_fields
from carepost.imports.tasks import run_imports
from tests.canaries import phi_value
from tests.imports.clinic import contacts_by_email

V1 = "/api/v1"


def upload(client, headers, body: bytes, **params):
    query = {k: (json.dumps(v) if k == "mapping" else v) for k, v in params.items()}
    return client.post(
        f"{V1}/imports",
        params=query,
        content=body,
        headers={**headers, "content-type": "application/fhir+ndjson"},
    )


def patient(number: int, email: str, **extra) -> dict:
    return {
        "resourceType": "Patient",
        "id": f"p-{number}",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "value": f"MRN{number:05d}",
            }
        ],
        "name": [{"use": "official", "family": "Doe", "given": [f"Pat{number}"]}],
        "telecom": [{"system": "email", "value": email}],
        "gender": "female",
        "birthDate": "1961-02-03",
        **extra,
    }


def test_a_fhir_ndjson_upload_imports_patients_and_reports_the_rest(
    runtime, client, clinic, make_api_key
):
    headers = make_api_key(clinic)
    secret = phi_value("phone")
    lines = [
        patient(1, "one@fhir.example"),
        # An unusable phone is left out and reported; the patient is still imported.
        patient(
            2,
            "two@fhir.example",
            telecom=[
                {"system": "email", "value": "two@fhir.example"},
                {"system": "phone", "value": f"not a phone {secret}"},
            ],
        ),
        {"resourceType": "Observation", "id": "obs-1", "status": "final"},
        patient(3, "three@fhir.example", birthDate="not-a-date"),
    ]
    body = ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
    response = upload(client, headers, body, format="fhir", match="mrn")
    assert response.status_code == 202, response.text

    run_imports(runtime, budget_seconds=30)

    job = client.get(f"{V1}/imports/{response.json()['id']}", headers=headers).json()
    assert job["status"] == "completed", job
    assert job["created"] == 2 and job["errored"] == 2
    errors = client.get(f"{V1}/imports/{job['id']}/errors", headers=headers).json()["items"]
    by_line = {(error["line"], error["column"]) for error in errors}
    assert (2, "Patient.telecom[1].value") in by_line
    assert any(
        line == 3 and "Observation" in error["reason"]
        for error in errors
        for line in [error["line"]]
    )
    assert any(error["line"] == 4 for error in errors)
    assert secret not in json.dumps(errors)
    stored = contacts_by_email(runtime, clinic)
    assert set(stored) == {"one@fhir.example", "two@fhir.example"}
    assert stored["one@fhir.example"].custom["gender"] == "female"


def test_a_bad_fhir_option_is_refused_with_its_pointer(client, clinic, make_api_key):
    headers = make_api_key(clinic)
    response = upload(
        client,
        headers,
        b"{}\n",
        format="fhir",
        match="mrn",
        mapping={"default_region": "Atlantis", "colour": "blue"},
    )
    assert response.status_code == 422
    pointers = {error["pointer"] for error in response.json()["errors"]}
    assert {"#/body/mapping/default_region", "#/body/mapping/colour"} <= pointers


def test_active_and_deceased_fill_their_fields_and_a_deceased_patients_addresses_are_suppressed(
    runtime, client, clinic, make_api_key
):
    _row, keys = clinic
    with runtime.bound_session(keys) as session:
        fields = (("active", "boolean"), ("deceased", "boolean"), ("deceased_date", "date"))
        for key, kind in fields:
            custom_fields.create_field(
                session, keys.tenant_id, key=key, label=key, type=kind, actor=SYSTEM
            )
    headers = make_api_key(clinic)
    gone_telecom = [
        {"system": "email", "value": "gone@fhir.example"},
        {"system": "phone", "value": "+16175550123", "use": "mobile"},
    ]
    lines = [
        patient(1, "alive@fhir.example", active=True, deceasedBoolean=False),
        patient(2, "gone@fhir.example", active=False, deceasedBoolean=True, telecom=gone_telecom),
        patient(3, "dated@fhir.example", deceasedDateTime="2025-11-30T23:30:00-05:00"),
        patient(4, "year@fhir.example", deceasedDateTime="2024"),
        patient(5, "plain@fhir.example"),
    ]
    body = ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
    response = upload(client, headers, body, format="fhir", match="mrn")
    assert response.status_code == 202, response.text
    run_imports(runtime, budget_seconds=30)
    job = client.get(f"{V1}/imports/{response.json()['id']}", headers=headers).json()
    assert (job["status"], job["created"], job["errored"]) == ("completed", 5, 0), job
    errors = client.get(f"{V1}/imports/{job['id']}/errors", headers=headers).json()["items"]
    assert [(e["line"], e["column"]) for e in errors] == [(4, "Patient.deceasedDateTime")]

    contacts = contacts_by_email(runtime, clinic)
    custom = {email.split("@")[0]: contact.custom for email, contact in contacts.items()}
    status = {
        name: {key: values[key] for key in ("active", "deceased", "deceased_date") if key in values}
        for name, values in custom.items()
    }
    assert status == {
        "alive": {"active": True, "deceased": False},
        "gone": {"active": False, "deceased": True},
        # A dateTime of death is kept as its UTC day.
        "dated": {"deceased": True, "deceased_date": "2025-12-01"},
        "year": {"deceased": True},
        "plain": {},
    }

    with runtime.bound_session(keys) as session:
        for address, suppressed in (
            ("gone@fhir.example", True),
            ("+16175550123", True),
            ("dated@fhir.example", True),
            ("year@fhir.example", True),
            ("alive@fhir.example", False),
            ("plain@fhir.example", False),
        ):
            entry = suppression.find_suppression(session, keys, suppression.parse_address(address))
            assert (entry is not None) == suppressed, address
            if entry is not None:
                assert (entry.reason, entry.scope) == ("deceased", "all")
