"""A dry run of a workflow for one sample contact: the path and the times, nothing sent.

The simulation walks the same handlers as the engine with effects switched off: an
email step says it would send, a wait moves a simulated clock to its end, a Wait for
Event takes its event path when the event is among those assumed to happen (else
its timeout path), branches evaluate the real contact. Loop prevention ends the
walk as it would end the run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from carepost.contacts.service import get_contact
from carepost.core.database import utcnow
from carepost.crypto.keyring import TenantKeys
from carepost.messages.sending import SendLimits
from carepost.workflows.handlers import RunContext, handle
from carepost.workflows.models import RunStatus, WorkflowRun
from carepost.workflows.service import get_workflow
from carepost.workflows.validation import load_graph


@dataclass
class SimulatedStep:
    step_id: str
    type: str
    at: datetime
    outcome: str


@dataclass
class Simulation:
    path: list[SimulatedStep]
    ends: str  # completed or exited


def simulate(
    session: Session,
    keys: TenantKeys,
    workflow_id: uuid.UUID,
    contact_id: uuid.UUID,
    *,
    events: frozenset[str] = frozenset(),
    now: datetime | None = None,
    limits: SendLimits,
) -> Simulation:
    """Walk the workflow's draft for the contact, starting at ``now``."""
    workflow = get_workflow(session, keys.tenant_id, workflow_id)
    contact = get_contact(session, keys.tenant_id, contact_id)
    graph = load_graph(workflow.draft)
    steps = graph.by_id()
    clock = now or utcnow()
    run = WorkflowRun(
        id=uuid.uuid4(),
        tenant_id=keys.tenant_id,
        workflow_id=workflow.id,
        contact_id=contact.id,
        version=workflow.current_version,
        status=RunStatus.ACTIVE,
        visited=[],
        sent={},
        wake_reason="",
    )
    context = RunContext(
        session, keys, workflow, run, contact, clock, limits, seq=0, dry_run=True, events=events
    )
    path: list[SimulatedStep] = []
    current: str | None = graph.start
    while current is not None:
        step = steps.get(current)
        if step is None:
            return Simulation(path, RunStatus.EXITED)
        if step.id in run.visited:
            path.append(SimulatedStep(step.id, step.type, context.now, "loop_prevented"))  # type: ignore[attr-defined]
            return Simulation(path, RunStatus.COMPLETED)
        run.visited = [*run.visited, step.id]
        transition = handle(step, context, False)
        if transition.wait_until is not None:
            context.now = transition.wait_until
            transition = handle(step, context, True)
        path.append(SimulatedStep(step.id, step.type, context.now, transition.outcome))  # type: ignore[attr-defined]
        if transition.end is not None:
            return Simulation(path, transition.end)
        current = transition.next_step
    return Simulation(path, RunStatus.COMPLETED)
