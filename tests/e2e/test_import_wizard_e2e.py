"""The import wizard in Chromium: a marketer signs in, uploads a CSV file of 3 good rows
and 2 bad ones (a bad date, a bad email), maps its columns, starts the import, watches
the progress (HTMX polling, with a worker thread running beside the server as
``carepost worker`` would) reach "completed" with 3 created and 2 errors, and downloads
the error report. Screenshots of each step (desktop, and the result on a phone) go to
``$CAREPOST_TEST_ARTIFACTS/screenshots/``."""

from __future__ import annotations

import csv
import io
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from carepost.accounts import service as accounts
from carepost.imports.tasks import run_imports
from tests.canaries import phi_value, secret_value
from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def marketer(runtime, make_tenant):
    tenant, keys = make_tenant("Lakeside Cardiology")
    password = secret_value(f"Pw-{uuid.uuid4().hex}")
    with runtime.bound_session(keys) as session:
        user, _ = accounts.create_user(
            session,
            tenant_id=tenant.id,
            email=f"maya-{uuid.uuid4().hex[:6]}@lakeside.example",
            role="marketer",
            name="Maya Lindqvist",
            password=password,
        )
    return tenant, user.email, password


@pytest.fixture
def worker(runtime) -> Iterator[None]:
    """The imports job of ``carepost worker``, polling in a thread beside the server."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            run_imports(runtime, budget_seconds=5)
            stop.wait(0.5)

    thread = threading.Thread(target=loop, name="imports-worker-e2e", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


def shoot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_import_wizard_from_upload_to_error_report(
    page: Page, live_server, marketer, worker, screenshots, tmp_path
):
    tenant, email, password = marketer
    surname = phi_value("name")
    patients = tmp_path / "patients.csv"
    patients.write_text(
        "Email,First Name,Last Name,Date of birth\n"
        f"ann@lakeside.example,Ann,{surname},1961-04-12\n"
        "ben@lakeside.example,Ben,Okoro,1958-11-30\n"
        "cleo@lakeside.example,Cleo,Marsh,1970-07-07\n"
        "dev@lakeside.example,Dev,Rao,1966-13-45\n"
        "not-an-email,Eli,Stone,1972-02-02\n"
    )

    sign_in(page, tenant.slug, email, password)
    expect(page).to_have_url(f"{live_server}/")

    # The list, then step 1: upload.
    page.get_by_role("link", name="Imports").click()
    expect(page.get_by_role("heading", name="Imports")).to_be_visible()
    page.get_by_role("link", name="Import contacts").click()
    expect(page.get_by_role("heading", name="Import contacts")).to_be_visible()
    # A file over the server's limit is refused before it is sent (here a limit of 10 bytes),
    # by imports.js: a deferred script, in place once the document is parsed.
    page.wait_for_load_state("domcontentloaded")
    file_input = page.get_by_label("File")
    limit = file_input.get_attribute("data-max-bytes")
    file_input.evaluate("input => { input.dataset.maxBytes = '10'; }")
    file_input.set_input_files(str(patients))
    assert "larger than" in file_input.evaluate("input => input.validationMessage")
    page.get_by_role("button", name="Upload and continue").click()
    expect(page).to_have_url(f"{live_server}/imports/new")  # nothing was sent
    file_input.evaluate(f"input => {{ input.dataset.maxBytes = '{limit}'; }}")
    file_input.set_input_files([])
    file_input.set_input_files(str(patients))
    assert file_input.evaluate("input => input.validationMessage") == ""
    shoot(page, screenshots, "import-1-upload")
    page.get_by_role("button", name="Upload and continue").click()

    # Step 2: the columns with samples (a marketer holds phi:read), prefilled.
    expect(page).to_have_url(re.compile(r"/imports/[0-9a-f-]{36}/mapping$"))
    expect(page.get_by_role("heading", name="Map the columns")).to_be_visible()
    expect(page.get_by_label("Email", exact=True)).to_have_value("email")
    expect(page.get_by_label("First Name")).to_have_value("first_name")
    expect(page.get_by_label("Last Name")).to_have_value("last_name")
    expect(page.get_by_label("Date of birth")).to_have_value("")  # no field of that name
    expect(page.locator("#mapping-table")).to_contain_text(surname)
    page.get_by_label("Date of birth").select_option("birth_date")
    page.get_by_label("Match contacts by").select_option("email")
    page.get_by_label("Dates in the file").select_option("iso")
    shoot(page, screenshots, "import-2-mapping")
    page.get_by_role("button", name="Start the import").click()

    # Step 3: progress, polled until the job ends.
    expect(page).to_have_url(re.compile(r"/imports/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    shoot(page, screenshots, "import-3-progress")
    expect(page.locator("#import-status")).to_have_text("completed", timeout=30_000)
    expect(page.locator("#count-rows")).to_have_text("5")
    expect(page.locator("#count-created")).to_have_text("3")
    expect(page.locator("#count-errors")).to_have_text("2")
    expect(page.locator("#import-summary")).to_contain_text("3 created")
    expect(page.locator("#import-progress")).not_to_have_attribute("hx-trigger", re.compile("."))
    errors = page.locator("#import-errors tbody tr")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text("5")
    expect(errors.nth(0)).to_contain_text("Date of birth")
    expect(errors.nth(1)).to_contain_text("6")
    expect(errors.nth(1)).to_contain_text("Email")
    expect(page.locator("#import-errors")).not_to_contain_text("not-an-email")
    expect(page.locator("body")).not_to_contain_text(surname)
    shoot(page, screenshots, "import-4-done")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download error report (CSV)").click()
    download = download_info.value
    assert download.suggested_filename == f"import-{job_id}-errors.csv"
    report = Path(download.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(report)))
    assert rows[0] == ["line", "column", "reason"]
    assert [(line, column) for line, column, _reason in rows[1:]] == [
        ("5", "Date of birth"),
        ("6", "Email"),
    ]
    assert "not-an-email" not in report and "1966-13-45" not in report

    # The list shows the finished job with its counts.
    page.get_by_role("link", name="Imports").first.click()
    job_row = page.locator("#import-table tbody tr").first
    expect(job_row).to_contain_text("completed")
    expect(job_row.locator('td[data-label="Created"]')).to_have_text("3")
    expect(job_row.locator('td[data-label="Errors"]')).to_have_text("2")
    shoot(page, screenshots, "import-5-list")

    # On a phone: the result page still reads as a whole.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/imports/{job_id}")
    expect(page.locator("#count-created")).to_be_visible()
    shoot(page, screenshots, "import-4-done-mobile")
