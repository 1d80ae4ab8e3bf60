"""Read-only questions the workflow console asks that the service does not answer itself:
runs by status for many workflows at once, each email step's sent/opened/clicked
figures, the published versions with who published them and what changed, and one
contact's runs. Ids, codes and counts only: nothing here reads PHI.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Uuid, and_, case, cast, distinct, func, select
from sqlalchemy.orm import Session

from carepost.accounts.models import User
from carepost.core.errors import NotFound
from carepost.messages.models import MessageEvent
from carepost.workflows.models import (
    Workflow,
    WorkflowRun,
    WorkflowRunStep,
    WorkflowVersion,
)
from carepost.workflows.service import get_workflow


def run_counts(
    session: Session, tenant_id: uuid.UUID, workflow_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """Runs by status for each workflow (one grouped query)."""
    ids = list(workflow_ids)
    found: dict[uuid.UUID, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return found
    rows = session.execute(
        select(WorkflowRun.workflow_id, WorkflowRun.status, func.count())
        .where(WorkflowRun.tenant_id == tenant_id, WorkflowRun.workflow_id.in_(ids))
        .group_by(WorkflowRun.workflow_id, WorkflowRun.status)
    ).all()
    for workflow_id, status, count in rows:
        found[workflow_id][str(status)] = int(count)
    return found


@dataclass
class EmailStats:
    """One email step: messages sent, and how many of them people opened or clicked
    (machine opens and link scanners are not counted)."""

    sent: int = 0
    opened: int = 0
    clicked: int = 0


def email_stats(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID
) -> dict[str, EmailStats]:
    """Per email step id: sent, opened, clicked (messages, each counted once).

    Two grouped queries, whatever the number of runs: the sent counts from the run
    history, and the distinct opened and clicked messages from a join of that history
    (its ``detail.message_id``) with the message events."""
    workflow = get_workflow(session, tenant_id, workflow_id)
    sent = (
        WorkflowRunStep.tenant_id == tenant_id,
        WorkflowRunStep.workflow_id == workflow.id,
        WorkflowRunStep.step_type == "send_email",
        WorkflowRunStep.outcome == "sent",
    )
    stats: dict[str, EmailStats] = {}
    for step_id, count in session.execute(
        select(WorkflowRunStep.step_id, func.count()).where(*sent).group_by(WorkflowRunStep.step_id)
    ):
        stats[step_id] = EmailStats(sent=int(count))
    if not stats:
        return stats
    machine = func.coalesce(MessageEvent.detail["machine"].as_boolean(), False)
    engaged = (
        select(
            WorkflowRunStep.step_id,
            func.count(distinct(case((MessageEvent.kind == "opened", MessageEvent.message_id)))),
            func.count(distinct(case((MessageEvent.kind == "clicked", MessageEvent.message_id)))),
        )
        .join(
            MessageEvent,
            and_(
                MessageEvent.message_id == _message_id_of(session, WorkflowRunStep.detail),
                MessageEvent.tenant_id == tenant_id,
                MessageEvent.kind.in_(("opened", "clicked")),
                machine.is_(False),
            ),
        )
        .where(*sent)
        .group_by(WorkflowRunStep.step_id)
    )
    for step_id, opened, clicked in session.execute(engaged):
        entry = stats.setdefault(step_id, EmailStats())
        entry.opened, entry.clicked = int(opened), int(clicked)
    return stats


def _message_id_of(session: Session, detail: Any) -> ColumnElement[Any]:
    """The run step's ``detail.message_id`` in the form ``message_events.message_id``
    is stored in: a uuid on PostgreSQL, 32 hex digits on SQLite."""
    text = detail["message_id"].as_string()
    if session.get_bind().dialect.name == "postgresql":
        return cast(text, Uuid())
    return func.replace(text, "-", "")


# --- versions -------------------------------------------------------------------------


@dataclass
class GraphDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def summary(self) -> str:
        parts = []
        for label, ids in (("added", self.added), ("removed", self.removed)):
            if ids:
                parts.append(f"{len(ids)} {label} ({', '.join(ids)})")
        if self.changed:
            parts.append(f"{len(self.changed)} changed ({', '.join(self.changed)})")
        return "; ".join(parts) or "no step changed"


def _steps(graph: Mapping[str, Any] | None) -> dict[str, Any]:
    steps = (graph or {}).get("steps") or []
    return {str(s.get("id")): s for s in steps if isinstance(s, dict)}


def diff_graphs(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> GraphDiff:
    """Steps added, removed and changed (by id) from ``old`` to ``new``."""
    before, after = _steps(old), _steps(new)
    return GraphDiff(
        added=[i for i in after if i not in before],
        removed=[i for i in before if i not in after],
        changed=[i for i in after if i in before and before[i] != after[i]],
    )


@dataclass
class VersionEntry:
    version: WorkflowVersion
    by: str
    diff: GraphDiff


def _people(session: Session, tenant_id: uuid.UUID, ids: set[str]) -> dict[str, str]:
    wanted = []
    for raw in ids:
        try:
            wanted.append(uuid.UUID(raw))
        except ValueError:
            continue
    if not wanted:
        return {}
    rows = session.execute(
        select(User.id, User.email).where(User.tenant_id == tenant_id, User.id.in_(wanted))
    ).all()
    return {str(user_id): str(email) for user_id, email in rows}


def version_history(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID
) -> list[VersionEntry]:
    """The published versions, newest first, each with its publisher and its changes
    from the version before it."""
    workflow = get_workflow(session, tenant_id, workflow_id)
    rows = list(
        session.scalars(
            select(WorkflowVersion)
            .where(
                WorkflowVersion.tenant_id == tenant_id,
                WorkflowVersion.workflow_id == workflow.id,
            )
            .order_by(WorkflowVersion.version)
        )
    )
    people = _people(
        session, tenant_id, {r.published_by_id for r in rows if r.published_by_type == "user"}
    )
    entries: list[VersionEntry] = []
    previous: dict[str, Any] | None = None
    for row in rows:
        by = people.get(row.published_by_id) or (
            f"{row.published_by_type} {row.published_by_id[:8]}".strip()
        )
        entries.append(VersionEntry(row, by, diff_graphs(previous, row.graph)))
        previous = row.graph
    return list(reversed(entries))


def get_version(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID, version: int
) -> WorkflowVersion:
    workflow = get_workflow(session, tenant_id, workflow_id)
    row = session.get(WorkflowVersion, (workflow.id, version))
    if row is None or row.tenant_id != tenant_id:
        raise NotFound("no such version")
    return row


# --- a contact's runs -------------------------------------------------------------------


def contact_runs(
    session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID
) -> list[tuple[Workflow, WorkflowRun]]:
    """Every run of the contact, newest first, with its workflow."""
    rows = session.execute(
        select(Workflow, WorkflowRun)
        .join(WorkflowRun, WorkflowRun.workflow_id == Workflow.id)
        .where(WorkflowRun.tenant_id == tenant_id, WorkflowRun.contact_id == contact_id)
        .order_by(WorkflowRun.entered_at.desc())
    ).all()
    return [(w, r) for w, r in rows]
