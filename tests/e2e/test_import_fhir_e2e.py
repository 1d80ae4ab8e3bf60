"""The import wizard with a FHIR file in Chromium. A person allowed to import (a marketer:
``contacts:write`` and ``phi:read`` as an admin has, without the admin's MFA step to
script) signs in, chooses "FHIR (JSON Bundle or NDJSON)", first uploads a CSV file by
mistake (refused on the page, nothing kept), then a Bulk Data NDJSON export of 3 valid
Patients and 1 invalid one; checks the preview (masked, then revealed), starts the
import, watches the progress (HTMX polling, a worker thread running beside the server
as ``carepost worker`` would) reach "completed" with 3 created and 1 error, finds the
contacts, and downloads the error report (line 3, ``Patient.birthDate``, no value).
Screenshots go to ``$CAREPOST_TEST_ARTIFACTS/screenshots/``."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from carepost.accounts import service as accounts
from carepost.contacts.models import Contact
from carepost.imports.models import ImportJob
from carepost.imports.tasks import run_imports
from tests.canaries import phi_value, secret_value
from tests.e2e.conftest import settle, sign_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def importer(runtime, make_tenant):
    tenant, keys = make_tenant("Harbor Family Medicine")
    password = secret_value(f"Pw-{uuid.uuid4().hex}")
    with runtime.bound_session(keys) as session:
        user, _ = accounts.create_user(
            session,
            tenant_id=tenant.id,
            email=f"it-{uuid.uuid4().hex[:6]}@harbor.example",
            role="marketer",
            name="Ravi Sato",
            password=password,
        )
    return tenant, keys, user.email, password


@pytest.fixture
def fhir_worker(runtime) -> Iterator[None]:
    """The imports job of ``carepost worker``, polling in a thread beside the server."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            run_imports(runtime, budget_seconds=5)
            stop.wait(0.5)

    thread = threading.Thread(target=loop, name="fhir-imports-worker-e2e", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


def patient(pid: str, family: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"use": "official", "family": family, "given": ["Ana"]}],
        "telecom": [{"system": "email", "value": f"{pid}@harbor.example"}],
        "birthDate": "1968-03-09",
        **extra,
    }


def shoot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_fhir_import_from_upload_to_error_report(
    page: Page, live_server, runtime, importer, fhir_worker, screenshots, tmp_path
):
    tenant, keys, email, password = importer
    surname = phi_value("name")
    export = tmp_path / "Patient.ndjson"
    resources = [
        patient("hp-1", surname),
        patient("hp-2", "Okafor"),
        patient("hp-3", "Lindgren", birthDate="1968-02-30"),  # no such day: refused
        patient("hp-4", "Moreau"),
    ]
    export.write_text("".join(json.dumps(r) + "\n" for r in resources))
    wrong = tmp_path / "patients.csv"
    wrong.write_text("email,first_name\nann@harbor.example,Ann\n")

    sign_in(page, tenant.slug, email, password)
    expect(page).to_have_url(f"{live_server}/")

    page.get_by_role("link", name="Imports").click()
    page.get_by_role("link", name="Import contacts").click()
    expect(page.get_by_role("heading", name="Import contacts")).to_be_visible()

    # A CSV file sent as FHIR: a clear error on the page, nothing kept.
    page.get_by_label("FHIR (JSON Bundle or NDJSON)").check()
    page.get_by_label("File").set_input_files(str(wrong))
    page.get_by_role("button", name="Upload and continue").click()
    settle(page)
    summary = page.locator("[data-error-summary]")
    expect(summary).to_contain_text("This is not a FHIR file we can import: not FHIR JSON")
    expect(page.get_by_label("FHIR (JSON Bundle or NDJSON)")).to_be_checked()
    with runtime.database.session() as session:
        assert session.scalar(select(ImportJob.id).where(ImportJob.tenant_id == tenant.id)) is None
    shoot(page, screenshots, "fhir-import-1-refused")

    # The export: the preview of its first resources, masked.
    page.get_by_label("File").set_input_files(str(export))
    page.get_by_role("button", name="Upload and continue").click()
    expect(page).to_have_url(re.compile(r"/imports/[0-9a-f-]{36}/mapping$"))
    expect(page.get_by_role("heading", name="Check the preview")).to_be_visible()
    preview = page.locator("#fhir-preview tbody tr")
    expect(preview).to_have_count(4)
    expect(preview.nth(2)).to_contain_text("Line 3")
    expect(preview.nth(2)).to_contain_text("not imported")
    problems = page.locator("#preview-problems")
    expect(problems).to_contain_text("Line 3 (not imported): Patient.birthDate")
    expect(page.locator("#fhir-preview")).not_to_contain_text(surname)
    expect(page.get_by_label("Match contacts by")).to_have_value("external_id")

    # The reveal: the values, for a person holding phi:read (audited by the server).
    page.get_by_role("button", name="Show the values").click()
    expect(page.locator("#fhir-preview")).to_contain_text(f"Ana {surname}")
    expect(page.locator("#fhir-preview")).to_contain_text("hp-1@harbor.example")
    shoot(page, screenshots, "fhir-import-2-preview")
    page.get_by_role("button", name="Start the import").click()

    # Progress, polled until the job ends.
    expect(page).to_have_url(re.compile(r"/imports/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#import-status")).to_have_text("completed", timeout=30_000)
    settle(page)
    expect(page.locator("#count-rows")).to_have_text("4")
    expect(page.locator("#count-created")).to_have_text("3")
    expect(page.locator("#count-errors")).to_have_text("1")
    expect(page.locator("#import-progress")).not_to_have_attribute("hx-trigger", re.compile("."))
    errors = page.locator("#import-errors tbody tr")
    expect(errors).to_have_count(1)
    expect(errors.first).to_contain_text("3")
    expect(errors.first).to_contain_text("Patient.birthDate")
    expect(page.locator("body")).not_to_contain_text(surname)
    shoot(page, screenshots, "fhir-import-3-done")

    with runtime.bound_session(keys) as session:
        found = session.scalars(select(Contact).where(Contact.tenant_id == tenant.id))
        imported = {c.external_id: (c.last_name, c.email) for c in found}
    assert imported == {
        "hp-1": (surname, "hp-1@harbor.example"),
        "hp-2": ("Okafor", "hp-2@harbor.example"),
        "hp-4": ("Moreau", "hp-4@harbor.example"),
    }

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download error report (CSV)").click()
    download = download_info.value
    assert download.suggested_filename == f"import-{job_id}-errors.csv"
    report = Path(download.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(report)))
    assert rows[0] == ["line", "column", "reason"]
    assert [(line, column) for line, column, _reason in rows[1:]] == [("3", "Patient.birthDate")]
    assert surname not in report and "1968-02-30" not in report
