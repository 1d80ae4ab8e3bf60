"""Merging duplicate contacts into one survivor, set-based, in one transaction.

The survivor keeps every value it has; its blanks are filled from the duplicates,
in the order the caller lists them (the first duplicate holding a value wins):

* standard fields (email, phone, external id, names, birth date), language and
  time zone; the journey stage is the survivor's;
* custom fields, key by key (the encrypted blob is decrypted, merged and sealed
  again); values of fields deleted from the schema are dropped, as any write does;
* MRN and CRM id: moved when the survivor has none of that kind. Two different
  ids of one kind (survivor and duplicate, or two duplicates) refuse the merge
  with 409: an identifier is another system's statement that these are two
  records, and dropping one would make the next sync from that system create the
  duplicate again. The same holds for ``external_id``. Clear the wrong one first.

Everything that belongs to the duplicates moves to the survivor, whatever its
size, in a bounded number of statements (one UPDATE per table, never a row loop):

* events, consent records and stage history are re-pointed (history is kept);
* list stints are re-pointed; where several of the contacts are current members
  of a list, the earliest current stint is kept (the person has been a member
  since then) and the later ones are dropped, so one current stint remains;
* ``consent_current`` is recomputed per channel and purpose from all the records,
  now the survivor's: the latest capture wins, and at the same capture time a
  revocation beats a pending request, which beats a grant. So an opt-out is never
  lost to a merge: a revocation newer than the other contact's grant stays
  current (a grant captured *after* the revocation is a newer decision and wins,
  exactly as it would have on one record);
* the survivor's tokens are recomputed from its merged values.

The duplicates are then deleted, and each leaves a tombstone in ``contact_merges``
so that a client asking for a merged id learns where it went
(:func:`merged_into`; the API answers 404 with ``merged_into``). Tombstones of
contacts merged earlier into a duplicate are re-pointed to the new survivor.

Unique blind indexes (email, external id; MRN/CRM rows) of the duplicates are
cleared *before* the survivor takes them, so the unique indexes never see two
holders mid-merge.

Audit: one ``contact.merge`` event naming the survivor, the merged ids and the
names of the fields filled; never a value.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from carepost.audit import service as audit
from carepost.consent.models import ConsentCurrent, ConsentRecord
from carepost.contacts import custom_fields, sync
from carepost.contacts.activity_models import ContactEvent, ListMembership
from carepost.contacts.fields import STANDARD_FIELDS, IndexKind
from carepost.contacts.id_sets import dialect_of, id_in
from carepost.contacts.models import Contact, ContactMerge, ContactStageHistory
from carepost.core.database import utcnow
from carepost.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from carepost.crypto.keyring import TenantKeys

MAX_DUPLICATES = 100
CONTACT_TABLE: Table = Contact.__table__  # type: ignore[assignment]
IDENTIFIER_TABLE = sync.IDENTIFIER_TABLE
MERGE_TABLE: Table = ContactMerge.__table__  # type: ignore[assignment]
# Filled from the duplicates when the survivor has none (the stage is the survivor's).
FILLED_ATTRIBUTES = ("language", "timezone")
# Standard fields that identify a record in another system: a conflict refuses the merge.
EXTERNAL_STANDARD = ("external_id",)
INDEX_COLUMNS = {
    name: spec.index_column
    for name, spec in STANDARD_FIELDS.items()
    if spec.index is not IndexKind.NONE
}
# At one capture time, the more protective status wins (an opt-out is never lost).
STATUS_RANK = {"revoked": 0, "pending": 1}
DUPLICATES = "duplicate_ids"


class ContactMerged(NotFound):
    """The contact was merged into another one; ``merged_into`` is the survivor's id."""

    code = "contact-merged"
    title = "Contact merged"

    def __init__(self, merged_into: uuid.UUID) -> None:
        super().__init__(
            f"this contact was merged into contact {merged_into}: use that id from now on"
        )
        self.merged_into = merged_into
        self.extensions = {"merged_into": str(merged_into)}


@dataclass
class MergeOutcome:
    """What a merge did: counts of what moved, the fields filled (names only)."""

    survivor_id: uuid.UUID
    merged_ids: list[uuid.UUID]
    filled: list[str] = field(default_factory=list)
    events: int = 0
    consent_records: int = 0
    list_stints: int = 0


def merged_into(session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID) -> uuid.UUID | None:
    """The survivor a merged contact went into, or None (never merged, or the survivor
    was deleted since)."""
    found: uuid.UUID | None = session.scalar(
        select(ContactMerge.survivor_id).where(
            ContactMerge.tenant_id == tenant_id, ContactMerge.merged_id == contact_id
        )
    )
    return found


