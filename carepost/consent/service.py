"""Consent: record grants and revocations per contact, channel and purpose; read the
current state and the history; manage the tenant's topics (purposes of its own).

Recording appends a :class:`ConsentRecord` and moves ``consent_current`` forward in
the same statement batch with an upsert that only ever advances to a later capture
time, so a paper form entered today for last month never overrides a revocation
made last week, and two concurrent writers cannot both win.

Audit: each record is an event naming the channel, purpose, status and source, and
whether evidence was given; never the evidence itself (it may be PHI).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.consent.decision import Channel, ConsentState, Purpose, Status
from carepost.consent.models import ConsentCurrent, ConsentRecord, Topic
from carepost.contacts import service as contacts
from carepost.core.database import new_id, utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed

SOURCES = (
    "web_form",
    "api",
    "import",
    "paper",
    "preference_center",
    "keyword",
    "one_click",
    "mailto",
)
# Capture times a little ahead of ours are clock skew, not the future.
CLOCK_SKEW = timedelta(minutes=5)
TOPIC_KEY = re.compile(r"^[a-z][a-z0-9_-]{1,39}$")
BUILT_IN_PURPOSES = tuple(Purpose)


@dataclass(frozen=True)
class ConsentChange:
    """One consent to record (the service checks the meaning of each value)."""

    channel: str
    purpose: str
    status: str
    source: str
    evidence: str | None = None
    captured_at: datetime | None = None
    expires_at: datetime | None = None


def _check_choice(value: str, choices: Iterable[str], field: str) -> None:
    allowed = tuple(choices)
    if value not in allowed:
        raise ValidationFailed(f"must be one of {', '.join(allowed)}", field=field)


def purposes(session: Session, tenant_id: uuid.UUID) -> tuple[str, ...]:
    """Every purpose a consent may be recorded for: the built-in ones and the tenant's topics."""
    keys = session.scalars(
        select(Topic.key).where(Topic.tenant_id == tenant_id).order_by(Topic.key)
    )
    return BUILT_IN_PURPOSES + tuple(keys)


def _validated(session: Session, tenant_id: uuid.UUID, change: ConsentChange) -> ConsentChange:
    _check_choice(change.channel, tuple(Channel), "channel")
    _check_choice(change.status, tuple(Status), "status")
    _check_choice(change.source, SOURCES, "source")
    if change.purpose not in BUILT_IN_PURPOSES and change.purpose not in purposes(
        session, tenant_id
    ):
        raise ValidationFailed(
            "not a purpose of this organization: use a built-in purpose or a topic key",
            field="purpose",
        )
    now = utcnow()
    captured = change.captured_at or now
    if captured > now + CLOCK_SKEW:
        raise ValidationFailed("the capture time is in the future", field="captured_at")
    if change.expires_at is not None and change.expires_at <= captured:
        raise ValidationFailed("the expiry must be after the capture time", field="expires_at")
    return ConsentChange(
        change.channel,
        change.purpose,
        change.status,
        change.source,
        change.evidence or None,
        captured,
        change.expires_at,
    )


