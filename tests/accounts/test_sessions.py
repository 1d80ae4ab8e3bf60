"""Console sessions: idle timeout and absolute lifetime per tenant, token rotation on
promotion, sign-out everywhere; only token hashes are stored."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text, update

from carepost.accounts import sessions
from carepost.accounts.models import User, UserSession
from carepost.core.database import utcnow
from carepost.core.errors import AuthenticationFailed
from carepost.tenancy.models import Tenant
from tests.conftest import secret_value


def open_session(runtime, tenant, user_id, stage=sessions.STAGE_MFA_OK) -> tuple[str, object]:
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        user = session.get(User, user_id)
        current = session.get(Tenant, tenant_row.id)  # its session policy as stored now
        token, row = sessions.create_session(session, user=user, tenant=current, stage=stage)
    return secret_value(token), row.id


def resolve(runtime, tenant, token):
    """Resolve a token in its own transaction, committed even on failure (as the API does)."""
    with runtime.bound_session(tenant[1]) as session:
        try:
            return sessions.resolve_session(session, token)
        except AuthenticationFailed as error:
            return error


def set_tenant(runtime, tenant, **values) -> None:
    with runtime.database.session() as session:
        session.execute(update(Tenant).where(Tenant.id == tenant[0].id).values(**values))


def age_session(runtime, session_id, **values) -> None:
    with runtime.database.session() as session:
        session.execute(update(UserSession).where(UserSession.id == session_id).values(**values))


@pytest.fixture
def member(make_user, tenant):
    user_id, _email, _password = make_user(tenant, "marketer")
    return user_id


def test_a_session_idle_too_long_is_rejected_and_audited(runtime, tenant, member, audit_trail):
    set_tenant(runtime, tenant, session_idle_minutes=5)
    token, session_id = open_session(runtime, tenant, member)
    age_session(runtime, session_id, last_seen_at=utcnow() - timedelta(minutes=4))
    assert not isinstance(resolve(runtime, tenant, token), AuthenticationFailed)
    age_session(runtime, session_id, last_seen_at=utcnow() - timedelta(minutes=6))
    refused = resolve(runtime, tenant, token)
    assert isinstance(refused, AuthenticationFailed) and "expired" in refused.detail
    [event] = audit_trail(tenant, "auth.session_expired")
    assert event.reason == "idle timeout" and event.object_id == str(session_id)
    # It stays dead even if activity resumes.
    age_session(runtime, session_id, last_seen_at=utcnow())
    assert isinstance(resolve(runtime, tenant, token), AuthenticationFailed)


def test_activity_keeps_a_session_alive(runtime, tenant, member):
    set_tenant(runtime, tenant, session_idle_minutes=5)
    token, session_id = open_session(runtime, tenant, member)
    age_session(runtime, session_id, last_seen_at=utcnow() - timedelta(minutes=4))
    row, _user, _tenant = resolve(runtime, tenant, token)
    assert utcnow() - row.last_seen_at < timedelta(seconds=5)


def test_a_session_past_its_absolute_lifetime_is_rejected(runtime, tenant, member, audit_trail):
    set_tenant(runtime, tenant, session_max_hours=2)
    token, session_id = open_session(runtime, tenant, member)
    with runtime.database.session() as session:
        row = session.get(UserSession, session_id)
        lifetime = row.expires_at - row.created_at
    assert timedelta(hours=2) - timedelta(seconds=5) < lifetime <= timedelta(hours=2)
    # Busy all along, but too old.
    age_session(runtime, session_id, expires_at=utcnow() - timedelta(seconds=1))
    assert isinstance(resolve(runtime, tenant, token), AuthenticationFailed)
    [event] = audit_trail(tenant, "auth.session_expired")
    assert event.reason == "absolute lifetime"


def test_an_idle_session_is_refused_by_the_api_and_the_expiry_is_audited(
    runtime, client, tenant, member, audit_trail
):
    set_tenant(runtime, tenant, session_idle_minutes=5)
    token, session_id = open_session(runtime, tenant, member)
    headers = {"Cookie": f"carepost_session={token}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    age_session(runtime, session_id, last_seen_at=utcnow() - timedelta(minutes=6))
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    [event] = audit_trail(tenant, "auth.session_expired")
    assert event.reason == "idle timeout"
    with runtime.database.session() as session:
        assert session.get(UserSession, session_id).revoked_at is not None


def test_promotion_rotates_the_token(runtime, tenant, member):
    token, session_id = open_session(runtime, tenant, member, stage=sessions.STAGE_PASSWORD_OK)
    with runtime.bound_session(tenant[1]) as session:
        row = session.get(UserSession, session_id)
        old_csrf = row.csrf_token
        new_token = secret_value(sessions.promote_session(session, row))
    assert new_token != token
    assert isinstance(resolve(runtime, tenant, token), AuthenticationFailed)
    row, _user, _tenant = resolve(runtime, tenant, new_token)
    assert row.stage == sessions.STAGE_MFA_OK and row.csrf_token != old_csrf


def test_a_half_signed_in_session_reaches_nothing(runtime, client, tenant, member):
    token, _ = open_session(runtime, tenant, member, stage=sessions.STAGE_PASSWORD_OK)
    response = client.get("/api/v1/me", headers={"Cookie": f"carepost_session={token}"})
    assert response.status_code == 401


def test_sign_out_everywhere_ends_every_session(runtime, client, tenant, member, audit_trail):
    tokens = [open_session(runtime, tenant, member)[0] for _ in range(3)]
    headers = {"Cookie": f"carepost_session={tokens[0]}"}
    with runtime.database.session() as session:
        csrf = session.scalar(
            text("SELECT csrf_token FROM user_sessions WHERE user_id = :u ORDER BY created_at"),
            {"u": member.hex if runtime.database.is_sqlite else member},
        )
    headers["X-CSRF-Token"] = secret_value(csrf)
    response = client.post(f"/api/v1/users/{member}/sign-out-everywhere", headers=headers)
    assert response.status_code == 200 and response.json() == {"sessions_revoked": 3}
    for token in tokens:
        assert isinstance(resolve(runtime, tenant, token), AuthenticationFailed)
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    assert len(audit_trail(tenant, "auth.sign_out_everywhere")) == 1


def test_sign_out_elsewhere_keeps_the_current_session(runtime, tenant, member):
    keep, keep_id = open_session(runtime, tenant, member)
    other, _ = open_session(runtime, tenant, member)
    with runtime.database.session() as session:
        count = sessions.revoke_user_sessions(
            session, tenant_id=tenant[0].id, user_id=member, except_id=keep_id
        )
    assert count == 1
    assert not isinstance(resolve(runtime, tenant, keep), AuthenticationFailed)
    assert isinstance(resolve(runtime, tenant, other), AuthenticationFailed)


def test_disabling_a_user_ends_their_sessions(runtime, client, tenant, member, make_api_key):
    token, _ = open_session(runtime, tenant, member)
    response = client.patch(
        f"/api/v1/users/{member}", json={"status": "disabled"}, headers=make_api_key(tenant)
    )
    assert response.status_code == 200
    assert isinstance(resolve(runtime, tenant, token), AuthenticationFailed)


def test_only_token_hashes_are_stored(runtime, tenant, member):
    token, _ = open_session(runtime, tenant, member)
    with runtime.database.engine.connect() as connection:
        stored = repr(connection.execute(text("SELECT * FROM user_sessions")).all())
    assert token not in stored


def test_unsafe_requests_need_the_csrf_token(runtime, client, tenant, member, make_user, sign_in):
    owner = make_user(tenant, "owner")[0]
    headers = sign_in(tenant, owner)
    without = {"Cookie": headers["Cookie"]}
    body = {"physical_address": "2 Elm St"}
    response = client.patch("/api/v1/tenant", json=body, headers=without)
    assert response.status_code == 403
    wrong = without | {"X-CSRF-Token": "forged"}
    assert client.patch("/api/v1/tenant", json=body, headers=wrong).status_code == 403
    assert client.get("/api/v1/tenant", headers=without).json()["physical_address"] == ""
    assert client.patch("/api/v1/tenant", json=body, headers=headers).status_code == 200
