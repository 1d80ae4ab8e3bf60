"""Saved segments: define, count, page through, export and snapshot their members.

A segment stores its rule as JSON, checked against the tenant's vocabulary when
saved, and is *dynamic*: every count, page, export or snapshot parses the rule
again (its relative dates move with the clock, a deleted list or field makes it
invalid) and runs the compiled SQL. Nothing is cached, so nothing goes stale.

A snapshot freezes the members at one instant with one ``INSERT … SELECT``, for a
campaign to send to later.

Contacts *added* to a segment (the workflows' Add to Segment step,
:func:`add_to_segment`) join the segment's **included list**, a static list made on
the first addition; every use of the segment (:func:`segment_node`) takes the rule
OR "a current member of the included list". The rule stays what the marketer wrote;
the additions are visible and removable as the list's members.

Audit: ``segment.create``/``update``/``delete`` name what changed; a snapshot
records its member count; viewing members' PHI is ``contact.view_phi`` (``via:
segment``) with the page's ids; an export records its row count and column names,
never a value.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only

from carepost.audit import service as audit
from carepost.contacts import lists
from carepost.contacts.activity_models import ContactList
from carepost.contacts.custom_fields import load_schema
from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.id_sets import dialect_of
from carepost.contacts.models import Contact
from carepost.core.database import READ_SNAPSHOT, new_id, utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from carepost.crypto.keyring import TenantKeys, bind_tenant_keys
from carepost.segments.compiler import compile_count, compile_predicate
from carepost.segments.models import Segment, SegmentSnapshot, SegmentSnapshotMember
from carepost.segments.nodes import AnyOf, ListCondition, Node
from carepost.segments.rules import parse_rule
from carepost.segments.vocabulary import load_vocabulary
from carepost.tenancy.scoped import get_owned, page_owned

MAX_SEGMENTS = 1000
EXPORT_BATCH = 1000
# Columns an export may hold, beyond ``custom.<field key>``: the plain ones need
# contacts:read only; the PHI ones (and PHI custom fields) need phi:export.
PLAIN_COLUMNS = ("id", "journey_stage", "language", "timezone", "created_at", "updated_at")
PHI_COLUMNS = tuple(name for name, spec in STANDARD_FIELDS.items() if spec.phi)
DEFAULT_EXPORT_COLUMNS = ("id", "journey_stage", "language")
MAX_EXPORT_COLUMNS = 100
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def parse_for(
    session: Session,
    tenant_id: uuid.UUID,
    rule: Any,
    *,
    now: datetime | None = None,
    pointer: str = "rule",
) -> Node:
    """Parse a rule against the tenant's vocabulary, now (faults point into ``pointer``)."""
    vocabulary = load_vocabulary(session, tenant_id)
    return parse_rule(rule, vocabulary, now=now or utcnow(), pointer=pointer)


def count_rule(
    session: Session, keys: TenantKeys, rule: Any, *, now: datetime | None = None
) -> int:
    """How many contacts a rule selects now (the builder's live count)."""
    node = parse_for(session, keys.tenant_id, rule, now=now)
    return int(session.scalar(compile_count(node, keys, dialect_of(session))) or 0)


# --- saved segments -------------------------------------------------------------------


def _check_name_free(
    session: Session, tenant_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None
) -> None:
    query = select(Segment.id).where(Segment.tenant_id == tenant_id, Segment.name == name)
    if exclude is not None:
        query = query.where(Segment.id != exclude)
    with session.no_autoflush:
        if session.scalar(query) is not None:
            raise Conflict("another segment has this name", field="name")


def _flush(session: Session, row: Segment, *, new: bool) -> None:
    try:
        with session.begin_nested():
            if new:
                session.add(row)
            session.flush()
    except IntegrityError:
        raise Conflict("another segment has this name", field="name") from None


def create_segment(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    name: str,
    description: str,
    rule: Mapping[str, Any],
    actor: audit.Actor,
) -> Segment:
    parse_for(session, tenant_id, rule)
    _check_name_free(session, tenant_id, name)
    existing = session.scalar(
        select(func.count()).select_from(Segment).where(Segment.tenant_id == tenant_id)
    )
    if (existing or 0) >= MAX_SEGMENTS:
        raise Conflict(f"an organization has at most {MAX_SEGMENTS} segments")
    row = Segment(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        description=description,
        rule=dict(rule),
        created_by_type=actor.type,
        created_by_id=actor.id,
    )
    _flush(session, row, new=True)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="segment.create",
        object_type="segment",
        object_id=row.id,
    )
    return row