def _check_ids(survivor_id: uuid.UUID, duplicate_ids: Sequence[uuid.UUID]) -> None:
    if not duplicate_ids:
        raise ValidationFailed("name at least one duplicate to merge", field=DUPLICATES)
    if len(duplicate_ids) > MAX_DUPLICATES:
        raise ValidationFailed(
            f"merge at most {MAX_DUPLICATES} duplicates at once", field=DUPLICATES
        )
    errors = []
    seen: dict[uuid.UUID, int] = {}
    for index, contact_id in enumerate(duplicate_ids):
        pointer = f"#/body/{DUPLICATES}/{index}"
        if contact_id == survivor_id:
            errors.append(FieldError(pointer, "a contact cannot be merged into itself"))
        elif contact_id in seen:
            errors.append(FieldError(pointer, f"repeats item {seen[contact_id]}: name each once"))
        else:
            seen[contact_id] = index
    if errors:
        raise ValidationFailed(errors[0].message, errors=errors)


def _load(
    session: Session, tenant_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The rows (decrypted), locked against a concurrent merge or write on PostgreSQL."""
    query = (
        select(CONTACT_TABLE)
        .where(
            CONTACT_TABLE.c.tenant_id == tenant_id,
            id_in(CONTACT_TABLE.c.id, ids, dialect_of(session)),
        )
        .with_for_update()
    )
    return {row.id: dict(row._mapping) for row in session.execute(query)}


def _identifiers(
    session: Session, tenant_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, tuple[uuid.UUID, str]]]:
    """contact -> kind -> (identifier row id, blind index): no decryption needed."""
    query = select(
        IDENTIFIER_TABLE.c.id,
        IDENTIFIER_TABLE.c.contact_id,
        IDENTIFIER_TABLE.c.kind,
        IDENTIFIER_TABLE.c.value_index,
    ).where(
        IDENTIFIER_TABLE.c.tenant_id == tenant_id,
        id_in(IDENTIFIER_TABLE.c.contact_id, ids, dialect_of(session)),
    )
    found: dict[uuid.UUID, dict[str, tuple[uuid.UUID, str]]] = {}
    for row in session.execute(query):
        found.setdefault(row.contact_id, {})[row.kind] = (row.id, row.value_index)
    return found


@dataclass
class _Plan:
    """The survivor's new row and what moves to it, decided before any write."""

    row: dict[str, Any]
    filled: list[str]
    moved_identifiers: list[uuid.UUID]


def _plan(
    survivor: Mapping[str, Any],
    duplicates: Sequence[Mapping[str, Any]],
    identifiers: Mapping[uuid.UUID, Mapping[str, tuple[uuid.UUID, str]]],
    schema_keys: frozenset[str],
) -> _Plan:
    """Fill the survivor's blanks from the duplicates in order; refuse conflicting
    external identifiers. Pure: no I/O."""
    row = dict(survivor)
    filled: list[str] = []
    conflicts: list[FieldError] = []

    def pointer(index: int) -> str:
        return f"#/body/{DUPLICATES}/{index}"

    for name in (*STANDARD_FIELDS, *FILLED_ATTRIBUTES):
        for index, duplicate in enumerate(duplicates):
            value = duplicate[name]
            if value is None:
                continue
            if row[name] is None:
                row[name] = value
                if name in INDEX_COLUMNS:
                    # Same tenant key, same label: the duplicate's blind index is ours.
                    row[INDEX_COLUMNS[name]] = duplicate[INDEX_COLUMNS[name]]
                filled.append(name)
            elif name in EXTERNAL_STANDARD and row[name] != value:
                conflicts.append(
                    FieldError(pointer(index), f"holds another {name.replace('_', ' ')}")
                )
    custom = {k: v for k, v in (survivor["custom"] or {}).items() if k in schema_keys}
    for duplicate in duplicates:
        for key, value in (duplicate["custom"] or {}).items():
            if key in schema_keys and key not in custom and value is not None:
                custom[key] = value
                filled.append(f"custom/{key}")
    row["custom"] = custom or None

    moved: list[uuid.UUID] = []
    held = dict(identifiers.get(survivor["id"], {}))
    for index, duplicate in enumerate(duplicates):
        for kind, (identifier_id, token) in sorted(identifiers.get(duplicate["id"], {}).items()):
            if kind not in held:
                held[kind] = (identifier_id, token)
                moved.append(identifier_id)
                filled.append(f"external_ids/{kind}")
            elif held[kind][1] != token:
                conflicts.append(FieldError(pointer(index), f"holds another {kind}"))
    if conflicts:
        raise Conflict(
            "the contacts hold different identifiers of the same kind: clear the wrong "
            "one before merging",
            errors=conflicts,
        )
    return _Plan(row, sorted(set(filled)), moved)


def merge_contacts(
    session: Session,
    keys: TenantKeys,
    survivor_id: uuid.UUID,
    duplicate_ids: Sequence[uuid.UUID],
    *,
    actor: audit.Actor,
    now: datetime | None = None,
) -> MergeOutcome:
    """Merge ``duplicate_ids`` into ``survivor_id`` (see the module docstring)."""
    _check_ids(survivor_id, duplicate_ids)
    now = now or utcnow()
    tenant_id = keys.tenant_id
    dialect = dialect_of(session)
    ids = [survivor_id, *duplicate_ids]
    rows = _load(session, tenant_id, ids)
    if survivor_id not in rows:
        _raise_not_found(session, tenant_id, survivor_id)
    missing = [
        FieldError(f"#/body/{DUPLICATES}/{index}", "no such contact")
        for index, contact_id in enumerate(duplicate_ids)
        if contact_id not in rows
    ]
    if missing:
        raise NotFound("no such contact", errors=missing)
    schema = custom_fields.load_schema(session, tenant_id)
    plan = _plan(
        rows[survivor_id],
        [rows[contact_id] for contact_id in duplicate_ids],
        _identifiers(session, tenant_id, ids),
        frozenset(schema),
    )
    outcome = MergeOutcome(survivor_id, list(duplicate_ids), plan.filled)

    # 1. Free the duplicates' unique values before the survivor takes them.
    session.execute(
        update(CONTACT_TABLE)
        .where(
            CONTACT_TABLE.c.tenant_id == tenant_id,
            id_in(CONTACT_TABLE.c.id, duplicate_ids, dialect),
        )
        .values({column: None for column in INDEX_COLUMNS.values()})
    )
    if plan.moved_identifiers:
        session.execute(
            update(IDENTIFIER_TABLE)
            .where(
                IDENTIFIER_TABLE.c.tenant_id == tenant_id,
                id_in(IDENTIFIER_TABLE.c.id, plan.moved_identifiers, dialect),
            )
            .values(contact_id=survivor_id)
        )
    # 2. The survivor's merged values (sealed again by the column types).
    changed = {
        name: plan.row[name]
        for name in (*STANDARD_FIELDS, *INDEX_COLUMNS.values(), *FILLED_ATTRIBUTES, "custom")
    }
    session.execute(
        update(CONTACT_TABLE)
        .where(CONTACT_TABLE.c.tenant_id == tenant_id, CONTACT_TABLE.c.id == survivor_id)
        .values(**changed, updated_at=now)
    )
    # 3. What belongs to the duplicates moves over.
    outcome.list_stints = _move_list_stints(session, tenant_id, survivor_id, duplicate_ids)
    outcome.events = _repoint(session, ContactEvent, tenant_id, survivor_id, duplicate_ids)
    outcome.consent_records = _repoint(
        session, ConsentRecord, tenant_id, survivor_id, duplicate_ids
    )
    _recompute_consent(session, tenant_id, survivor_id, duplicate_ids)
    _repoint(session, ContactStageHistory, tenant_id, survivor_id, duplicate_ids)
    # 4. Tokens from the merged values; the duplicates' go with them.
    session.execute(
        delete(sync.TOKEN_TABLE).where(
            sync.TOKEN_TABLE.c.tenant_id == tenant_id,
            id_in(sync.TOKEN_TABLE.c.contact_id, duplicate_ids, dialect),
        )
    )
    sync.replace_tokens(
        session, keys, schema, [(survivor_id, plan.row["custom"], plan.row["birth_date"])]
    )
    # 5. Tombstones (earlier ones follow the survivor), then the duplicates go.
    session.execute(
        update(MERGE_TABLE)
        .where(
            MERGE_TABLE.c.tenant_id == tenant_id,
            id_in(MERGE_TABLE.c.survivor_id, duplicate_ids, dialect),
        )
        .values(survivor_id=survivor_id)
    )
    session.execute(
        insert(MERGE_TABLE),
        [
            {
                "merged_id": contact_id,
                "tenant_id": tenant_id,
                "survivor_id": survivor_id,
                "merged_at": now,
                "actor_type": actor.type,
                "actor_id": actor.id,
            }
            for contact_id in duplicate_ids
        ],
    )
    session.execute(
        delete(IDENTIFIER_TABLE).where(
            IDENTIFIER_TABLE.c.tenant_id == tenant_id,
            id_in(IDENTIFIER_TABLE.c.contact_id, duplicate_ids, dialect),
        )
    )
    session.execute(
        delete(CONTACT_TABLE).where(
            CONTACT_TABLE.c.tenant_id == tenant_id,
            id_in(CONTACT_TABLE.c.id, duplicate_ids, dialect),
        )
    )
    # The ORM may hold the survivor from before: reload it on next access.
    session.expire_all()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact.merge",
        object_type="contact",
        object_id=survivor_id,
        details={
            "merged_ids": [str(contact_id) for contact_id in duplicate_ids],
            "fields": plan.filled,
            "events": outcome.events,
            "consent_records": outcome.consent_records,
            "list_stints": outcome.list_stints,
        },
    )
    return outcome


