"""Read and change a tenant's protection policy document; changes are audited with
what changed (section names and revision), never with content beyond the document's
own non-PHI settings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.core.database import new_id, utcnow
from carepost.core.errors import Conflict
from carepost.policy.documents import DEFAULT_POLICY, STORED, PolicyDocument
from carepost.policy.models import StoredPolicy


@dataclass(frozen=True)
class TenantPolicy:
    document: PolicyDocument
    revision: int  # 0: the tenant never changed the defaults
    updated_at: datetime | None


def get_policy(session: Session, tenant_id: uuid.UUID) -> TenantPolicy:
    row = _row(session, tenant_id)
    if row is None:
        return TenantPolicy(DEFAULT_POLICY, 0, None)
    return TenantPolicy(
        PolicyDocument.model_validate(row.document, context=STORED), row.revision, row.updated_at
    )


def _row(session: Session, tenant_id: uuid.UUID) -> StoredPolicy | None:
    return session.scalar(select(StoredPolicy).where(StoredPolicy.tenant_id == tenant_id))


def _changed_sections(before: PolicyDocument, after: PolicyDocument) -> list[str]:
    changed: list[str] = []
    old, new = before.model_dump(), after.model_dump()
    for name, value in sorted(new["defaults"].items()):
        if old["defaults"].get(name) != value:
            changed.append(f"defaults.{name}")
    for section in ("domains", "templates", "senders"):
        for key in sorted(set(old[section]) | set(new[section])):
            if old[section].get(key) != new[section].get(key):
                changed.append(f"{section}.{key}")
    return changed


def put_policy(
    session: Session,
    tenant_id: uuid.UUID,
    document: PolicyDocument,
    *,
    actor: audit.Actor,
    expected_revision: int | None = None,
) -> TenantPolicy:
    """Replace the tenant's policy. With ``expected_revision``, refuse (409) when someone
    else changed it since it was read."""
    row = session.scalar(
        select(StoredPolicy).where(StoredPolicy.tenant_id == tenant_id).with_for_update()
    )
    current = 0 if row is None else row.revision
    if expected_revision is not None and expected_revision != current:
        raise Conflict(
            f"the policy changed since revision {expected_revision} (now {current}): "
            "read it again and reapply your change",
            field="revision",
        )
    before = (
        DEFAULT_POLICY
        if row is None
        else PolicyDocument.model_validate(row.document, context=STORED)
    )
    now = utcnow()
    if row is None:
        row = StoredPolicy(id=new_id(), tenant_id=tenant_id, revision=0)
        session.add(row)
    row.document = document.model_dump(mode="json")
    row.revision = current + 1
    row.updated_at = now
    row.updated_by_type = actor.type
    row.updated_by_id = actor.id
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="policy.update",
        object_type="policy",
        object_id=row.id,
        details={"revision": row.revision, "changed": _changed_sections(before, document)[:100]},
    )
    return TenantPolicy(document, row.revision, now)


def reset_policy(session: Session, tenant_id: uuid.UUID, *, actor: audit.Actor) -> TenantPolicy:
    """Back to the defaults (the row goes; the audit trail keeps the history)."""
    row = _row(session, tenant_id)
    if row is not None:
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="policy.reset",
            object_type="policy",
            object_id=row.id,
            details={"revision": row.revision},
        )
        session.delete(row)
        session.flush()
    return TenantPolicy(DEFAULT_POLICY, 0, None)
