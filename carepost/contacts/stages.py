"""Journey stages: the built-in ones (new, active, overdue, at-risk) and a tenant's own.

The stage is a plain column on contacts (segments filter on it directly); each
change is appended to ``contact_stage_history`` by the write paths.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts import service
from carepost.contacts.models import BUILT_IN_STAGES, Contact, ContactStageHistory, JourneyStage
from carepost.core.database import new_id, utcnow
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


def change_stage(
    session: Session,
    tenant_id: uuid.UUID,
    contact_id: uuid.UUID,
    stage: str,
    *,
    actor: audit.Actor,
) -> tuple[Contact, str | None]:
    """Move a contact to ``stage`` (one of the tenant's), appending to its history;
    returns the contact and the stage it left (None when it was already there)."""
    if stage not in stage_keys(session, tenant_id):
        raise ValidationFailed("choose one of the organization's stages", field="stage")
    # Without its PHI columns: a stage change needs none of them.
    contact = service.get_contact(session, tenant_id, contact_id, with_phi=False)
    previous = contact.journey_stage
    if previous == stage:
        return contact, None
    now = utcnow()
    contact.journey_stage, contact.updated_at = stage, now
    session.add(
        ContactStageHistory(
            id=new_id(),
            tenant_id=tenant_id,
            contact_id=contact.id,
            stage=stage,
            previous_stage=previous,
            changed_at=now,
        )
    )
    session.flush()
    # Field names only, as for every contact change (the history holds the stages).
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact.update",
        object_type="contact",
        object_id=contact.id,
        details={"fields": ["journey_stage"]},
    )
    return contact, previous


def stage_choices(session: Session, tenant_id: uuid.UUID) -> list[tuple[str, str]]:
    """(key, label) of the tenant's stages: the built-in ones first, then its own."""
    custom = session.execute(
        select(JourneyStage.key, JourneyStage.label)
        .where(JourneyStage.tenant_id == tenant_id)
        .order_by(JourneyStage.label)
    ).all()
    return [(key, key) for key in BUILT_IN_STAGES] + [(row.key, row.label) for row in custom]


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
