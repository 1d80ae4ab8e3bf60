"""Users and roles in the console: invite (one-time password shown once), role and status
changes via HTMX, MFA reset, signing a user out everywhere, and who may do what."""

from __future__ import annotations

import html
import json
import re

from sqlalchemy import select

from carepost.accounts import service as accounts
from carepost.accounts.models import User, UserSession
from carepost.audit.models import AuditEvent


def user_row(runtime, person) -> User:
    with runtime.bound_session(person.keys) as session:
        return accounts.get_user(session, person.tenant.id, person.id)


def test_users_page_lists_people_and_the_role_table(owner, make_person, tenant, sign_in):
    analyst = make_person(tenant, "analyst", name="Ada Analyst")
    page = sign_in(owner).get("/users")
    assert page.status_code == 200
    assert analyst.email in page.text and "Ada Analyst" in page.text
    assert "<caption" in page.text and 'scope="col"' in page.text
    assert "What each role may do" in page.text
    assert f'id="user-{analyst.id}"' in page.text


def test_invite_shows_the_one_time_password_once(owner, sign_in, runtime, login):
    b = sign_in(owner)
    response = b.post(
        "/users",
        {"email": "new.nurse@clinic.example", "name": "New Nurse", "role": "marketer"},
        htmx=True,
    )
    assert response.status_code == 201
    assert response.text.lstrip().startswith('<div id="users-section"')  # the partial only
    one_time = re.search(r'<code id="one-time-password">([^<]+)</code>', response.text).group(1)
    assert "new.nurse@clinic.example can now sign in as marketer" in html.unescape(response.text)
    assert one_time not in b.get("/users").text  # shown once
    # The invitee can sign in with it and must change it.
    with runtime.database.session() as session:
        user = session.scalar(select(User).where(User.email == "new.nurse@clinic.example"))
    assert user.password_must_change and user.role == "marketer"


def test_invite_without_htmx_renders_the_whole_page(owner, sign_in):
    response = sign_in(owner).post("/users", {"email": "plain@clinic.example", "role": "analyst"})
    assert response.status_code == 201
    assert "<!doctype html>" in response.text and 'id="one-time-password"' in response.text


def test_invite_errors_are_shown_next_to_their_field(owner, sign_in):
    b = sign_in(owner)
    bad = b.post("/users", {"email": "not-an-address", "role": "analyst"}, htmx=True)
    assert bad.status_code == 422
    assert 'id="invite-email-error"' in bad.text
    assert 'aria-describedby="invite-email-error" aria-invalid="true"' in bad.text
    assert '<details class="panel disclosure" open>' in bad.text  # the form stays open
    assert 'value="not-an-address"' in bad.text
    duplicate = b.post("/users", {"email": owner.email, "role": "analyst"}, htmx=True)
    assert duplicate.status_code == 409
    assert "A user with this email exists in this organization." in duplicate.text
    missing = b.post("/users", {"email": "", "role": "analyst"}, htmx=True)
    assert missing.status_code == 422 and "Enter the email address." in missing.text


def test_html_in_inputs_is_shown_as_text(owner, sign_in):
    b = sign_in(owner)
    response = b.post(
        "/users",
        {"email": "x@clinic.example", "name": "<script>alert(1)</script>", "role": "analyst"},
        htmx=True,
    )
    assert response.status_code == 201
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


def test_admin_cannot_invite_an_owner(make_person, tenant, sign_in):
    admin = sign_in(make_person(tenant, "admin"))
    page = admin.get("/users")
    assert '<option value="owner"' not in page.text  # not offered
    response = admin.post("/users", {"email": "boss@clinic.example", "role": "owner"}, htmx=True)
    assert response.status_code == 403
    assert 'id="invite-role-error"' in response.text


def test_role_change_via_htmx_returns_the_row_and_a_notice(owner, make_person, tenant, sign_in):
    analyst = make_person(tenant, "analyst")
    b = sign_in(owner)
    response = b.post(f"/users/{analyst.id}", {"role": "auditor", "status": "active"}, htmx=True)
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="user-{analyst.id}">')
    notice = json.loads(response.headers["HX-Trigger"])["carepost:notice"]
    assert "now auditor" in notice
    assert '<option value="auditor" selected>' in response.text


def test_role_change_signs_the_user_out(owner, make_person, tenant, sign_in, runtime):
    analyst = make_person(tenant, "analyst")
    theirs = sign_in(analyst)
    sign_in(owner).post(f"/users/{analyst.id}", {"role": "marketer", "status": "active"})
    assert theirs.get("/").headers["location"] == "/login?expired=1"
    assert user_row(runtime, analyst).role == "marketer"


