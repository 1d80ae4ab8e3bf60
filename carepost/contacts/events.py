"""Contact events: the timeline of engagement and custom events, written in batches.

Each posted item names its contact by ``contact_id``, ``email`` or ``external_id``
(blind-index look-ups, one statement per identifier kind for the whole batch), a
``kind`` (a per-tenant vocabulary, created on first use and stored as an integer
code), an aware ``occurred_at`` no more than five minutes ahead, an optional
``source`` and optional ``properties`` (≤ 4 KB as JSON). Properties may hold PHI,
so they go to the encrypted column unless the kind is marked non-PHI.

Every item is checked on its own: a bad item gets errors naming the field at
fault (never its value) while the good ones are kept. Writes are one executemany
INSERT per 5,000 events. Audit: one ``contact_event.batch`` event per call with
counts; reading properties is audited by the caller as a PHI view.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, event, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts.activity_models import ContactEvent, EventKind
from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.id_sets import dialect_of, id_in, text_in
from carepost.contacts.models import Contact
from carepost.core.database import utcnow
from carepost.core.errors import FieldError, ValidationFailed
from carepost.crypto.keyring import TenantKeys
from carepost.messages.kinds import MESSAGE_EVENT_KINDS

MAX_EVENTS = 10_000
MAX_PROPERTIES_BYTES = 4096
FUTURE_SLACK = timedelta(minutes=5)
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
CONTACT_KEYS = ("contact_id", "email", "external_id")
ITEM_KEYS = frozenset({*CONTACT_KEYS, "kind", "occurred_at", "source", "properties"})
INDEX_COLUMNS = {"email": Contact.email_index, "external_id": Contact.external_id_index}
# The kinds the product writes itself: each message event on its contact's timeline
# (``email.<event>``). They exist for every tenant, so segment rules may name them
# before the first one is recorded.
BUILT_IN_KINDS = tuple(f"email.{kind}" for kind in MESSAGE_EVENT_KINDS)


@dataclass
class ItemResult:
    index: int
    id: int | None = None
    contact_id: uuid.UUID | None = None
    errors: list[FieldError] = field(default_factory=list)


@dataclass
class ParsedEvent:
    """One valid item: how it names its contact, and the row it becomes."""

    index: int
    by: str  # contact_id, email or external_id
    key: str  # the contact id as text, or the blind-index token
    kind: str
    occurred_at: datetime
    source: str
    properties: dict[str, Any] | None


def _parse_time(raw: Any, now: datetime) -> datetime | str:
    """The instant, or why it is refused."""
    if not isinstance(raw, str):
        return "an ISO 8601 date and time with a UTC offset is required"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return "not an ISO 8601 date and time"
    if value.tzinfo is None or value.utcoffset() is None:
        return "the time needs a UTC offset (such as Z or +02:00)"
    if value > now + FUTURE_SLACK:
        return "the time is more than 5 minutes in the future"
    if value < EARLIEST:
        return "the time is before 1900"
    return value.astimezone(UTC)


def _contact_key(raw: Mapping[str, Any], keys: TenantKeys) -> tuple[str, str] | FieldError:
    named = [name for name in CONTACT_KEYS if raw.get(name) is not None]
    if len(named) != 1:
        return FieldError(
            "contact_id", "name the contact by exactly one of contact_id, email or external_id"
        )
    [by] = named
    value = raw[by]
    if not isinstance(value, str) or not value.strip():
        return FieldError(by, "must be a non-empty string")
    if by == "contact_id":
        try:
            return by, str(uuid.UUID(value))
        except ValueError:
            return FieldError(by, "not a valid id")
    spec = STANDARD_FIELDS[by]
    try:
        normalized = spec.normalize(value)
    except ValidationFailed as failed:
        return FieldError(by, failed.detail)
    return by, keys.blind_index(spec.index_label, normalized)


def parse_event(
    index: int, raw: Any, keys: TenantKeys, now: datetime
) -> ParsedEvent | list[FieldError]:
    """Check one item; the errors name fields, never their values."""
    if not isinstance(raw, Mapping):
        return [FieldError("", "each item must be an object")]
    errors = [FieldError(str(name), "unknown field") for name in raw if name not in ITEM_KEYS]
    contact = _contact_key(raw, keys)
    if isinstance(contact, FieldError):
        errors.append(contact)
    kind = raw.get("kind")
    if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
        errors.append(
            FieldError("kind", "a kind is 1-64 lowercase letters, digits, '_', '.' or '-'")
        )
    occurred_at = _parse_time(raw.get("occurred_at"), now)
    if isinstance(occurred_at, str):
        errors.append(FieldError("occurred_at", occurred_at))
    source = raw.get("source", "api")
    if not isinstance(source, str) or not 1 <= len(source) <= 40 or not source.isprintable():
        errors.append(FieldError("source", "a source is 1-40 printable characters"))
    properties = raw.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            errors.append(FieldError("properties", "properties must be an object"))
        elif len(json.dumps(properties, separators=(",", ":"))) > MAX_PROPERTIES_BYTES:
            errors.append(
                FieldError("properties", f"properties hold at most {MAX_PROPERTIES_BYTES} bytes")
            )
    if errors:
        return errors
    assert not isinstance(contact, FieldError) and isinstance(occurred_at, datetime)
    return ParsedEvent(
        index, contact[0], contact[1], str(kind), occurred_at, str(source), properties or None
    )


def _resolve_contacts(
    session: Session, tenant_id: uuid.UUID, parsed: Sequence[ParsedEvent]
) -> dict[tuple[str, str], uuid.UUID]:
    """(by, key) -> contact id, one SELECT per identifier kind in use."""
    found: dict[tuple[str, str], uuid.UUID] = {}
    dialect = dialect_of(session)
    for by in CONTACT_KEYS:
        wanted = {p.key for p in parsed if p.by == by}
        if not wanted:
            continue
        if by == "contact_id":
            ids = {uuid.UUID(key) for key in wanted}
            query = select(Contact.id).where(
                Contact.tenant_id == tenant_id, id_in(Contact.id, ids, dialect)
            )
            found |= {(by, str(contact_id)): contact_id for contact_id in session.scalars(query)}
        else:
            column = INDEX_COLUMNS[by]
            by_index = select(column, Contact.id).where(
                Contact.tenant_id == tenant_id, text_in(column, wanted, dialect)
            )
            found |= {(by, str(key)): contact_id for key, contact_id in session.execute(by_index)}
    return found


def ensure_kinds(session: Session, tenant_id: uuid.UUID, names: set[str]) -> dict[str, EventKind]:
    """The kinds by key, creating the missing ones (a concurrent creator is harmless)."""
    if not names:
        return {}
    dialect = dialect_of(session)
    query = select(EventKind).where(
        EventKind.tenant_id == tenant_id, text_in(EventKind.key, names, dialect)
    )
    kinds = {kind.key: kind for kind in session.scalars(query)}
    missing = sorted(names - set(kinds))
    if missing:
        dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(
            dialect_insert(EventKind).on_conflict_do_nothing(),
            [{"tenant_id": tenant_id, "key": key, "phi": True} for key in missing],
        )
        kinds = {kind.key: kind for kind in session.scalars(query)}
    return kinds


# A kind's id never changes: kinds are never deleted (a tenant's go with the tenant).
# So the ids of kinds seen in a committed transaction are kept per process, and the
# delivery worker's commits of outcomes (a timeline row for each) skip the lookup.
# Kept only after the commit: a kind created in a transaction that rolls back has no
# row to point to.
_KIND_IDS: dict[tuple[uuid.UUID, str], int] = {}
_KIND_IDS_MAX = 10_000
_PENDING_KINDS = "carepost.contacts.events.kind_ids"


def kind_ids(session: Session, tenant_id: uuid.UUID, names: set[str]) -> dict[str, int]:
    """The ids of the kinds by key, creating the missing ones (as :func:`ensure_kinds`)."""
    found = {name: _KIND_IDS[key] for name in names if (key := (tenant_id, name)) in _KIND_IDS}
    missing = names - set(found)
    if missing:
        made = {key: kind.id for key, kind in ensure_kinds(session, tenant_id, missing).items()}
        session.info.setdefault(_PENDING_KINDS, {}).update(
            {(tenant_id, key): kind_id for key, kind_id in made.items()}
        )
        found |= made
    return found


@event.listens_for(Session, "after_commit")
def _keep_kind_ids(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint's release: the transaction around it may still roll back
    pending = session.info.pop(_PENDING_KINDS, None)
    if pending:
        if len(_KIND_IDS) + len(pending) > _KIND_IDS_MAX:
            _KIND_IDS.clear()
        _KIND_IDS.update(pending)


@event.listens_for(Session, "after_rollback")
@event.listens_for(Session, "after_soft_rollback")
def _forget_kind_ids(session: Session, *_previous: Any) -> None:
    # Any rollback, a savepoint's included: what it undid is not kept (kinds made
    # before it are only looked up again).
    session.info.pop(_PENDING_KINDS, None)


def record_events(
    session: Session,
    keys: TenantKeys,
    items: Sequence[Any],
    *,
    actor: audit.Actor,
    now: datetime | None = None,
) -> list[ItemResult]:
    """Check, resolve and store each item; one result per item, in order."""
    if len(items) > MAX_EVENTS:
        raise ValidationFailed(f"one call holds at most {MAX_EVENTS} events", field="#/body/items")
    now = now or utcnow()
    tenant_id = keys.tenant_id
    results = [ItemResult(index) for index in range(len(items))]
    parsed: list[ParsedEvent] = []
    for index, raw in enumerate(items):
        outcome = parse_event(index, raw, keys, now)
        if isinstance(outcome, list):
            results[index].errors = outcome
        else:
            parsed.append(outcome)
    contacts = _resolve_contacts(session, tenant_id, parsed)
    good = []
    for item in parsed:
        contact_id = contacts.get((item.by, item.key))
        if contact_id is None:
            results[item.index].errors = [FieldError(item.by, "no such contact")]
        else:
            results[item.index].contact_id = contact_id
            good.append(item)
    kinds = ensure_kinds(session, tenant_id, {item.kind for item in good})
    rows = []
    for item in good:
        kind = kinds[item.kind]
        rows.append(
            {
                "tenant_id": tenant_id,
                "contact_id": results[item.index].contact_id,
                "kind_id": kind.id,
                "occurred_at": item.occurred_at,
                "source": item.source,
                "properties": item.properties if not kind.phi else None,
                "sealed_properties": item.properties if kind.phi else None,
            }
        )
    statement = insert(ContactEvent).returning(ContactEvent.id, sort_by_parameter_order=True)
    for start in range(0, len(rows), 5000):
        ids = session.execute(statement, rows[start : start + 5000]).scalars().all()
        for item, event_id in zip(good[start : start + 5000], ids, strict=True):
            results[item.index].id = event_id
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact_event.batch",
        object_type="contact_event",
        details={"created": len(rows), "failed": len(items) - len(rows), "kinds": len(kinds)},
    )
    return results


@dataclass(frozen=True)
class TimelineEntry:
    id: int
    kind: str
    occurred_at: datetime
    source: str
    properties: dict[str, Any] | None
    sealed: bool  # the event has encrypted properties


def encode_event_cursor(occurred_at: datetime, event_id: int) -> str:
    micros = int(occurred_at.timestamp() * 1_000_000)
    return base64.urlsafe_b64encode(struct.pack(">qq", micros, event_id)).decode().rstrip("=")


def decode_event_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, event_id = struct.unpack(">qq", raw)
        return datetime.fromtimestamp(micros / 1_000_000, UTC), event_id
    except (binascii.Error, ValueError, OverflowError, OSError, struct.error):
        raise ValidationFailed("the cursor is not valid", field="#/query/cursor") from None


def contact_timeline(
    session: Session,
    tenant_id: uuid.UUID,
    contact_id: uuid.UUID,
    *,
    kind: str | None,
    before: tuple[datetime, int] | None,
    limit: int,
    with_properties: bool,
) -> list[TimelineEntry]:
    """Newest first; ``before`` is the cursor (the last entry of the previous page).
    Without ``with_properties`` encrypted properties are not even decrypted."""
    sealed = (
        ContactEvent.sealed_properties
        if with_properties
        else ContactEvent.sealed_properties.is_not(None)
    )
    query = (
        select(
            ContactEvent.id,
            EventKind.key,
            ContactEvent.occurred_at,
            ContactEvent.source,
            ContactEvent.properties,
            sealed,
        )
        .join(EventKind, EventKind.id == ContactEvent.kind_id)
        .where(ContactEvent.tenant_id == tenant_id, ContactEvent.contact_id == contact_id)
        .order_by(ContactEvent.occurred_at.desc(), ContactEvent.id.desc())
        .limit(limit)
    )
    if kind is not None:
        query = query.where(EventKind.key == kind)
    if before is not None:
        at, last_id = before
        query = query.where(
            or_(
                ContactEvent.occurred_at < at,
                and_(ContactEvent.occurred_at == at, ContactEvent.id < last_id),
            )
        )
    entries = []
    for event_id, key, occurred_at, source, clear, hidden in session.execute(query):
        if with_properties:
            properties, has_sealed = (hidden if hidden is not None else clear), hidden is not None
        else:
            properties, has_sealed = clear, bool(hidden)
        entries.append(TimelineEntry(event_id, key, occurred_at, source, properties, has_sealed))
    return entries
