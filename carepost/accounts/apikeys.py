"""Scoped API keys for machines: ``cp_<prefix>_<secret>``, shown once, stored as SHA-256.

The prefix is public (it identifies the key in lists and logs); the secret has
256 bits of entropy, so a fast hash is the right choice (no password stretching
needed) and lookups stay O(1) by prefix.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.accounts.models import ApiKey
from carepost.accounts.permissions import PERMISSIONS
from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.errors import AuthenticationFailed, NotFound, PermissionDenied, ValidationFailed
from carepost.tenancy.models import Tenant

KEY_PREFIX = "cp_"
LAST_USED_GRANULARITY = timedelta(minutes=1)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    name: str,
    scopes: list[str],
    creator_permissions: frozenset[str],
    actor: audit.Actor,
    created_by: uuid.UUID | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns it with its plaintext, which is never shown again."""
    if not name.strip():
        raise ValidationFailed("give the key a name", field="name")
    if not scopes:
        raise ValidationFailed("choose at least one scope", field="scopes")
    unknown = sorted(set(scopes) - set(PERMISSIONS))
    if unknown:
        raise ValidationFailed(f"unknown scope {unknown[0]!r}", field="scopes")
    beyond = sorted(set(scopes) - creator_permissions)
    if beyond:
        raise PermissionDenied(f"you cannot grant the scope {beyond[0]!r}", field="scopes")
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationFailed("the expiry must be in the future", field="expires_at")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        tenant_id=tenant_id,
        name=name.strip()[:200],
        prefix=prefix,
        secret_hash=_hash_secret(secret),
        scopes=sorted(set(scopes)),
        created_by=created_by,
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="apikey.create",
        object_type="api_key",
        object_id=key.id,
        details={"prefix": prefix, "scopes": key.scopes},
    )
    return key, f"{KEY_PREFIX}{prefix}_{secret}"


def list_api_keys(session: Session, tenant_id: uuid.UUID) -> list[ApiKey]:
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at.desc())
        )
    )


def get_api_key(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    key = session.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id))
    if key is None:
        raise NotFound("no such API key")
    return key


def revoke_api_key(
    session: Session, *, tenant_id: uuid.UUID, key_id: uuid.UUID, actor: audit.Actor
) -> ApiKey:
    key = get_api_key(session, tenant_id, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="apikey.revoke",
            object_type="api_key",
            object_id=key.id,
            details={"prefix": key.prefix},
        )
    return key


def authenticate_api_key(session: Session, presented: str) -> tuple[ApiKey, Tenant]:
    """Resolve ``cp_<prefix>_<secret>`` to a live key, updating its last-used time."""
    failure = AuthenticationFailed("the API key is invalid, expired or revoked")
    if not presented.startswith(KEY_PREFIX) or presented.count("_") < 2:
        raise failure
    prefix, _, secret = presented[len(KEY_PREFIX) :].partition("_")
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    now = utcnow()
    if key is None or not secrets.compare_digest(key.secret_hash, _hash_secret(secret)):
        raise failure
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise failure
    tenant = session.get(Tenant, key.tenant_id)
    if tenant is None or tenant.status != "active":
        raise failure
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_GRANULARITY:
        key.last_used_at = now
    return key, tenant
