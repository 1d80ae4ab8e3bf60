"""The import wizard in the console: upload (streamed, size-limited), mapping (PHI samples
only with phi:read, and audited), progress polling, the summary and error report.

Access rules (sign-in, roles, CSRF, other organizations' jobs) are checked for every
wizard route by the generic suite (console_cases.py)."""

from __future__ import annotations

import csv
import io
import re
import uuid

import pytest
from sqlalchemy import select

from carepost.accounts.permissions import ROLE_PERMISSIONS, Role
from carepost.audit.models import AuditEvent
from carepost.contacts.models import Contact
from carepost.imports.models import ImportChunk, ImportJob
from carepost.imports.service import get_job
from tests.canaries import phi_value
from tests.web.import_files import held_upload, run_worker

FORMULA = "=HYPERLINK(1)"


def good_and_bad_csv(secret: str) -> bytes:
    """Three good rows, a bad date (line 5) and a bad email (line 6)."""
    return (
        "E-mail,First Name,DOB,Notes\n"
        f"ann@clinic.example,{secret},1980-02-03,x\n"
        "bob@clinic.example,Bob,1975-12-31,y\n"
        "cy@clinic.example,Cy,,z\n"
        f"dee@clinic.example,Dee,{secret}-13-45,w\n"
        f"{secret}-not-an-email,Eve,1990-01-01,v\n"
    ).encode()


def upload(browser, body: bytes, *, name: str = "patients.csv", csrf: bool = True):
    headers = {"X-CSRF-Token": browser.csrf} if csrf else {}
    return browser.client.post(
        "/imports/upload",
        files={"file": (name, body, "text/csv")},
        headers={**headers, "HX-Request": "true"},
        follow_redirects=False,
    )


def job_id_of(response) -> uuid.UUID:
    found = re.fullmatch(r"/imports/([0-9a-f-]{36})/mapping", response.headers["HX-Redirect"])
    assert found, response.headers
    return uuid.UUID(found.group(1))


def audit_events(runtime, tenant, action: str) -> list[AuditEvent]:
    with runtime.database.session() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.tenant_id == tenant[0].id, AuditEvent.action == action
                )
            )
        )


def load_job(runtime, tenant, job_id) -> ImportJob:
    with runtime.bound_session(tenant[1]) as session:
        job = get_job(session, tenant[0].id, job_id)
        session.expunge(job)
        return job


@pytest.fixture
def marketer(tenant, make_person, sign_in):
    browser = sign_in(make_person(tenant, "marketer"))
    browser.get("/imports/new")  # as a person would: the page holds the CSRF token
    return browser


