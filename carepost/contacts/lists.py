"""Static lists of contacts: the lists themselves and set-based membership changes.

A membership is a stint (``joined_at`` .. ``left_at``); the current one has
``left_at`` null and a partial unique index keeps one current stint per list
and contact. Adding or removing thousands of contacts is a bounded number of
statements whatever their number: one SELECT classifies the ids, one
``INSERT … SELECT`` adds, one ``UPDATE`` removes (ids travel as one array
parameter, :mod:`carepost.contacts.id_sets`).

Each id is answered on its own: an unknown contact (which includes another
organization's: they are indistinguishable), an id repeated in the call or
present in both ``add`` and ``remove`` gets an error while the others apply.

Audit: ``list.create``/``list.update``/``list.delete`` name the changed
attributes; ``list.members`` records counts only.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts.activity_models import ContactList, ListMembership
from carepost.contacts.id_sets import dialect_of, id_in
from carepost.contacts.models import Contact
from carepost.core.database import UTCDateTime, new_id, utcnow
from carepost.core.errors import Conflict, FieldError, ValidationFailed
from carepost.tenancy.scoped import get_owned, page_owned
from carepost.workflows.trigger_models import WorkflowTrigger

MAX_MEMBER_CHANGES = 10_000


@dataclass
class MembershipOutcome:
    """What one membership change did: counts, and errors located by JSON pointer."""

    added: int = 0
    removed: int = 0
    unchanged: int = 0
    errors: list[FieldError] = field(default_factory=list)


def _check_name_free(
    session: Session, tenant_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None
) -> None:
    query = select(ContactList.id).where(
        ContactList.tenant_id == tenant_id, ContactList.name == name
    )
    if exclude is not None:
        query = query.where(ContactList.id != exclude)
    with session.no_autoflush:
        if session.scalar(query) is not None:
            raise Conflict("another list has this name", field="name")


def _flush(session: Session, row: ContactList, *, new: bool) -> None:
    """Flush in a savepoint, so a concurrent writer taking the name is a 409, not a 500."""
    try:
        with session.begin_nested():
            if new:
                session.add(row)
            session.flush()
    except IntegrityError:
        raise Conflict("another list has this name", field="name") from None


def create_list(
    session: Session, tenant_id: uuid.UUID, *, name: str, description: str, actor: audit.Actor
) -> ContactList:
    _check_name_free(session, tenant_id, name)
    row = ContactList(id=new_id(), tenant_id=tenant_id, name=name, description=description)
    _flush(session, row, new=True)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="list.create",
        object_type="list",
        object_id=row.id,
    )
    return row


def get_list(session: Session, tenant_id: uuid.UUID, list_id: uuid.UUID) -> ContactList:
    return get_owned(session, ContactList, tenant_id, list_id, missing="no such list")


def list_lists(
    session: Session, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[ContactList]:
    return page_owned(session, ContactList, tenant_id, after=after, limit=limit)


def member_counts(
    session: Session, tenant_id: uuid.UUID, list_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Current members per list, for a page of lists (one grouped query)."""
    if not list_ids:
        return {}
    query = (
        select(ListMembership.list_id, func.count())
        .where(
            ListMembership.tenant_id == tenant_id,
            ListMembership.list_id.in_(list_ids),
            ListMembership.left_at.is_(None),
        )
        .group_by(ListMembership.list_id)
    )
    return {list_id: int(count) for list_id, count in session.execute(query)}


def update_list(
    session: Session,
    tenant_id: uuid.UUID,
    list_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    actor: audit.Actor,
) -> ContactList:
    row = get_list(session, tenant_id, list_id)
    changed = sorted(name for name, value in changes.items() if getattr(row, name) != value)
    if not changed:
        return row
    if "name" in changed:
        _check_name_free(session, tenant_id, changes["name"], exclude=row.id)
    for name in changed:
        setattr(row, name, changes[name])
    row.updated_at = utcnow()
    _flush(session, row, new=False)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="list.update",
        object_type="list",
        object_id=row.id,
        details={"fields": changed},
    )
    return row


