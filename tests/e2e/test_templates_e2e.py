"""The template editor in Chromium: a marketer creates a template, watches the live
preview follow their typing, sees a syntax error with its line number, fixes it and
saves. No script errors, no CSP violations (the preview frame inherits the console's
policy); a screenshot goes to ``$CAREPOST_TEST_ARTIFACTS/screenshots/templates-*.png``."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import settle, sign_in
from tests.web.people import create_person

pytestmark = pytest.mark.e2e


@pytest.fixture
def marketer(runtime, make_tenant):
    tenant = make_tenant("Lakeside Family Practice")
    person = create_person(runtime, tenant, "marketer", name="Nia Berg")
    email, password = person.email, person.password
    return tenant, email, password


def test_create_a_template_with_live_preview(page: Page, marketer, screenshots):
    tenant, email, password = marketer
    sign_in(page, tenant[0].slug, email, password)
    expect(page.get_by_role("heading", level=1)).to_have_text("Lakeside Family Practice")

    nav = page.get_by_role("navigation", name="Console")
    nav.get_by_role("link", name="Email templates").click()
    page.get_by_role("link", name="New template").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New template")
    frame = page.frame_locator("#preview-frame")
    expect(frame.locator("body")).to_contain_text("Hello Alex")

    page.get_by_label("Name").fill("Flu shot reminder")
    page.get_by_label("Subject").fill("Flu shots are here, {{ contact.first_name }}")
    expect(page.locator("#preview-subject")).to_have_text("Flu shots are here, Alex")

    body = page.get_by_label("HTML part")
    body.fill("")
    body.press_sequentially("<h1>Hi {{ contact.first_name }}</h1>", delay=20)
    expect(frame.locator("h1")).to_have_text("Hi Alex")
    body.press_sequentially("<p>Book at {{ clinic_url | default('our desk') }}</p>", delay=10)
    expect(frame.locator("p")).to_have_text("Book at our desk")
    expect(page.locator("#preview-text")).to_contain_text("Hi Alex")

    # A syntax error on the second line: the preview says so, with its line number.
    body.press("End")
    body.press_sequentially("\n{% if contact.first_name %}Welcome back", delay=10)
    faults = page.locator("#preview-faults")
    expect(faults).to_contain_text("line 2")
    page.screenshot(path=str(screenshots / "templates-syntax-error.png"), full_page=True)

    body.press_sequentially("{% endif %}", delay=10)
    expect(faults).to_have_count(0)
    expect(frame.locator("body")).to_contain_text("Welcome back")
    settle(page)
    page.screenshot(path=str(screenshots / "templates-editor.png"), full_page=True)

    page.get_by_role("button", name="Save template").click()
    expect(page.locator("#messages")).to_contain_text("Template saved.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Flu shot reminder")
    expect(page.locator("#versions-title")).to_be_visible()
