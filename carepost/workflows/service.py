"""Workflows: define, change, activate, pause, resume, archive, and publish versions.

The editable graph is the workflow's ``draft``. Activating checks it
(:func:`carepost.workflows.validation.check_graph`) and publishes version 1;
changing the graph of an active (or paused) workflow checks and publishes the next
version at once. Publishing moves the runs in flight onto the new version by the
migration rule (docs/workflows.md): a run at a step that still exists stays there;
a run at a removed step goes to the nearest step that followed it in the old
version's order and still exists, or exits when none does.
:func:`plan_migration` says how many runs a publication would move or end.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.contacts.fields import normalize_email
from carepost.core.database import utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from carepost.messages import ports
from carepost.tenancy.scoped import get_owned, page_owned
from carepost.workflows.models import (
    IN_FLIGHT,
    RunStatus,
    Workflow,
    WorkflowRun,
    WorkflowRunStep,
    WorkflowStatus,
    WorkflowVersion,
    WorkflowWait,
)
from carepost.workflows.steps import GraphShape, dump_graph, parse_graph
from carepost.workflows.validation import check_graph, load_graph

EDITABLE = ("name", "sender_name", "sender_address", "reply_to", "priority", "draft")
MAX_WORKFLOWS = 1000


def get_workflow(session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> Workflow:
    return get_owned(session, Workflow, tenant_id, workflow_id, missing="no such workflow")


def list_workflows(
    session: Session, tenant_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[Workflow]:
    return page_owned(session, Workflow, tenant_id, after=after, limit=limit)


def _check_name_free(
    session: Session, tenant_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None
) -> None:
    query = select(Workflow.id).where(Workflow.tenant_id == tenant_id, Workflow.name == name)
    if exclude is not None:
        query = query.where(Workflow.id != exclude)
    if session.scalar(query) is not None:
        raise Conflict("a workflow with this name exists", field="name")


def _audit(
    session: Session, workflow: Workflow, actor: audit.Actor, action: str, details: dict[str, Any]
) -> None:
    audit.record(
        session,
        tenant_id=workflow.tenant_id,
        actor=actor,
        action=f"workflow.{action}",
        object_type="workflow",
        object_id=workflow.id,
        details=details,
    )


def _address(value: str | None, field_name: str) -> str | None:
    if value is None:
        return None
    try:
        return normalize_email(value)
    except ValidationFailed:
        raise ValidationFailed("not a valid email address", field=field_name) from None


def create_workflow(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    name: str,
    sender_address: str,
    sender_name: str = "",
    reply_to: str | None = None,
    priority: str = "normal",
    draft: Mapping[str, Any],
    actor: audit.Actor,
) -> Workflow:
    """A draft workflow; its graph need only be well-formed until it is activated."""
    graph = load_graph(draft)
    _check_name_free(session, tenant_id, name)
    count = session.scalar(select(func.count()).where(Workflow.tenant_id == tenant_id)) or 0
    if count >= MAX_WORKFLOWS:
        raise Conflict(f"an organization has at most {MAX_WORKFLOWS} workflows")
    workflow = Workflow(
        tenant_id=tenant_id,
        name=name,
        sender_name=sender_name,
        sender_address=_address(sender_address, "sender_address") or "",
        reply_to=_address(reply_to, "reply_to"),
        priority=priority,
        draft=dump_graph(graph),
        status=WorkflowStatus.DRAFT,
        created_by_type=actor.type,
        created_by_id=actor.id,
    )
    session.add(workflow)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("a workflow with this name exists", field="name") from None
    _audit(session, workflow, actor, "create", {"steps": len(graph.steps)})
    return workflow


def update_workflow(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    *,
    changes: Mapping[str, Any],
    actor: audit.Actor,
    now: datetime | None = None,
) -> Workflow:
    """Change settings or the graph; a new graph of a live workflow is published now."""
    workflow = get_workflow(session, tenant_id, workflow_id)
    if workflow.status == WorkflowStatus.ARCHIVED:
        raise Conflict("an archived workflow cannot change")
    if "name" in changes and changes["name"] != workflow.name:
        _check_name_free(session, tenant_id, changes["name"], workflow.id)
    for key in ("sender_address", "reply_to"):
        if key in changes:
            changes = {**changes, key: _address(changes[key], key)}
    if "draft" in changes:
        live = workflow.status in (WorkflowStatus.ACTIVE, WorkflowStatus.PAUSED)
        graph = (
            check_graph(session, tenant_id, changes["draft"])
            if live
            else load_graph(changes["draft"])
        )
        changes = {**changes, "draft": dump_graph(graph)}
    for key, value in changes.items():
        if key in EDITABLE:
            setattr(workflow, key, value)
    workflow.updated_at = now or utcnow()
    if "sender_address" in changes and workflow.status == WorkflowStatus.ACTIVE:
        _check_sender(session, workflow)
    session.flush()
    _audit(session, workflow, actor, "update", {"fields": sorted(changes)})
    if "draft" in changes and workflow.status in (WorkflowStatus.ACTIVE, WorkflowStatus.PAUSED):
        publish(session, workflow, actor=actor, now=now)
    return workflow


def _check_sender(session: Session, workflow: Workflow) -> None:
    refused = ports.check_sender(session, workflow.tenant_id, workflow.sender_address)
    if refused:
        raise ValidationFailed(refused, field="sender_address")


def version_graph(session: Session, workflow_id: uuid.UUID, version: int) -> GraphShape:
    row = session.get(WorkflowVersion, (workflow_id, version))
    if row is None:
        raise ValidationFailed("the workflow has no published version")
    return parse_graph(row.graph)


@dataclass
class MigrationPlan:
    """What publishing a graph does to runs in flight."""

    staying: int = 0
    moved: dict[str, str] = field(default_factory=dict)  # removed step -> its new step
    exiting: list[str] = field(default_factory=list)  # removed steps without a follower
    affected_by_step: dict[str, int] = field(default_factory=dict)

    @property
    def affected(self) -> int:
        return sum(self.affected_by_step.values())


def _follower(old: GraphShape, removed: str, kept: set[str]) -> str | None:
    ids = [step.id for step in old.steps]
    for later in ids[ids.index(removed) + 1 :]:
        if later in kept:
            return later
    return None


def plan_migration(session: Session, workflow: Workflow, new_graph: GraphShape) -> MigrationPlan:
    """How many runs in flight a publication of ``new_graph`` would move or end."""
    plan = MigrationPlan()
    kept = {step.id for step in new_graph.steps}
    counts = session.execute(
        select(WorkflowRun.version, WorkflowRun.current_step, func.count())
        .where(
            WorkflowRun.tenant_id == workflow.tenant_id,
            WorkflowRun.workflow_id == workflow.id,
            WorkflowRun.status.in_(IN_FLIGHT),
        )
        .group_by(WorkflowRun.version, WorkflowRun.current_step)
    ).all()
    graphs: dict[int, GraphShape] = {}
    for version, step_id, count in counts:
        step_id = step_id or ""
        if step_id in kept:
            plan.staying += count
            continue
        old = graphs.get(version) or graphs.setdefault(
            version, version_graph(session, workflow.id, version)
        )
        target = _follower(old, step_id, kept) if step_id in old.by_id() else None
        if target is None:
            plan.exiting.append(step_id)
        else:
            plan.moved[step_id] = target
        plan.affected_by_step[step_id] = plan.affected_by_step.get(step_id, 0) + count
    return plan


def preview_publish(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID, draft: Any
) -> MigrationPlan:
    workflow = get_workflow(session, tenant_id, workflow_id)
    graph = check_graph(session, tenant_id, draft)
    return plan_migration(session, workflow, graph)


def publish(
    session: Session, workflow: Workflow, *, actor: audit.Actor, now: datetime | None = None
) -> WorkflowVersion:
    """Publish the draft as the next version and migrate the runs in flight to it."""
    now = now or utcnow()
    graph = check_graph(session, workflow.tenant_id, workflow.draft)
    _check_sender(session, workflow)
    plan = plan_migration(session, workflow, graph) if workflow.current_version else MigrationPlan()
    version = WorkflowVersion(
        tenant_id=workflow.tenant_id,
        workflow_id=workflow.id,
        version=workflow.current_version + 1,
        graph=dump_graph(graph),
        published_at=now,
        migration={
            "moved": sum(plan.affected_by_step[s] for s in plan.moved),
            "exited": sum(plan.affected_by_step[s] for s in plan.exiting),
        },
        published_by_type=actor.type,
        published_by_id=actor.id,
    )
    session.add(version)
    workflow.current_version = version.version
    session.flush()
    _migrate_runs(session, workflow, plan, now)
    _audit(
        session,
        workflow,
        actor,
        "publish",
        {
            "version": version.version,
            "moved": version.migration["moved"],
            "exited": version.migration["exited"],
        },
    )
    return version


def _in_flight_at(workflow: Workflow, steps: list[str]) -> Any:
    return (
        (WorkflowRun.tenant_id == workflow.tenant_id)
        & (WorkflowRun.workflow_id == workflow.id)
        & WorkflowRun.status.in_(IN_FLIGHT)
        & WorkflowRun.current_step.in_(steps)
    )


def _close_open_steps(
    session: Session, workflow: Workflow, steps: list[str], outcome: str, now: datetime
) -> None:
    runs = select(WorkflowRun.id).where(_in_flight_at(workflow, steps))
    session.execute(
        update(WorkflowRunStep)
        .where(WorkflowRunStep.run_id.in_(runs), WorkflowRunStep.left_at.is_(None))
        .values(left_at=now, outcome=outcome)
    )
    session.execute(delete(WorkflowWait).where(WorkflowWait.run_id.in_(runs)))


def _migrate_runs(session: Session, workflow: Workflow, plan: MigrationPlan, now: datetime) -> None:
    """Set-based: one UPDATE per removed step, one for every run that stays."""
    for removed, target in plan.moved.items():
        _close_open_steps(session, workflow, [removed], "migrated", now)
        session.execute(
            update(WorkflowRun)
            .where(_in_flight_at(workflow, [removed]))
            .values(current_step=target, status=RunStatus.ACTIVE, wake_at=now, wake_reason="")
        )
    if plan.exiting:
        _close_open_steps(session, workflow, plan.exiting, "step_removed", now)
        session.execute(
            update(WorkflowRun)
            .where(_in_flight_at(workflow, plan.exiting))
            .values(status=RunStatus.EXITED, wake_at=None, ended_at=now, current_step=None)
        )
    session.execute(
        update(WorkflowRun)
        .where(
            WorkflowRun.tenant_id == workflow.tenant_id,
            WorkflowRun.workflow_id == workflow.id,
            WorkflowRun.status.in_(IN_FLIGHT),
        )
        .values(version=workflow.current_version)
    )


# --- status changes ---------------------------------------------------------------

_MOVES = {
    "activate": ((WorkflowStatus.DRAFT,), WorkflowStatus.ACTIVE),
    "pause": ((WorkflowStatus.ACTIVE,), WorkflowStatus.PAUSED),
    "resume": ((WorkflowStatus.PAUSED,), WorkflowStatus.ACTIVE),
    "archive": (
        (WorkflowStatus.DRAFT, WorkflowStatus.ACTIVE, WorkflowStatus.PAUSED),
        WorkflowStatus.ARCHIVED,
    ),
}


def change_status(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    action: str,
    *,
    actor: audit.Actor,
    now: datetime | None = None,
) -> Workflow:
    """activate (checks and publishes), pause, resume or archive (ends the runs)."""
    now = now or utcnow()
    workflow = get_workflow(session, tenant_id, workflow_id)
    allowed, target = _MOVES[action]
    if workflow.status not in allowed:
        raise Conflict(f"a {workflow.status} workflow cannot {action}", field="status")
    if action == "activate":
        publish(session, workflow, actor=actor, now=now)
    if action == "archive":
        runs = select(WorkflowRun.id).where(
            WorkflowRun.tenant_id == tenant_id,
            WorkflowRun.workflow_id == workflow.id,
            WorkflowRun.status.in_(IN_FLIGHT),
        )
        session.execute(
            update(WorkflowRunStep)
            .where(WorkflowRunStep.run_id.in_(runs), WorkflowRunStep.left_at.is_(None))
            .values(left_at=now, outcome="archived")
        )
        session.execute(delete(WorkflowWait).where(WorkflowWait.run_id.in_(runs)))
        session.execute(
            update(WorkflowRun)
            .where(WorkflowRun.id.in_(runs))
            .values(status=RunStatus.EXITED, wake_at=None, ended_at=now)
        )
    workflow.status = target
    workflow.updated_at = now
    session.flush()
    _audit(session, workflow, actor, action, {"status": target})
    return workflow


def remove_contact(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    contact_id: uuid.UUID,
    *,
    actor: audit.Actor,
    now: datetime | None = None,
) -> WorkflowRun:
    """End a contact's run (exited); the contact never re-enters the workflow."""
    now = now or utcnow()
    workflow = get_workflow(session, tenant_id, workflow_id)
    run = get_run(session, tenant_id, workflow_id, contact_id)
    if run.status in IN_FLIGHT:
        session.execute(
            update(WorkflowRunStep)
            .where(WorkflowRunStep.run_id == run.id, WorkflowRunStep.left_at.is_(None))
            .values(left_at=now, outcome="removed")
        )
        session.execute(delete(WorkflowWait).where(WorkflowWait.run_id == run.id))
        run.status, run.wake_at, run.ended_at = RunStatus.EXITED, None, now
        session.flush()
    _audit(session, workflow, actor, "remove_contact", {"run": str(run.id)})
    return run