def get_segment(session: Session, tenant_id: uuid.UUID, segment_id: uuid.UUID) -> Segment:
    return get_owned(session, Segment, tenant_id, segment_id, missing="no such segment")


def list_segments(
    session: Session, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[Segment]:
    return page_owned(session, Segment, tenant_id, after=after, limit=limit)


def update_segment(
    session: Session,
    tenant_id: uuid.UUID,
    segment_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    actor: audit.Actor,
) -> Segment:
    row = get_segment(session, tenant_id, segment_id)
    if "rule" in changes:
        parse_for(session, tenant_id, changes["rule"])
    changed = sorted(name for name, value in changes.items() if getattr(row, name) != value)
    if not changed:
        return row
    if "name" in changed:
        _check_name_free(session, tenant_id, changes["name"], exclude=row.id)
    for name in changed:
        setattr(row, name, dict(changes[name]) if name == "rule" else changes[name])
    row.updated_at = utcnow()
    row.updated_by_type, row.updated_by_id = actor.type, actor.id
    _flush(session, row, new=False)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="segment.update",
        object_type="segment",
        object_id=row.id,
        details={"fields": changed},
    )
    return row


def delete_segment(
    session: Session, tenant_id: uuid.UUID, segment_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    """Delete a segment; its snapshots stay (a campaign may still send to one)."""
    row = get_segment(session, tenant_id, segment_id)
    session.delete(row)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="segment.delete",
        object_type="segment",
        object_id=segment_id,
    )


def segment_node(
    session: Session, tenant_id: uuid.UUID, row: Segment, *, now: datetime | None = None
) -> Node:
    """A saved segment's meaning now: its rule, OR a current member of its included
    list (contacts added by hand) when it has one that still exists."""
    vocabulary = load_vocabulary(session, tenant_id)
    node = parse_rule(row.rule, vocabulary, now=now or utcnow(), pointer="#/segment/rule")
    if row.include_list_id is not None and row.include_list_id in vocabulary.list_ids:
        return AnyOf((node, ListCondition(row.include_list_id)))
    return node


def segment_rule(session: Session, tenant_id: uuid.UUID, segment_id: uuid.UUID) -> Node:
    """A saved segment's rule, parsed now (a rule made invalid since, say by deleting
    a list it names, is a 422 pointing into the stored rule), with its additions."""
    row = get_segment(session, tenant_id, segment_id)
    return segment_node(session, tenant_id, row)


INCLUDED_LIST_PREFIX = "Added to segment: "


def included_list(
    session: Session, tenant_id: uuid.UUID, segment_id: uuid.UUID, *, actor: audit.Actor
) -> uuid.UUID:
    """The segment's included list, made on first use. The segment row is locked
    (PostgreSQL) while looking, so two workers adding at once make one list."""
    row = session.scalar(
        select(Segment)
        .where(Segment.tenant_id == tenant_id, Segment.id == segment_id)
        .with_for_update()
    )
    if row is None:
        raise NotFound("no such segment")
    if row.include_list_id is not None:
        found = session.scalar(
            select(ContactList.id).where(
                ContactList.tenant_id == tenant_id, ContactList.id == row.include_list_id
            )
        )
        if found is not None:
            return found
    name = f"{INCLUDED_LIST_PREFIX}{row.name}"[:185]
    with session.no_autoflush:
        taken = session.scalar(
            select(ContactList.id).where(
                ContactList.tenant_id == tenant_id, ContactList.name == name
            )
        )
    if taken is not None:
        name = f"{name} ({row.id.hex[:8]})"
    made = lists.create_list(
        session,
        tenant_id,
        name=name,
        description=(
            f"Contacts added to the segment {row.name!r} by workflows: members of this "
            "list are in the segment besides those its rule selects."
        ),
        actor=actor,
    )
    row.include_list_id = made.id
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="segment.update",
        object_type="segment",
        object_id=row.id,
        details={"fields": ["include_list_id"]},
    )
    return made.id


def add_to_segment(
    session: Session,
    tenant_id: uuid.UUID,
    segment_id: uuid.UUID,
    contact_ids: Sequence[uuid.UUID],
    *,
    actor: audit.Actor,
    now: datetime | None = None,
) -> lists.MembershipOutcome:
    """Add contacts to a segment by hand: they join its included list (which is made
    on first use), so every later count, snapshot or branch sees them."""
    list_id = included_list(session, tenant_id, segment_id, actor=actor)
    return lists.change_members(
        session, tenant_id, list_id, add=contact_ids, remove=[], actor=actor, now=now
    )