def _raise_not_found(session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID) -> None:
    survivor = merged_into(session, tenant_id, contact_id)
    if survivor is not None:
        raise ContactMerged(survivor)
    raise NotFound("no such contact")


def _repoint(
    session: Session,
    model: Any,
    tenant_id: uuid.UUID,
    survivor_id: uuid.UUID,
    duplicate_ids: Sequence[uuid.UUID],
) -> int:
    """One UPDATE moving every row of the duplicates to the survivor; returns the count."""
    table: Table = model.__table__
    result = session.execute(
        update(table)
        .where(
            table.c.tenant_id == tenant_id,
            id_in(table.c.contact_id, duplicate_ids, dialect_of(session)),
        )
        .values(contact_id=survivor_id)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _move_list_stints(
    session: Session,
    tenant_id: uuid.UUID,
    survivor_id: uuid.UUID,
    duplicate_ids: Sequence[uuid.UUID],
) -> int:
    """Keep one current stint per list (the earliest), then re-point the duplicates' stints."""
    dialect = dialect_of(session)
    group = [survivor_id, *duplicate_ids]
    table: Table = ListMembership.__table__  # type: ignore[assignment]
    earlier = aliased(ListMembership)
    session.execute(
        delete(table).where(
            table.c.tenant_id == tenant_id,
            id_in(table.c.contact_id, group, dialect),
            table.c.left_at.is_(None),
            exists().where(
                earlier.list_id == table.c.list_id,
                earlier.tenant_id == tenant_id,
                id_in(earlier.contact_id, group, dialect),
                earlier.left_at.is_(None),
                or_(
                    earlier.joined_at < table.c.joined_at,
                    and_(earlier.joined_at == table.c.joined_at, earlier.id < table.c.id),
                ),
            ),
        )
    )
    return _repoint(session, ListMembership, tenant_id, survivor_id, duplicate_ids)


def _recompute_consent(
    session: Session,
    tenant_id: uuid.UUID,
    survivor_id: uuid.UUID,
    duplicate_ids: Sequence[uuid.UUID],
) -> None:
    """``consent_current`` of the survivor from all its records (now including the
    duplicates'): per channel and purpose the latest capture, a revocation first on a tie."""
    dialect = dialect_of(session)
    current: Table = ConsentCurrent.__table__  # type: ignore[assignment]
    records: Table = ConsentRecord.__table__  # type: ignore[assignment]
    session.execute(
        delete(current).where(
            current.c.tenant_id == tenant_id,
            id_in(current.c.contact_id, [survivor_id, *duplicate_ids], dialect),
        )
    )
    rank = case(
        *((records.c.status == status, order) for status, order in STATUS_RANK.items()),
        else_=len(STATUS_RANK),
    )
    ranked = (
        select(
            records.c.id,
            records.c.channel,
            records.c.purpose,
            records.c.status,
            records.c.captured_at,
            records.c.expires_at,
            func.row_number()
            .over(
                partition_by=(records.c.channel, records.c.purpose),
                order_by=(records.c.captured_at.desc(), rank, records.c.id.desc()),
            )
            .label("place"),
        )
        .where(records.c.tenant_id == tenant_id, records.c.contact_id == survivor_id)
        .subquery()
    )
    latest = select(
        literal(survivor_id, current.c.contact_id.type),
        ranked.c.channel,
        ranked.c.purpose,
        literal(tenant_id, current.c.tenant_id.type),
        ranked.c.status,
        ranked.c.id,
        ranked.c.captured_at,
        ranked.c.expires_at,
    ).where(ranked.c.place == 1)
    session.execute(
        insert(current).from_select(
            [
                "contact_id",
                "channel",
                "purpose",
                "tenant_id",
                "status",
                "record_id",
                "captured_at",
                "expires_at",
            ],
            latest,
        )
    )
