"""The workflow engine: claims due runs in batches and moves each through its steps
until it waits or ends.

Claiming (:func:`claim_due_runs`) is one short transaction: the due runs of active
workflows (``wake_at <= now``, no live lease) are selected ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL (SQLite has one writer at a time) and leased to this worker
until ``now + lease``. Each tenant's share of the batch is then advanced in one
transaction (:func:`advance_claimed`), which locks the runs again and keeps only
those still leased to this worker: a worker that died mid-batch loses nothing
(its transaction rolled back, its email included) and its runs are claimed again
once the lease has passed. Every email's outbox idempotency key is the run, the
step and the visit (:func:`carepost.workflows.handlers.idempotency_key`), so even
a replayed step never queues a second copy.

Events wake waiting runs through ``workflow_waits`` (indexed by tenant, event key
and contact): :func:`deliver_event` sets their ``wake_at`` to now, and the next
round advances them. Email opens and clicks are matched set-based each round
(:func:`wake_on_engagement`) against the message events of the awaited messages.
"""

from __future__ import annotations

import json
import secrets
import uuid
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from carepost.contacts.id_sets import dialect_of, id_in
from carepost.contacts.models import Contact
from carepost.contacts.sync import refresh_statistics
from carepost.core.database import utcnow
from carepost.core.errors import CarepostError
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys, current_tenant_keys
from carepost.messages.models import Message, MessageEvent
from carepost.messages.sending import SendLimits
from carepost.segments.nodes import Node
from carepost.workflows.batch import handle_group, has_batch_handler
from carepost.workflows.handlers import RunContext, Transition, handle
from carepost.workflows.models import (
    RunStatus,
    Workflow,
    WorkflowRun,
    WorkflowRunStep,
    WorkflowStatus,
    WorkflowVersion,
    WorkflowWait,
)
from carepost.workflows.steps import GraphShape, StepBase, parse_graph

log = get_logger(__name__)
BATCH_SIZE = 500
LEASE = timedelta(minutes=5)
# The tables a round writes. Their statistics are refreshed while they still say
# "empty" (refresh_statistics): on those the planner reads the open step records of
# a batch with a parallel scan of every record (seconds a batch at a million runs).
_WRITTEN = cast(
    "list[Table]",
    [
        WorkflowRun.__table__,
        WorkflowRunStep.__table__,
        WorkflowWait.__table__,
        Message.__table__,
        MessageEvent.__table__,
    ],
)


