"""Console users, their sign-in sessions, second factors (TOTP recovery codes, WebAuthn
passkeys and their pending challenges) and machine API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from carepost.core.database import Base, IdMixin, TimestampMixin, UTCDateTime
from carepost.crypto.fields import EncryptedString
from carepost.tenancy.models import TenantOwned


class User(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | disabled
    password_hash: Mapped[str] = mapped_column(String(200))
    password_must_change: Mapped[bool] = mapped_column(Boolean, default=False)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Deferred: decrypting needs the tenant's keys bound, which session resolution (before
    # the tenant is known) does not have; the secret loads only where it is used.
    totp_secret: Mapped[str | None] = mapped_column(
        EncryptedString("users.totp_secret"), deferred=True
    )
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_last_counter: Mapped[int | None] = mapped_column(Integer, default=None)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class RecoveryCode(IdMixin, TimestampMixin, TenantOwned, Base):
    __tablename__ = "recovery_codes"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class UserSession(IdMixin, TimestampMixin, TenantOwned, Base):
    """A console sign-in. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "user_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    # password_ok -> mfa_ok; enrolment pending sessions may only reach the MFA pages.
    stage: Mapped[str] = mapped_column(String(20), default="password_ok")
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    client_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class WebAuthnCredential(IdMixin, TimestampMixin, TenantOwned, Base):
    """A passkey (W3C WebAuthn Level 2 public-key credential) registered by a user.

    Only public material is stored: the credential id the authenticator chose and its
    COSE public key. The sign count is the authenticator's counter at the last use;
    a value that does not increase (except authenticators that always report 0)
    suggests a cloned authenticator.
    """

    __tablename__ = "webauthn_credentials"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # base64url of the raw credential id (at most 1023 bytes per the spec).
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    name: Mapped[str] = mapped_column(String(100))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class WebAuthnChallenge(IdMixin, TimestampMixin, TenantOwned, Base):
    """The challenge of a WebAuthn ceremony in progress, kept server-side, bound to the
    console session that asked for it. It is deleted when a response is checked against
    it (pass or fail), so each one is used at most once."""

    __tablename__ = "webauthn_challenges"
    __table_args__ = (UniqueConstraint("session_id", "purpose"),)

    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_sessions.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(20))  # register | authenticate
    challenge: Mapped[str] = mapped_column(String(128))  # base64url
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(IdMixin, TimestampMixin, TenantOwned, Base):
    """A scoped machine credential: ``cp_<prefix>_<secret>``, shown once, stored hashed."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
