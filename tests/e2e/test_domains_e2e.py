"""The "Domains & DKIM" page in Chromium, as an IT administrator sets up a sending
domain: adds it, reads the records to publish, checks DNS (a real DNS server on
loopback, empty at first, then holding what the page said to publish), rotates the
keys and promotes the next ones. No script errors, no CSP violations; screenshots go
to ``$CAREPOST_TEST_ARTIFACTS/screenshots/domains-*.png``."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.dns_server import app_resolving_with
from tests.e2e.conftest import sign_in
from tests.e2e.test_console_e2e import shoot
from tests.web.people import create_person

pytestmark = pytest.mark.e2e


@pytest.fixture
def loopback_dns(app):
    """The API's DNS checks ask a DNS server on loopback for this test."""
    with app_resolving_with(app) as zone:
        yield zone


def test_admin_adds_a_domain_publishes_checks_and_rotates(
    page: Page, live_server, runtime, make_tenant, loopback_dns, screenshots
):
    tenant = make_tenant("Lakeside Cardiology", verified_senders=())
    admin = create_person(runtime, tenant, "admin", name="Ian Admin")
    sign_in(page, tenant[0].slug, admin.email, admin.password)
    expect(page).to_have_url(re.compile(r"/login/mfa$"))
    page.get_by_label("Code").fill(admin.totp())
    page.get_by_role("button", name="Verify").click()

    page.get_by_role("navigation", name="Console").get_by_role(
        "link", name="Domains & DKIM"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Domains & DKIM")
    page.get_by_label("Domain").fill("not a domain")
    page.get_by_role("button", name="Add domain").click()
    expect(page.get_by_role("alert")).to_contain_text("Not a valid domain name")
    page.get_by_label("Domain").fill("Lakeside.Example")
    page.get_by_role("button", name="Add domain").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("lakeside.example")
    expect(page.get_by_role("status")).to_contain_text("Publish the records below")

    records = page.locator("#records tbody tr")
    expect(records).to_have_count(4)  # RSA and Ed25519 keys, SPF, DMARC
    rsa_row = page.locator("#records tbody tr", has_text="k=rsa")
    quoted = rsa_row.locator(".record-value").inner_text()
    assert quoted.count('" "') == 1  # two strings of at most 255 characters
    assert "PRIVATE" not in page.content()
    shoot(page, screenshots, "domains-records")

    page.get_by_role("button", name="Check DNS now").click()
    expect(page.locator(".check-level")).to_have_text("error")
    expect(page.locator("#check")).to_contain_text("has no SPF record")

    # Publish exactly what the page shows (the quoted strings joined, as DNS does).
    for row in records.all():
        name = row.locator("td").nth(2).inner_text()
        value = "".join(re.findall(r'"([^"]*)"', row.locator(".record-value").inner_text()))
        loopback_dns.txt(name + ".", value)
    page.get_by_role("button", name="Check DNS now").click()
    expect(page.locator(".check-level")).to_have_text("warning")
    expect(page.locator(".finding--ok")).to_have_count(3)
    expect(page.locator(".finding--warning")).to_contain_text("p=none")
    expect(page.locator(".page-head .badge")).to_have_text("verified")
    shoot(page, screenshots, "domains-checked")

    page.get_by_role("button", name="Rotate keys").click()
    expect(page.get_by_role("status")).to_contain_text("New keys created")
    expect(page.locator("#keys .badge", has_text="next")).to_have_count(2)
    page.get_by_role("button", name="I published the next keys: promote them").click()
    expect(page.locator("#keys .badge", has_text="retired")).to_have_count(2)
    expect(page.locator("#keys .badge", has_text="active")).to_have_count(2)

    page.get_by_role("link", name="All sending domains").click()
    expect(page.locator("#domains")).to_contain_text("lakeside.example")
    expect(page.locator("#domains")).to_contain_text("verified")
