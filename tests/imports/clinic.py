"""Reading back what an import did, for the import tests."""

from __future__ import annotations

from sqlalchemy import func, select

from carepost.contacts.models import Contact
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.tenancy.models import Tenant

TenantPair = tuple[Tenant, TenantKeys]


def contact_count(runtime: Runtime, tenant: TenantPair) -> int:
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Contact).where(Contact.tenant_id == tenant_row.id)
            )
            or 0
        )


def contacts_by_email(runtime: Runtime, tenant: TenantPair) -> dict[str, Contact]:
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        rows = session.scalars(select(Contact).where(Contact.tenant_id == tenant_row.id)).all()
        return {row.email: row for row in rows if row.email}