def _advance_current(session: Session, record: ConsentRecord) -> None:
    """Make ``record`` the current one unless a later-captured record already is."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {
        "contact_id": record.contact_id,
        "channel": record.channel,
        "purpose": record.purpose,
        "tenant_id": record.tenant_id,
        "status": record.status,
        "record_id": record.id,
        "captured_at": record.captured_at,
        "expires_at": record.expires_at,
    }
    statement = insert(ConsentCurrent).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["contact_id", "channel", "purpose"],
        set_={
            name: statement.excluded[name]
            for name in ("status", "record_id", "captured_at", "expires_at")
        },
        where=ConsentCurrent.captured_at <= statement.excluded.captured_at,
    )
    session.execute(statement)


def record_consents(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    contact_id: uuid.UUID,
    changes: Iterable[ConsentChange],
    actor: audit.Actor,
) -> list[ConsentRecord]:
    """Append consent records for one contact (in one transaction) and advance the current state."""
    contacts.get_contact(session, tenant_id, contact_id, with_phi=False)
    records = []
    for change in changes:
        clean = _validated(session, tenant_id, change)
        assert clean.captured_at is not None
        record = ConsentRecord(
            id=new_id(),
            tenant_id=tenant_id,
            contact_id=contact_id,
            channel=clean.channel,
            purpose=clean.purpose,
            status=clean.status,
            source=clean.source,
            evidence=clean.evidence,
            captured_at=clean.captured_at,
            expires_at=clean.expires_at,
            recorded_by_type=actor.type,
            recorded_by_id=actor.id,
        )
        session.add(record)
        session.flush()
        _advance_current(session, record)
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="consent.record",
            object_type="contact",
            object_id=contact_id,
            details={
                "record_id": str(record.id),
                "channel": record.channel,
                "purpose": record.purpose,
                "status": record.status,
                "source": record.source,
                "evidence": record.evidence is not None,
            },
        )
        records.append(record)
    return records


def record_consent(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    contact_id: uuid.UUID,
    change: ConsentChange,
    actor: audit.Actor,
) -> ConsentRecord:
    return record_consents(
        session, tenant_id, contact_id=contact_id, changes=[change], actor=actor
    )[0]


def consent_history(
    session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID, *, limit: int = 1000
) -> list[ConsentRecord]:
    """Every record of a contact, newest capture first (ties: newest written first)."""
    return list(
        session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.tenant_id == tenant_id, ConsentRecord.contact_id == contact_id)
            .order_by(ConsentRecord.captured_at.desc(), ConsentRecord.id.desc())
            .limit(limit)
        )
    )


def current_rows(
    session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID
) -> list[ConsentCurrent]:
    return list(
        session.scalars(
            select(ConsentCurrent)
            .where(ConsentCurrent.tenant_id == tenant_id, ConsentCurrent.contact_id == contact_id)
            .order_by(ConsentCurrent.channel, ConsentCurrent.purpose)
        )
    )


def current_consents(
    session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID
) -> dict[tuple[str, str], ConsentState]:
    """The contact's current consent per (channel, purpose): the input of ``may_send``."""
    return {
        (row.channel, row.purpose): ConsentState(row.status, row.expires_at)
        for row in current_rows(session, tenant_id, contact_id)
    }


# --- topics ---------------------------------------------------------------------------


def list_topics(session: Session, tenant_id: uuid.UUID) -> list[Topic]:
    return list(
        session.scalars(select(Topic).where(Topic.tenant_id == tenant_id).order_by(Topic.key))
    )


def create_topic(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    key: str,
    name: str,
    description: str = "",
    channels: Iterable[str] = tuple(Channel),
    actor: audit.Actor,
) -> Topic:
    if not TOPIC_KEY.match(key):
        raise ValidationFailed(
            "use 2 to 40 lowercase letters, digits, '-' or '_', starting with a letter",
            field="key",
        )
    if key in BUILT_IN_PURPOSES:
        raise ValidationFailed("this key is a built-in purpose", field="key")
    chosen = sorted(set(channels))
    if not chosen:
        raise ValidationFailed("choose at least one channel", field="channels")
    for channel in chosen:
        _check_choice(channel, tuple(Channel), "channels")
    if not name.strip():
        raise ValidationFailed("a topic needs a name", field="name")
    topic = Topic(
        id=new_id(),
        tenant_id=tenant_id,
        key=key,
        name=name.strip(),
        description=description.strip(),
        channels=chosen,
    )
    try:
        with session.begin_nested():
            session.add(topic)
            session.flush()
    except IntegrityError:
        raise Conflict("a topic with this key exists", field="key") from None
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="topic.create",
        object_type="topic",
        object_id=topic.id,
        details={"key": key, "channels": chosen},
    )
    return topic


def get_topic(session: Session, tenant_id: uuid.UUID, key: str) -> Topic:
    topic = session.scalar(select(Topic).where(Topic.tenant_id == tenant_id, Topic.key == key))
    if topic is None:
        raise NotFound("no such topic")
    return topic