# --- reading runs and counts ----------------------------------------------------------


def get_run(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID, contact_id: uuid.UUID
) -> WorkflowRun:
    run = session.scalars(
        select(WorkflowRun).where(
            WorkflowRun.tenant_id == tenant_id,
            WorkflowRun.workflow_id == workflow_id,
            WorkflowRun.contact_id == contact_id,
        )
    ).first()
    if run is None:
        raise NotFound("the contact has no run in this workflow")
    return run


def list_runs(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    *,
    status: str | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[WorkflowRun]:
    workflow = get_workflow(session, tenant_id, workflow_id)
    query = select(WorkflowRun).where(
        WorkflowRun.tenant_id == tenant_id, WorkflowRun.workflow_id == workflow.id
    )
    if status is not None:
        query = query.where(WorkflowRun.status == status)
    if after is not None:
        query = query.where(WorkflowRun.id > after)
    return list(session.scalars(query.order_by(WorkflowRun.id).limit(limit)))


def run_history(session: Session, run: WorkflowRun) -> list[WorkflowRunStep]:
    return list(
        session.scalars(
            select(WorkflowRunStep)
            .where(WorkflowRunStep.run_id == run.id)
            .order_by(WorkflowRunStep.seq)
        )
    )


@dataclass
class StepCounts:
    current: dict[str, int]
    processed: dict[str, int]
    runs: dict[str, int]


def step_counts(session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> StepCounts:
    """Contacts at each step now, contacts that went through each step ever, and runs
    by status (enrolled = their sum)."""
    workflow = get_workflow(session, tenant_id, workflow_id)
    current = session.execute(
        select(WorkflowRun.current_step, func.count())
        .where(
            WorkflowRun.tenant_id == tenant_id,
            WorkflowRun.workflow_id == workflow.id,
            WorkflowRun.status.in_(IN_FLIGHT),
        )
        .group_by(WorkflowRun.current_step)
    ).all()
    processed = session.execute(
        select(WorkflowRunStep.step_id, func.count())
        .where(
            WorkflowRunStep.tenant_id == tenant_id,
            WorkflowRunStep.workflow_id == workflow.id,
            WorkflowRunStep.left_at.is_not(None),
        )
        .group_by(WorkflowRunStep.step_id)
    ).all()
    runs = session.execute(
        select(WorkflowRun.status, func.count())
        .where(WorkflowRun.tenant_id == tenant_id, WorkflowRun.workflow_id == workflow.id)
        .group_by(WorkflowRun.status)
    ).all()
    return StepCounts(
        current={str(step): int(n) for step, n in current},
        processed={str(step): int(n) for step, n in processed},
        runs={str(status): int(n) for status, n in runs},
    )
