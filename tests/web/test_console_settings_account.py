"""Organization settings and My account: forms that save, errors next to their fields,
read-only views for readers, password change, recovery codes, sessions."""

from __future__ import annotations

import re

from sqlalchemy import select

from carepost.accounts import service as accounts
from carepost.accounts import totp
from carepost.accounts.models import UserSession
from carepost.tenancy.models import Tenant
from tests.canaries import secret_value

SETTINGS = {
    "name": "Riverside Family Health",
    "session_idle_minutes": "15",
    "session_max_hours": "8",
    "physical_address": "1 River Road, Springfield",
}


def tenant_row(runtime, person) -> Tenant:
    with runtime.database.session() as session:
        return session.get(Tenant, person.tenant.id)


def test_settings_are_saved_and_audited(owner, sign_in, runtime):
    b = sign_in(owner)
    page = b.get("/settings")
    assert owner.tenant.slug in page.text  # the sign-in name people type
    response = b.post("/settings", SETTINGS)
    assert response.status_code == 303
    assert "Settings saved." in b.follow(response).text
    saved = tenant_row(runtime, owner)
    assert (saved.name, saved.session_idle_minutes, saved.session_max_hours) == (
        "Riverside Family Health",
        15,
        8,
    )
    assert saved.physical_address == "1 River Road, Springfield"


def test_settings_errors_sit_next_to_their_fields_and_change_nothing(owner, sign_in, runtime):
    b = sign_in(owner)
    before = tenant_row(runtime, owner)
    response = b.post(
        "/settings",
        {**SETTINGS, "session_idle_minutes": "0", "session_max_hours": "many", "name": ""},
    )
    assert response.status_code == 422
    assert 'id="settings-session_max_hours-error"' in response.text
    assert "Enter a whole number." in response.text
    assert "Enter the organization name." in response.text
    # The summary links to each field; the first field in error gets the focus.
    assert 'href="#settings-name"' in response.text
    assert re.search(r'id="settings-name"[^>]*autofocus', response.text)
    out_of_range = b.post("/settings", {**SETTINGS, "session_idle_minutes": "0"})
    assert out_of_range.status_code == 422
    assert 'id="settings-session_idle_minutes-error"' in out_of_range.text
    assert "Between 1 and 1440 minutes." in out_of_range.text
    after = tenant_row(runtime, owner)
    assert (after.name, after.session_idle_minutes) == (before.name, before.session_idle_minutes)


def test_overlong_values_are_refused_by_the_server_too(owner, sign_in):
    response = sign_in(owner).post("/settings", {**SETTINGS, "physical_address": "x" * 501})
    assert response.status_code == 422
    assert "Use at most 500 characters." in response.text


def test_readers_see_settings_read_only(make_person, tenant, sign_in):
    marketer = sign_in(make_person(tenant, "marketer"))
    page = marketer.get("/settings")
    assert page.status_code == 200
    assert "changing them needs an owner or administrator" in page.text
    assert 'id="settings-name" name="name" required disabled' in page.text
    assert "Save settings" not in page.text


def test_account_password_change_signs_out_other_sessions(make_person, tenant, sign_in, login):
    analyst = make_person(tenant, "analyst")
    here, elsewhere = sign_in(analyst), sign_in(analyst)
    here.get("/account")
    new_password = secret_value("another long passphrase")
    wrong = here.post(
        "/account/password",
        {
            "current_password": "not my password",
            "new_password": new_password,
            "confirm_password": new_password,
        },
    )
    assert wrong.status_code == 401
    assert 'id="account-password-current_password-error"' in wrong.text
    short = here.post(
        "/account/password",
        {
            "current_password": analyst.password,
            "new_password": "short",
            "confirm_password": "short",
        },
    )
    assert short.status_code == 422
    assert 'id="account-password-new_password-error"' in short.text
    done = here.post(
        "/account/password",
        {
            "current_password": analyst.password,
            "new_password": new_password,
            "confirm_password": new_password,
        },
    )
    assert done.headers["location"] == "/account?done=password"
    assert here.get("/").status_code == 200
    assert elsewhere.get("/").headers["location"] == "/login?expired=1"
    _b, response = login(analyst, password=new_password)
    assert response.headers["location"] == "/"


def test_new_recovery_codes_are_shown_once_and_replace_the_old(owner, sign_in, runtime):
    b = sign_in(owner)
    with runtime.bound_session(owner.keys) as session:
        user = accounts.get_user(session, owner.tenant.id, owner.id)
        old = totp.regenerate_recovery_codes(session, user=user, actor=accounts.audit.SYSTEM)
    b.get("/account")
    response = b.post("/account/recovery-codes")
    assert response.headers["location"] == "/mfa/recovery-codes"
    reveal = next(h for h in response.headers.get_list("set-cookie") if "carepost_reveal=" in h)
    assert "HttpOnly" in reveal and "Path=/mfa/recovery-codes" in reveal
    page = b.get("/mfa/recovery-codes")
    codes = re.findall(r"<li><code>([0-9a-f-]{13})</code></li>", page.text)
    assert len(codes) == 10 and not set(codes) & set(old)
    for code in codes:
        secret_value(code)
    assert "already shown" in b.get("/mfa/recovery-codes").text
    # A sealed cookie replayed into another session opens nothing.
    sealed = re.search(r"carepost_reveal=([^;]+)", reveal).group(1)
    other = sign_in(owner)
    other.client.cookies.set("carepost_reveal", sealed)
    assert codes[0] not in other.get("/mfa/recovery-codes").text


def test_account_lists_my_sessions_and_signs_out_the_others(owner, sign_in, runtime):
    here, elsewhere = sign_in(owner), sign_in(owner)
    page = here.get("/account")
    assert page.text.count('<tr id="session-') == 2
    assert "this session" in page.text
    response = here.post("/account/sessions/sign-out-others")
    assert response.headers["location"] == "/account?done=signed-out-others#sessions"
    assert here.get("/account").text.count('<tr id="session-') == 1
    assert elsewhere.get("/").headers["location"] == "/login?expired=1"
    with runtime.database.session() as session:
        live = session.scalars(
            select(UserSession).where(
                UserSession.user_id == owner.id, UserSession.revoked_at.is_(None)
            )
        ).all()
    assert len(live) == 1
