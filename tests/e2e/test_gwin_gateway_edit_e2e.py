"""The SMTP gateway console in Chromium, for what an IT administrator changes later:
opens a client's page from the list, changes its networks (a bad one refused next to
the field), rotates its secret (shown once, the old one refused), and sets up the
inbound route for secure replies. No script errors, no CSP violations; screenshots
``gateway-client-edited.png`` and ``gateway-inbound-route.png``."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from carepost.gateway import replies, service
from tests.e2e.conftest import sign_in
from tests.e2e.test_console_e2e import open_disclosure, shoot
from tests.web.people import create_person

pytestmark = pytest.mark.e2e


def test_admin_edits_a_client_rotates_its_secret_and_sets_the_inbound_route(
    page: Page, live_server, runtime, make_tenant, screenshots
):
    tenant = make_tenant("Harbor Family Practice")
    admin = create_person(runtime, tenant, "admin", name="Gail Admin")
    sign_in(page, tenant[0].slug, admin.email, admin.password)
    expect(page).to_have_url(re.compile(r"/login/mfa$"))
    page.get_by_label("Code").fill(admin.totp())
    page.get_by_role("button", name="Verify").click()

    page.get_by_role("navigation", name="Console").get_by_role("link", name="SMTP gateway").click()
    open_disclosure(page, "Add a gateway client")
    page.get_by_label("Name").fill("Postfix relay")
    page.get_by_label("clinic.example").check()
    page.get_by_role("button", name="Add gateway client").click()
    old_secret = page.locator("#gateway-secret").inner_text()
    username = page.locator("#gateway-username").inner_text()

    page.get_by_role("link", name="Postfix relay").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Gateway client “Postfix relay”")
    page.get_by_label("Source networks").fill("0.0.0.0/0")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#gwedit-networks-error")).to_contain_text("not the whole internet")
    page.get_by_label("Source networks").fill("192.0.2.0/24")
    page.get_by_label("Recipients per message").fill("20")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#saved-client")).to_contain_text("Changes saved")
    expect(page.locator("dl.facts")).to_contain_text("192.0.2.0/24")

    page.get_by_role("button", name="Rotate secret").click()
    expect(page.locator("#rotated-secret")).to_contain_text("New SMTP AUTH secret")
    new_secret = page.locator("#gateway-secret").inner_text()
    assert new_secret != old_secret
    with runtime.database.session() as session:
        assert service.by_username(session, username, new_secret) is not None
        assert service.by_username(session, username, old_secret) is None
    shoot(page, screenshots, "gateway-client-edited")

    page.goto(f"{live_server}/gateway")
    page.get_by_role("link", name="Inbound secure replies").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Inbound secure replies")
    expect(page.locator("#no-route")).to_be_visible()
    page.get_by_label("Mail server").fill("mail.harbor.example")
    page.get_by_label("Port", exact=True).fill("25")
    page.get_by_role("button", name="Save inbound route").click()
    expect(page.locator("#saved-route")).to_contain_text("Inbound route saved")
    expect(page.locator("#route-host")).to_have_text("mail.harbor.example:25")
    with runtime.database.session() as session:
        route = replies.get_route(session, tenant[0].id)
        assert route is not None and route.tls_mode == "verify"
    shoot(page, screenshots, "gateway-inbound-route")
