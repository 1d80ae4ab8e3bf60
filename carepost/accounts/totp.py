"""The app-based second factor: TOTP (RFC 6238) enrolment and verification, and the
single-use recovery codes that come with it.

A code is accepted within one time step of clock drift, and never twice: the last
accepted time step is stored, so a code seen over a shoulder cannot be replayed.
Failures count toward the account lockout of :mod:`carepost.accounts.service`.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

import pyotp
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from carepost.accounts.models import RecoveryCode, User
from carepost.accounts.service import check_not_locked, register_failure
from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.errors import AuthenticationFailed, Conflict
from carepost.tenancy.models import Tenant

RECOVERY_CODE_COUNT = 10
TOTP_ISSUER = "carepost"


def begin_totp_enrolment(session: Session, *, user: User, tenant: Tenant) -> str:
    """Generate a fresh secret (stored encrypted) and return the otpauth:// URI."""
    if user.totp_enabled:
        raise Conflict("two-factor sign-in is already set up; reset it first")
    user.totp_secret = pyotp.random_base32()
    session.flush()
    return totp_uri(user, tenant)


def totp_uri(user: User, tenant: Tenant) -> str:
    if not user.totp_secret:
        raise Conflict("two-factor enrolment has not started")
    label = f"{tenant.slug}:{user.email}"
    return str(pyotp.TOTP(user.totp_secret).provisioning_uri(name=label, issuer_name=TOTP_ISSUER))


def _matching_counter(secret: str, code: str, now: datetime) -> int | None:
    """The RFC 6238 time step that ``code`` matches (±1 step of clock drift), if any."""
    totp = pyotp.TOTP(secret)
    counter = totp.timecode(now)
    for step in (counter, counter - 1, counter + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _hash_recovery_code(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").strip().lower().encode()).hexdigest()


def _new_recovery_codes(session: Session, user: User) -> list[str]:
    session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())
    )
    codes = [f"{secrets.token_hex(3)}-{secrets.token_hex(3)}" for _ in range(RECOVERY_CODE_COUNT)]
    for code in codes:
        session.add(
            RecoveryCode(
                tenant_id=user.tenant_id, user_id=user.id, code_hash=_hash_recovery_code(code)
            )
        )
    session.flush()
    return codes


def confirm_totp_enrolment(
    session: Session, *, user: User, code: str, actor: audit.Actor
) -> list[str]:
    """Check the first code from the authenticator app, switch MFA on, return recovery codes."""
    if not user.totp_secret or user.totp_enabled:
        raise Conflict("no two-factor enrolment is in progress")
    now = utcnow()
    counter = _matching_counter(user.totp_secret, code.strip(), now)
    if counter is None:
        audit.record(
            session,
            tenant_id=user.tenant_id,
            actor=actor,
            action="auth.mfa_enrol",
            outcome="failure",
            object_type="user",
            object_id=user.id,
        )
        raise AuthenticationFailed(
            "that code is not valid; check the time on your device", field="code"
        )
    user.totp_enabled = True
    user.totp_last_counter = counter
    codes = _new_recovery_codes(session, user)
    audit.record(
        session,
        tenant_id=user.tenant_id,
        actor=actor,
        action="auth.mfa_enrol",
        object_type="user",
        object_id=user.id,
    )
    return codes


def verify_second_factor(session: Session, *, user: User, code: str, actor: audit.Actor) -> str:
    """Accept a current, never-used TOTP code or an unused recovery code.

    Returns ``"totp"`` or ``"recovery_code"``. Failures count toward the lockout.
    """
    now = utcnow()
    check_not_locked(user, now)
    cleaned = code.strip().replace(" ", "")
    method: str | None = None
    if user.totp_enabled and user.totp_secret and cleaned.isdigit() and len(cleaned) == 6:
        counter = _matching_counter(user.totp_secret, cleaned, now)
        if counter is not None and (
            user.totp_last_counter is None or counter > user.totp_last_counter
        ):
            user.totp_last_counter = counter
            method = "totp"
        elif counter is not None:
            reason = "code already used"
            register_failure(session, user, now)
            audit.record(
                session,
                tenant_id=user.tenant_id,
                actor=actor,
                action="auth.mfa",
                outcome="failure",
                object_type="user",
                object_id=user.id,
                reason=reason,
            )
            raise AuthenticationFailed(
                "that code was already used; wait for the next one", field="code"
            )
    elif user.totp_enabled:
        used = session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user.id,
                RecoveryCode.used_at.is_(None),
                RecoveryCode.code_hash == _hash_recovery_code(cleaned),
            )
            .values(used_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if used:
            method = "recovery_code"
    if method is None:
        register_failure(session, user, now)
        audit.record(
            session,
            tenant_id=user.tenant_id,
            actor=actor,
            action="auth.mfa",
            outcome="failure",
            object_type="user",
            object_id=user.id,
            details={"failures": user.failed_sign_ins},
        )
        raise AuthenticationFailed("that code is not valid", field="code")
    user.failed_sign_ins = 0
    user.locked_until = None
    user.last_sign_in_at = now
    audit.record(
        session,
        tenant_id=user.tenant_id,
        actor=actor,
        action="auth.mfa",
        object_type="user",
        object_id=user.id,
        details={"method": method},
    )
    return method


def remaining_recovery_codes(session: Session, user: User) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        )
        or 0
    )


def regenerate_recovery_codes(session: Session, *, user: User, actor: audit.Actor) -> list[str]:
    if not user.totp_enabled:
        raise Conflict("set up two-factor sign-in first")
    codes = _new_recovery_codes(session, user)
    audit.record(
        session,
        tenant_id=user.tenant_id,
        actor=actor,
        action="auth.recovery_codes_regenerate",
        object_type="user",
        object_id=user.id,
    )
    return codes