def claim_due_runs(
    session: Session,
    now: datetime,
    *,
    owner: str,
    limit: int = BATCH_SIZE,
    lease: timedelta = LEASE,
    tenant_id: uuid.UUID | None = None,
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Lease up to ``limit`` due runs to ``owner``; (run id, tenant id) of each."""
    query = (
        select(WorkflowRun.id, WorkflowRun.tenant_id)
        .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
        .where(
            WorkflowRun.wake_at <= now,
            (WorkflowRun.lease_until.is_(None)) | (WorkflowRun.lease_until < now),
            Workflow.status == WorkflowStatus.ACTIVE,
        )
        .order_by(WorkflowRun.wake_at)
        .limit(limit)
        .with_for_update(of=WorkflowRun, skip_locked=True)
    )
    if tenant_id is not None:
        query = query.where(WorkflowRun.tenant_id == tenant_id)
    claimed = [(row[0], row[1]) for row in session.execute(query)]
    if claimed:
        session.execute(
            update(WorkflowRun)
            .where(WorkflowRun.id.in_([run_id for run_id, _ in claimed]))
            .values(lease_until=now + lease, lease_owner=owner)
        )
    return claimed


def _graphs(
    session: Session, runs: Iterable[WorkflowRun]
) -> dict[tuple[uuid.UUID, int], GraphShape]:
    wanted = {(run.workflow_id, run.version) for run in runs}
    found: dict[tuple[uuid.UUID, int], GraphShape] = {}
    for workflow_id, version in wanted:
        row = session.get(WorkflowVersion, (workflow_id, version))
        if row is not None:
            found[(workflow_id, version)] = parse_graph(row.graph)
    return found


@dataclass
class _Walk:
    """One claimed run on its way through its steps in this batch."""

    run: WorkflowRun
    context: RunContext
    steps: dict[str, StepBase]
    graph_key: tuple[uuid.UUID, int]
    open_step: _StepRecord | None


# Step types whose handlers read nothing of the contact: a batch of runs only at
# such steps loads no contact (and decrypts no PHI column).
CONTACT_FREE_STEPS = frozenset(
    {
        "send_email",
        "wait_duration",
        "wait_for_event",
        "branch",
        "goto",
        "list_add",
        "list_remove",
        "segment_add",
        "set_stage",
        "webhook",
        "exit",
    }
)


def advance_claimed(
    session: Session,
    keys: TenantKeys,
    run_ids: Sequence[uuid.UUID],
    now: datetime,
    *,
    owner: str,
    limits: SendLimits,
) -> int:
    """Advance the runs of one tenant still leased to ``owner``; steps executed.

    Set-based: every round moves each run one step, with the runs at the same step
    of the same workflow version handled as one group (:func:`_advance_group`),
    until every run waits or has ended. The whole batch is one transaction."""
    # Not ORM objects: the batch's changes to them are written at its end in one
    # statement (:func:`_write_runs`), not by the unit of work one by one, and a
    # plain object costs a tenth of a mapped one to build.
    runs = [
        _run_of(row)
        for row in session.execute(
            select(*RUN_COLUMNS)
            .where(
                id_in(WorkflowRun.id, set(run_ids), dialect_of(session)),
                WorkflowRun.tenant_id == keys.tenant_id,
                WorkflowRun.lease_owner == owner,
            )
            # Waits instead of skipping: another worker's claim statement may hold a
            # row for a moment while it rechecks it, and a run skipped here would
            # stay leased (and asleep) until its lease ran out.
            .with_for_update()
        )
    ]
    if not runs:
        return 0
    workflows = {
        w.id: w
        for w in session.scalars(
            select(Workflow).where(Workflow.id.in_({run.workflow_id for run in runs}))
        )
    }
    graphs = _graphs(session, runs)
    open_steps = {
        run_id: _StepRecord(step_id=step_row_id)
        for step_row_id, run_id in session.execute(
            select(WorkflowRunStep.id, WorkflowRunStep.run_id).where(
                id_in(WorkflowRunStep.run_id, {run.id for run in runs}, dialect_of(session)),
                WorkflowRunStep.left_at.is_(None),
            )
        )
    }
    rules: dict[tuple[int, str, int], Node] = {}
    by_id = {key: graph.by_id() for key, graph in graphs.items()}
    walks: list[_Walk] = []
    for run in runs:
        key = (run.workflow_id, run.version)
        run.lease_until, run.lease_owner = None, ""
        if key not in graphs or workflows[run.workflow_id].status != WorkflowStatus.ACTIVE:
            continue
        context = RunContext(
            session,
            keys,
            workflows[run.workflow_id],
            run,
            None,  # loaded by the rounds for the steps that read it (_Rounds._contacts)
            now,
            limits,
            seq=len(run.visited or []),
            rules=rules,
        )
        walks.append(_Walk(run, context, by_id[key], key, open_steps.get(run.id)))
    rounds = _Rounds(session, now, keys)
    while walks:
        walks = rounds.advance(walks)
    rounds.flush_waits()
    rounds.write_history()
    _write_runs(session, runs)
    return rounds.executed


RUN_COLUMNS = tuple(WorkflowRun.__table__.c)
_RUN_NAMES = tuple(column.key for column in RUN_COLUMNS)


class RunState:
    """A run as the engine moves it: the columns of ``workflow_runs`` as plain
    attributes (what handlers read of ``RunContext.run``), outside the session."""

    __slots__ = _RUN_NAMES

    def __init__(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self, name, value)


def _run_of(row: Sequence[Any]) -> WorkflowRun:
    run = RunState.__new__(RunState)
    for name, value in zip(_RUN_NAMES, row, strict=True):
        setattr(run, name, value)
    # Duck-typed: a handler reads and sets the same attributes as on a mapped run.
    return cast(WorkflowRun, run)


_CHANGING = (
    "status",
    "current_step",
    "step_entered_at",
    "wake_at",
    "wake_reason",
    "visited",
    "sent",
    "ended_at",
    "lease_until",
    "lease_owner",
)


def _write_runs(session: Session, runs: Sequence[WorkflowRun]) -> None:
    """Every run of the batch as it now stands, in one statement."""
    rows = [{"row_id": run.id, **{name: getattr(run, name) for name in _CHANGING}} for run in runs]
    bulk_update(session, WorkflowRun.__table__, rows, _RUN_TYPES)  # type: ignore[arg-type]


# PostgreSQL types of the columns a batch changes (for the arrays of bulk_update).
_RUN_TYPES = {
    "row_id": "uuid",
    "status": "text",
    "current_step": "text",
    "step_entered_at": "timestamptz",
    "wake_at": "timestamptz",
    "wake_reason": "text",
    "visited": "json",
    "sent": "json",
    "ended_at": "timestamptz",
    "lease_until": "timestamptz",
    "lease_owner": "text",
}
_STEP_TYPES = {"row_id": "bigint", "left_at": "timestamptz", "outcome": "text", "detail": "json"}


_HISTORY_TYPES = {
    "tenant_id": "uuid",
    "workflow_id": "uuid",
    "run_id": "uuid",
    "version": "integer",
    "seq": "integer",
    "step_id": "text",
    "step_type": "text",
    "entered_at": "timestamptz",
    "left_at": "timestamptz",
    "outcome": "text",
    "detail": "json",
}
_WAIT_TYPES = {
    "tenant_id": "uuid",
    "run_id": "uuid",
    "contact_id": "uuid",
    "step_id": "text",
    "event_key": "text",
    "message_id": "uuid",
    "since": "timestamptz",
}


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"no JSON form for {type(value).__name__}")


def _recordset(rows: Sequence[dict[str, Any]], types: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The rows as one JSON parameter and the ``json_to_recordset`` that reads them
    back typed: PostgreSQL parses the lot in C, where one array a column cost the
    driver a Python call a value to dump (most of a batch's write time)."""
    columns = ", ".join(f"{name} {kind}" for name, kind in types.items())
    payload = json.dumps([{name: row[name] for name in types} for row in rows], default=_json_value)
    return f"json_to_recordset(CAST(:rows AS json)) AS v({columns})", {"rows": payload}


def insert_rows(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], types: dict[str, str]
) -> None:
    """Insert rows: on PostgreSQL one ``INSERT … SELECT FROM json_to_recordset(…)``
    whatever their number (an executemany is a statement a row there, and a
    multi-row VALUES costs SQLAlchemy a bound parameter a value to compile); on
    SQLite an executemany (no round trips in-process)."""
    if not rows:
        return
    if dialect_of(session) != "postgresql":
        session.connection().execute(insert(table), list(rows))
        return
    names = ", ".join(types)
    source, parameters = _recordset(rows, types)
    session.connection().execute(
        text(
            f"INSERT INTO {table.name} ({names}) "  # noqa: S608 - names are ours
            f"SELECT {', '.join(f'v.{name}' for name in types)} FROM {source}"
        ),
        parameters,
    )


