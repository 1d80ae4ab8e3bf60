"""Creating and reading organizations. Every tenant gets its keys and audit chain at birth."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.core.database import utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from carepost.crypto.keyring import Keyring, TenantKeys
from carepost.tenancy.models import Tenant

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def create_tenant(
    session: Session, keyring: Keyring, *, slug: str, name: str, actor: audit.Actor = audit.SYSTEM
) -> tuple[Tenant, TenantKeys]:
    slug = slug.strip().lower()
    if not SLUG_PATTERN.match(slug):
        raise ValidationFailed("use 1-63 lowercase letters, digits and inner hyphens", field="slug")
    if not name.strip():
        raise ValidationFailed("the organization needs a name", field="name")
    if session.scalar(select(Tenant.id).where(Tenant.slug == slug)) is not None:
        raise Conflict(f"an organization with the slug {slug!r} exists", field="slug")
    tenant = Tenant(slug=slug, name=name.strip())
    session.add(tenant)
    session.flush()
    keys = keyring.create_tenant_keys(session, tenant.id)
    audit.ensure_chain(session, audit.chain_for(tenant.id))
    audit.record(
        session,
        tenant_id=None,
        actor=actor,
        action="tenant.create",
        object_type="tenant",
        object_id=tenant.id,
        details={"slug": slug},
    )
    audit.record(
        session,
        tenant_id=tenant.id,
        actor=actor,
        action="tenant.create",
        object_type="tenant",
        object_id=tenant.id,
        details={"slug": slug},
    )
    return tenant, keys


def get_tenant(session: Session, tenant_id: uuid.UUID) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such organization")
    return tenant


def get_tenant_by_slug(session: Session, slug: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.slug == slug.strip().lower()))
    if tenant is None:
        raise NotFound("no such organization", field="organization")
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.slug)))


def update_tenant_settings(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    actor: audit.Actor,
    name: str | None = None,
    session_idle_minutes: int | None = None,
    session_max_hours: int | None = None,
    physical_address: str | None = None,
) -> Tenant:
    """Change an organization's settings; each change is audited (old -> new)."""
    tenant = get_tenant(session, tenant_id)
    changes: dict[str, str] = {}
    if name is not None and name.strip() != tenant.name:
        if not name.strip():
            raise ValidationFailed("the organization needs a name", field="name")
        tenant.name = name.strip()
        changes["name"] = "changed"
    if session_idle_minutes is not None and session_idle_minutes != tenant.session_idle_minutes:
        if not 1 <= session_idle_minutes <= 24 * 60:
            raise ValidationFailed("between 1 and 1440 minutes", field="session_idle_minutes")
        changes["session_idle_minutes"] = f"{tenant.session_idle_minutes}->{session_idle_minutes}"
        tenant.session_idle_minutes = session_idle_minutes
    if session_max_hours is not None and session_max_hours != tenant.session_max_hours:
        if not 1 <= session_max_hours <= 24 * 30:
            raise ValidationFailed("between 1 and 720 hours", field="session_max_hours")
        changes["session_max_hours"] = f"{tenant.session_max_hours}->{session_max_hours}"
        tenant.session_max_hours = session_max_hours
    if physical_address is not None and physical_address.strip() != tenant.physical_address:
        tenant.physical_address = physical_address.strip()
        changes["physical_address"] = "changed"
    if changes:
        tenant.updated_at = utcnow()
        audit.record(
            session,
            tenant_id=tenant.id,
            actor=actor,
            action="tenant.settings_change",
            object_type="tenant",
            object_id=tenant.id,
            details=changes,
        )
    return tenant
