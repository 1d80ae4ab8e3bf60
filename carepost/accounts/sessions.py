"""Console sessions: random tokens in HttpOnly cookies, idle timeout, absolute lifetime.

The cookie holds 32 random bytes; the database keeps only their SHA-256, so a
database reader cannot hijack a session. The token is replaced when the session
is promoted (password → MFA), which defeats session fixation. Each session carries
its own CSRF token for unsafe requests.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from carepost.accounts.models import User, UserSession
from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.errors import AuthenticationFailed
from carepost.tenancy.models import Tenant

STAGE_PASSWORD_OK = "password_ok"
STAGE_MFA_OK = "mfa_ok"
LAST_SEEN_GRANULARITY = timedelta(seconds=30)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(
    session: Session,
    *,
    user: User,
    tenant: Tenant,
    stage: str,
    client_address: str = "",
    user_agent: str = "",
) -> tuple[str, UserSession]:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = UserSession(
        tenant_id=tenant.id,
        user_id=user.id,
        token_hash=_hash_token(token),
        csrf_token=secrets.token_urlsafe(24),
        stage=stage,
        last_seen_at=now,
        expires_at=now + timedelta(hours=tenant.session_max_hours),
        client_address=client_address[:64],
        user_agent=user_agent[:300],
    )
    session.add(row)
    session.flush()
    return token, row


def promote_session(session: Session, row: UserSession) -> str:
    """Mark the second factor as passed and issue a new token (the old one dies)."""
    token = secrets.token_urlsafe(32)
    row.token_hash = _hash_token(token)
    row.stage = STAGE_MFA_OK
    row.csrf_token = secrets.token_urlsafe(24)
    row.last_seen_at = utcnow()
    session.flush()
    return token


def resolve_session(session: Session, token: str) -> tuple[UserSession, User, Tenant]:
    """Find a live session for a cookie token, enforcing idle and absolute limits."""
    now = utcnow()
    row = session.scalar(select(UserSession).where(UserSession.token_hash == _hash_token(token)))
    if row is None or row.revoked_at is not None:
        raise AuthenticationFailed("please sign in")
    tenant = session.get(Tenant, row.tenant_id)
    user = session.get(User, row.user_id)
    if tenant is None or user is None or user.status != "active" or tenant.status != "active":
        raise AuthenticationFailed("please sign in")
    idle_limit = timedelta(minutes=tenant.session_idle_minutes)
    if row.expires_at <= now or now - row.last_seen_at > idle_limit:
        row.revoked_at = now
        reason = "absolute lifetime" if row.expires_at <= now else "idle timeout"
        audit.record(
            session,
            tenant_id=tenant.id,
            actor=audit.Actor("user", str(user.id), user.email, row.client_address),
            action="auth.session_expired",
            object_type="session",
            object_id=row.id,
            reason=reason,
        )
        raise AuthenticationFailed("your session has expired; please sign in again")
    if now - row.last_seen_at >= LAST_SEEN_GRANULARITY:
        row.last_seen_at = now
    return row, user, tenant


def revoke_session(session: Session, row: UserSession) -> None:
    row.revoked_at = utcnow()
    session.flush()


def revoke_user_sessions(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    except_id: uuid.UUID | None = None,
) -> int:
    """Sign a user out everywhere (optionally keeping the current session)."""
    statement = (
        update(UserSession)
        .where(
            UserSession.tenant_id == tenant_id,
            UserSession.user_id == user_id,
            UserSession.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    if except_id is not None:
        statement = statement.where(UserSession.id != except_id)
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def list_active_sessions(
    session: Session, *, tenant_id: uuid.UUID, user_id: uuid.UUID
) -> list[UserSession]:
    return list(
        session.scalars(
            select(UserSession)
            .where(
                UserSession.tenant_id == tenant_id,
                UserSession.user_id == user_id,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > utcnow(),
            )
            .order_by(UserSession.last_seen_at.desc())
        )
    )
