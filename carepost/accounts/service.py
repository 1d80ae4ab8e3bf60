"""Users: creation, roles, password sign-in with lockout, MFA requirements and resets.

Sign-in is two steps: the password (:func:`authenticate_password`), then the second
factor for every user who enrolled one: a TOTP or recovery code
(:mod:`carepost.accounts.totp`) or a passkey (:mod:`carepost.accounts.webauthn`).
Enrolment of one of them is forced for roles in ``MFA_REQUIRED_ROLES``. Repeated failures
lock the account with exponential backoff; every success and failure is audited (never
the secret tried).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from carepost.accounts.models import RecoveryCode, User, WebAuthnCredential
from carepost.accounts.passwords import (
    generate_password,
    hash_password,
    needs_rehash,
    verify_password,
)
from carepost.accounts.permissions import MFA_REQUIRED_ROLES, Role, may_grant
from carepost.accounts.sessions import revoke_user_sessions
from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
)
from carepost.tenancy.models import Tenant

FREE_FAILURES = 5
MAX_LOCK = timedelta(hours=1)


def normalize_email(email: str, field: str = "email") -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValidationFailed(f"not a valid email address: {exc}", field=field) from None


def _an(role: str) -> str:
    """The role with its indefinite article: 'an admin', 'a marketer'."""
    return f"{'an' if role[:1] in 'aeiou' else 'a'} {role}"


def _check_role(role: str) -> Role:
    if role not in Role.__members__.values():
        raise ValidationFailed(
            f"role must be one of {', '.join(r.value for r in Role)}", field="role"
        )
    return Role(role)


def create_user(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    email: str,
    role: str,
    name: str = "",
    password: str | None = None,
    actor: audit.Actor = audit.SYSTEM,
    actor_role: str | None = None,
) -> tuple[User, str | None]:
    """Create a user. Without a password, a one-time password is generated and returned;
    the user must change it at first sign-in."""
    checked_role = _check_role(role)
    if actor_role is not None and not may_grant(actor_role, checked_role):
        raise PermissionDenied(f"{_an(actor_role)} cannot create {_an(role)}", field="role")
    address = normalize_email(email)
    exists = session.scalar(
        select(User.id).where(User.tenant_id == tenant_id, User.email == address)
    )
    if exists is not None:
        raise Conflict("a user with this email exists in this organization", field="email")
    one_time = None
    if password is None:
        one_time = password = generate_password()
    user = User(
        tenant_id=tenant_id,
        email=address,
        name=name.strip()[:200],
        role=checked_role.value,
        password_hash=hash_password(password),
        password_must_change=one_time is not None,
        password_changed_at=utcnow(),
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="user.create",
        object_type="user",
        object_id=user.id,
        details={"role": user.role},
    )
    return user, one_time


def get_user(session: Session, tenant_id: uuid.UUID, user_id: uuid.UUID) -> User:
    user = session.scalar(select(User).where(User.tenant_id == tenant_id, User.id == user_id))
    if user is None:
        raise NotFound("no such user")
    return user


def list_users(session: Session, tenant_id: uuid.UUID) -> list[User]:
    return list(
        session.scalars(select(User).where(User.tenant_id == tenant_id).order_by(User.email))
    )


def _owner_count(session: Session, tenant_id: uuid.UUID) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(
                User.tenant_id == tenant_id, User.role == Role.OWNER.value, User.status == "active"
            )
        )
        or 0
    )


def update_user(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    actor: audit.Actor,
    actor_role: str,
    role: str | None = None,
    name: str | None = None,
    status: str | None = None,
) -> User:
    user = get_user(session, tenant_id, user_id)
    changes: dict[str, str] = {}
    if not may_grant(actor_role, user.role):
        raise PermissionDenied(f"{_an(actor_role)} cannot change {_an(user.role)}")
    if role is not None and role != user.role:
        new_role = _check_role(role)
        if not may_grant(actor_role, new_role):
            raise PermissionDenied(f"{_an(actor_role)} cannot grant {role}", field="role")
        if user.role == Role.OWNER.value and _owner_count(session, tenant_id) <= 1:
            raise Conflict("the last owner cannot be demoted", field="role")
        changes["role"] = f"{user.role}->{new_role.value}"
        user.role = new_role.value
    if status is not None and status != user.status:
        if status not in ("active", "disabled"):
            raise ValidationFailed("status must be active or disabled", field="status")
        if (
            status == "disabled"
            and user.role == Role.OWNER.value
            and _owner_count(session, tenant_id) <= 1
        ):
            raise Conflict("the last owner cannot be disabled", field="status")
        changes["status"] = f"{user.status}->{status}"
        user.status = status
    if name is not None:
        user.name = name.strip()[:200]
        changes["name"] = "changed"
    session.flush()
    if changes:
        if "role" in changes or user.status == "disabled":
            revoke_user_sessions(session, tenant_id=tenant_id, user_id=user.id)
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="user.update",
            object_type="user",
            object_id=user.id,
            details=changes,
        )
    return user


def _lock_delay(failures: int) -> timedelta:
    if failures < FREE_FAILURES:
        return timedelta(0)
    return min(timedelta(minutes=2 ** (failures - FREE_FAILURES)), MAX_LOCK)


def register_failure(session: Session, user: User, now: datetime) -> None:
    """Count a failed sign-in step toward the lockout (password, code or passkey)."""
    user.failed_sign_ins += 1
    delay = _lock_delay(user.failed_sign_ins)
    if delay:
        user.locked_until = now + delay


def check_not_locked(user: User, now: datetime) -> None:
    """Raise RateLimited while the account is locked after repeated failures."""
    if user.locked_until is not None and user.locked_until > now:
        seconds = int((user.locked_until - now).total_seconds()) + 1
        raise RateLimited(
            f"too many failed attempts: sign-in is locked for {seconds} more seconds",
            retry_after=seconds,
        )


def authenticate_password(
    session: Session, *, tenant: Tenant, email: str, password: str, client_address: str = ""
) -> User:
    """Check email and password. Raises AuthenticationFailed (same message whether the
    email exists or not) or RateLimited while the account is locked."""
    now = utcnow()
    address = email.strip().lower()
    user = session.scalar(select(User).where(User.tenant_id == tenant.id, User.email == address))
    actor = audit.Actor(
        "user", str(user.id) if user else "", address if user else "", client_address
    )
    if user is not None:
        try:
            check_not_locked(user, now)
        except RateLimited:
            audit.record(
                session,
                tenant_id=tenant.id,
                actor=actor,
                action="auth.sign_in",
                outcome="locked",
                object_type="user",
                object_id=user.id,
            )
            raise
    if not verify_password(user.password_hash if user else None, password) or user is None:
        if user is not None:
            register_failure(session, user, now)
            audit.record(
                session,
                tenant_id=tenant.id,
                actor=actor,
                action="auth.sign_in",
                outcome="failure",
                object_type="user",
                object_id=user.id,
                reason="wrong password",
                details={"failures": user.failed_sign_ins},
            )
        else:
            audit.record(
                session,
                tenant_id=tenant.id,
                actor=actor,
                action="auth.sign_in",
                outcome="failure",
                reason="unknown email",
            )
        raise AuthenticationFailed("the email or the password is wrong", field="password")
    if user.status != "active":
        audit.record(
            session,
            tenant_id=tenant.id,
            actor=actor,
            action="auth.sign_in",
            outcome="denied",
            object_type="user",
            object_id=user.id,
            reason="account disabled",
        )
        raise AuthenticationFailed("this account is disabled", field="email")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_sign_ins = 0
    user.locked_until = None
    audit.record(
        session,
        tenant_id=tenant.id,
        actor=actor,
        action="auth.password_ok",
        object_type="user",
        object_id=user.id,
    )
    return user


def mfa_required(user: User, *, has_passkey: bool = False) -> bool:
    """Whether signing in takes a second factor: the user enrolled one (an authenticator
    app or a passkey), or their role must (they will be sent to enrol)."""
    return user.totp_enabled or has_passkey or Role(user.role) in MFA_REQUIRED_ROLES


def change_password(
    session: Session,
    *,
    user: User,
    current: str,
    new: str,
    actor: audit.Actor,
    keep_session_id: uuid.UUID | None = None,
) -> None:
    """Change a user's password and sign them out of every other session (a stolen
    session must not outlive the password it was opened with)."""
    if not verify_password(user.password_hash, current):
        raise AuthenticationFailed("the current password is wrong", field="current_password")
    if current == new:
        raise ValidationFailed(
            "choose a password different from the current one", field="new_password"
        )
    try:
        user.password_hash = hash_password(new)
    except ValidationFailed as exc:
        raise ValidationFailed(exc.detail, field="new_password") from None
    user.password_must_change = False
    user.password_changed_at = utcnow()
    session.flush()
    revoked = revoke_user_sessions(
        session, tenant_id=user.tenant_id, user_id=user.id, except_id=keep_session_id
    )
    audit.record(
        session,
        tenant_id=user.tenant_id,
        actor=actor,
        action="user.password_change",
        object_type="user",
        object_id=user.id,
        details={"other_sessions_ended": revoked},
    )


def reset_mfa(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    actor: audit.Actor,
    actor_role: str,
) -> User:
    """An admin clears a user's second factors (lost phone or security key): the app,
    the recovery codes and every passkey. They enrol again at next sign-in."""
    user = get_user(session, tenant_id, user_id)
    if not may_grant(actor_role, user.role):
        raise PermissionDenied(f"{_an(actor_role)} cannot reset {_an(user.role)}'s sign-in")
    user.totp_enabled = False
    user.totp_secret = None
    user.totp_last_counter = None
    session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())
    )
    passkeys = session.execute(
        delete(WebAuthnCredential).where(
            WebAuthnCredential.tenant_id == tenant_id, WebAuthnCredential.user_id == user.id
        )
    ).rowcount  # type: ignore[attr-defined]
    revoke_user_sessions(session, tenant_id=tenant_id, user_id=user.id)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="user.mfa_reset",
        object_type="user",
        object_id=user.id,
        details={"passkeys_removed": int(passkeys)},
    )
    return user


def issue_one_time_password(
    session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID, actor: audit.Actor
) -> str:
    """Replace a user's password with a fresh one-time password (they must change it at
    next sign-in), lift any lockout and sign them out everywhere. Returns the password."""
    user = get_user(session, tenant_id, user_id)
    password = generate_password()
    user.password_hash = hash_password(password)
    user.password_must_change = True
    user.password_changed_at = utcnow()
    user.failed_sign_ins = 0
    user.locked_until = None
    revoke_user_sessions(session, tenant_id=tenant_id, user_id=user.id)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="user.password_reset",
        object_type="user",
        object_id=user.id,
    )
    return password