def bulk_update(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], types: dict[str, str]
) -> None:
    """Update rows by primary key (``row_id``) with their values.

    PostgreSQL: one ``UPDATE … FROM json_to_recordset(…)``, a single statement
    whatever the number of rows (an executemany costs a statement a row on the
    server). SQLite: an executemany (no round trips in-process)."""
    if not rows:
        return
    columns = [name for name in types if name != "row_id"]
    if dialect_of(session) != "postgresql":
        statement = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({name: bindparam(name) for name in columns})
        )
        session.connection().execute(statement, list(rows))
        return
    assignments = ", ".join(f"{name} = v.{name}" for name in columns)
    source, parameters = _recordset(rows, types)
    session.connection().execute(
        text(
            f"UPDATE {table.name} AS t SET {assignments} "  # noqa: S608 - names are ours
            f"FROM {source} WHERE t.id = v.row_id"
        ),
        parameters,
    )


@dataclass
class _StepRecord:
    """A history row: a new one (written at the batch's end) or an open one already
    written (``step_id`` set), closed by an update."""

    values: dict[str, Any] | None = None
    step_id: int | None = None
    left_at: datetime | None = None
    outcome: str = ""
    detail: dict[str, Any] | None = None


class _Rounds:
    """The rounds of one batch: what each run does at its current step, grouped."""

    def __init__(self, session: Session, now: datetime, keys: TenantKeys) -> None:
        self.session, self.now, self.keys = session, now, keys
        self._contacts: dict[uuid.UUID, Contact] = {}  # those loaded so far in the batch
        self.executed = 0
        self._dropped: set[uuid.UUID] = set()  # runs whose waits are to be deleted
        self._waits: list[dict[str, object]] = []
        self._records: list[_StepRecord] = []  # new history rows, and open ones closed

    def _new(self, values: dict[str, Any]) -> _StepRecord:
        record = _StepRecord(values=values, left_at=values["left_at"], outcome=values["outcome"])
        self._records.append(record)
        return record

    def _close(self, record: _StepRecord, outcome: str, detail: dict[str, Any] | None) -> None:
        record.left_at, record.outcome, record.detail = self.now, outcome, detail
        if record.values is None:
            self._records.append(record)

    def write_history(self) -> None:
        """The batch's history: new rows in one insert, closed ones in one update."""
        table = WorkflowRunStep.__table__
        new = [
            {**r.values, "left_at": r.left_at, "outcome": r.outcome, "detail": r.detail}
            for r in self._records
            if r.values is not None
        ]
        closed = [
            {"row_id": r.step_id, "left_at": r.left_at, "outcome": r.outcome, "detail": r.detail}
            for r in self._records
            if r.values is None
        ]
        if new:
            insert_rows(self.session, table, new, _HISTORY_TYPES)  # type: ignore[arg-type]
        bulk_update(self.session, table, closed, _STEP_TYPES)  # type: ignore[arg-type]
        self._records = []

    def advance(self, walks: list[_Walk]) -> list[_Walk]:
        """One step of each run; the runs that go on to another step."""
        groups: dict[tuple[tuple[uuid.UUID, int], str, bool], list[_Walk]] = defaultdict(list)
        for walk in walks:
            entered = self._enter(walk)
            if entered is not None:
                groups[(walk.graph_key, entered[0], entered[1])].append(walk)
        moving: list[_Walk] = []
        for (_graph, step_id, resumed), members in groups.items():
            step = members[0].steps[step_id]
            moving += self._execute(step, members, resumed)
        # Before the next round's waits are written: a run may leave one wait and
        # enter another in the same batch.
        self.flush_waits()
        return moving

    def _enter(self, walk: _Walk) -> tuple[str, bool] | None:
        """Enter the run's current step (history, loop prevention); (step id,
        resumed) when its handler is to run, None when the run ended here."""
        run, now = walk.run, self.now
        step = walk.steps.get(run.current_step or "")
        if step is None:
            self._finish(run, RunStatus.EXITED)
            return None
        resumed = run.status == RunStatus.WAITING
        if not resumed:
            if step.id in (run.visited or []):
                # Loop prevention: a step already visited in this run is not repeated.
                self._finish(run, RunStatus.COMPLETED, had_waits=False)
                self._new(_history(run, step.id, step.type, now, "loop_prevented"))  # type: ignore[attr-defined]
                return None
            run.visited = [*(run.visited or []), step.id]
            run.step_entered_at = now
            walk.open_step = self._new(_history(run, step.id, step.type, now))  # type: ignore[attr-defined]
        walk.context.seq = len(run.visited)
        return step.id, resumed

    def _load_contacts(self, members: list[_Walk]) -> None:
        """The contacts of a group at a step that reads them (one query for those not
        loaded yet): the other steps decrypt no PHI column and pay no query."""
        missing = {w.run.contact_id for w in members} - self._contacts.keys()
        if missing:
            self._contacts.update(
                (contact.id, contact)
                for contact in self.session.scalars(
                    select(Contact).where(
                        Contact.tenant_id == self.keys.tenant_id,
                        id_in(Contact.id, missing, dialect_of(self.session)),
                    )
                )
            )
        for walk in members:
            walk.context.contact = self._contacts.get(walk.run.contact_id)

    def _execute(self, step: StepBase, members: list[_Walk], resumed: bool) -> list[_Walk]:
        if getattr(step, "type", "") not in CONTACT_FREE_STEPS:
            self._load_contacts(members)
        contexts = [walk.context for walk in members]
        try:
            with self.session.begin_nested():
                transitions = handle_group(step, contexts, resumed)
        except CarepostError:
            if len(members) == 1 and not has_batch_handler(step):
                self._failed(members[0], step)
                return []
            # One run's trouble must not stop the others: each alone, as before.
            transitions = []
            survivors: list[_Walk] = []
            for walk in members:
                try:
                    with self.session.begin_nested():
                        transitions.append(handle(step, walk.context, resumed))
                    survivors.append(walk)
                except CarepostError as failed:
                    self._failed(walk, step, failed)
            members = survivors
        moving: list[_Walk] = []
        for walk, transition in zip(members, transitions, strict=True):
            self.executed += 1
            if self._apply(walk, transition, step.id, resumed):
                moving.append(walk)
        return moving

    def _failed(self, walk: _Walk, step: StepBase, failed: CarepostError | None = None) -> None:
        # A step that cannot run (its list or stage deleted since): the run ends,
        # with the reason's code in its history, never a stuck or repeated step.
        code = failed.code if failed is not None else "step_failed"
        outcome = f"error:{code}"[:40]
        if walk.open_step is not None:
            self._close(walk.open_step, outcome, None)
        else:
            self._new(_history(walk.run, step.id, "", self.now, outcome))
        self._finish(walk.run, RunStatus.EXITED)

    def _apply(self, walk: _Walk, transition: Transition, step_id: str, resumed: bool) -> bool:
        """Record where the run goes; True when it goes on to another step now."""
        run, now = walk.run, self.now
        if transition.wait_until is not None:
            run.status, run.wake_at, run.wake_reason = RunStatus.WAITING, transition.wait_until, ""
            if transition.event_key is not None:
                self._waits.append(
                    {
                        "tenant_id": run.tenant_id,
                        "run_id": run.id,
                        "contact_id": run.contact_id,
                        "step_id": step_id,
                        "event_key": transition.event_key,
                        "message_id": transition.message_id,
                        "since": now,
                    }
                )
            return False
        if walk.open_step is not None:
            self._close(walk.open_step, transition.outcome[:40], transition.detail)
        walk.open_step = None
        if resumed:
            self._dropped.add(run.id)  # leaving a wait: its event no longer matters
        if transition.end is not None or transition.next_step is None:
            self._finish(run, transition.end or RunStatus.COMPLETED, had_waits=False)
            return False
        run.current_step, run.status, run.wake_reason = transition.next_step, RunStatus.ACTIVE, ""
        return True

    def _finish(self, run: WorkflowRun, status: str, *, had_waits: bool = True) -> None:
        run.status, run.wake_at, run.ended_at, run.wake_reason = status, None, self.now, ""
        if had_waits:
            self._dropped.add(run.id)

    def flush_waits(self) -> None:
        """Delete the waits the runs left and write the ones they entered: one
        statement each (no ORM objects: waits are never loaded as such)."""
        if self._dropped:
            dialect = dialect_of(self.session)
            self.session.execute(
                delete(WorkflowWait).where(id_in(WorkflowWait.run_id, self._dropped, dialect)),
                execution_options={"synchronize_session": False},
            )
            self._dropped = set()
        if self._waits:
            insert_rows(self.session, WorkflowWait.__table__, self._waits, _WAIT_TYPES)  # type: ignore[arg-type]
            self._waits = []


