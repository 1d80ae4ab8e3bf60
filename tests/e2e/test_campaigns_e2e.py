"""A campaign in Chromium, as a marketer sends one: signs in, opens Campaigns, creates a
campaign to a list with a stored marketing template (seeing the list's live count and
the template's A/B variants), sends it now; the worker steps run (the campaign job, then
delivery to a real aiosmtpd sink on loopback) and the campaign's page, polling by
itself, shows every message delivered. Then the page on a phone. No script errors, no
CSP violations; screenshots go to ``$CAREPOST_TEST_ARTIFACTS/screenshots/campaigns-*.png``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from carepost.accounts import service as accounts
from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent.service import ConsentChange
from carepost.contacts import lists
from carepost.contacts import service as contacts
from carepost.core.runtime import Runtime
from carepost.messages.campaigns import advance_campaigns
from carepost.messages.delivery import deliver_due_messages
from carepost.templates import service as templates
from carepost.tenancy import service as tenancy
from tests.canaries import new_password
from tests.e2e.conftest import open_page, settle, sign_in
from tests.messages.smtp_sink import SmtpSink, delivering_to

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}
FOOTER = (
    '<p>{{ organization.physical_address }}</p><p><a href="{{ unsubscribe_url }}">'
    "Unsubscribe</a></p>"
)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    running = SmtpSink().start()
    yield running
    running.stop()


@pytest.fixture
def delivering(runtime: Runtime, sink: SmtpSink) -> Runtime:
    return delivering_to(runtime, sink)


@pytest.fixture
def clinic(runtime, make_tenant):
    """A marketer, a list of three consenting patients, and a marketing template with
    one variant."""
    tenant = make_tenant("Harbor Family Clinic", verified_senders=("harbor.example",))
    password = new_password()
    email = f"mara-{uuid.uuid4().hex[:6]}@harbor.example"
    with runtime.bound_session(tenant[1]) as session:
        tenancy.update_tenant_settings(
            session,
            tenant_id=tenant[0].id,
            actor=SYSTEM,
            physical_address="12 Harbor Road, Portsmouth, NH 03801",
        )
        accounts.create_user(
            session,
            tenant_id=tenant[0].id,
            email=email,
            role="marketer",
            name="Mara Lind",
            password=password,
        )
        ids = []
        for n in range(3):
            contact = contacts.create_contact(
                session,
                tenant[1],
                values={"email": f"patient{n}-{uuid.uuid4().hex[:6]}@example.org"},
                actor=SYSTEM,
            )
            consent.record_consents(
                session,
                tenant[0].id,
                contact_id=contact.id,
                changes=[ConsentChange("email", "marketing", "granted", "api")],
                actor=SYSTEM,
            )
            ids.append(contact.id)
        newsletter = lists.create_list(
            session, tenant[0].id, name="Newsletter", description="", actor=SYSTEM
        )
        lists.change_members(session, tenant[0].id, newsletter.id, add=ids, remove=[], actor=SYSTEM)
        template = templates.create_template(
            session,
            tenant[0].id,
            name="Flu shots",
            kind="marketing",
            subject="Flu shots are in at Harbor",
            html=f"<p>Walk in any weekday.</p>{FOOTER}",
            text=None,
            actor=SYSTEM,
        )
        templates.create_variant(
            session,
            tenant[0].id,
            template.id,
            values={"key": "short", "subject": "Flu shots: walk in", "percent": 40},
            actor=SYSTEM,
        )
    return tenant, email, password


def test_a_marketer_sends_a_campaign_and_sees_it_delivered(
    page: Page, live_server, clinic, delivering, sink: SmtpSink, screenshots, chromium
):
    tenant, email, password = clinic
    sign_in(page, tenant[0].slug, email, password)
    expect(page.get_by_role("heading", level=1)).to_have_text("Harbor Family Clinic")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Campaigns").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Campaigns")
    page.get_by_role("link", name="New campaign").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New campaign")

    page.get_by_label("Campaign name").fill("Flu shots 2026")
    page.get_by_label("Audience").select_option(label="List: Newsletter")
    settle(page)
    expect(page.locator("#audience-count")).to_contain_text("3 contacts in the audience now")
    page.get_by_label("Template", exact=True).select_option(label="Flu shots (marketing)")
    settle(page)
    expect(page.locator("#template-variants")).to_contain_text("short")
    expect(page.locator("#template-variants")).to_contain_text("other 60 %")
    page.get_by_label("Sender address").fill("news@harbor.example")
    page.get_by_label("Sender name").fill("Harbor Family Clinic")
    # This run tests no variants: everyone gets the template itself.
    page.get_by_label("Test the template's variants").uncheck()
    page.screenshot(path=str(screenshots / "campaigns-form.png"), full_page=True)
    page.get_by_role("button", name="Send now").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Flu shots 2026")
    expect(page.locator("#messages")).to_contain_text("The campaign is scheduled")
    expect(page.locator("#campaign-state")).to_have_text("scheduled")

    # The worker's steps: the campaign job queues the audience, delivery sends it.
    advance_campaigns(delivering)
    run = deliver_due_messages(delivering, budget_seconds=30)
    assert run.claimed >= 3
    advance_campaigns(delivering)
    received = [r for r in sink.received if r.message["Subject"] == "Flu shots are in at Harbor"]
    assert len(received) == 3

    # The page follows by itself (its progress panel polls while the campaign runs).
    expect(page.locator("#campaign-live")).to_be_visible()
    expect(page.locator("#campaign-state")).to_have_text("done", timeout=20_000)
    expect(page.locator("#campaign-live")).to_have_count(0)
    expect(page.locator("#count-delivered")).to_contain_text("3")
    expect(page.locator("#campaign-progress")).to_have_attribute("value", "3")
    expect(page.get_by_role("button", name="Send now")).to_have_count(0)
    page.screenshot(path=str(screenshots / "campaigns-detail.png"), full_page=True)
    detail_url = page.url

    page.get_by_role("link", name="All campaigns").click()
    row = page.get_by_role("row").filter(has_text="Flu shots 2026")
    expect(row).to_contain_text("3 delivered")
    expect(row).to_contain_text("List: Newsletter")

    # On a phone: the campaign's page and the form fit, nothing scrolls sideways.
    cookies = page.context.cookies()
    context, phone = open_page(chromium, live_server)
    try:
        context.add_cookies(cookies)
        phone.set_viewport_size(PHONE)
        for path, name in ((detail_url, "detail"), ("/campaigns/new", "form")):
            phone.goto(path)
            expect(phone.get_by_role("heading", level=1)).to_be_visible()
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"the {name} page scrolls sideways ({width}px)"
            phone.screenshot(path=str(screenshots / f"campaigns-{name}-phone.png"), full_page=True)
        assert not phone.problems.messages, phone.problems.messages
    finally:
        context.close()
