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

import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.orm import Session

from carepost.contacts.models import Contact
from carepost.core.database import utcnow
from carepost.core.errors import CarepostError
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys, current_tenant_keys
from carepost.messages.models import MessageEvent
from carepost.messages.sending import SendLimits
from carepost.segments.nodes import Node
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
from carepost.workflows.steps import GraphShape, parse_graph

log = get_logger(__name__)
BATCH_SIZE = 500
LEASE = timedelta(minutes=5)


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


def advance_claimed(
    session: Session,
    keys: TenantKeys,
    run_ids: Sequence[uuid.UUID],
    now: datetime,
    *,
    owner: str,
    limits: SendLimits,
) -> int:
    """Advance the runs of one tenant still leased to ``owner``; steps executed."""
    runs = list(
        session.scalars(
            select(WorkflowRun)
            .where(
                WorkflowRun.id.in_(run_ids),
                WorkflowRun.tenant_id == keys.tenant_id,
                WorkflowRun.lease_owner == owner,
            )
            .with_for_update(skip_locked=True)
        )
    )
    if not runs:
        return 0
    workflows = {
        w.id: w
        for w in session.scalars(
            select(Workflow).where(Workflow.id.in_({run.workflow_id for run in runs}))
        )
    }
    contacts = {
        c.id: c
        for c in session.scalars(
            select(Contact).where(
                Contact.tenant_id == keys.tenant_id,
                Contact.id.in_([run.contact_id for run in runs]),
            )
        )
    }
    open_steps = {
        row.run_id: row
        for row in session.scalars(
            select(WorkflowRunStep).where(
                WorkflowRunStep.run_id.in_([run.id for run in runs]),
                WorkflowRunStep.left_at.is_(None),
            )
        )
    }
    graphs = _graphs(session, runs)
    executed = 0
    rules: dict[tuple[int, str, int], Node] = {}
    for run in runs:
        graph = graphs.get((run.workflow_id, run.version))
        workflow = workflows[run.workflow_id]
        run.lease_until, run.lease_owner = None, ""
        if graph is None or workflow.status != WorkflowStatus.ACTIVE:
            continue
        context = RunContext(
            session,
            keys,
            workflow,
            run,
            contacts.get(run.contact_id),
            now,
            limits,
            seq=len(run.visited or []),
            rules=rules,
        )
        try:
            with session.begin_nested():
                executed += advance_run(session, context, graph, open_steps.get(run.id))
        except CarepostError as failed:
            # A step that cannot run (its list or stage deleted since): the run ends,
            # with the reason's code in its history, never a stuck or repeated step.
            session.expire(run)
            _finish(session, run, RunStatus.EXITED, now)
            session.add(_history(run, run.current_step or "", "", now, f"error:{failed.code}"[:40]))
            run.lease_until, run.lease_owner = None, ""
    session.flush()
    return executed


def _history(
    run: WorkflowRun, step_id: str, step_type: str, now: datetime, outcome: str = ""
) -> WorkflowRunStep:
    return WorkflowRunStep(
        tenant_id=run.tenant_id,
        workflow_id=run.workflow_id,
        run_id=run.id,
        version=run.version,
        seq=len(run.visited or []),
        step_id=step_id,
        step_type=step_type,
        entered_at=now,
        left_at=now if outcome else None,
        outcome=outcome,
    )


def _drop_waits(session: Session, run: WorkflowRun) -> None:
    # No ORM synchronization: waits are never loaded as objects, and evaluating the
    # criteria over a batch's identity map costs more than the statement.
    session.execute(
        delete(WorkflowWait).where(WorkflowWait.run_id == run.id),
        execution_options={"synchronize_session": False},
    )


def _finish(
    session: Session, run: WorkflowRun, status: str, now: datetime, *, had_waits: bool = True
) -> None:
    run.status, run.wake_at, run.ended_at, run.wake_reason = status, None, now, ""
    if had_waits:
        _drop_waits(session, run)


def advance_run(
    session: Session, ctx: RunContext, graph: GraphShape, open_step: WorkflowRunStep | None
) -> int:
    """Execute the run's steps from its current one until it waits or ends."""
    run, now = ctx.run, ctx.now
    steps = graph.by_id()
    executed = 0
    while True:
        step = steps.get(run.current_step or "")
        if step is None:
            _finish(session, run, RunStatus.EXITED, now)
            return executed
        resumed = run.status == RunStatus.WAITING
        if not resumed:
            if step.id in (run.visited or []):
                # Loop prevention: a step already visited in this run is not repeated.
                _finish(session, run, RunStatus.COMPLETED, now, had_waits=False)
                session.add(_history(run, step.id, step.type, now, "loop_prevented"))  # type: ignore[attr-defined]
                return executed
            run.visited = [*(run.visited or []), step.id]
            run.step_entered_at = now
            open_step = _history(run, step.id, step.type, now)  # type: ignore[attr-defined]
            session.add(open_step)
        ctx.seq = len(run.visited)
        transition = handle(step, ctx, resumed)
        executed += 1
        if transition.wait_until is not None:
            _wait(session, run, step.id, transition, now)
            return executed
        if open_step is not None:
            open_step.left_at, open_step.outcome = now, transition.outcome[:40]
            open_step.detail = transition.detail
        open_step = None
        if resumed:
            _drop_waits(session, run)  # leaving a wait: its event no longer matters
        if transition.end is not None or transition.next_step is None:
            _finish(session, run, transition.end or RunStatus.COMPLETED, now, had_waits=False)
            return executed
        run.current_step, run.status, run.wake_reason = transition.next_step, RunStatus.ACTIVE, ""


def _wait(
    session: Session, run: WorkflowRun, step_id: str, transition: Transition, now: datetime
) -> None:
    run.status, run.wake_at, run.wake_reason = RunStatus.WAITING, transition.wait_until, ""
    if transition.event_key is not None:
        session.add(
            WorkflowWait(
                tenant_id=run.tenant_id,
                run_id=run.id,
                contact_id=run.contact_id,
                step_id=step_id,
                event_key=transition.event_key,
                message_id=transition.message_id,
                since=now,
            )
        )


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
    woke = session.execute(
        update(WorkflowRun)
        .where(WorkflowRun.id.in_(run_ids), WorkflowRun.status == RunStatus.WAITING)
        .values(wake_at=now, wake_reason="event")
    ).rowcount  # type: ignore[attr-defined]
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


def wake_on_engagement(session: Session, now: datetime) -> int:
    """Wake every run whose awaited email was opened or clicked since it began waiting."""
    woke = 0
    for kind in ("opened", "clicked"):
        waits = select(WorkflowWait.run_id).where(
            WorkflowWait.event_key == f"email.{kind}",
            WorkflowWait.message_id.is_not(None),
            exists().where(
                and_(
                    MessageEvent.message_id == WorkflowWait.message_id,
                    MessageEvent.kind == kind,
                )
            ),
        )
        woke += _wake(session, waits, now)
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
