"""The message log in Chromium, as a front-desk marketer tracing a patient's email:
opens the log from the navigation, filters by tag, finds the patient's messages by
address (HTMX, POSTed: the address is in no URL the browser requests), opens one,
reads its event history with the SMTP replies and reveals the content. Then the same
pages on a phone: no sideways scrolling. No script errors or CSP violations;
screenshots go to ``$CAREPOST_TEST_ARTIFACTS/screenshots/messages-*.png``."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.canaries import phi_value
from tests.e2e.conftest import open_page, settle, sign_in
from tests.e2e.test_console_e2e import shoot
from tests.web.people import create_person
from tests.web.sent_messages import make_message

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}


def test_marketer_traces_a_patients_email(
    page: Page, chromium, live_server, runtime, make_tenant, screenshots, log_file
):
    tenant = make_tenant("Lakeside Cardiology")
    address = f"{phi_value('mail').lower()}@patients.example"
    name = phi_value("name")
    message_id = make_message(
        runtime,
        tenant,
        to=address,
        subject="Your lab results are ready",
        html=f"<h1>Hello {name}</h1><p>Your results are in the portal.</p>",
        text=f"Hello {name}. Your results are in the portal.",
        tags=("lab",),
        events=[
            (
                "deferred",
                {"attempt": 1, "code": 451, "enhanced": "4.7.1", "reply": "451 4.7.1 Try later"},
            ),
            (
                "delivered",
                {
                    "attempt": 2,
                    "code": 250,
                    "enhanced": "2.0.0",
                    "reply": "250 2.0.0 Ok: queued as 7QX",
                    "host": "mx.patients.example",
                    "tls": True,
                },
            ),
            ("opened", {}),
        ],
    )
    for _ in range(3):
        make_message(runtime, tenant, tags=("reminder",))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    marketer = create_person(runtime, tenant, "marketer", name="Mia Marketer")
    sign_in(page, tenant[0].slug, marketer.email, marketer.password)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Message log").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Message log")
    expect(page.locator("#message-rows tr")).to_have_count(4)

    page.get_by_label("Tag").fill("lab")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/messages\?.*tag=lab"))
    expect(page.locator("#message-rows tr")).to_have_count(1)

    page.get_by_label("Recipient email address").fill(address)
    page.get_by_role("button", name="Search").click()
    settle(page)
    expect(page.locator("#search-notice")).to_contain_text("recorded in the audit trail")
    expect(page.locator("#message-rows")).to_contain_text(address)
    shoot(page, screenshots, "messages-search")

    page.locator("#message-rows").get_by_role("link", name=address).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Message")
    events = page.locator("#message-events li")
    expect(events).to_have_count(4)  # queued, deferred, delivered, opened
    expect(page.locator("#message-events")).to_contain_text("451 4.7.1 Try later")
    expect(page.locator("#message-events")).to_contain_text("250 2.0.0 Ok: queued as 7QX")
    expect(page.locator("#message-to")).not_to_contain_text(address)

    page.get_by_role("button", name="Reveal recipient and content").click()
    settle(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Your lab results are ready")
    expect(page.locator("#message-to")).to_contain_text(address)
    frame = page.frame_locator("iframe.message-frame")
    expect(frame.get_by_role("heading", name=f"Hello {name}")).to_be_visible()
    shoot(page, screenshots, "messages-detail")

    # The address never left the browser in a URL, and the server never logged it.
    assert requested and not [url for url in requested if address in url or "%40patients" in url]
    assert address not in log_file.read_text(encoding="utf-8")

    # On a phone: the log folds into cards, the message page into one column.
    cookies = page.context.cookies()
    context, phone = open_page(chromium, live_server)
    try:
        context.add_cookies(cookies)
        phone.set_viewport_size(PHONE)
        for path in ("/messages", f"/messages/{message_id}"):
            phone.goto(path)
            expect(phone.get_by_role("heading", level=1)).to_be_visible()
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path} scrolls sideways ({width}px)"
        phone.get_by_role("button", name="Reveal recipient and content").click()
        settle(phone)
        expect(phone.locator("#message-to")).to_contain_text(address)
        phone_frame = phone.frame_locator("iframe.message-frame")
        expect(phone_frame.get_by_role("heading", name=f"Hello {name}")).to_be_visible()
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the revealed message scrolls sideways ({width}px)"
        phone.screenshot(path=str(screenshots / "messages-detail-phone.png"), full_page=True)
        assert not phone.problems.messages, phone.problems.messages
    finally:
        context.close()
