"""Passkeys in Chromium with its virtual authenticator (DevTools protocol, ``WebAuthn``
domain): an owner signs in with the app, adds a passkey in My account, signs out, and
signs in with password + passkey, using the keyboard. A browser without WebAuthn is
told so. Screenshots go to ``$CAREPOST_TEST_ARTIFACTS/screenshots/``.

WebAuthn needs a host name as the relying party id (browsers refuse IP addresses), so
these tests run their own server, reached as http://localhost:<port> (a secure context
for Chromium), with ``base_url`` set to that address: the RP id is ``localhost``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from carepost.api.app import create_app
from carepost.core.runtime import build_runtime
from tests.e2e.conftest import free_port, open_page, serve, sign_in
from tests.e2e.test_console_e2e import shoot
from tests.web.people import create_person

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def localhost_server(runtime, settings) -> Iterator[tuple[str, object]]:
    """A server for http://localhost:<port> on the test run's (migrated) database."""
    port = free_port()
    base_url = f"http://localhost:{port}"
    own = build_runtime(settings.model_copy(update={"base_url": base_url}))
    with serve(create_app(own), port):
        yield base_url, own
    own.close()


@pytest.fixture
def localhost_page(chromium, localhost_server) -> Iterator[Page]:
    context, opened = open_page(chromium, localhost_server[0])
    yield opened
    context.close()
    problems = opened.problems.messages
    assert not problems, "browser reported problems:\n" + "\n".join(problems)


def add_virtual_authenticator(page: Page):
    """A platform authenticator (like Touch ID or Windows Hello) that always verifies."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def test_owner_adds_a_passkey_and_signs_in_with_it(
    localhost_page: Page, localhost_server, make_tenant, screenshots
):
    base_url, own_runtime = localhost_server
    page = localhost_page
    tenant = make_tenant("Lakeside Cardiology")
    owner = create_person(own_runtime, tenant, "owner", name="Ada Moss")
    cdp, authenticator_id = add_virtual_authenticator(page)

    # First sign-in with the authenticator app.
    sign_in(page, tenant[0].slug, owner.email, owner.password)
    expect(page).to_have_url(re.compile(r"/login/mfa$"))
    expect(page.get_by_role("button", name="Use a passkey")).to_have_count(0)
    page.get_by_label("Code").fill(owner.totp())
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{base_url}/")

    # Add a passkey in My account.
    page.get_by_role("navigation", name="Console").get_by_role("link", name="My account").click()
    expect(page.locator("#passkeys")).to_contain_text("You have no passkeys yet.")
    page.get_by_label("Name for the new passkey").fill("This laptop")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page).to_have_url(re.compile(r"/account\?done=passkey-added#passkeys$"))
    expect(page.locator("#messages")).to_contain_text("Passkey added.")
    expect(page.get_by_label("Name of passkey This laptop")).to_have_value("This laptop")
    shoot(page, screenshots, "account-passkeys")
    stored = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    assert len(stored["credentials"]) == 1
    assert stored["credentials"][0]["rpId"] == "localhost"

    # Sign out, then in again: password, then the passkey, from the keyboard.
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page).to_have_url(re.compile(r"/login\?signed_out=1$"))
    sign_in(page, tenant[0].slug, owner.email, owner.password)
    expect(page).to_have_url(re.compile(r"/login/mfa$"))
    use = page.get_by_role("button", name="Use a passkey")
    expect(use).to_be_visible()
    expect(page.get_by_label("Code")).to_be_visible()  # the app still works too
    shoot(page, screenshots, "mfa-passkey")
    use.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base_url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Lakeside Cardiology")
    shoot(page, screenshots, "dashboard-after-passkey")
    used = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    assert used["credentials"][0]["signCount"] >= 1

    # The account page shows when it was last used.
    page.goto("/account")
    row = page.locator("#passkey-table tbody tr").first
    expect(row).not_to_contain_text("never")


def test_a_browser_without_webauthn_is_told_so(
    localhost_page: Page, localhost_server, make_tenant, screenshots
):
    _base_url, own_runtime = localhost_server
    page = localhost_page
    tenant = make_tenant("Hillview Pediatrics")
    person = create_person(own_runtime, tenant, "marketer")
    page.add_init_script("delete window.PublicKeyCredential;")
    sign_in(page, tenant[0].slug, person.email, person.password)
    page.goto("/account")
    button = page.get_by_role("button", name="Add a passkey")
    expect(button).to_be_disabled()
    expect(page.locator("#passkeys [data-passkey-status]")).to_contain_text(
        "This browser cannot use passkeys"
    )
    expect(page.get_by_label("Name for the new passkey")).to_be_disabled()
    shoot(page, screenshots, "account-passkeys-unsupported")
