"""Journey stages in Chromium: a marketer adds the organization's own stage on the
journey stages page (first a mistake, shown next to its field), then moves a patient
to it on the patient's page. No script errors, no CSP violations."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.canaries import phi_value
from tests.e2e.conftest import settle, sign_in
from tests.web.people import create_person

pytestmark = pytest.mark.e2e


def open_disclosure(page: Page, summary: str) -> None:
    panel = page.locator("details", has=page.locator("summary", has_text=summary))
    if not panel.evaluate("element => element.open"):
        panel.locator("summary").click()


def test_a_marketer_adds_a_stage_and_moves_a_patient_to_it(
    page: Page, live_server, runtime, make_tenant, make_api_key, screenshots
):
    tenant = make_tenant("Hillside Surgery")
    person = create_person(runtime, tenant, "marketer", name="Sam Ortiz")
    headers = make_api_key(tenant, ["contacts:write", "contacts:read"])
    patient = {"email": f"{phi_value('mail').lower()}@example.org"}
    answer = httpx.put(
        f"{live_server}/api/v1/contacts/upsert",
        json={"match": "email", "contact": patient},
        headers=headers,
    )
    assert answer.status_code == 201, answer.text
    contact_id = answer.json()["id"]

    sign_in(page, tenant[0].slug, person.email, person.password)
    expect(page.get_by_role("heading", level=1)).to_have_text("Hillside Surgery")
    page.get_by_role("navigation", name="Console").get_by_role(
        "link", name="Journey stages"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Journey stages")
    expect(page.locator("#stage-new")).to_contain_text("built in")

    # A key with capitals is refused next to the field, what was typed kept (HTMX).
    open_disclosure(page, "Add a stage")
    page.get_by_label("Label").fill("After surgery")
    page.get_by_label("Key").fill("Post-Op")
    page.get_by_role("button", name="Add stage").click()
    expect(page.locator("#stage-key-error")).to_contain_text("lower-case")
    expect(page.get_by_label("Label")).to_have_value("After surgery")
    settle(page)
    page.get_by_label("Key").fill("post-op")
    page.get_by_role("button", name="Add stage").click()
    expect(page.locator("#messages")).to_contain_text("Stage “After surgery” created.")
    expect(page.locator("#stage-post-op")).to_contain_text("your own")
    page.screenshot(path=str(screenshots / "journey-stages.png"), full_page=True)

    # The patient's page offers the new stage; moving them there is kept in the history.
    page.goto(f"/contacts/{contact_id}")
    stage = page.locator("#stage")
    stage.get_by_label("New stage").select_option(label="After surgery")
    stage.get_by_role("button", name="Change stage").click()
    expect(page.locator("#messages")).to_contain_text("Stage changed to post-op.")
    expect(page.locator("#current-stage")).to_have_text("post-op")
    expect(page.locator("#stage-history li").first).to_contain_text("new → post-op")

    # Back on the stages page, the patient is counted in it.
    page.goto("/journey-stages")
    expect(page.locator("#stage-post-op")).to_contain_text("1")
