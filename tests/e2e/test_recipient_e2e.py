"""A recipient on a phone, in Chromium: the preference center (choose a topic, save,
unsubscribe from all) and one-click unsubscribe from a message's link. No sign-in,
no script errors, no CSP violations; screenshots go to the artifacts directory."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from carepost.audit.service import SYSTEM
from carepost.consent import links
from carepost.consent import service as consent
from carepost.consent import suppression as suppressions
from carepost.consent.links import LinkKind
from carepost.contacts import service as contacts
from tests.canaries import phi_value

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def recipient(runtime, make_tenant):
    """A patient of an organization with two topics, opted in to general marketing."""
    tenant, keys = make_tenant("Riverside Family Health")
    email = f"{phi_value('jane').lower()}@example.org"
    with runtime.bound_session(keys) as session:
        contact = contacts.create_contact(
            session, keys, values={"email": email, "first_name": phi_value("first")}, actor=SYSTEM
        )
        consent.create_topic(
            session,
            tenant.id,
            key="flu-shots",
            name="Flu shot reminders",
            description="Once a year, before flu season.",
            channels=["email"],
            actor=SYSTEM,
        )
        consent.create_topic(
            session, tenant.id, key="wellness", name="Wellness newsletter", actor=SYSTEM
        )
        consent.record_consent(
            session,
            tenant.id,
            contact_id=contact.id,
            change=consent.ConsentChange("email", "marketing", "granted", "web_form"),
            actor=SYSTEM,
        )
    return tenant, keys, contact.id, email


def shoot(page: Page, screenshots, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_preference_center_on_a_phone(page: Page, runtime, recipient, screenshots):
    tenant, keys, contact_id, email = recipient
    page.set_viewport_size(PHONE)
    token = links.make_token(keys, LinkKind.PREFERENCES, contact_id, "email")
    page.goto(f"/p/{token}")
    expect(page.get_by_text("Riverside Family Health", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Your communication preferences")).to_be_visible()
    masked = email[0] + "\u2022\u2022\u2022@example.org"
    expect(page.get_by_text(masked)).to_be_visible()
    assert email not in page.content()
    general = page.get_by_role("group", name="News, reminders and offers")
    expect(general.get_by_label("By email")).to_be_checked()
    flu = page.get_by_role("group", name="Flu shot reminders")
    expect(flu.get_by_label("By email")).not_to_be_checked()
    shoot(page, screenshots, "preferences")

    flu.get_by_label("By email").check()
    general.get_by_label("By email").uncheck()
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("status")).to_contain_text("Your choices are saved")
    expect(
        page.get_by_role("group", name="Flu shot reminders").get_by_label("By email")
    ).to_be_checked()
    shoot(page, screenshots, "preferences-saved")
    with runtime.bound_session(keys) as session:
        current = consent.current_consents(session, tenant.id, contact_id)
        assert current[("email", "flu-shots")].status == "granted"
        assert current[("email", "marketing")].status == "revoked"

    page.get_by_role("button", name="Unsubscribe from all marketing").click()
    expect(page.get_by_role("status")).to_contain_text("unsubscribed from all marketing")
    shoot(page, screenshots, "preferences-unsubscribed-all")
    with runtime.bound_session(keys) as session:
        assert suppressions.is_suppressed(session, keys, email, "marketing")


def test_one_click_unsubscribe_from_a_message(page: Page, runtime, recipient, screenshots):
    _tenant, keys, contact_id, email = recipient
    page.set_viewport_size(PHONE)
    token = links.make_token(keys, LinkKind.UNSUBSCRIBE, contact_id, "email")
    page.goto(f"/u/{token}")
    expect(page.get_by_role("heading", name="Unsubscribe")).to_be_visible()
    expect(page.get_by_text("Riverside Family Health").first).to_be_visible()
    shoot(page, screenshots, "unsubscribe")
    with runtime.bound_session(keys) as session:
        assert not suppressions.is_suppressed(session, keys, email, "marketing")

    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("status")).to_contain_text("You are unsubscribed")
    assert f"/u/{token}" in page.url  # answered in place, no redirect
    shoot(page, screenshots, "unsubscribed")
    with runtime.bound_session(keys) as session:
        assert suppressions.is_suppressed(session, keys, email, "marketing")

    page.get_by_role("link", name="Choose what you receive instead").click()
    expect(page.get_by_role("heading", name="Your communication preferences")).to_be_visible()
    expect(page.get_by_text("You are unsubscribed from marketing")).to_be_visible()


def test_a_broken_link_explains_itself(page: Page, recipient, screenshots):
    page.set_viewport_size(PHONE)
    response = page.goto("/p/not-a-real-token")
    assert response is not None and response.status == 404
    expect(
        page.get_by_role("heading", name="This link is not valid or has expired")
    ).to_be_visible()
    shoot(page, screenshots, "recipient-link-invalid")
