"""Journey stages: the built-in ones (new, active, overdue, at-risk) and a tenant's own.

The stage is a plain column on contacts (segments filter on it directly); each
change is appended to ``contact_stage_history`` by the write paths.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.contacts.models import BUILT_IN_STAGES, ContactStageHistory, JourneyStage
from carepost.core.database import new_id
from carepost.core.errors import Conflict, ValidationFailed


def stage_keys(session: Session, tenant_id: uuid.UUID) -> frozenset[str]:
    custom = session.scalars(select(JourneyStage.key).where(JourneyStage.tenant_id == tenant_id))
    return frozenset(BUILT_IN_STAGES) | frozenset(custom)


def define_stage(session: Session, tenant_id: uuid.UUID, *, key: str, label: str) -> JourneyStage:
    """Add a tenant's own stage (e.g. ``post-op``)."""
    if not key or len(key) > 40 or not key.replace("-", "").replace("_", "").isalnum():
        raise ValidationFailed("a stage key is 1-40 letters, digits, - or _", field="key")
    if key in stage_keys(session, tenant_id):
        raise Conflict("this stage exists", field="key")
    stage = JourneyStage(id=new_id(), tenant_id=tenant_id, key=key, label=label)
    session.add(stage)
    session.flush()
    return stage


def stage_history(
    session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID
) -> list[ContactStageHistory]:
    query = (
        select(ContactStageHistory)
        .where(
            ContactStageHistory.tenant_id == tenant_id,
            ContactStageHistory.contact_id == contact_id,
        )
        .order_by(ContactStageHistory.changed_at, ContactStageHistory.id)
    )
    return list(session.scalars(query))
