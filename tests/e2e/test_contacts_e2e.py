"""Contacts in Chromium, as a marketer works with them: define a custom field, receive a
contact from an EHR through the API, browse the list, open the contact (PHI masked),
reveal it, record a consent, add the contact to a list, read the timeline and load
more of it, count a segment live and save it; then the same pages on a phone. No
script errors, no CSP violations; a screenshot of each page goes to
``$CAREPOST_TEST_ARTIFACTS/screenshots/``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.canaries import phi_value
from tests.e2e.conftest import open_page, sign_in
from tests.web.people import create_person

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def practice(runtime, make_tenant, make_api_key):
    """An organization with a marketer (password only: marketers need no second factor)
    and the API key its EHR integration uses."""
    tenant = make_tenant("Lakeside Cardiology")
    person = create_person(runtime, tenant, "marketer", name="Mara Lind")
    email, password = person.email, person.password
    headers = make_api_key(tenant, ["contacts:write", "contacts:read"])
    return tenant, email, password, headers


def shoot(page: Page, screenshots, name: str) -> None:
    page.screenshot(path=str(screenshots / f"contacts-{name}.png"), full_page=True)


def open_disclosure(page: Page, summary: str) -> None:
    panel = page.locator("details", has=page.locator("summary", has_text=summary))
    if not panel.evaluate("element => element.open"):
        panel.locator("summary").click()


def ehr_sends_a_patient(live_server: str, headers: dict[str, str]) -> tuple[str, dict]:
    """The EHR upserts a patient with a condition and an MRN, then posts portal logins."""
    patient = {
        "email": f"{phi_value('mail').lower()}@example.org",
        "first_name": phi_value("first"),
        "last_name": phi_value("last"),
        "phone": "+14155552671",
        "birth_date": "1958-07-14",
        "journey_stage": "overdue",
        "external_ids": {"mrn": phi_value("mrn")},
        "custom": {"conditions": ["hypertension"]},
    }
    answer = httpx.put(
        f"{live_server}/api/v1/contacts/upsert",
        json={"match": "email", "contact": patient},
        headers=headers,
    )
    assert answer.status_code == 201, answer.text
    contact_id = answer.json()["id"]
    now = datetime.now(UTC)
    items = [
        {
            "contact_id": contact_id,
            "kind": "portal_login",
            "occurred_at": (now - timedelta(hours=i)).isoformat(),
            "properties": {"device": "phone"},
        }
        for i in range(30)
    ]
    posted = httpx.post(f"{live_server}/api/v1/events", json={"items": items}, headers=headers)
    assert posted.status_code == 200 and posted.json()["created"] == 30, posted.text
    return contact_id, patient


def test_a_marketer_works_with_contacts(page: Page, live_server, practice, screenshots, chromium):
    tenant, email, password, headers = practice
    sign_in(page, tenant[0].slug, email, password)
    expect(page.get_by_role("heading", level=1)).to_have_text("Lakeside Cardiology")

    # Define a custom field; first a mistake, shown next to its field.
    page.get_by_role("navigation", name="Console").get_by_role(
        "link", name="Contact fields"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Contact fields")
    open_disclosure(page, "Define a field")
    page.get_by_label("Label").fill("Conditions")
    page.get_by_label("Key").fill("conditions")
    page.get_by_label("Type").select_option("multi_choice")
    page.get_by_role("button", name="Create field").click()
    expect(page.locator("#field-choices-error")).to_contain_text("list of choices")
    expect(page.get_by_label("Label")).to_have_value("Conditions")
    shoot(page, screenshots, "field-error")
    page.get_by_label("Choices").fill("hypertension\natrial_fibrillation\nheart_failure")
    page.get_by_role("button", name="Create field").click()
    expect(page.locator("#messages")).to_contain_text("Field created.")
    expect(page.locator("#field-table")).to_contain_text("atrial_fibrillation")
    shoot(page, screenshots, "fields")

    # A list to add patients to.
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Lists").click()
    open_disclosure(page, "Create a list")
    page.get_by_label("Name").fill("Blood pressure check-in")
    page.get_by_label("Description (optional)").fill("Patients due a BP review")
    page.get_by_role("button", name="Create list").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Blood pressure check-in")
    expect(page.locator("#messages")).to_contain_text("List created.")

    contact_id, patient = ehr_sends_a_patient(live_server, headers)

    # The list of contacts shows no PHI; the contact page masks it.
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Contacts").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Contacts")
    row = page.locator(f"#contact-{contact_id}")
    expect(row).to_contain_text("overdue")
    expect(page.locator("main")).not_to_contain_text(patient["first_name"])
    shoot(page, screenshots, "list")

    # An exact search by MRN finds the patient (posted, never in the URL).
    page.get_by_label("Find by").select_option("mrn")
    page.get_by_label("Value").fill(patient["external_ids"]["mrn"])
    page.get_by_role("button", name="Find contact").click()
    expect(page.locator("#search-result")).to_contain_text("1 contact found")
    assert patient["external_ids"]["mrn"] not in page.url
    expect(page.locator(f"#contact-{contact_id}")).to_contain_text(patient["email"])
    shoot(page, screenshots, "search")

    page.locator(f"#contact-{contact_id} a").first.click()
    expect(page).to_have_url(f"{live_server}/contacts/{contact_id}")
    expect(page.locator("#identity")).not_to_contain_text(patient["first_name"])
    expect(page.locator("#timeline .timeline__item")).to_have_count(25)
    shoot(page, screenshots, "detail-masked")

    page.get_by_role("button", name="Reveal PHI").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(patient["first_name"])
    expect(page.locator("#identity")).to_contain_text(patient["external_ids"]["mrn"])
    expect(page.locator("#fields")).to_contain_text("hypertension")
    expect(page.locator("#timeline")).to_contain_text("device")
    shoot(page, screenshots, "detail-revealed")

    # Record a consent (HTMX: the section comes back with the new state).
    open_disclosure(page, "Record consent")
    consent = page.locator("#consent")
    consent.get_by_label("Channel", exact=True).select_option("sms")
    consent.get_by_label("Purpose", exact=True).select_option("marketing")
    consent.get_by_label("Status", exact=True).select_option("granted")
    consent.get_by_label("Source", exact=True).select_option("paper")
    consent.get_by_label("Evidence (optional)").fill("Signed form 2024-118")
    consent.get_by_role("button", name="Record consent").click()
    expect(page.locator("#messages")).to_contain_text("Recorded: sms marketing granted.")
    expect(page.locator("#consent-history")).to_contain_text("paper")
    expect(page.locator("#consent-history")).to_contain_text("granted")

    # Add to the list (HTMX), then load the rest of the timeline (HTMX).
    page.locator("#lists").get_by_label("List", exact=True).select_option(
        label="Blood pressure check-in"
    )
    page.get_by_role("button", name="Add to list").click()
    expect(page.locator("#messages")).to_contain_text("Added to “Blood pressure check-in”")
    expect(page.locator("#lists .membership")).to_contain_text("Blood pressure check-in")
    # Move the patient on in their journey (HTMX): the history shows the change.
    stage = page.locator("#stage")
    expect(stage.get_by_label("New stage")).to_have_value("overdue")
    stage.get_by_label("New stage").select_option("at-risk")
    stage.get_by_role("button", name="Change stage").click()
    expect(page.locator("#messages")).to_contain_text("Stage changed to at-risk.")
    expect(page.locator("#current-stage")).to_have_text("at-risk")
    expect(page.locator("#stage-history li").first).to_contain_text("overdue → at-risk")
    shoot(page, screenshots, "detail-stage-changed")
    page.get_by_role("link", name="Load more").click()
    expect(page.locator("#timeline .timeline__item")).to_have_count(30)
    expect(page.get_by_role("link", name="Load more")).to_have_count(0)
    shoot(page, screenshots, "detail-after-changes")

    # The list shows its member.
    page.locator("#lists").get_by_role("link", name="Blood pressure check-in").click()
    expect(page.locator("main")).to_contain_text("1 current member")
    expect(page.locator(f"#member-{contact_id}")).to_be_visible()
    shoot(page, screenshots, "list-detail")
    page.get_by_role("link", name="Lists", exact=True).first.click()
    shoot(page, screenshots, "lists")

    # The segment builder's JSON tab counts live while the rule is edited (HTMX), then saves.
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Segments").click()
    page.get_by_role("link", name="New segment").click()
    page.get_by_role("button", name="Advanced (JSON)").click()
    rule = page.get_by_label("Rule (JSON)")
    rule.fill('{"all": [{"field": "journey_stage", "op": "equals", "value": "at-risk"},')
    rule.press("Tab")
    expect(page.locator("#builder-faults")).to_contain_text("Not valid JSON")
    rule = page.get_by_label("Rule (JSON)")
    rule.fill(
        '{"all": [{"field": "journey_stage", "op": "equals", "value": "at-risk"}, '
        '{"field": "conditions", "op": "contains_any", "value": ["hypertension"]}]}'
    )
    rule.press("Tab")
    expect(page.locator("#live-count")).to_contain_text("1 contact match now")
    page.get_by_label("Name", exact=True).fill("At-risk hypertension")
    page.get_by_role("button", name="Save segment").click()
    expect(page.locator("#messages")).to_contain_text("Segment saved.")
    expect(page.get_by_role("heading", level=1)).to_have_text("At-risk hypertension")
    shoot(page, screenshots, "segments")

    # On a phone: the list folds into cards, the contact page into one column.
    cookies = page.context.cookies()
    context, phone = open_page(chromium, live_server)
    try:
        context.add_cookies(cookies)
        phone.set_viewport_size(PHONE)
        phone.goto("/contacts")
        expect(phone.locator(f"#contact-{contact_id}")).to_be_visible()
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the contacts page scrolls sideways ({width}px)"
        phone.screenshot(path=str(screenshots / "contacts-list-phone.png"), full_page=True)
        phone.goto(f"/contacts/{contact_id}")
        expect(phone.locator("#identity")).to_be_visible()
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the contact page scrolls sideways ({width}px)"
        phone.screenshot(path=str(screenshots / "contacts-detail-phone.png"), full_page=True)
        assert not phone.problems.messages, phone.problems.messages
    finally:
        context.close()
    assert re.fullmatch(r"[0-9a-f-]{36}", contact_id)