def delete_list(
    session: Session, tenant_id: uuid.UUID, list_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    row = get_list(session, tenant_id, list_id)
    members = session.execute(
        delete(ListMembership).where(ListMembership.list_id == row.id)
    ).rowcount  # type: ignore[attr-defined]
    session.delete(row)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="list.delete",
        object_type="list",
        object_id=list_id,
        details={"memberships": members},
    )


def _repeated(ids: Sequence[uuid.UUID], other: set[uuid.UUID], pointer: str) -> list[FieldError]:
    """Errors for ids that repeat within their array, or also appear in the other one."""
    counts = Counter(ids)
    errors = []
    for index, contact_id in enumerate(ids):
        if counts[contact_id] > 1:
            errors.append(FieldError(f"{pointer}/{index}", "this id appears more than once"))
        elif contact_id in other:
            errors.append(FieldError(f"{pointer}/{index}", "this id is both added and removed"))
    return errors


def change_members(
    session: Session,
    tenant_id: uuid.UUID,
    list_id: uuid.UUID,
    *,
    add: Sequence[uuid.UUID],
    remove: Sequence[uuid.UUID],
    actor: audit.Actor,
    now: datetime | None = None,
) -> MembershipOutcome:
    """Add and remove contacts; re-adding a current member or removing a non-member is
    a no-op (``unchanged``). Bounded statements whatever the number of ids."""
    if len(add) + len(remove) > MAX_MEMBER_CHANGES:
        raise ValidationFailed(
            f"one call changes at most {MAX_MEMBER_CHANGES} memberships", field="#/body/add"
        )
    now = now or utcnow()
    contact_list = get_list(session, tenant_id, list_id)
    outcome = MembershipOutcome()
    outcome.errors += _repeated(add, set(remove), "#/body/add")
    outcome.errors += _repeated(remove, set(add), "#/body/remove")
    refused = {e.field for e in outcome.errors}
    to_add = {c for i, c in enumerate(add) if f"#/body/add/{i}" not in refused}
    to_remove = {c for i, c in enumerate(remove) if f"#/body/remove/{i}" not in refused}

    known, current, triggered = _classify(session, tenant_id, contact_list.id, to_add | to_remove)
    for pointer, ids in (("#/body/add", add), ("#/body/remove", remove)):
        for index, contact_id in enumerate(ids):
            if f"{pointer}/{index}" not in refused and contact_id not in known:
                outcome.errors.append(FieldError(f"{pointer}/{index}", "no such contact"))
    joining = (to_add & known) - current
    leaving = to_remove & current
    outcome.unchanged = len((to_add & current) | ((to_remove & known) - current))
    try:
        with session.begin_nested():
            joined = _insert_members(session, tenant_id, contact_list.id, joining, now)
            outcome.added = len(joined)
            if joined and triggered:
                # Workflows triggered by joining this list enroll the new members.
                from carepost.workflows.entry import enroll_on

                enroll_on(session, tenant_id, "list_join", str(contact_list.id), joined, now)
            outcome.removed = _end_memberships(session, contact_list.id, leaving, now)
    except IntegrityError:
        raise Conflict(
            "another writer changed this list at the same time; send the call again "
            "(membership changes are idempotent)"
        ) from None
    outcome.errors.sort(key=lambda e: (not e.field.startswith("#/body/add"), len(e.field), e.field))
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="list.members",
        object_type="list",
        object_id=contact_list.id,
        details={
            "added": outcome.added,
            "removed": outcome.removed,
            "unchanged": outcome.unchanged,
            "failed": len(outcome.errors),
        },
    )
    return outcome


