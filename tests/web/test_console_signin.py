"""Signing in to the console: password, second factor, forced password change, TOTP
enrolment, recovery codes, lockout, expiry and sign-out."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pyotp
from sqlalchemy import select, update

from carepost.accounts import service as accounts
from carepost.accounts import totp
from carepost.accounts.models import User, UserSession
from carepost.audit.service import SYSTEM
from carepost.core.database import utcnow
from carepost.tenancy.models import Tenant
from tests.canaries import secret_value

GENERIC = "The organization, email or password is not right."


def text(response) -> str:
    return html.unescape(response.text)


def session_cookie(response) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("carepost_session="):
            return header
    raise AssertionError("no session cookie was set")


def test_login_page_is_an_accessible_form(browser):
    page = browser().get("/login")
    assert page.status_code == 200
    for name, label in (
        ("organization", "Organization"),
        ("email", "Email address"),
        ("password", "Password"),
    ):
        assert f'<label for="login-{name}" class="label">{label}' in page.text
        assert f'id="login-{name}" name="{name}"' in page.text
    assert 'aria-describedby="login-organization-hint"' in page.text
    assert 'type="hidden" name="csrf_token"' in page.text
    assert 'href="#main"' in page.text and '<main id="main"' in page.text
    login_cookie = next(
        h for h in page.headers.get_list("set-cookie") if h.startswith("carepost_login_csrf=")
    )
    assert "HttpOnly" in login_cookie and "Secure" in login_cookie
    assert "SameSite=strict" in login_cookie or "SameSite=Strict" in login_cookie


def test_new_owner_changes_password_then_enrols_then_sees_recovery_codes_once(
    make_person, tenant, login, runtime
):
    owner = make_person(tenant, "owner", mfa=False, one_time_password=True)
    b, response = login(owner)
    assert response.status_code == 303 and response.headers["location"] == "/password"
    cookie = session_cookie(response)
    assert "HttpOnly" in cookie and "Secure" in cookie and "Path=/" in cookie
    assert re.search(r"SameSite=strict", cookie, re.IGNORECASE)
    # Part-way through signing in, the console and the API are out of reach.
    assert b.get("/").headers["location"] == "/password"
    assert b.get("/users").headers["location"] == "/password"
    assert b.client.get("/api/v1/me").status_code == 401
    assert b.get("/mfa/enrol").headers["location"] == "/password"

    page = b.get("/password")
    assert page.status_code == 200 and "Choose a new password" in page.text
    new_password = secret_value("correct horse battery staple")
    mismatch = b.post(
        "/password",
        {
            "current_password": owner.password,
            "new_password": new_password,
            "confirm_password": "something else entirely",
        },
    )
    assert mismatch.status_code == 422
    assert "The two new passwords are not the same." in mismatch.text
    assert 'aria-invalid="true"' in mismatch.text
    changed = b.post(
        "/password",
        {
            "current_password": owner.password,
            "new_password": new_password,
            "confirm_password": new_password,
        },
    )
    assert changed.status_code == 303 and changed.headers["location"] == "/mfa/enrol"

    enrol = b.get("/mfa/enrol")
    assert enrol.status_code == 200
    assert '<img class="qr" src="data:image/svg+xml' in enrol.text
    secret = re.search(r'<code id="totp-secret"[^>]*>([A-Z2-7 ]+)</code>', enrol.text).group(1)
    secret = secret_value(secret.replace(" ", ""))
    # The same secret on reload: the person may have scanned it already.
    assert secret in b.get("/mfa/enrol").text.replace(" ", "")
    wrong = b.post("/mfa/enrol", {"code": "000000"})
    assert wrong.status_code == 401
    assert 'id="enrol-code-error"' in wrong.text and "check the time" in wrong.text
    old_cookie = b.client.cookies.get("carepost_session")
    done = b.post("/mfa/enrol", {"code": pyotp.TOTP(secret).now()})
    assert done.status_code == 303 and done.headers["location"] == "/mfa/recovery-codes"
    new_cookie = b.client.cookies.get("carepost_session")
    assert new_cookie and new_cookie != old_cookie  # a new token once fully signed in

    codes_page = b.get("/mfa/recovery-codes")
    codes = re.findall(r"<li><code>([0-9a-f]{6}-[0-9a-f]{6})</code></li>", codes_page.text)
    assert len(codes) == 10
    for code in codes:
        secret_value(code)
    again = b.get("/mfa/recovery-codes")
    assert "already shown" in again.text and codes[0] not in again.text
    assert b.get("/").status_code == 200

    # The token seen before the second factor no longer works.
    stale = type(b)(b.client.__class__(b.client.app, base_url="https://testserver"))
    stale.client.cookies.set("carepost_session", old_cookie)
    assert stale.get("/").headers["location"] == "/login?expired=1"
    # Nor does the one-time password.
    _b2, response = login(owner)
    assert response.status_code == 401 and GENERIC in text(response)


def test_wrong_password_unknown_email_and_unknown_organization_read_the_same(owner, login, tenant):
    answers = [
        login(owner, password="not the password at all")[1],
        login(owner, email="nobody@clinic.example")[1],
        login(owner, organization="no-such-organization")[1],
    ]
    for response in answers:
        assert response.status_code == 401
        assert GENERIC in text(response)
        assert 'id="login-password-error"' in response.text
        assert "carepost_session=" not in response.headers.get("set-cookie", "")
    # The form keeps what was typed, except the password.
    assert f'value="{owner.email}"' in answers[0].text
    assert "not the password at all" not in answers[0].text


def test_missing_fields_are_named(browser):
    b = browser()
    b.get("/login")
    response = b.post("/login", {"organization": "", "email": "", "password": ""})
    assert response.status_code == 422
    assert "Enter your organization." in response.text
    assert "Enter your email address." in response.text
    field = re.search(r'<input[^>]*id="login-organization"[^>]*>', response.text).group(0)
    assert 'aria-describedby="login-organization-hint login-organization-error"' in field
    assert 'aria-invalid="true"' in field and "autofocus" in field


def test_sign_in_form_needs_its_own_csrf_token(owner, browser, runtime):
    b = browser()
    response = b.post(
        "/login",
        {"organization": owner.tenant.slug, "email": owner.email, "password": owner.password},
        csrf=False,
    )
    assert response.status_code == 403
    assert "sign-in form has expired" in response.text
    assert "carepost_session=" not in response.headers.get("set-cookie", "")


def test_lockout_says_when_to_try_again(owner, login, browser):
    b = browser()
    for _ in range(5):
        _b, response = login(owner, password="wrong password every time", b=b)
        assert response.status_code == 401
    _b, locked = login(owner, b=b)  # even the right password, while locked
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    message = text(locked)
    assert re.search(r"Try again in 1 minute \(after \d\d:\d\d UTC\)", message), message
    assert "carepost_session=" not in locked.headers.get("set-cookie", "")


def test_owner_signs_in_with_a_totp_code_and_gets_a_new_token(owner, login):
    b, response = login(owner)
    assert response.headers["location"] == "/login/mfa"
    first_token = b.client.cookies.get("carepost_session")
    page = b.get("/login/mfa")
    assert "Two-factor sign-in" in page.text
    done = b.post("/login/mfa", {"code": owner.totp()})
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert b.client.cookies.get("carepost_session") != first_token
    dashboard = b.get("/")
    assert dashboard.status_code == 200 and owner.tenant.name in dashboard.text


def test_expired_totp_code_is_rejected(owner, login):
    b, _response = login(owner)
    expired = b.post("/login/mfa", {"code": owner.totp(offset_steps=-3)})
    assert expired.status_code == 401
    assert "That code is not valid." in expired.text
    assert b.get("/").headers["location"] == "/login/mfa"


def test_reused_totp_code_is_rejected(owner, login):
    code = owner.totp()
    b, _response = login(owner)
    assert b.post("/login/mfa", {"code": code}).headers["location"] == "/"
    b2, _response = login(owner)
    reused = b2.post("/login/mfa", {"code": code})
    assert reused.status_code == 401
    assert "already used" in reused.text
    assert b2.get("/").headers["location"] == "/login/mfa"


def test_a_recovery_code_signs_in_once(owner, login, runtime):
    with runtime.bound_session(owner.keys) as session:
        user = accounts.get_user(session, owner.tenant.id, owner.id)
        codes = totp.regenerate_recovery_codes(session, user=user, actor=SYSTEM)
    code = secret_value(codes[0])
    b, _response = login(owner)
    assert b.post("/login/mfa", {"code": code}).headers["location"] == "/"
    b2, _response = login(owner)
    assert b2.post("/login/mfa", {"code": code}).status_code == 401


def test_marketer_without_a_second_factor_goes_straight_in(make_person, tenant, login):
    marketer = make_person(tenant, "marketer")
    b, response = login(marketer)
    assert response.headers["location"] == "/"
    assert b.get("/").status_code == 200


def test_new_marketer_changes_the_one_time_password_first(make_person, tenant, login):
    marketer = make_person(tenant, "marketer", one_time_password=True)
    b, response = login(marketer)
    assert response.headers["location"] == "/password"
    new_password = secret_value("a brand new passphrase")
    done = b.post(
        "/password",
        {
            "current_password": marketer.password,
            "new_password": new_password,
            "confirm_password": new_password,
        },
    )
    assert done.headers["location"] == "/"
    assert b.get("/").status_code == 200


def test_voluntary_enrolment_then_second_factor_required(make_person, tenant, sign_in, login):
    marketer = make_person(tenant, "marketer")
    b = sign_in(marketer)
    account = b.get("/account")
    assert "Set up two-factor sign-in" in account.text
    enrol = b.get("/mfa/enrol")
    assert enrol.status_code == 200
    secret = re.search(r'<code id="totp-secret"[^>]*>([A-Z2-7 ]+)</code>', enrol.text).group(1)
    secret = secret_value(secret.replace(" ", ""))
    done = b.post("/mfa/enrol", {"code": pyotp.TOTP(secret).now()})
    assert done.headers["location"] == "/mfa/recovery-codes"
    assert b.get("/mfa/enrol").headers["location"] == "/account"
    _b, response = login(marketer)
    assert response.headers["location"] == "/login/mfa"


def test_disabled_account_is_told_so(make_person, tenant, login, runtime):
    analyst = make_person(tenant, "analyst")
    with runtime.database.session() as session:
        session.execute(update(User).where(User.id == analyst.id).values(status="disabled"))
    _b, response = login(analyst)
    assert response.status_code == 401
    assert "This account is disabled." in response.text


def _age_session(runtime, person, **changes) -> None:
    with runtime.database.session() as session:
        session.execute(
            update(UserSession).where(UserSession.user_id == person.id).values(**changes)
        )


def test_idle_session_expires_to_the_sign_in_page_with_a_message(owner, sign_in, runtime, login):
    b = sign_in(owner)
    assert b.get("/").status_code == 200
    _age_session(runtime, owner, last_seen_at=utcnow() - timedelta(minutes=31))
    response = b.get("/users")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?expired=1"
    assert 'carepost_session=""' in response.headers["set-cookie"]  # the cookie is cleared
    page = b.follow(response)
    assert "Your session ended after a period of inactivity" in page.text
    # Signing in again works.
    b2, _again = login(owner, b=b)
    assert b2.post("/login/mfa", {"code": owner.totp()}).headers["location"] == "/"


def test_idle_limit_follows_the_organization_setting(owner, sign_in, runtime):
    with runtime.database.session() as session:
        session.execute(
            update(Tenant).where(Tenant.id == owner.tenant.id).values(session_idle_minutes=5)
        )
    b = sign_in(owner)
    _age_session(runtime, owner, last_seen_at=utcnow() - timedelta(minutes=6))
    assert b.get("/").headers["location"] == "/login?expired=1"


def test_absolute_lifetime_expires_even_an_active_session(owner, sign_in, runtime):
    b = sign_in(owner)
    _age_session(runtime, owner, expires_at=utcnow() - timedelta(seconds=1))
    assert b.get("/").headers["location"] == "/login?expired=1"


def test_expired_htmx_request_moves_the_whole_page(owner, sign_in, runtime):
    b = sign_in(owner)
    _age_session(runtime, owner, last_seen_at=utcnow() - timedelta(hours=2))
    response = b.post("/users/00000000-0000-0000-0000-000000000000", {}, htmx=True)
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == "/login?expired=1"


def test_sign_out_ends_the_session(owner, sign_in):
    b = sign_in(owner)
    token = b.client.cookies.get("carepost_session")
    response = b.post("/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login?signed_out=1"
    assert "You are signed out." in b.follow(response).text
    b.client.cookies.set("carepost_session", token)
    assert b.get("/").headers["location"] == "/login?expired=1"


def test_sign_out_everywhere_ends_every_session(owner, sign_in, runtime):
    laptop, phone = sign_in(owner), sign_in(owner)
    response = laptop.post("/logout/everywhere")
    assert response.headers["location"] == "/login?signed_out=all"
    assert "You are signed out on every device." in laptop.follow(response).text
    assert phone.get("/").headers["location"] == "/login?expired=1"
    with runtime.database.session() as session:
        live = session.scalars(
            select(UserSession).where(
                UserSession.user_id == owner.id, UserSession.revoked_at.is_(None)
            )
        ).all()
    assert live == []


def test_signed_in_person_visiting_sign_in_goes_to_the_dashboard(owner, sign_in):
    assert sign_in(owner).get("/login").headers["location"] == "/"


def test_an_api_key_is_not_a_console_sign_in(tenant, make_api_key, browser):
    response = browser().get("/", headers=make_api_key(tenant))
    assert response.status_code == 303 and response.headers["location"] == "/login"


def test_an_mfa_enrolled_user_session_resolves_for_the_api(owner, sign_in):
    """Regression: loading the user with its encrypted TOTP secret needed tenant keys."""
    b = sign_in(owner)
    me = b.client.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["role"] == "owner"
