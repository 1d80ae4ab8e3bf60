"""The segment builder in Chromium, as a marketer builds issue 4's segment with the visual
form: "conditions contains e11 AND age 50-75 AND in the list Outreach AND email
marketing consent granted AND portal_login at least once in the last 90 days",
watching the live count change with each row; then saves it, opens its page, sees the
members (names only on request), exports a CSV, takes a snapshot; and the builder and
the detail page on a phone. No script errors, no CSP violations; screenshots go to
``$CAREPOST_TEST_ARTIFACTS/screenshots/segments-*.png``."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import open_page, settle, sign_in
from tests.web.people import create_person
from tests.web.test_console_segments import make_patients

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def practice(runtime, make_tenant):
    tenant = make_tenant("Lakeside Cardiology")
    person = create_person(runtime, tenant, "marketer", name="Mara Lind")
    email, password = person.email, person.password
    return tenant, email, password, make_patients(runtime, tenant)


def count(page: Page) -> str:
    settle(page)
    return page.locator("#live-count").inner_text()


def add_row(page: Page, row: int, kind: str) -> None:
    page.get_by_role("button", name="Add condition", exact=True).click()
    settle(page)
    expect(page.locator(f"#row-{row}")).to_be_visible()
    page.locator(f"#r{row}-kind").select_option(kind)
    settle(page)


def test_build_save_and_use_a_segment(page: Page, live_server, practice, screenshots, chromium):
    tenant, email, password, data = practice
    sign_in(page, tenant[0].slug, email, password)
    expect(page.get_by_role("heading", level=1)).to_have_text("Lakeside Cardiology")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Segments").click()
    page.get_by_role("link", name="New segment").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New segment")

    # 1. conditions contains e11: the first row already names the first field.
    expect(page.locator("#r1-field")).to_have_value("conditions")
    page.locator("#r1-values").select_option(["e11"])
    assert "3 contacts match now" in count(page)

    # 2. age 50-75: choosing the birth date offers "age is between" first.
    add_row(page, 2, "field")
    page.locator("#r2-field").select_option("birth_date")
    settle(page)
    expect(page.locator("#r2-op")).to_have_value("age_between")
    page.locator("#r2-v1").fill("50")
    page.locator("#r2-v1").press("Tab")
    settle(page)
    # a half-filled range is a fault shown at its row, not a count
    expect(page.locator("#row-2-error")).to_be_visible()
    page.locator("#r2-v2").fill("75")
    page.locator("#r2-v2").press("Tab")
    assert "2 contacts match now" in count(page)
    expect(page.locator("#row-2-error")).to_have_count(0)

    # 3. in the list, 4. consent, 5. behaviour: each row's defaults fit.
    add_row(page, 3, "list")
    expect(page.locator("#r3-list")).to_have_value(data["list_id"])
    add_row(page, 4, "consent")
    expect(page.locator("#r4-status")).to_have_value("granted")
    add_row(page, 5, "event")
    expect(page.locator("#r5-event-kind")).to_have_value("portal_login")
    expect(page.locator("#r5-days")).to_have_value("90")
    assert "1 contact match now" in count(page)
    page.get_by_text("The rule as JSON").click()
    expect(page.locator("#rule-json")).to_contain_text('"within_last_days": 90')
    page.get_by_label("Name", exact=True).fill("Diabetics 50-75, active online")
    page.screenshot(path=str(screenshots / "segments-builder.png"), full_page=True)

    # The JSON tab shows the same rule; back in the visual tab the rows are kept.
    page.get_by_role("button", name="Advanced (JSON)").click()
    settle(page)
    expect(page.locator("#segment-rule")).to_contain_text('"portal_login"')
    page.get_by_role("button", name="Visual").click()
    settle(page)
    expect(page.locator("#row-5")).to_be_visible()
    assert "1 contact match now" in count(page)

    page.get_by_role("button", name="Save segment").click()
    expect(page.locator("#messages")).to_contain_text("Segment saved.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Diabetics 50-75, active online")
    expect(page.locator("#rule-summary")).to_contain_text("in the list “Outreach”")
    expect(page.locator("#segment-count")).to_contain_text("1 contact match now")
    members = page.locator("#segment-members")
    expect(members).to_contain_text(str(data["ids"][0]))
    expect(members).not_to_contain_text(data["names"][0])
    page.get_by_role("button", name="Show names and email addresses").click()
    expect(members).to_contain_text(data["names"][0])

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    exported = download_info.value.path().read_text()
    assert exported.splitlines() == ["id,journey_stage,language", f"{data['ids'][0]},new,"]

    page.get_by_label("Reason").fill("December newsletter")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator("#messages")).to_contain_text("Snapshot taken.")
    expect(page.locator("#snapshots")).to_contain_text("December newsletter")
    page.screenshot(path=str(screenshots / "segments-detail.png"), full_page=True)
    detail_url = page.url

    # On a phone: the builder's rows wrap, nothing scrolls sideways.
    cookies = page.context.cookies()
    context, phone = open_page(chromium, live_server)
    try:
        context.add_cookies(cookies)
        phone.set_viewport_size(PHONE)
        phone.goto(detail_url.replace("?done=snapshot", "") + "/edit")
        expect(phone.locator("#row-5")).to_be_visible()
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the builder scrolls sideways ({width}px)"
        phone.screenshot(path=str(screenshots / "segments-builder-phone.png"), full_page=True)
        assert not phone.problems.messages, phone.problems.messages
    finally:
        context.close()
