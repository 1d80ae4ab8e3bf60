"""The import wizard with a FHIR file: the source choice, the refusal of a file that is not
FHIR (nothing kept), the preview of the first resources (masked; values only on a
``phi:read`` reveal, audited), the options and their errors, the run and the error report
(line for NDJSON, entry index for a Bundle, element path and reason, never a value).

Sign-in, permission, CSRF and other-organization checks of every wizard route, the
reveal included, are in the generic suite (console_cases.py)."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from carepost.accounts.permissions import ROLE_PERMISSIONS, Role
from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields
from carepost.contacts.models import Contact
from carepost.imports.models import ImportChunk, ImportJob
from carepost.imports.service import get_job
from tests.canaries import phi_value
from tests.web.import_files import held_upload, run_worker


def patient(pid: str, family: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"use": "official", "family": family, "given": ["Ann"]}],
        "telecom": [{"system": "email", "value": f"{pid}@clinic.example"}],
        "birthDate": "1970-05-06",
        **extra,
    }


def ndjson(*resources: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in resources).encode()


def bundle(*resources: dict[str, Any]) -> bytes:
    entries = [{"resource": r} for r in resources]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).encode()


def three_good_one_bad(secret: str) -> bytes:
    """Patients p1, p2, p4 valid; line 3 has a birth date FHIR refuses."""
    return ndjson(
        patient("p1", secret, gender="female", communication=[_language("es")]),
        patient("p2", "Okoro"),
        patient("p3", "Marsh", birthDate=f"{secret}-13"),
        patient("p4", "Rao", identifier=[_mrn("MRN-4")]),
    )


def _language(code: str) -> dict[str, Any]:
    return {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": code}]}}


def _mrn(value: str) -> dict[str, Any]:
    coding = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
    return {"type": {"coding": [coding]}, "value": value}


def upload(browser, body: bytes, *, source: str = "fhir", name: str = "Patient.ndjson"):
    return browser.client.post(
        "/imports/upload",
        data={"format": source},
        files={"file": (name, body, "application/fhir+ndjson")},
        headers={"X-CSRF-Token": browser.csrf, "HX-Request": "true"},
        follow_redirects=False,
    )


def job_id_of(response) -> uuid.UUID:
    found = re.fullmatch(r"/imports/([0-9a-f-]{36})/mapping", response.headers["HX-Redirect"])
    assert found, response.headers
    return uuid.UUID(found.group(1))


def audit_events(runtime, tenant, action: str) -> list[AuditEvent]:
    with runtime.database.session() as session:
        query = select(AuditEvent).where(
            AuditEvent.tenant_id == tenant[0].id, AuditEvent.action == action
        )
        return list(session.scalars(query))


def load_job(runtime, tenant, job_id) -> ImportJob:
    with runtime.bound_session(tenant[1]) as session:
        job = get_job(session, tenant[0].id, job_id)
        session.expunge(job)
        return job


def nothing_stored(runtime, tenant) -> bool:
    with runtime.database.session() as session:
        jobs = select(ImportJob.id).where(ImportJob.tenant_id == tenant[0].id)
        chunks = select(ImportChunk.id).where(ImportChunk.tenant_id == tenant[0].id)
        return session.scalar(jobs) is None and session.scalar(chunks) is None


def contacts(runtime, tenant) -> dict[str, Contact]:
    with runtime.bound_session(tenant[1]) as session:
        found = session.scalars(select(Contact).where(Contact.tenant_id == tenant[0].id))
        rows = {c.external_id or "": c for c in found}
        session.expunge_all()
    return rows


def start_options(**changes: str) -> dict[str, str]:
    return {
        "match": "external_id",
        "default_region": "US",
        "patient_id_as_external_id": "on",
        "suppress_deceased": "on",
        "identifier_systems": "",
        **changes,
    }


@pytest.fixture
def marketer(tenant, make_person, sign_in):
    browser = sign_in(make_person(tenant, "marketer"))
    browser.get("/imports/new")  # as a person would: the page holds the CSRF token
    return browser


def test_the_upload_page_offers_csv_and_fhir(marketer):
    page = marketer.get("/imports/new")
    assert page.status_code == 200
    assert 'name="format" value="csv" checked' in page.text
    assert "FHIR (JSON Bundle or NDJSON)</label>" in page.text
    assert ".ndjson" in page.text and "application/fhir+json" in page.text


def test_an_ndjson_export_is_previewed_revealed_imported_and_reported(runtime, tenant, marketer):
    secret = phi_value("name")
    body = three_good_one_bad(secret)
    answer = upload(marketer, body)
    assert answer.status_code == 200, answer.text
    job_id = job_id_of(answer)
    held = load_job(runtime, tenant, job_id)
    assert (held.format, held.status, held.file_size) == ("fhir", "uploading", len(body))

    # Step 2: the first resources, masked for everybody until revealed.
    preview = marketer.get(f"/imports/{job_id}/mapping")
    assert preview.status_code == 200
    text = preview.text
    assert "Check the preview" in text and 'aria-current="step">Check the preview' in text
    assert re.findall(r'data-label="Record">(Line \d)<', text) == [f"Line {n}" for n in range(1, 5)]
    assert secret not in text and "p1@clinic.example" not in text
    assert '<span class="sample">given</span>' in text
    assert "Patient.birthDate: Does not have the format FHIR requires" in text
    assert "<strong>Line 3</strong> (not imported)" in text
    assert text.count(">not imported<") == 1 and text.count(">imported<") == 3
    assert '<span class="sample">MRN</span>' in text  # the kind of identifier, not its value
    assert 'id="reveal-preview"' in text
    assert '<option value="external_id" selected>' in text
    assert audit_events(runtime, tenant, "import.samples_viewed") == []

    # The reveal (phi:read): the values, audited without them; the options posted are kept.
    revealed = marketer.post(f"/imports/{job_id}/reveal", start_options(match="email"))
    assert revealed.status_code == 200
    shown = revealed.text
    assert f"Ann {secret}" in shown and "p1@clinic.example" in shown
    assert "1970-05-06" in shown and ">es<" in shown and "MRN MRN-4" in shown
    assert 'id="reveal-preview"' not in shown and "recorded in the audit trail" in shown
    assert '<option value="email" selected>' in shown
    assert f"{secret}-13" not in shown  # a refused value is never shown, even revealed
    viewed = audit_events(runtime, tenant, "import.samples_viewed")
    assert len(viewed) == 1 and viewed[0].object_id == str(job_id)
    assert viewed[0].details == {"rows": 4, "format": "fhir"}

    # Start: the options become the job's mapping, and it is queued.
    started = marketer.post(f"/imports/{job_id}/mapping", start_options())
    assert started.status_code == 303 and started.headers["location"] == f"/imports/{job_id}"
    queued = load_job(runtime, tenant, job_id)
    assert queued.status == "queued" and queued.match == "external_id"
    assert queued.mapping["default_region"] == "US"
    assert queued.mapping["patient_id_as_external_id"] is True
    created = audit_events(runtime, tenant, "import.created")
    assert len(created) == 1 and created[0].details["format"] == "fhir"

    # Step 3: the same progress as a CSV import, polling until done.
    progress = marketer.get(f"/imports/{job_id}/progress")
    assert 'hx-trigger="every 2s"' in progress.text and "Resources read" in progress.text
    run_worker(runtime)
    done = marketer.get(f"/imports/{job_id}/progress")
    assert "hx-trigger" not in done.text
    assert re.search(r'id="count-rows">4<', done.text)
    assert re.search(r'id="count-created">3<', done.text)
    assert re.search(r'id="count-errors">1<', done.text)
    assert "Line or entry" in done.text and "<code>Patient.birthDate</code>" in done.text
    assert re.findall(r'data-label="Line or entry">(\d+)<', done.text) == ["3"]
    assert secret not in done.text

    report = marketer.get(f"/api/v1/imports/{job_id}/errors.csv")
    assert report.status_code == 200
    rows = list(csv.reader(io.StringIO(report.text)))
    assert rows[0] == ["line", "column", "reason"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("3", "Patient.birthDate")]
    assert secret not in report.text

    imported = contacts(runtime, tenant)
    assert set(imported) == {"p1", "p2", "p4"}
    assert imported["p1"].last_name == secret and imported["p1"].email == "p1@clinic.example"
    assert imported["p1"].language == "es"
    assert str(imported["p2"].birth_date) == "1970-05-06"


def test_a_bundle_reports_entries_by_index(runtime, tenant, marketer):
    body = bundle(
        patient("b1", "Lind"),
        patient("b2", "Berg", name=[{"family": ["not", "a", "string"]}]),
        patient("b3", "Holm"),
    )
    job_id = job_id_of(upload(marketer, body, name="bundle.json"))
    preview = marketer.get(f"/imports/{job_id}/mapping")
    assert re.findall(r'data-label="Record">(Entry \d)<', preview.text) == [
        "Entry 1",
        "Entry 2",
        "Entry 3",
    ]
    assert "Patient.name[0].family: Must be a string" in preview.text
    marketer.post(f"/imports/{job_id}/mapping", start_options())
    run_worker(runtime)
    report = marketer.get(f"/api/v1/imports/{job_id}/errors.csv")
    rows = list(csv.reader(io.StringIO(report.text)))[1:]
    assert [(r[0], r[1]) for r in rows] == [("2", "Patient.name[0].family")]
    assert set(contacts(runtime, tenant)) == {"b1", "b3"}


OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "BP"}}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"email,first_name\nann@clinic.example,Ann\n", "not FHIR JSON"),
        (b'{"resourceType": "Patient", "name": [', "not valid JSON"),
        (b'[{"resourceType": "Patient"}]', "not FHIR JSON"),
        (bundle(OBSERVATION, OBSERVATION), "the file holds no Patient resource, only Observation"),
        (ndjson(OBSERVATION), "the file holds no Patient resource, only Observation"),
        (
            json.dumps({"resourceType": "Bundle", "type": "history", "entry": []}).encode(),
            "a Bundle of type history is not imported",
        ),
        (
            bundle(patient("c1", "Cut"), patient("c2", "Cut"))[:-40],
            "the file is not valid JSON from here on",
        ),
        (b"\n\n", "the file is empty"),
        (
            bundle(*(patient(f"k{n}", "Cut") for n in range(12)))[:-60],
            "the file is not valid JSON to its end (cut short, or more text follows)",
        ),
        (
            bundle(*(patient(f"t{n}", "Tail") for n in range(12)))
            + b' {"resourceType": "Patient"}',
            "the file is not valid JSON to its end",
        ),
    ],
    ids=[
        "csv",
        "invalid-json",
        "json-array",
        "observations",
        "ndjson-obs",
        "history",
        "cut",
        "blank",
        "cut-late",
        "text-after",
    ],
)
def test_a_file_that_is_not_fhir_is_refused_on_the_upload_page(
    runtime, tenant, marketer, body, reason
):
    answer = upload(marketer, body)
    assert answer.status_code == 422
    assert "There is a problem" in answer.text
    assert "This is not a FHIR file we can import: " + reason in answer.text
    assert 'name="format" value="fhir" checked' in answer.text  # the choice is kept
    assert 'aria-invalid="true"' in answer.text
    assert nothing_stored(runtime, tenant)
    assert contacts(runtime, tenant) == {}


def test_a_bundle_with_a_byte_order_mark_over_several_chunks_is_taken(runtime, tenant, marketer):
    """A Bundle of 2.5 MiB (three stored chunks) read to its end, after a UTF-8 BOM."""
    filler = {"resourceType": "Observation", "status": "final", "code": {"text": "x" * 2000}}
    body = b"\xef\xbb\xbf" + bundle(
        patient("m1", "Lind"), *([filler] * 1300), patient("m2", "Berg")
    )
    assert len(body) > 2.5 * 2**20
    answer = upload(marketer, body, name="everything.json")
    assert answer.status_code == 200, answer.text
    job_id = job_id_of(answer)
    assert load_job(runtime, tenant, job_id).file_size == len(body)
    preview = marketer.get(f"/imports/{job_id}/mapping")
    assert "Entry 2</strong> (not imported): resourceType: Not a Patient resource: Observation" in (
        preview.text
    )
    marketer.post(f"/imports/{job_id}/mapping", start_options())
    run_worker(runtime)
    job = load_job(runtime, tenant, job_id)
    assert (job.status, job.created, job.errored) == ("completed", 2, 1300)
    assert set(contacts(runtime, tenant)) == {"m1", "m2"}


def test_an_unknown_source_is_refused(runtime, tenant, marketer):
    answer = upload(marketer, ndjson(patient("x1", "Lind")), source="hl7v2")
    assert answer.status_code == 422
    assert "Choose the kind of file: CSV or FHIR" in answer.text
    assert nothing_stored(runtime, tenant)


def test_a_csv_upload_still_goes_to_the_column_mapping(runtime, tenant, marketer):
    job_id = job_id_of(upload(marketer, b"email\nann@clinic.example\n", source="csv"))
    assert load_job(runtime, tenant, job_id).format == "csv"
    page = marketer.get(f"/imports/{job_id}/mapping")
    assert page.status_code == 200 and "Map the columns" in page.text
    # The reveal is the FHIR preview's: a CSV job is sent to its page.
    answer = marketer.post(f"/imports/{job_id}/reveal")
    assert answer.status_code == 303 and answer.headers["location"] == f"/imports/{job_id}"


def test_option_errors_are_shown_next_to_their_input_and_nothing_is_queued(
    runtime, tenant, marketer
):
    job_id = job_id_of(upload(marketer, ndjson(patient("o1", "Lind"))))
    wrong = marketer.post(
        f"/imports/{job_id}/mapping",
        start_options(
            match="nickname",
            default_region="ZZ",
            gender_field="no_such_field",
            identifier_systems="no equals sign here",
        ),
    )
    assert wrong.status_code == 422
    assert "There is a problem" in wrong.text
    assert re.search(
        r'id="fhir-identifier_systems-error".*?one identifier system', wrong.text, re.S
    )
    assert load_job(runtime, tenant, job_id).status == "uploading"
    wrong = marketer.post(
        f"/imports/{job_id}/mapping",
        start_options(match="nickname", default_region="ZZ", gender_field="no_such_field"),
    )
    assert wrong.status_code == 422
    assert re.search(r'id="fhir-match-error".*?Match on one of', wrong.text, re.S)
    assert re.search(r'id="fhir-default_region-error".*?two-letter region', wrong.text, re.S)
    assert re.search(r'id="fhir-gender_field-error".*?No contact field', wrong.text, re.S)
    assert 'aria-invalid="true"' in wrong.text
    assert "o1@clinic.example" not in wrong.text  # a failed post shows no values
    assert load_job(runtime, tenant, job_id).status == "uploading"
    fixed = marketer.post(f"/imports/{job_id}/mapping", start_options())
    assert fixed.status_code == 303
    assert load_job(runtime, tenant, job_id).status == "queued"
    # A queued job's preview and reveal lead to the job.
    for answer in (
        marketer.get(f"/imports/{job_id}/mapping"),
        marketer.post(f"/imports/{job_id}/reveal"),
    ):
        assert answer.status_code == 303 and answer.headers["location"] == f"/imports/{job_id}"


def test_the_tenants_fields_take_gender_and_address(runtime, tenant, marketer):
    with runtime.bound_session(tenant[1]) as session:
        custom_fields.create_field(
            session,
            tenant[0].id,
            key="gender",
            label="Gender",
            type="choice",
            choices=["male", "female", "other", "unknown"],
            actor=SYSTEM,
        )
        custom_fields.create_field(
            session, tenant[0].id, key="postal_code", label="ZIP", type="string", actor=SYSTEM
        )
    home = {"use": "home", "city": "Salem", "postalCode": "01970"}
    job_id = job_id_of(
        upload(marketer, ndjson(patient("g1", "Lind", gender="other", address=[home])))
    )
    preview = marketer.get(f"/imports/{job_id}/mapping")
    assert re.search(r'name="gender_field".*?<option value="gender" selected>', preview.text, re.S)
    assert re.search(
        r'name="postal_code_field".*?<option value="postal_code" selected>', preview.text, re.S
    )
    revealed = marketer.post(f"/imports/{job_id}/reveal")
    assert '<span class="sample">other</span>' in revealed.text
    assert '<span class="sample">01970</span>' in revealed.text
    started = marketer.post(
        f"/imports/{job_id}/mapping",
        start_options(gender_field="gender", postal_code_field="postal_code"),
    )
    assert started.status_code == 303
    run_worker(runtime)
    assert load_job(runtime, tenant, job_id).created == 1


def test_without_phi_read_the_preview_stays_masked(
    runtime, tenant, make_person, sign_in, monkeypatch
):
    without_phi = ROLE_PERMISSIONS[Role.MARKETER] - {"phi:read"}
    monkeypatch.setattr("carepost.api.deps.permissions_for", lambda role: without_phi)
    secret = phi_value("name")
    browser = sign_in(make_person(tenant, "marketer"))
    browser.get("/imports/new")
    job_id = job_id_of(upload(browser, three_good_one_bad(secret)))
    page = browser.get(f"/imports/{job_id}/mapping")
    assert page.status_code == 200
    assert secret not in page.text and "your role does not include" in page.text
    assert 'id="reveal-preview"' not in page.text
    refused = browser.post(f"/imports/{job_id}/reveal", start_options())
    assert refused.status_code == 403 and secret not in refused.text
    assert audit_events(runtime, tenant, "import.samples_viewed") == []
    # Importing needs contacts:write only.
    assert browser.post(f"/imports/{job_id}/mapping", start_options()).status_code == 303


def test_a_held_fhir_job_links_to_its_preview(runtime, tenant, marketer):
    job_id = job_id_of(upload(marketer, ndjson(patient("h1", "Lind"))))
    page = marketer.get(f"/imports/{job_id}")
    assert page.status_code == 200
    assert f'href="/imports/{job_id}/mapping">Check the preview</a>' in page.text


def test_a_csv_job_held_before_keeps_its_mapping_page(runtime, tenant, marketer):
    job_id = held_upload(runtime, tenant, b"email\nann@clinic.example\n")
    page = marketer.get(f"/imports/{job_id}/mapping")
    assert page.status_code == 200 and "Map the columns" in page.text
