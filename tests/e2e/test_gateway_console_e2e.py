"""The "SMTP gateway" page in Chromium, as an IT administrator connects a mail server:
finds the page in the navigation, adds a client for a verified domain, copies the
secret shown once, sees it gone after a reload, deletes the client after confirming.
No script errors, no CSP violations; the screenshot goes to
``$CAREPOST_TEST_ARTIFACTS/screenshots/gateway-client-created.png``."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from carepost.gateway import service
from tests.e2e.conftest import sign_in
from tests.e2e.test_console_e2e import open_disclosure, shoot
from tests.web.people import create_person

pytestmark = pytest.mark.e2e


def test_admin_adds_and_deletes_a_gateway_client(
    page: Page, live_server, runtime, make_tenant, screenshots
):
    tenant = make_tenant("Harbor Family Practice")
    admin = create_person(runtime, tenant, "admin", name="Gail Admin")
    sign_in(page, tenant[0].slug, admin.email, admin.password)
    expect(page).to_have_url(re.compile(r"/login/mfa$"))
    page.get_by_label("Code").fill(admin.totp())
    page.get_by_role("button", name="Verify").click()

    page.get_by_role("navigation", name="Console").get_by_role("link", name="SMTP gateway").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("SMTP gateway")
    expect(page.get_by_text("No gateway clients yet.")).to_be_visible()
    open_disclosure(page, "Add a gateway client")
    page.get_by_label("Name").fill("Exchange Online")
    page.get_by_label("clinic.example").check()
    page.get_by_label("Source networks").fill("0.0.0.0/0")
    page.get_by_role("button", name="Add gateway client").click()
    expect(page.locator("#gwclient-networks-error")).to_contain_text("not the whole internet")

    page.get_by_label("Source networks").fill("40.92.0.0/15")
    page.get_by_role("button", name="Add gateway client").click()
    expect(page.get_by_role("status")).to_contain_text("Gateway client “Exchange Online” added")
    secret = page.locator("#gateway-secret").inner_text()
    username = page.locator("#gateway-username").inner_text()
    with runtime.database.session() as session:
        assert service.by_username(session, username, secret) is not None
    expect(page.locator("#gwclient-table, table").first).to_contain_text("40.92.0.0/15")
    shoot(page, screenshots, "gateway-client-created")

    page.reload()
    assert secret not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete Exchange Online").click()
    expect(page.get_by_text("No gateway clients yet.")).to_be_visible()
    with runtime.database.session() as session:
        assert service.by_username(session, username, secret) is None