def _history(
    run: WorkflowRun, step_id: str, step_type: str, now: datetime, outcome: str = ""
) -> dict[str, Any]:
    return {
        "tenant_id": run.tenant_id,
        "workflow_id": run.workflow_id,
        "run_id": run.id,
        "version": run.version,
        "seq": len(run.visited or []),
        "step_id": step_id,
        "step_type": step_type,
        "entered_at": now,
        "left_at": now if outcome else None,
        "outcome": outcome,
        "detail": None,
    }


def deliver_event(
    session: Session,
    tenant_id: uuid.UUID,
    contact_ids: Iterable[uuid.UUID],
    event_key: str,
    now: datetime | None = None,
) -> int:
    """Wake the runs of these contacts waiting for ``event_key``; how many woke."""
    now = now or utcnow()
    ids = list(set(contact_ids))
    if not ids:
        return 0
    waits = select(WorkflowWait.run_id).where(
        WorkflowWait.tenant_id == tenant_id,
        WorkflowWait.event_key == event_key,
        WorkflowWait.contact_id.in_(ids),
    )
    return _wake(session, waits, now)


def _wake(session: Session, waits: object, now: datetime) -> int:
    run_ids = list(session.scalars(waits))  # type: ignore[call-overload]
    if not run_ids:
        return 0
    woke = session.execute(  # type: ignore[attr-defined]
        update(WorkflowRun)
        .where(WorkflowRun.id.in_(run_ids), WorkflowRun.status == RunStatus.WAITING)
        .values(wake_at=now, wake_reason="event")
    ).rowcount
    session.execute(delete(WorkflowWait).where(WorkflowWait.run_id.in_(run_ids)))
    return int(woke or 0)


