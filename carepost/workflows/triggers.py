"""How contacts enter a workflow: enrollment, set-based, and the trigger registry.

Every entry goes through :func:`enroll_contacts`: one INSERT per batch of up to
5,000 contacts with ``ON CONFLICT DO NOTHING`` on the no re-entry constraint, so a
contact already in (or once through) the workflow is skipped by the database, even
when 10,000 enrollments of the same contact race. A run starts ``active`` at the
first step of the current version, due now.

Triggers name a kind of entry. Manual enrollment of a list or a segment and the API
call exist now; a contact joining a list, entering a segment, submitting a form or
reaching a date milestone register here later (:func:`register_trigger`) and call
:func:`enroll_contacts` with the contacts the event concerns.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Select, String, Table, Uuid, func, literal, select, text, true
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from carepost.audit import service as audit
from carepost.contacts.activity_models import ListMembership
from carepost.contacts.id_sets import dialect_of
from carepost.contacts.models import Contact
from carepost.core.database import UTCDateTime, new_ids, utcnow
from carepost.core.errors import Conflict
from carepost.crypto.keyring import TenantKeys
from carepost.segments.compiler import compile_predicate
from carepost.segments.service import segment_rule
from carepost.workflows.models import RunStatus, Workflow, WorkflowRun, WorkflowStatus
from carepost.workflows.service import get_workflow, version_graph

ENROLL_BATCH = 5000


@dataclass
class Enrollment:
    enrolled: int = 0
    skipped: int = 0  # already in the workflow, or once through it


@dataclass(frozen=True)
class Trigger:
    """A kind of entry: ``source`` is recorded on each run it starts."""

    name: str
    description: str


TRIGGERS: dict[str, Trigger] = {}


def register_trigger(name: str, description: str) -> Trigger:
    if name in TRIGGERS:
        raise ValueError(f"a trigger named {name!r} is already registered")
    TRIGGERS[name] = Trigger(name, description)
    return TRIGGERS[name]


register_trigger("manual_list", "the members of a list, enrolled by hand")
register_trigger("manual_segment", "the members of a segment, enrolled by hand")
register_trigger("api", "contacts named in POST /api/v1/workflows/{id}/enroll")
# Later: list_join, segment_entry, form_submission, date_milestone (docs/workflows.md).


def _insert_ignoring_existing(session: Session, rows: list[dict[str, object]]) -> int:
    # Core, not ORM, insert: RETURNING the rows actually written, which skip conflicts.
    table = cast(Table, WorkflowRun.__table__)
    dialect = dialect_of(session)
    statement = (
        postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    ).on_conflict_do_nothing(index_elements=["tenant_id", "workflow_id", "contact_id"])
    return len(session.execute(statement.returning(table.c.id), rows).all())


def enroll_contacts(
    session: Session,
    workflow: Workflow,
    contact_ids: Sequence[uuid.UUID],
    *,
    source: str,
    now: datetime | None = None,
) -> Enrollment:
    """Start a run for each contact (of the workflow's tenant) not yet in it."""
    if workflow.status != WorkflowStatus.ACTIVE:
        raise Conflict("only an active workflow takes contacts in", field="status")
    if source not in TRIGGERS:
        raise ValueError(f"unknown trigger {source!r}")
    now = now or utcnow()
    start = version_graph(session, workflow.id, workflow.current_version).start
    outcome = Enrollment()
    # Sorted: concurrent enrollments then take row locks in one order (no deadlock).
    unique = sorted(set(contact_ids))
    outcome.skipped += len(contact_ids) - len(unique)
    for offset in range(0, len(unique), ENROLL_BATCH):
        batch = unique[offset : offset + ENROLL_BATCH]
        ids = new_ids(len(batch))
        rows: list[dict[str, object]] = [
            {
                "id": run_id,
                "tenant_id": workflow.tenant_id,
                "workflow_id": workflow.id,
                "contact_id": contact_id,
                "version": workflow.current_version,
                "status": RunStatus.ACTIVE,
                "current_step": start,
                "entered_at": now,
                "wake_at": now,
                "wake_reason": "",
                "visited": [],
                "sent": {},
                "source": source,
                "lease_owner": "",
            }
            for run_id, contact_id in zip(ids, batch, strict=True)
        ]
        inserted = _insert_ignoring_existing(session, rows)
        outcome.enrolled += inserted
        outcome.skipped += len(batch) - inserted
    return outcome


def _known_contacts(
    session: Session, tenant_id: uuid.UUID, contact_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    found: set[uuid.UUID] = set()
    for offset in range(0, len(contact_ids), ENROLL_BATCH):
        batch = contact_ids[offset : offset + ENROLL_BATCH]
        found.update(
            session.scalars(
                select(Contact.id).where(Contact.tenant_id == tenant_id, Contact.id.in_(batch))
            )
        )
    return found


def _pages(
    session: Session, query_for: Callable[[uuid.UUID | None], object]
) -> Iterator[list[uuid.UUID]]:
    after: uuid.UUID | None = None
    while True:
        page = list(session.scalars(query_for(after)))  # type: ignore[call-overload]
        if not page:
            return
        yield page
        after = page[-1]


SELECT_PAGE = 50_000


def _enroll_selected(
    session: Session,
    workflow: Workflow,
    members: Select[Any],
    column: InstrumentedAttribute[uuid.UUID],
    *,
    source: str,
    now: datetime | None,
) -> Enrollment:
    """Start a run for every contact ``members`` selects, set-based: per page of
    SELECT_PAGE contact ids (keyset on ``column``: bounded transactions and memory),
    one ``INSERT … SELECT`` whose conflicts with the no-re-entry constraint are
    skipped, and the run ids made by the database. Nothing per contact in Python."""
    if workflow.status != WorkflowStatus.ACTIVE:
        raise Conflict("only an active workflow takes contacts in", field="status")
    now = now or utcnow()
    start = version_graph(session, workflow.id, workflow.current_version).start
    dialect = dialect_of(session)
    table = cast(Table, WorkflowRun.__table__)
    run_id = (
        func.gen_random_uuid()
        if dialect == "postgresql"
        else func.lower(func.hex(func.randomblob(16)))  # how Uuid() is stored on SQLite
    )
    constants = {
        "tenant_id": literal(workflow.tenant_id, Uuid()),
        "workflow_id": literal(workflow.id, Uuid()),
        "version": literal(workflow.current_version),
        "status": literal(RunStatus.ACTIVE),
        "current_step": literal(start),
        "entered_at": literal(now, UTCDateTime()),
        "wake_at": literal(now, UTCDateTime()),
        "wake_reason": literal(""),
        "visited": literal([], JSON()),
        "sent": literal({}, JSON()),
        "source": literal(source),
        "lease_owner": literal(""),
    }
    columns = ["id", "contact_id", *constants]

    def insert_from(source_ids: Any) -> Any:
        # WHERE true: SQLite reads "SELECT … FROM t ON CONFLICT" as a join without it.
        rows = select(run_id, source_ids.c[0], *constants.values()).where(true())
        insert_into = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        return insert_into.from_select(columns, rows).on_conflict_do_nothing(
            index_elements=["tenant_id", "workflow_id", "contact_id"]
        )

    total = Enrollment()
    after: uuid.UUID | None = None
    while True:
        page = members.order_by(column).limit(SELECT_PAGE)
        if after is not None:
            page = page.where(column > after)
        if dialect == "postgresql":
            # One statement a page: the members are selected once, inserted, and
            # counted (chosen, highest id, inserted) by the same query.
            chosen = page.cte("chosen")
            written = insert_from(chosen).returning(literal(1)).cte("written")
            count, highest, inserted = session.execute(
                select(
                    select(func.count()).select_from(chosen).scalar_subquery(),
                    select(func.max(cast_(chosen.c[0], String))).scalar_subquery(),
                    select(func.count()).select_from(written).scalar_subquery(),
                )
            ).one()
            if not count:
                return _analyzed(session, total)
        else:
            bounds = page.subquery()
            # max() of the text: PostgreSQL has no max(uuid), and the text of a uuid
            # sorts as the uuid does on both engines.
            count, highest = session.execute(
                select(func.count(), func.max(cast_(bounds.c[0], String)))
            ).one()
            if not count:
                return _analyzed(session, total)
            inside = members.where(column <= uuid.UUID(highest))
            if after is not None:
                inside = inside.where(column > after)
            # RETURNING: the driver's row count of an INSERT … SELECT is not reliable.
            inserted = len(
                session.execute(insert_from(inside.subquery()).returning(table.c.id)).all()
            )
        total.enrolled += int(inserted)
        total.skipped += int(count) - int(inserted)
        after = uuid.UUID(highest)


ANALYZE_AFTER = 10_000


def _analyzed(session: Session, total: Enrollment) -> Enrollment:
    """After a large enrollment on PostgreSQL, fresh statistics of the runs: on
    statistics from before it the planner answered the engine's claim (due runs by
    wake-up time) by sorting every due run, a second a claim at a million."""
    if total.enrolled >= ANALYZE_AFTER and dialect_of(session) == "postgresql":
        session.execute(text("ANALYZE workflow_runs"))
    return total


def enroll_list(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    list_id: uuid.UUID,
    *,
    actor: audit.Actor,
    now: datetime | None = None,
) -> Enrollment:
    """Enroll a list's current members, in pages of contact ids."""
    from carepost.contacts.lists import get_list

    workflow = get_workflow(session, tenant_id, workflow_id)
    get_list(session, tenant_id, list_id)

    members = select(ListMembership.contact_id).where(
        ListMembership.list_id == list_id, ListMembership.left_at.is_(None)
    )
    total = _enroll_selected(
        session, workflow, members, ListMembership.contact_id, source="manual_list", now=now
    )
    _audit(session, workflow, actor, "list", total)
    return total


def enroll_segment(
    session: Session,
    keys: TenantKeys,
    workflow_id: uuid.UUID,
    segment_id: uuid.UUID,
    *,
    actor: audit.Actor,
    now: datetime | None = None,
) -> Enrollment:
    """Enroll the contacts the segment's rule selects now, in pages of contact ids."""
    tenant_id = keys.tenant_id
    workflow = get_workflow(session, tenant_id, workflow_id)
    predicate = compile_predicate(
        segment_rule(session, tenant_id, segment_id), keys, dialect_of(session)
    )

    members = select(Contact.id).where(Contact.tenant_id == tenant_id, predicate)
    total = _enroll_selected(
        session, workflow, members, Contact.id, source="manual_segment", now=now
    )
    _audit(session, workflow, actor, "segment", total)
    return total


def enroll_by_api(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    contact_ids: Sequence[uuid.UUID],
    *,
    actor: audit.Actor,
    now: datetime | None = None,
) -> tuple[Enrollment, list[int]]:
    """Enroll contacts by id; also the indexes of ids that name no contact of the tenant."""
    workflow = get_workflow(session, tenant_id, workflow_id)
    known = _known_contacts(session, tenant_id, contact_ids)
    unknown = [i for i, contact_id in enumerate(contact_ids) if contact_id not in known]
    outcome = enroll_contacts(
        session, workflow, [c for c in contact_ids if c in known], source="api", now=now
    )
    _audit(session, workflow, actor, "api", outcome)
    return outcome, unknown


def _audit(
    session: Session, workflow: Workflow, actor: audit.Actor, via: str, outcome: Enrollment
) -> None:
    audit.record(
        session,
        tenant_id=workflow.tenant_id,
        actor=actor,
        action="workflow.enroll",
        object_type="workflow",
        object_id=workflow.id,
        details={"via": via, "enrolled": outcome.enrolled, "skipped": outcome.skipped},
    )
