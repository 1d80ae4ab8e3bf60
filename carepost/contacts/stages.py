"""Journey stages: the built-in ones (new, active, overdue, at-risk) and a tenant's own.

The stage is a plain column on contacts (segments filter on it directly); each
change is appended to ``contact_stage_history`` by the write paths.

A tenant's own stage is a key (a lower-case slug such as ``post-op``, what contacts,
segments, imports and workflows hold) and a label people read. The key never
changes and the built-in stages never change at all; a custom stage's label may.
Stages are not deleted: contacts, their history, saved segments and workflow steps
name them by key.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts import service
from carepost.contacts.models import BUILT_IN_STAGES, Contact, ContactStageHistory, JourneyStage
from carepost.core.database import new_id, utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from carepost.core.text import has_forbidden_characters

# Lower-case letters and digits in words joined by single hyphens or underscores,
# starting with a letter: ``post-op``, ``phase_2``.
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_KEY_LENGTH = 40  # contacts.journey_stage is a String(40)
MAX_LABEL_LENGTH = 200
MAX_STAGES = 100  # a tenant's own; every list of stages is shown whole


@dataclass(frozen=True)
class Stage:
    """A stage as listed: built in or the tenant's own, with how many contacts are in it."""

    key: str
    label: str
    built_in: bool
    contact_count: int = 0
    created_at: datetime | None = None


def stage_keys(session: Session, tenant_id: uuid.UUID) -> frozenset[str]:
    custom = session.scalars(select(JourneyStage.key).where(JourneyStage.tenant_id == tenant_id))
    return frozenset(BUILT_IN_STAGES) | frozenset(custom)


def _check_key(key: str) -> str:
    if not 0 < len(key) <= MAX_KEY_LENGTH or not KEY_PATTERN.match(key):
        raise ValidationFailed(
            f"a stage key is 1-{MAX_KEY_LENGTH} lower-case letters and digits, words joined "
            "by - or _, starting with a letter (e.g. post-op)",
            field="key",
        )
    return key


def _check_label(label: str) -> str:
    cleaned = label.strip()
    if not cleaned:
        raise ValidationFailed("enter the label", field="label")
    if has_forbidden_characters(cleaned):
        raise ValidationFailed("use one line without control characters", field="label")
    if len(cleaned) > MAX_LABEL_LENGTH:
        raise ValidationFailed(f"use at most {MAX_LABEL_LENGTH} characters", field="label")
    return cleaned


def define_stage(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    key: str,
    label: str,
    actor: audit.Actor = audit.SYSTEM,
) -> JourneyStage:
    """Add a tenant's own stage (e.g. ``post-op``); a key already in use is a 409 on ``key``."""
    key, label = _check_key(key), _check_label(label)
    existing = stage_keys(session, tenant_id)
    if key in existing:
        raise Conflict("this stage exists", field="key")
    if len(existing) - len(BUILT_IN_STAGES) >= MAX_STAGES:
        raise Conflict(f"an organization has at most {MAX_STAGES} stages of its own")
    stage = JourneyStage(id=new_id(), tenant_id=tenant_id, key=key, label=label)
    try:
        # A concurrent define of the same key loses on the unique constraint.
        with session.begin_nested():
            session.add(stage)
            session.flush()
    except IntegrityError:
        raise Conflict("this stage exists", field="key") from None
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="journey_stage.create",
        object_type="journey_stage",
        object_id=stage.id,
        details={"key": key},
    )
    return stage


def _own_stage(session: Session, tenant_id: uuid.UUID, key: str) -> JourneyStage:
    stage = session.scalar(
        select(JourneyStage).where(JourneyStage.tenant_id == tenant_id, JourneyStage.key == key)
    )
    if stage is None:
        raise NotFound("no such journey stage")
    return stage


def get_stage(session: Session, tenant_id: uuid.UUID, key: str) -> Stage:
    """One stage of the tenant, built in or its own, with its number of contacts."""
    count = session.scalar(
        select(func.count())
        .select_from(Contact)
        .where(Contact.tenant_id == tenant_id, Contact.journey_stage == key)
    )
    if key in BUILT_IN_STAGES:
        return Stage(key, key, True, count or 0)
    row = _own_stage(session, tenant_id, key)
    return Stage(row.key, row.label, False, count or 0, row.created_at)


def rename_stage(
    session: Session, tenant_id: uuid.UUID, key: str, *, label: str, actor: audit.Actor
) -> JourneyStage:
    """Change the label of a tenant's own stage (its key, which contacts hold, stays)."""
    if key in BUILT_IN_STAGES:
        raise Conflict("a built-in stage cannot change", field="#/path/stage_key")
    stage = _own_stage(session, tenant_id, key)
    label = _check_label(label)
    if label == stage.label:
        return stage
    stage.label = label
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="journey_stage.update",
        object_type="journey_stage",
        object_id=stage.id,
        details={"key": key, "changed": ["label"]},
    )
    return stage


def list_stages(session: Session, tenant_id: uuid.UUID) -> list[Stage]:
    """Every stage of the tenant, the built-in ones first in journey order, then its own
    by label, each with its number of contacts (one grouped count on the stage index)."""
    counted = session.execute(
        select(Contact.journey_stage, func.count())
        .where(Contact.tenant_id == tenant_id)
        .group_by(Contact.journey_stage)
    )
    counts: dict[str, int] = {stage: count for stage, count in counted}
    custom = session.scalars(
        select(JourneyStage)
        .where(JourneyStage.tenant_id == tenant_id)
        .order_by(JourneyStage.label, JourneyStage.key)
    )
    return [Stage(key, key, True, counts.get(key, 0)) for key in BUILT_IN_STAGES] + [
        Stage(row.key, row.label, False, counts.get(row.key, 0), row.created_at) for row in custom
    ]


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
