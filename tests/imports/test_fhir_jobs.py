"""FHIR R4 files through the import jobs: the API upload, the worker, the CLI."""

from __future__ import annotations

import json

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