def test_the_wizard_uploads_maps_runs_and_reports(runtime, tenant, marketer):
    secret = phi_value("cell")
    page = marketer.get("/imports/new")
    assert page.status_code == 200 and 'hx-encoding="multipart/form-data"' in page.text

    answer = upload(marketer, good_and_bad_csv(secret))
    assert answer.status_code == 200, answer.text
    job_id = job_id_of(answer)
    held = load_job(runtime, tenant, job_id)
    assert held.status == "uploading" and held.file_size == len(good_and_bad_csv(secret))

    # Step 2: the columns, prefilled by the default mapping, with the samples (phi:read).
    mapping = marketer.get(f"/imports/{job_id}/mapping")
    assert mapping.status_code == 200
    text = mapping.text
    for column in ("E-mail", "First Name", "DOB", "Notes"):
        assert f">{column}</label>" in text
    assert re.search(r'name="col_0".*?<option value="email" selected>', text, re.S)
    assert re.search(r'name="col_1".*?<option value="first_name" selected>', text, re.S)
    dob_select = re.search(r'name="col_2".*?</select>', text, re.S)
    assert dob_select and "selected" not in dob_select.group(0)  # "DOB" names no field
    assert secret in text  # the samples, for a person allowed to see them ...
    viewed = audit_events(runtime, tenant, "import.samples_viewed")
    assert len(viewed) == 1 and viewed[0].object_id == str(job_id)
    assert viewed[0].details == {"rows": 3}  # ... recorded, without a value

    started = marketer.post(
        f"/imports/{job_id}/mapping",
        {
            "match": "email",
            "date_format": "iso",
            "col_0": "email",
            "col_1": "first_name",
            "col_2": "birth_date",
            "col_3": "",
        },
    )
    assert started.status_code == 303 and started.headers["location"] == f"/imports/{job_id}"
    queued = load_job(runtime, tenant, job_id)
    assert queued.status == "queued" and queued.match == "email"
    assert queued.mapping == {
        "columns": {
            "E-mail": "email",
            "First Name": "first_name",
            "DOB": "birth_date",
            "Notes": None,
        },
        "date_format": "iso",
    }

    # Step 3: while queued, the fragment polls; once done it stops and sums up.
    progress = marketer.get(f"/imports/{job_id}/progress")
    assert 'hx-trigger="every 2s"' in progress.text and "queued" in progress.text
    assert 'id="cancel-import"' in progress.text
    run_worker(runtime)
    done = marketer.get(f"/imports/{job_id}/progress")
    assert "hx-trigger" not in done.text
    assert re.search(r'id="count-created">3<', done.text)
    assert re.search(r'id="count-errors">2<', done.text)
    assert "Download error report (CSV)" in done.text
    assert f'href="/api/v1/imports/{job_id}/errors.csv"' in done.text
    lines = re.findall(r'data-label="Line">(\d+)<', done.text)
    assert lines == ["5", "6"]
    assert "<code>DOB</code>" in done.text and "<code>E-mail</code>" in done.text
    assert secret not in done.text

    report = marketer.get(f"/api/v1/imports/{job_id}/errors.csv")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(report.text)))
    assert rows[0] == ["line", "column", "reason"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("5", "DOB"), ("6", "E-mail")]
    assert secret not in report.text

    listing = marketer.get("/imports")
    assert listing.status_code == 200 and f"/imports/{job_id}" in listing.text
    assert "completed" in listing.text
    with runtime.bound_session(tenant[1]) as session:
        assert session.scalar(select(ImportChunk.id).where(ImportChunk.job_id == job_id)) is None
        emails = {
            c.email
            for c in session.scalars(select(Contact).where(Contact.tenant_id == tenant[0].id))
        }
    assert emails == {"ann@clinic.example", "bob@clinic.example", "cy@clinic.example"}


def test_without_phi_read_only_the_column_names_are_shown(
    runtime, tenant, make_person, sign_in, monkeypatch
):
    without_phi = ROLE_PERMISSIONS[Role.MARKETER] - {"phi:read"}
    monkeypatch.setattr("carepost.api.deps.permissions_for", lambda role: without_phi)
    secret = phi_value("cell")
    job_id = held_upload(runtime, tenant, f"email,first_name\n{secret}@x.example,Ann\n".encode())
    browser = sign_in(make_person(tenant, "marketer"))
    page = browser.get(f"/imports/{job_id}/mapping")
    assert page.status_code == 200
    assert ">email</label>" in page.text and ">first_name</label>" in page.text
    assert secret not in page.text and "your role does not include" in page.text
    assert audit_events(runtime, tenant, "import.samples_viewed") == []


