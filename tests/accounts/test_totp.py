"""TOTP second factor (RFC 6238): each code works once, only near its time; recovery
codes work once; an administrator can reset a lost factor."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest

from carepost.accounts import service, totp
from carepost.accounts.models import User
from carepost.audit.service import Actor
from carepost.core.errors import AuthenticationFailed, Conflict, PermissionDenied, RateLimited
from tests.conftest import new_password, secret_value

ADMIN = Actor("user", "admin", "admin")


def code_at(secret: str, when) -> str:
    return secret_value(pyotp.TOTP(secret).at(when))


@pytest.fixture
def enrolled(runtime, tenant, clock):
    """A user who enrolled TOTP at ``clock.now``: (tenant, user id, secret, recovery codes)."""
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        user, _ = service.create_user(
            session,
            tenant_id=tenant_row.id,
            email="doc@clinic.example",
            role="marketer",
            password=new_password(),
        )
        totp.begin_totp_enrolment(session, user=user, tenant=tenant_row)
        secret = secret_value(user.totp_secret)
        codes = totp.confirm_totp_enrolment(
            session, user=user, code=code_at(secret, clock.now), actor=ADMIN
        )
    for code in codes:
        secret_value(code)
    return tenant, user.id, secret, codes


def verify(runtime, tenant, user_id, code):
    """One second-factor attempt in its own (committed) transaction."""
    with runtime.bound_session(tenant[1]) as session:
        user = session.get(User, user_id)
        try:
            return totp.verify_second_factor(session, user=user, code=code, actor=ADMIN)
        except AuthenticationFailed as error:
            return error


def test_enrolment_needs_a_valid_first_code(runtime, tenant, clock):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        user, _ = service.create_user(
            session,
            tenant_id=tenant_row.id,
            email="x@clinic.example",
            role="owner",
            password=new_password(),
        )
        uri = totp.begin_totp_enrolment(session, user=user, tenant=tenant_row)
        assert uri.startswith("otpauth://totp/")
        wrong = code_at(user.totp_secret, clock.now - timedelta(minutes=5))
        with pytest.raises(AuthenticationFailed):
            totp.confirm_totp_enrolment(session, user=user, code=wrong, actor=ADMIN)
        assert not user.totp_enabled


def test_a_valid_code_is_accepted_once(runtime, enrolled, clock):
    tenant, user_id, secret, _codes = enrolled
    clock.advance(seconds=60)
    code = code_at(secret, clock.now)
    assert verify(runtime, tenant, user_id, code) == "totp"
    replay = verify(runtime, tenant, user_id, code)
    assert isinstance(replay, AuthenticationFailed)
    assert "already used" in replay.detail


def test_the_enrolment_code_cannot_be_replayed_to_sign_in(runtime, enrolled, clock):
    tenant, user_id, secret, _codes = enrolled
    assert isinstance(
        verify(runtime, tenant, user_id, code_at(secret, clock.now)), AuthenticationFailed
    )


def test_an_older_code_is_rejected_after_a_newer_one(runtime, enrolled, clock):
    tenant, user_id, secret, _codes = enrolled
    clock.advance(seconds=90)
    older = code_at(secret, clock.now - timedelta(seconds=30))
    newer = code_at(secret, clock.now)
    assert verify(runtime, tenant, user_id, newer) == "totp"
    if older != newer:
        assert isinstance(verify(runtime, tenant, user_id, older), AuthenticationFailed)


def test_codes_within_one_step_of_drift_are_accepted(runtime, enrolled, clock):
    tenant, user_id, secret, _codes = enrolled
    clock.advance(seconds=120)
    assert (
        verify(runtime, tenant, user_id, code_at(secret, clock.now - timedelta(seconds=30)))
        == "totp"
    )
    clock.advance(seconds=120)
    assert (
        verify(runtime, tenant, user_id, code_at(secret, clock.now + timedelta(seconds=30)))
        == "totp"
    )


def test_an_expired_code_is_rejected(runtime, enrolled, clock):
    tenant, user_id, secret, _codes = enrolled
    clock.advance(seconds=300)
    current_window = {code_at(secret, clock.now + timedelta(seconds=s)) for s in (-30, 0, 30)}
    for age in (120, 150, 180, 240):
        expired = code_at(secret, clock.now - timedelta(seconds=age))
        if expired not in current_window:  # one in a million: the same six digits
            break
    result = verify(runtime, tenant, user_id, expired)
    assert isinstance(result, AuthenticationFailed)
    assert result.detail == "that code is not valid"


def test_failed_codes_count_toward_the_lockout(runtime, enrolled, clock):
    tenant, user_id, secret, _codes = enrolled
    clock.advance(seconds=60)
    window = {code_at(secret, clock.now + timedelta(seconds=s)) for s in (-30, 0, 30)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in window)
    for _ in range(5):
        assert isinstance(verify(runtime, tenant, user_id, wrong), AuthenticationFailed)
    with runtime.bound_session(tenant[1]) as session:
        user = session.get(User, user_id)
        with pytest.raises(RateLimited):
            totp.verify_second_factor(
                session, user=user, code=code_at(secret, clock.now), actor=ADMIN
            )


def test_recovery_codes_work_once_each(runtime, enrolled):
    tenant, user_id, _secret, codes = enrolled
    assert len(codes) == len(set(codes)) == 10
    assert verify(runtime, tenant, user_id, codes[0]) == "recovery_code"
    assert isinstance(verify(runtime, tenant, user_id, codes[0]), AuthenticationFailed)
    # Case and spacing don't matter; the dash is optional.
    assert verify(runtime, tenant, user_id, codes[1].upper().replace("-", " ")) == "recovery_code"
    with runtime.bound_session(tenant[1]) as session:
        assert totp.remaining_recovery_codes(session, session.get(User, user_id)) == 8


def test_recovery_codes_are_stored_hashed(runtime, enrolled):
    from sqlalchemy import text

    _tenant, _user_id, _secret, codes = enrolled
    with runtime.database.engine.connect() as connection:
        stored = repr(connection.execute(text("SELECT * FROM recovery_codes")).all())
    for code in codes:
        assert code not in stored and code.replace("-", "") not in stored


def test_regenerating_recovery_codes_voids_the_old_ones(runtime, enrolled):
    tenant, user_id, _secret, old = enrolled
    with runtime.bound_session(tenant[1]) as session:
        fresh = totp.regenerate_recovery_codes(
            session, user=session.get(User, user_id), actor=ADMIN
        )
    for code in fresh:
        secret_value(code)
    assert isinstance(verify(runtime, tenant, user_id, old[0]), AuthenticationFailed)
    assert verify(runtime, tenant, user_id, fresh[0]) == "recovery_code"


def test_mfa_reset_clears_the_factor_and_signs_the_user_out(runtime, enrolled, clock):
    from carepost.accounts import sessions

    tenant, user_id, secret, codes = enrolled
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        user = session.get(User, user_id)
        token, _row = sessions.create_session(
            session, user=user, tenant=tenant_row, stage=sessions.STAGE_MFA_OK
        )
        secret_value(token)
        service.reset_mfa(
            session, tenant_id=tenant_row.id, user_id=user_id, actor=ADMIN, actor_role="admin"
        )
    with runtime.bound_session(keys) as session:
        user = session.get(User, user_id)
        assert not user.totp_enabled and user.totp_secret is None
        with pytest.raises(AuthenticationFailed):
            sessions.resolve_session(session, token)
    clock.advance(seconds=60)
    assert isinstance(
        verify(runtime, tenant, user_id, code_at(secret, clock.now)), AuthenticationFailed
    )
    assert isinstance(verify(runtime, tenant, user_id, codes[5]), AuthenticationFailed)
    # They enrol again with a new secret.
    with runtime.bound_session(keys) as session:
        user = session.get(User, user_id)
        totp.begin_totp_enrolment(session, user=user, tenant=tenant_row)
        assert secret_value(user.totp_secret) != secret


def test_an_admin_cannot_reset_an_owners_factor(runtime, tenant):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        owner, _ = service.create_user(
            session,
            tenant_id=tenant_row.id,
            email="boss@clinic.example",
            role="owner",
            password=new_password(),
        )
        with pytest.raises(PermissionDenied):
            service.reset_mfa(
                session, tenant_id=tenant_row.id, user_id=owner.id, actor=ADMIN, actor_role="admin"
            )


def test_enrolling_twice_is_refused(runtime, enrolled):
    tenant, user_id, _secret, _codes = enrolled
    with runtime.bound_session(tenant[1]) as session, pytest.raises(Conflict):
        totp.begin_totp_enrolment(session, user=session.get(User, user_id), tenant=tenant[0])


def test_mfa_is_required_for_owners_and_admins(runtime, tenant):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        for role, required in (("owner", True), ("admin", True), ("analyst", False)):
            user, _ = service.create_user(
                session,
                tenant_id=tenant_row.id,
                email=f"{role}@clinic.example",
                role=role,
                password=new_password(),
            )
            assert service.mfa_required(user) is required
