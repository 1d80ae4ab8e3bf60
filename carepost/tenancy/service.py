"""Creating and reading organizations. Every tenant gets its keys and audit chain at birth."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
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
