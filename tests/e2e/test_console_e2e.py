"""The console as a person sees it, in Chromium: first sign-in of a new owner (one-time
password → own password → TOTP enrolment → recovery codes → dashboard), every page,
an API key created and revoked, a user invited, sign-out, a sign-in with a recovery
code, and a less privileged person meeting a 403 page. A full-page screenshot of each
page goes to ``$CAREPOST_TEST_ARTIFACTS/screenshots/``.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pyotp
import pytest
from playwright.sync_api import Page, expect

from carepost.accounts import service as accounts
from tests.canaries import secret_value
from tests.e2e.conftest import sign_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def clinic(runtime, make_tenant):
    """An organization with an owner who has only a one-time password so far."""
    tenant, keys = make_tenant("Riverside Family Health")
    with runtime.bound_session(keys) as session:
        user, one_time = accounts.create_user(
            session,
            tenant_id=tenant.id,
            email=f"dana-{uuid.uuid4().hex[:6]}@riverside.example",
            role="owner",
            name="Dana Whitfield",
        )
        auditor_password = secret_value(f"Pw-{uuid.uuid4().hex}")
        auditor, _ = accounts.create_user(
            session,
            tenant_id=tenant.id,
            email=f"sam-{uuid.uuid4().hex[:6]}@riverside.example",
            role="auditor",
            name="Sam Okafor",
            password=auditor_password,
        )
    return tenant, user.email, secret_value(one_time or ""), auditor.email, auditor_password


def shoot(page: Page, screenshots, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def open_disclosure(page: Page, summary: str) -> None:
    """Open a <details> panel (create and invite forms) unless it is open already."""
    panel = page.locator("details", has=page.locator("summary", has_text=summary))
    if not panel.evaluate("element => element.open"):
        panel.locator("summary").click()


def test_owner_first_sign_in_and_tour(page: Page, live_server, clinic, screenshots):
    tenant, email, one_time, _auditor, _auditor_password = clinic
    new_password = secret_value(f"Harbor-{uuid.uuid4().hex[:10]}-lantern")

    page.goto("/login")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shoot(page, screenshots, "login")

    # A wrong password: a generic message, the form keeps the email, focus on the summary.
    sign_in(page, tenant.slug, email, "not-the-password-at-all")
    expect(page.get_by_role("alert")).to_contain_text("organization, email or password")
    shoot(page, screenshots, "login-error")

    sign_in(page, tenant.slug, email, one_time)
    expect(page).to_have_url(re.compile(r"/password$"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "carepost_session")
    # Secure cookies are kept over http://127.0.0.1: Chromium counts loopback as secure.
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    shoot(page, screenshots, "password-change")
    page.get_by_label("Current password").fill(one_time)
    page.get_by_label("New password", exact=True).fill(new_password)
    page.get_by_label("New password again").fill(new_password)
    page.get_by_role("button", name="Change password").click()

    expect(page).to_have_url(re.compile(r"/mfa/enrol$"))
    expect(page.get_by_role("img", name=re.compile("QR code"))).to_be_visible()
    shoot(page, screenshots, "mfa-enrol")
    secret = secret_value(page.locator("#totp-secret").inner_text().replace(" ", ""))
    page.get_by_label("Code from your app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on two-factor sign-in").click()

    expect(page).to_have_url(re.compile(r"/mfa/recovery-codes$"))
    codes = [secret_value(c.strip()) for c in page.locator("#recovery-codes li").all_inner_texts()]
    assert len(codes) == 10
    shoot(page, screenshots, "recovery-codes")
    page.get_by_role("link", name=re.compile("continue")).click()

    expect(page).to_have_url(f"{live_server}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Riverside Family Health")
    shoot(page, screenshots, "dashboard")
    # The codes were shown once.
    page.goto("/mfa/recovery-codes")
    expect(page.locator("#recovery-codes")).to_have_count(0)
    page.goto("/")

    # Every console page, by its navigation link (keyboard-reachable links).
    for label, path, name in (
        ("Users and roles", "/users", "users"),
        ("API keys", "/api-keys", "api-keys"),
        ("Audit trail", "/audit", "audit"),
        ("Organization settings", "/settings", "settings"),
        ("My account", "/account", "account"),
    ):
        page.get_by_role("navigation", name="Console").get_by_role("link", name=label).click()
        expect(page).to_have_url(f"{live_server}{path}")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        shoot(page, screenshots, name)

    # Create an API key (HTMX), use it, revoke it (HTMX), and it stops working.
    page.goto("/api-keys")
    open_disclosure(page, "Create an API key")
    page.get_by_label("Name", exact=True).fill("EHR sync")
    page.get_by_role("checkbox", name=re.compile(r"^audit:read")).check()
    page.get_by_role("button", name="Create API key").click()
    secret_box = page.locator("#api-key-secret")
    expect(secret_box).to_be_visible()
    api_key = secret_value(secret_box.inner_text().strip())
    shoot(page, screenshots, "api-key-created")
    headers = {"Authorization": f"Bearer {api_key}"}
    me = httpx.get(f"{live_server}/api/v1/me", headers=headers)
    assert me.status_code == 200 and me.json()["permissions"] == ["audit:read"]
    page.once("dialog", lambda dialog: dialog.accept())
    row = page.locator("tr", has_text="EHR sync")
    row.get_by_role("button", name=re.compile("Revoke")).click()
    expect(row.locator(".badge")).to_have_text("revoked")
    expect(page.locator("#messages")).to_contain_text("Revoked the API key")
    assert httpx.get(f"{live_server}/api/v1/me", headers=headers).status_code == 401
    shoot(page, screenshots, "api-key-revoked")

    # Invite a user (HTMX): the one-time password is shown once, the row appears.
    page.goto("/users")
    invitee = f"lee-{uuid.uuid4().hex[:6]}@riverside.example"
    open_disclosure(page, "Invite a user")
    page.get_by_label("Email address", exact=True).fill(invitee)
    page.get_by_label("Name (optional)").fill("Lee Marsh")
    page.get_by_label("Role", exact=True).select_option("analyst")
    page.get_by_role("button", name="Invite user").click()
    expect(page.locator("#one-time-password")).to_be_visible()
    invitee_password = secret_value(page.locator("#one-time-password").inner_text().strip())
    expect(page.locator("tr", has_text=invitee)).to_be_visible()
    shoot(page, screenshots, "user-invited")
    # The same address again: the error comes back into the form (HTMX swaps 4xx answers),
    # next to the field, and the focus lands on it.
    open_disclosure(page, "Invite a user")
    page.get_by_label("Email address", exact=True).fill(invitee)
    page.get_by_role("button", name="Invite user").click()
    expect(page.locator("#invite-email-error")).to_contain_text("exists in this organization")
    expect(page.get_by_label("Email address", exact=True)).to_be_focused()
    shoot(page, screenshots, "user-invite-error")

    # Change the invitee's role in place (HTMX row swap).
    row = page.locator("tr", has_text=invitee)
    row.get_by_label(f"Role of {invitee}").select_option("marketer")
    row.get_by_role("button", name=re.compile("^Save")).click()
    expect(page.locator("#messages")).to_contain_text("now marketer")
    row.get_by_role("link", name=invitee).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Lee Marsh")
    shoot(page, screenshots, "user-detail")

    # A validation error shown next to its field.
    page.goto("/settings")
    page.get_by_label("Sign out after inactivity (minutes)").fill("0")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#settings-session_idle_minutes-error")).to_contain_text("1440")
    expect(page.get_by_label("Sign out after inactivity (minutes)")).to_be_focused()
    shoot(page, screenshots, "settings-error")

    page.goto("/audit?action=auth.")
    expect(page.locator("#event-table tbody tr").first).to_be_visible()
    shoot(page, screenshots, "audit-filtered")

    page.goto("/this-page-does-not-exist")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    shoot(page, screenshots, "not-found")

    # Sign out; sign in again with a recovery code instead of the app.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login\?signed_out=1$"))
    expect(page.get_by_role("status")).to_contain_text("You are signed out")
    shoot(page, screenshots, "signed-out")
    sign_in(page, tenant.slug, email, new_password)
    expect(page).to_have_url(re.compile(r"/login/mfa$"))
    shoot(page, screenshots, "login-mfa")
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{live_server}/")

    # The invited analyst-turned-marketer signs in and meets a page they may not see.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, tenant.slug, invitee, invitee_password)
    expect(page).to_have_url(re.compile(r"/password$"))
    invitee_new = secret_value(f"Meadow-{uuid.uuid4().hex[:10]}-copper")
    page.get_by_label("Current password").fill(invitee_password)
    page.get_by_label("New password", exact=True).fill(invitee_new)
    page.get_by_label("New password again").fill(invitee_new)
    page.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(f"{live_server}/")
    nav = page.get_by_role("navigation", name="Console")
    expect(nav.get_by_role("link", name="Users and roles")).to_have_count(0)
    page.goto("/users")
    expect(page.get_by_role("heading", name="You don't have access to this")).to_be_visible()
    shoot(page, screenshots, "forbidden")

    # Phones too: the same dashboard on a narrow screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/")
    shoot(page, screenshots, "dashboard-mobile")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login\?signed_out=1$"))


def tab_to(page: Page, name: str, limit: int = 40) -> None:
    """Press Tab until the focused element's text or label is ``name``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => (document.activeElement.innerText || document.activeElement.labels?.[0]"
            "?.innerText || '').trim()"
        )
        if focused == name:
            return
    raise AssertionError(f"{name!r} is not reachable with the Tab key")


def assert_focus_is_visible(page: Page) -> None:
    style = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth]; }"
    )
    assert style[0] != "none" and style[1] != "0px", style


def test_auditor_signs_in_and_reads_the_trail_by_keyboard(page: Page, live_server, clinic):
    tenant, _email, _one_time, auditor, password = clinic
    page.goto("/login")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    assert_focus_is_visible(page)
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Organization")).to_be_focused()
    assert_focus_is_visible(page)
    page.keyboard.type(tenant.slug)
    page.keyboard.press("Tab")
    page.keyboard.type(auditor)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{live_server}/")

    tab_to(page, "Audit trail")
    assert_focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{live_server}/audit")
    tab_to(page, "Action")
    page.keyboard.type("auth.")
    page.keyboard.press("Enter")  # submits the filter form
    expect(page).to_have_url(re.compile(r"/audit\?.*action=auth\."))
    expect(page.locator("#event-table tbody tr").first).to_contain_text("auth.")
    # The auditor may read but not manage users: no invite form to reach.
    page.goto("/users")
    expect(page.get_by_text("Invite a user")).to_have_count(0)