def wake_on_message_event(
    session: Session, message_id: uuid.UUID, kind: str, now: datetime | None = None
) -> int:
    """Wake runs waiting for an open or click of this message (the tracking hook)."""
    waits = select(WorkflowWait.run_id).where(
        WorkflowWait.message_id == message_id, WorkflowWait.event_key == f"email.{kind}"
    )
    return _wake(session, waits, now or utcnow())


# Per engine (database and schema), the newest message event id each of this
# process's last two rounds saw.
_engagement_seen: weakref.WeakKeyDictionary[Engine, list[int]] = weakref.WeakKeyDictionary()


def wake_on_engagement(session: Session, now: datetime) -> int:
    """Wake every run whose awaited email was opened or clicked since it began waiting.

    The safety net behind the immediate wake-up by the tracking hook: a round
    matches only the message events recorded since the round before last (the first
    two rounds of a process match them all), so it costs the new events, not the
    waiting runs. Going one round further back covers an event whose transaction took
    its id before the last round and committed after it."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    latest = session.scalar(select(func.max(MessageEvent.id)))
    if latest is None:
        return 0
    seen = _engagement_seen.setdefault(engine, [])
    since = seen[-2] if len(seen) >= 2 else None
    woke = 0
    for kind in ("opened", "clicked"):
        events = select(MessageEvent.message_id).where(
            MessageEvent.kind == kind, MessageEvent.id <= latest
        )
        if since is not None:
            events = events.where(MessageEvent.id > since)
        waits = select(WorkflowWait.run_id).where(
            WorkflowWait.event_key == f"email.{kind}",
            WorkflowWait.message_id.in_(events),
        )
        woke += _wake(session, waits, now)
    seen[:] = [*seen[-1:], latest]
    return woke


def advance_due_runs(
    runtime: Runtime,
    *,
    now: datetime | None = None,
    limit: int = BATCH_SIZE,
    tenant_id: uuid.UUID | None = None,
    owner: str | None = None,
    max_batches: int = 20,
) -> int:
    """The worker job: wake engaged runs, then claim and advance due runs in batches."""
    owner = owner or f"worker-{secrets.token_hex(6)}"
    limits = SendLimits.from_settings(runtime.settings)
    executed = 0
    for _ in range(max_batches):
        moment = now or utcnow()
        with runtime.database.session() as session:
            refresh_statistics(session, _WRITTEN)
            wake_on_engagement(session, moment)
            claimed = claim_due_runs(session, moment, owner=owner, limit=limit, tenant_id=tenant_id)
        if not claimed:
            break
        by_tenant: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for run_id, run_tenant in claimed:
            by_tenant[run_tenant].append(run_id)
        for run_tenant, run_ids in by_tenant.items():
            with runtime.tenant_session(run_tenant) as session:
                keys = current_tenant_keys()
                executed += advance_claimed(
                    session, keys, run_ids, moment, owner=owner, limits=limits
                )
        if len(claimed) < limit:
            break
    return executed
