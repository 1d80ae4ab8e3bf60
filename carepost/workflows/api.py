"""REST routes for workflows (``/workflows``): define, validate, activate, enroll, follow.

Reading needs ``workflows:read``, changing ``workflows:write``; enrolling contacts,
removing them and posting events ``workflows:enroll``. Errors are problem+json
whose pointers name the step and field at fault.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from carepost.accounts.principal import Principal
from carepost.api.deps import get_runtime, require
from carepost.api.pagination import Page, decode_cursor, encode_cursor
from carepost.contacts import events as contact_events
from carepost.core.database import utcnow
from carepost.core.errors import FieldError, ValidationFailed
from carepost.core.runtime import Runtime
from carepost.messages.sending import SendLimits
from carepost.workflows import engine, entry, service, triggers, wakeups
from carepost.workflows.schemas import (
    CountsOut,
    DraftIn,
    EnrollIn,
    EnrollOut,
    EventIn,
    EventOut,
    MigrationOut,
    RunOut,
    RunStepOut,
    SimulateIn,
    SimulationOut,
    TriggerIn,
    TriggerOut,
    WorkflowCreate,
    WorkflowOut,
    WorkflowUpdate,
)
from carepost.workflows.simulate import simulate

router = APIRouter(prefix="/workflows", tags=["workflows"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Reader = Annotated[Principal, Depends(require("workflows:read"))]
Writer = Annotated[Principal, Depends(require("workflows:write"))]
Enroller = Annotated[Principal, Depends(require("workflows:enroll"))]
Cursor = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=500)]


@router.get("", summary="List the workflows")
def list_workflows(
    runtime: RuntimeDep, principal: Reader, cursor: Cursor = None, limit: Limit = 100
) -> Page[WorkflowOut]:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_workflows(
            session, principal.tenant_id, after=decode_cursor(cursor), limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page[WorkflowOut](
            items=[WorkflowOut.of(row) for row in rows],
            next_cursor=encode_cursor(rows[-1].id) if more else None,
        )


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a draft workflow")
def create_workflow(body: WorkflowCreate, runtime: RuntimeDep, principal: Writer) -> WorkflowOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.create_workflow(
            session,
            principal.tenant_id,
            name=body.name,
            sender_address=body.sender_address,
            sender_name=body.sender_name,
            reply_to=body.reply_to,
            priority=body.priority,
            draft=body.draft,
            actor=principal.actor,
        )
        return WorkflowOut.of(row)


@router.post(
    "/events",
    summary="A named custom event for a contact: wakes its runs waiting for it at once",
)
def post_event(body: EventIn, runtime: RuntimeDep, principal: Enroller) -> EventOut:
    now = utcnow()
    item = {
        "contact_id": str(body.contact_id),
        "kind": body.name,
        "source": "workflow_api",
        "occurred_at": (body.occurred_at or now).isoformat(),
    }
    with runtime.bound_session(principal.keys) as session:
        [result] = contact_events.record_events(
            session, principal.keys, [item], actor=principal.actor, now=now
        )
        if result.errors:
            raise ValidationFailed(
                result.errors[0].message,
                errors=[FieldError(f"#/body/{e.field}", e.message) for e in result.errors],
            )
        woke = engine.deliver_event(
            session, principal.tenant_id, [body.contact_id], f"custom:{body.name}", now
        )
        # Workflows triggered by this event (and, for a form, by that form) enroll it.
        entry.enroll_on(session, principal.tenant_id, "event", body.name, [body.contact_id], now)
        if body.name == "form_submitted" and body.form_id is not None:
            more, _ = wakeups.on_form_submitted(
                session, principal.tenant_id, body.contact_id, body.form_id, now
            )
            woke += more
        return EventOut(woke=woke)


@router.get("/{workflow_id}", summary="Get a workflow")
def get_workflow(workflow_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> WorkflowOut:
    with runtime.bound_session(principal.keys) as session:
        return WorkflowOut.of(service.get_workflow(session, principal.tenant_id, workflow_id))


@router.patch(
    "/{workflow_id}",
    summary="Change a workflow; a new graph of an active workflow is published at once",
)
def update_workflow(
    workflow_id: uuid.UUID, body: WorkflowUpdate, runtime: RuntimeDep, principal: Writer
) -> WorkflowOut:
    with runtime.bound_session(principal.keys) as session:
        row = service.update_workflow(
            session, principal.tenant_id, workflow_id, changes=body.changes(), actor=principal.actor
        )
        return WorkflowOut.of(row)


@router.post(
    "/{workflow_id}/validate", summary="Check a graph as activation would (422 with each problem)"
)
def validate(
    workflow_id: uuid.UUID, body: DraftIn, runtime: RuntimeDep, principal: Reader
) -> MigrationOut:
    with runtime.bound_session(principal.keys) as session:
        plan = service.preview_publish(session, principal.tenant_id, workflow_id, body.draft)
        return MigrationOut.of(plan)


def _status_route(action: str, summary: str) -> None:
    @router.post(f"/{{workflow_id}}/{action}", summary=summary, name=f"{action}_workflow")
    def change(workflow_id: uuid.UUID, runtime: RuntimeDep, principal: Writer) -> WorkflowOut:
        with runtime.bound_session(principal.keys) as session:
            row = service.change_status(
                session, principal.tenant_id, workflow_id, action, actor=principal.actor
            )
            return WorkflowOut.of(row)


_status_route("activate", "Check the draft and publish it: contacts may enter")
_status_route("pause", "Stop advancing runs (they keep their place)")
_status_route("resume", "Advance runs again")
_status_route("archive", "End the workflow and every run in it")


@router.post("/{workflow_id}/enroll", summary="Enroll contacts by id, a list or a segment")
def enroll(
    workflow_id: uuid.UUID, body: EnrollIn, runtime: RuntimeDep, principal: Enroller
) -> EnrollOut:
    named = [n for n in ("list_id", "segment_id") if getattr(body, n) is not None]
    if len(named) + bool(body.contact_ids) != 1:
        raise ValidationFailed(
            "give exactly one of contact_ids, list_id or segment_id", field="contact_ids"
        )
    with runtime.bound_session(principal.keys) as session:
        if body.list_id is not None:
            outcome = triggers.enroll_list(
                session, principal.tenant_id, workflow_id, body.list_id, actor=principal.actor
            )
        elif body.segment_id is not None:
            outcome = triggers.enroll_segment(
                session, principal.keys, workflow_id, body.segment_id, actor=principal.actor
            )
        else:
            outcome, unknown = triggers.enroll_by_api(
                session, principal.tenant_id, workflow_id, body.contact_ids, actor=principal.actor
            )
            if unknown:
                raise ValidationFailed(
                    "no such contact",
                    errors=[
                        FieldError(f"#/body/contact_ids/{i}", "no such contact") for i in unknown
                    ],
                )
        return EnrollOut(enrolled=outcome.enrolled, skipped=outcome.skipped)


@router.delete(
    "/{workflow_id}/runs/{contact_id}", summary="Remove a contact from the workflow (for good)"
)
def remove_contact(
    workflow_id: uuid.UUID, contact_id: uuid.UUID, runtime: RuntimeDep, principal: Enroller
) -> RunOut:
    with runtime.bound_session(principal.keys) as session:
        run = service.remove_contact(
            session, principal.tenant_id, workflow_id, contact_id, actor=principal.actor
        )
        return RunOut.of(run)


@router.get("/{workflow_id}/runs", summary="The workflow's runs, in id order")
def list_runs(
    workflow_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Reader,
    status_filter: Annotated[str | None, Query(alias="status", max_length=12)] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[RunOut]:
    with runtime.bound_session(principal.keys) as session:
        rows = service.list_runs(
            session,
            principal.tenant_id,
            workflow_id,
            status=status_filter,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page[RunOut](
            items=[RunOut.of(row) for row in rows],
            next_cursor=encode_cursor(rows[-1].id) if more else None,
        )


@router.get("/{workflow_id}/runs/{contact_id}/history", summary="The steps a contact took")
def run_history(
    workflow_id: uuid.UUID, contact_id: uuid.UUID, runtime: RuntimeDep, principal: Reader
) -> list[RunStepOut]:
    with runtime.bound_session(principal.keys) as session:
        run = service.get_run(session, principal.tenant_id, workflow_id, contact_id)
        return [RunStepOut.of(row) for row in service.run_history(session, run)]


@router.get("/{workflow_id}/counts", summary="Contacts per step: there now, and through ever")
def counts(workflow_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> CountsOut:
    with runtime.bound_session(principal.keys) as session:
        return CountsOut.of(service.step_counts(session, principal.tenant_id, workflow_id))


@router.post(
    "/{workflow_id}/simulate",
    summary="Dry-run the draft for a sample contact: the path and times, nothing sent",
)
def simulate_workflow(
    workflow_id: uuid.UUID, body: SimulateIn, runtime: RuntimeDep, principal: Reader
) -> SimulationOut:
    limits = SendLimits.from_settings(runtime.settings)
    with runtime.bound_session(principal.keys) as session:
        result = simulate(
            session,
            principal.keys,
            workflow_id,
            body.contact_id,
            events=frozenset(body.events),
            now=body.start_at,
            limits=limits,
        )
        return SimulationOut.of(result)


@router.get("/{workflow_id}/trigger", summary="How contacts enter the workflow on their own")
def get_trigger(workflow_id: uuid.UUID, runtime: RuntimeDep, principal: Reader) -> TriggerOut:
    with runtime.bound_session(principal.keys) as session:
        return TriggerOut(trigger=entry.get_trigger(session, principal.tenant_id, workflow_id))


@router.put(
    "/{workflow_id}/trigger",
    summary="Set (or with null remove) the trigger: list join, segment entry, date "
    "milestone, form submission or a named event",
)
def put_trigger(
    workflow_id: uuid.UUID, body: TriggerIn, runtime: RuntimeDep, principal: Writer
) -> TriggerOut:
    with runtime.bound_session(principal.keys) as session:
        config = entry.set_trigger(
            session, principal.tenant_id, workflow_id, body.trigger, actor=principal.actor
        )
        return TriggerOut(trigger=config)