def test_mapping_errors_are_shown_next_to_their_column(runtime, tenant, marketer):
    job_id = held_upload(runtime, tenant, b"Code,Name\nA1,Ann\n")
    # No column feeds the match key; then a column fed to a field that does not exist.
    missing = marketer.post(
        f"/imports/{job_id}/mapping", {"match": "mrn", "col_0": "", "col_1": "first_name"}
    )
    assert missing.status_code == 422
    assert "No column maps to mrn" in missing.text
    unknown = marketer.post(
        f"/imports/{job_id}/mapping", {"match": "mrn", "col_0": "mrn", "col_1": "shoe_size"}
    )
    assert unknown.status_code == 422
    assert re.search(r'id="col-1-error".*?Not a contact field', unknown.text, re.S)
    assert 'aria-invalid="true"' in unknown.text
    assert load_job(runtime, tenant, job_id).status == "uploading"  # nothing queued
    fixed = marketer.post(
        f"/imports/{job_id}/mapping", {"match": "mrn", "col_0": "mrn", "col_1": "first_name"}
    )
    assert fixed.status_code == 303
    assert load_job(runtime, tenant, job_id).status == "queued"
    # A queued job's mapping is fixed: its pages lead to the job.
    again = marketer.get(f"/imports/{job_id}/mapping")
    assert again.status_code == 303 and again.headers["location"] == f"/imports/{job_id}"


def test_a_file_over_the_limit_is_refused_clearly_and_leaves_nothing(
    runtime, tenant, marketer, monkeypatch
):
    small = runtime.settings.model_copy(update={"max_import_bytes": 2048})
    monkeypatch.setattr(runtime, "settings", small)
    answer = upload(marketer, b"email\n" + b"someone@clinic.example\n" * 200)
    assert answer.status_code == 422
    assert "The file is larger than 2.0 KB" in answer.text
    assert "CAREPOST_MAX_IMPORT_BYTES" in answer.text
    with runtime.database.session() as session:
        assert (
            session.scalar(select(ImportJob.id).where(ImportJob.tenant_id == tenant[0].id)) is None
        )
        chunks = select(ImportChunk.id).where(ImportChunk.tenant_id == tenant[0].id)
        assert session.scalar(chunks) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "Choose a file to import"),
        (b"\xff\xfeh\x00i\x00", "The file is UTF-16: save it as UTF-8"),
    ],
)
def test_an_empty_or_unreadable_file_is_refused(runtime, tenant, marketer, body, message):
    answer = upload(marketer, body)
    if answer.status_code == 200:  # stored; its header is read at the mapping step
        answer = marketer.get(answer.headers["HX-Redirect"])
    assert answer.status_code == 422
    assert message in answer.text
    with runtime.database.session() as session:
        assert (
            session.scalar(select(ImportJob.id).where(ImportJob.tenant_id == tenant[0].id)) is None
        )


def test_the_upload_needs_the_csrf_header_and_is_never_parsed_as_a_form(runtime, tenant, marketer):
    answer = upload(marketer, b"email\nann@clinic.example\n", csrf=False)
    assert answer.status_code == 403 and "CSRF" in answer.text
    with runtime.database.session() as session:
        assert (
            session.scalar(select(ImportJob.id).where(ImportJob.tenant_id == tenant[0].id)) is None
        )


def test_a_running_import_can_be_cancelled(runtime, tenant, marketer):
    job_id = held_upload(runtime, tenant, b"email\nann@clinic.example\n")
    marketer.post(f"/imports/{job_id}/mapping", {"match": "email", "col_0": "email"})
    cancelled = marketer.post(f"/imports/{job_id}/cancel")
    assert cancelled.status_code == 303
    assert load_job(runtime, tenant, job_id).status == "cancelled"
    page = marketer.get(f"/imports/{job_id}")
    assert "cancelled" in page.text and "hx-trigger" not in page.text
    again = marketer.post(f"/imports/{job_id}/cancel", htmx=True)
    assert again.status_code == 409 and "already cancelled" in again.text
    assert again.headers["HX-Retarget"] == "#messages"


def test_an_analyst_sees_jobs_but_cannot_import(runtime, tenant, make_person, sign_in):
    job_id = held_upload(runtime, tenant, b"email\nann@clinic.example\n")
    analyst = sign_in(make_person(tenant, "analyst"))
    listing = analyst.get("/imports")
    assert listing.status_code == 200 and "Import contacts</a>" not in listing.text
    page = analyst.get(f"/imports/{job_id}")
    assert page.status_code == 200 and f"/imports/{job_id}/mapping" not in page.text
    assert analyst.get("/imports/new").status_code == 403