def count_segment(session: Session, keys: TenantKeys, segment_id: uuid.UUID) -> int:
    node = segment_rule(session, keys.tenant_id, segment_id)
    return int(session.scalar(compile_count(node, keys, dialect_of(session))) or 0)


def segment_members(
    session: Session,
    keys: TenantKeys,
    segment_id: uuid.UUID,
    *,
    after: uuid.UUID | None,
    limit: int,
    with_phi: bool,
) -> list[Contact]:
    """One page of members in contact id order (``after`` is the cursor). Without
    ``with_phi`` the PHI columns are not even read. The caller audits PHI views."""
    node = segment_rule(session, keys.tenant_id, segment_id)
    predicate = compile_predicate(node, keys, dialect_of(session))
    query = select(Contact).where(Contact.tenant_id == keys.tenant_id, predicate)
    if not with_phi:
        query = query.options(load_only(*(getattr(Contact, name) for name in PLAIN_COLUMNS)))
    if after is not None:
        query = query.where(Contact.id > after)
    return list(session.scalars(query.order_by(Contact.id).limit(limit)))


def record_member_view(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    actor: audit.Actor,
    segment_id: uuid.UUID,
    contacts: Sequence[Contact],
) -> None:
    """Audit a page of members shown with their PHI: ids and count, never values."""
    if not contacts:
        return
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="contact.view_phi",
        object_type="contact",
        object_id=contacts[0].id if len(contacts) == 1 else "",
        details={
            "via": "segment",
            "segment_id": str(segment_id),
            "count": len(contacts),
            "contact_ids": [str(c.id) for c in contacts],
        },
    )


# --- export ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportPlan:
    """What an export will write: its columns, and whether any of them is PHI."""

    columns: tuple[str, ...]
    phi_columns: tuple[str, ...]


def plan_export(
    session: Session, tenant_id: uuid.UUID, columns: Sequence[str] | None
) -> ExportPlan:
    """Check the requested columns: standard ones, or ``custom.<key>`` of a defined,
    unsealed field; which of them are PHI (the caller checks phi:export)."""
    chosen = tuple(columns) if columns else DEFAULT_EXPORT_COLUMNS
    if len(chosen) > MAX_EXPORT_COLUMNS:
        raise ValidationFailed(f"at most {MAX_EXPORT_COLUMNS} columns", field="columns")
    if len(set(chosen)) != len(chosen):
        raise ValidationFailed("each column at most once", field="columns")
    schema = load_schema(session, tenant_id)
    phi: list[str] = []
    for index, column in enumerate(chosen):
        if column in PLAIN_COLUMNS:
            continue
        if column in PHI_COLUMNS:
            phi.append(column)
            continue
        key = column.removeprefix("custom.")
        spec = schema.get(key) if column.startswith("custom.") else None
        if spec is None:
            raise ValidationFailed(
                f"not a column: use {', '.join(PLAIN_COLUMNS + PHI_COLUMNS)} or custom.<field key>",
                field=f"columns/{index}",
            )
        if spec.phi or spec.sealed:
            phi.append(column)
    return ExportPlan(chosen, tuple(phi))


def neutralise_cell(value: str) -> str:
    """Keep a spreadsheet from running a cell as a formula: prefix it with a quote."""
    return f"'{value}" if value.startswith(FORMULA_TRIGGERS) else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(item) for item in value)
    return str(value)


def export_rows(
    session: Session, keys: TenantKeys, segment_id: uuid.UUID, plan: ExportPlan
) -> Iterator[list[str]]:
    """The members' rows (neutralised against formula injection), in contact id order,
    streamed in batches. Each batch is decrypted with the tenant's keys bound just
    for that fetch, so the stream may be consumed from any thread."""
    if dialect_of(session) == "sqlite" and not session.in_transaction():
        # A long read in a WAL snapshot of its own, never holding SQLite's write lock.
        session.connection(execution_options={READ_SNAPSHOT: True})
    node = segment_rule(session, keys.tenant_id, segment_id)
    predicate = compile_predicate(node, keys, dialect_of(session))
    needs_custom = any(column.startswith("custom.") for column in plan.columns)
    wanted = {column for column in plan.columns if not column.startswith("custom.")}
    selected = [getattr(Contact, name) for name in sorted(wanted)]
    if needs_custom:
        selected.append(Contact.custom)
    query = (
        select(*selected).where(Contact.tenant_id == keys.tenant_id, predicate).order_by(Contact.id)
    )
    result = session.execute(query, execution_options={"yield_per": EXPORT_BATCH})
    while True:
        with bind_tenant_keys(keys):
            batch = result.fetchmany(EXPORT_BATCH)
        if not batch:
            return
        for row in batch:
            values = row._mapping
            custom = (values["custom"] or {}) if needs_custom else {}
            yield [
                neutralise_cell(
                    _cell(
                        custom.get(column.removeprefix("custom."))
                        if column.startswith("custom.")
                        else values[column]
                    )
                )
                for column in plan.columns
            ]