def test_status_change_without_htmx_comes_back_to_the_user_page(
    owner, make_person, tenant, sign_in, runtime
):
    analyst = make_person(tenant, "analyst")
    b = sign_in(owner)
    response = b.post(f"/users/{analyst.id}", {"role": "analyst", "status": "disabled"})
    assert response.status_code == 303
    assert response.headers["location"] == f"/users/{analyst.id}?done=updated"
    assert "Changes saved." in b.follow(response).text
    assert user_row(runtime, analyst).status == "disabled"


def test_owners_manage_each_other_but_not_themselves(make_person, tenant, sign_in, runtime):
    owner = make_person(tenant, "owner")
    other_owner = make_person(tenant, "owner")
    b = sign_in(other_owner)
    # Demote the other owner: fine, one owner is left.
    ok = b.post(f"/users/{owner.id}", {"role": "admin", "status": "active"}, htmx=True)
    assert ok.status_code == 200
    # The remaining owner cannot change themself (nor so leave the organization ownerless).
    own = b.post(f"/users/{other_owner.id}", {"role": "admin", "status": "active"}, htmx=True)
    assert own.status_code == 403
    assert own.headers["HX-Retarget"] == "#messages"
    assert user_row(runtime, other_owner).role == "owner"


def test_admin_cannot_change_an_owner(make_person, tenant, sign_in):
    admin = make_person(tenant, "admin")
    owner = make_person(tenant, "owner")
    b = sign_in(admin)
    detail = b.get(f"/users/{owner.id}")
    assert 'action="/users/' not in detail.text  # an admin does not manage an owner
    refused = b.post(f"/users/{owner.id}", {"role": "analyst", "status": "active"})
    assert refused.status_code == 403
    assert "cannot change a owner" in refused.text or "cannot change an owner" in refused.text


def test_error_in_a_row_action_is_announced(make_person, tenant, sign_in, runtime):
    owner = make_person(tenant, "owner")
    analyst = make_person(tenant, "analyst")
    b = sign_in(owner)
    response = b.post(f"/users/{analyst.id}", {"role": "wizard", "status": "active"}, htmx=True)
    assert response.status_code == 422
    assert response.headers["HX-Retarget"] == "#messages"
    assert "Role must be one of" in response.text
    assert user_row(runtime, analyst).role == "analyst"
    # Without HTMX, the user's page comes back with the error next to the field.
    page = b.post(f"/users/{analyst.id}", {"role": "wizard", "status": "active"})
    assert page.status_code == 422
    assert 'id="access-role-error"' in page.text and 'aria-invalid="true"' in page.text


def test_reset_mfa_clears_the_second_factor(owner, make_person, tenant, sign_in, runtime):
    admin = make_person(tenant, "admin")
    b = sign_in(owner)
    response = b.post(f"/users/{admin.id}/reset-mfa", htmx=True)
    assert response.status_code == 200
    assert (
        "Two-factor sign-in reset" in json.loads(response.headers["HX-Trigger"])["carepost:notice"]
    )
    assert not user_row(runtime, admin).totp_enabled
    events = _events(runtime, owner, "user.mfa_reset")
    assert events and events[0].object_id == str(admin.id)


def test_sign_out_everywhere_for_another_user(owner, make_person, tenant, sign_in, runtime):
    analyst = make_person(tenant, "analyst")
    theirs = sign_in(analyst)
    b = sign_in(owner)
    response = b.post(f"/users/{analyst.id}/sign-out-everywhere")
    assert response.headers["location"] == f"/users/{analyst.id}?done=signed-out"
    assert theirs.get("/").headers["location"] == "/login?expired=1"
    with runtime.database.session() as session:
        live = session.scalars(
            select(UserSession).where(
                UserSession.user_id == analyst.id, UserSession.revoked_at.is_(None)
            )
        ).all()
    assert live == []


def test_nobody_manages_themself_from_the_users_page(owner, sign_in, runtime):
    b = sign_in(owner)
    page = b.get("/users")
    assert f'action="/users/{owner.id}"' not in page.text
    for path in (f"/users/{owner.id}", f"/users/{owner.id}/reset-mfa"):
        assert b.post(path, {"role": "analyst", "status": "active"}).status_code == 403
    assert user_row(runtime, owner).role == "owner"


def test_auditor_sees_users_but_no_controls(make_person, tenant, sign_in):
    auditor = sign_in(make_person(tenant, "auditor"))
    page = auditor.get("/users")
    assert page.status_code == 200
    assert "Invite a user" not in page.text
    assert "Reset two-factor" not in page.text and "<select" not in page.text


def _events(runtime, person, action):
    with runtime.database.session() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.tenant_id == person.tenant.id, AuditEvent.action == action
                )
            )
        )