def _classify(
    session: Session, tenant_id: uuid.UUID, list_id: uuid.UUID, ids: set[uuid.UUID]
) -> tuple[set[uuid.UUID], set[uuid.UUID], bool]:
    """(the ids that are contacts of this tenant, those that are current members,
    whether a workflow is triggered by joining the list: asked in the same statement)."""
    if not ids:
        return set(), set(), False
    triggered = exists().where(
        WorkflowTrigger.tenant_id == tenant_id,
        WorkflowTrigger.kind == "list_join",
        WorkflowTrigger.ref == str(list_id),
    )
    is_member = exists().where(
        ListMembership.list_id == list_id,
        ListMembership.contact_id == Contact.id,
        ListMembership.left_at.is_(None),
    )
    query = select(Contact.id, is_member, triggered).where(
        Contact.tenant_id == tenant_id, id_in(Contact.id, ids, dialect_of(session))
    )
    known: set[uuid.UUID] = set()
    current: set[uuid.UUID] = set()
    any_trigger = False
    for contact_id, member, trigger in session.execute(query):
        known.add(contact_id)
        any_trigger = any_trigger or bool(trigger)
        if member:
            current.add(contact_id)
    return known, current, any_trigger


def _insert_members(
    session: Session, tenant_id: uuid.UUID, list_id: uuid.UUID, ids: set[uuid.UUID], now: datetime
) -> list[uuid.UUID]:
    if not ids:
        return []
    not_member = ~exists().where(
        ListMembership.list_id == list_id,
        ListMembership.contact_id == Contact.id,
        ListMembership.left_at.is_(None),
    )
    source = select(
        literal(tenant_id, Contact.tenant_id.type),
        literal(list_id, ListMembership.list_id.type),
        Contact.id,
        literal(now, UTCDateTime()),
    ).where(
        and_(Contact.tenant_id == tenant_id, id_in(Contact.id, ids, dialect_of(session))),
        not_member,
    )
    statement = (
        insert(ListMembership)
        .from_select(["tenant_id", "list_id", "contact_id", "joined_at"], source)
        .returning(ListMembership.contact_id)
    )
    # Counted from RETURNING: psycopg reports no row count for an ORM INSERT … SELECT.
    return [row[0] for row in session.execute(statement)]


def _end_memberships(
    session: Session, list_id: uuid.UUID, ids: set[uuid.UUID], now: datetime
) -> int:
    if not ids:
        return 0
    statement = (
        update(ListMembership)
        .where(
            ListMembership.list_id == list_id,
            ListMembership.left_at.is_(None),
            id_in(ListMembership.contact_id, ids, dialect_of(session)),
        )
        .values(left_at=now)
        .returning(ListMembership.contact_id)
        .execution_options(synchronize_session=False)
    )
    return len(session.execute(statement).all())


def list_members(
    session: Session,
    tenant_id: uuid.UUID,
    list_id: uuid.UUID,
    *,
    after: uuid.UUID | None,
    limit: int,
) -> list[tuple[uuid.UUID, datetime]]:
    """Current members as (contact id, joined at), in contact id order (the cursor);
    served by the partial unique index on (list_id, contact_id)."""
    contact_list = get_list(session, tenant_id, list_id)
    query = (
        select(ListMembership.contact_id, ListMembership.joined_at)
        .where(ListMembership.list_id == contact_list.id, ListMembership.left_at.is_(None))
        .order_by(ListMembership.contact_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(ListMembership.contact_id > after)
    return [(contact_id, joined_at) for contact_id, joined_at in session.execute(query)]


@dataclass(frozen=True)
class Membership:
    """One stint of a contact in a list, with the list's name (for a contact's page)."""

    list_id: uuid.UUID
    list_name: str
    joined_at: datetime
    left_at: datetime | None

    @property
    def current(self) -> bool:
        return self.left_at is None


def memberships_of(
    session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID, *, limit: int = 200
) -> list[Membership]:
    """A contact's memberships, current ones first, then past stints, latest first."""
    query = (
        select(
            ListMembership.list_id,
            ContactList.name,
            ListMembership.joined_at,
            ListMembership.left_at,
        )
        .join(ContactList, ContactList.id == ListMembership.list_id)
        .where(
            ListMembership.tenant_id == tenant_id,
            ContactList.tenant_id == tenant_id,
            ListMembership.contact_id == contact_id,
        )
        .order_by(ListMembership.left_at.is_not(None), ListMembership.joined_at.desc())
        .limit(limit)
    )
    return [Membership(*row) for row in session.execute(query)]