def record_export(
    session: Session,
    keys: TenantKeys,
    segment_id: uuid.UUID,
    plan: ExportPlan,
    *,
    actor: audit.Actor,
) -> int:
    """Audit an export before it streams: the member count now and the column names."""
    count = count_segment(session, keys, segment_id)
    audit.record(
        session,
        tenant_id=keys.tenant_id,
        actor=actor,
        action="segment.export",
        object_type="segment",
        object_id=segment_id,
        details={
            "rows": count,
            "columns": list(plan.columns),
            "phi_columns": list(plan.phi_columns),
        },
    )
    return count


# --- snapshots ------------------------------------------------------------------------


def snapshot_segment(
    session: Session,
    keys: TenantKeys,
    segment_id: uuid.UUID,
    *,
    reason: str,
    actor: audit.Actor = audit.SYSTEM,
    now: datetime | None = None,
) -> uuid.UUID:
    """Freeze the segment's members now (one ``INSERT … SELECT``); returns the snapshot id."""
    segment = get_segment(session, keys.tenant_id, segment_id)
    node = segment_node(session, keys.tenant_id, segment, now=now)
    snapshot = SegmentSnapshot(
        id=new_id(),
        tenant_id=keys.tenant_id,
        segment_id=segment.id,
        rule=dict(segment.rule),
        reason=reason,
        member_count=0,
        created_by_type=actor.type,
        created_by_id=actor.id,
    )
    session.add(snapshot)
    session.flush()
    source = select(
        literal(snapshot.id, SegmentSnapshotMember.snapshot_id.type),
        literal(keys.tenant_id, SegmentSnapshotMember.tenant_id.type),
        Contact.id,
    ).where(
        Contact.tenant_id == keys.tenant_id,
        compile_predicate(node, keys, dialect_of(session)),
    )
    session.execute(
        insert(SegmentSnapshotMember).from_select(
            ["snapshot_id", "tenant_id", "contact_id"], source
        )
    )
    snapshot.member_count = int(
        session.scalar(
            select(func.count())
            .select_from(SegmentSnapshotMember)
            .where(SegmentSnapshotMember.snapshot_id == snapshot.id)
        )
        or 0
    )
    session.flush()
    audit.record(
        session,
        tenant_id=keys.tenant_id,
        actor=actor,
        action="segment.snapshot",
        object_type="segment",
        object_id=segment.id,
        details={"snapshot_id": str(snapshot.id), "members": snapshot.member_count},
    )
    return snapshot.id


def get_snapshot(
    session: Session, tenant_id: uuid.UUID, segment_id: uuid.UUID, snapshot_id: uuid.UUID
) -> SegmentSnapshot:
    row = session.scalar(
        select(SegmentSnapshot).where(
            SegmentSnapshot.tenant_id == tenant_id,
            SegmentSnapshot.segment_id == segment_id,
            SegmentSnapshot.id == snapshot_id,
        )
    )
    if row is None:
        raise NotFound("no such snapshot")
    return row


def snapshot_member_ids(
    session: Session, tenant_id: uuid.UUID, snapshot_id: uuid.UUID
) -> Iterator[uuid.UUID]:
    """The frozen members of a snapshot, in contact id order (what a send iterates)."""
    query = (
        select(SegmentSnapshotMember.contact_id)
        .where(
            SegmentSnapshotMember.tenant_id == tenant_id,
            SegmentSnapshotMember.snapshot_id == snapshot_id,
        )
        .order_by(SegmentSnapshotMember.contact_id)
    )
    yield from session.scalars(query, execution_options={"yield_per": EXPORT_BATCH})


def list_snapshots(
    session: Session, tenant_id: uuid.UUID, segment_id: uuid.UUID, *, limit: int = 50
) -> list[SegmentSnapshot]:
    """A segment's snapshots, newest first (the console's detail page lists them)."""
    query = (
        select(SegmentSnapshot)
        .where(SegmentSnapshot.tenant_id == tenant_id, SegmentSnapshot.segment_id == segment_id)
        .order_by(SegmentSnapshot.created_at.desc(), SegmentSnapshot.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))
