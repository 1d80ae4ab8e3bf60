"""What each step type does to a run: one handler per type, in a registry.

A handler is called when a run enters its step (``resumed`` false) and, for waits,
again when the run wakes (``resumed`` true). It returns a :class:`Transition`: go
on to a step, wait until an instant (optionally for an event), or end the run.
Effects (queue an email, change a list) go through the context, which skips them in
a dry run (:func:`carepost.workflows.simulate.simulate`), so the simulation walks the
very same decisions. A new step type registers its handler with
:func:`register_handler` next to its model (:func:`carepost.workflows.steps.register_step`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit.service import Actor
from carepost.contacts import lists, stages
from carepost.contacts.id_sets import dialect_of
from carepost.contacts.models import Contact
from carepost.core.database import new_id
from carepost.crypto.keyring import TenantKeys
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, SendLimits, SendOutcome, send_messages
from carepost.segments.compiler import compile_predicate
from carepost.segments.nodes import Node
from carepost.segments.rules import parse_rule
from carepost.segments.vocabulary import load_vocabulary
from carepost.webhooks import service as webhooks
from carepost.webhooks.models import WebhookDelivery
from carepost.workflows.models import Workflow, WorkflowRun
from carepost.workflows.steps import (
    Branch,
    CallWebhook,
    Exit,
    GoTo,
    GoToWorkflow,
    ListAdd,
    ListRemove,
    SendEmail,
    SetStage,
    StepBase,
    UntilDate,
    UntilField,
    UntilWindow,
    WaitDuration,
    WaitForEvent,
    WaitUntil,
)
from carepost.workflows.timing import field_wake_at, next_window_open, zone


@dataclass
class Transition:
    outcome: str
    next_step: str | None = None
    wait_until: datetime | None = None
    event_key: str | None = None
    message_id: uuid.UUID | None = None
    end: str | None = None  # completed or exited: the run ends here
    detail: dict[str, Any] | None = None


@dataclass
class RunContext:
    """What a handler may read and do for one run at one instant."""

    session: Session
    keys: TenantKeys
    workflow: Workflow
    run: WorkflowRun
    contact: Contact | None
    now: datetime
    limits: SendLimits
    seq: int
    dry_run: bool = False
    # A simulation's assumption: the awaited events that happen (else each wait times out).
    events: frozenset[str] = frozenset()
    rules: dict[tuple[int, str, int], Node] = field(default_factory=dict)

    @property
    def actor(self) -> Actor:
        return Actor(type="workflow", id=str(self.workflow.id), label="workflow")


Handler = Callable[[Any, RunContext, bool], Transition]
HANDLERS: dict[str, Handler] = {}


def register_handler(step_type: str) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        HANDLERS[step_type] = handler
        return handler

    return decorate


def idempotency_key(run_id: uuid.UUID, step_id: str, seq: int) -> str:
    """The outbox key of a run's email: the same run, step and visit never queue twice."""
    return f"workflow:{run_id}:{step_id}:{seq}"


@register_handler("send_email")
def send_email(step: SendEmail, ctx: RunContext, resumed: bool) -> Transition:
    if ctx.dry_run:
        return Transition("would_send", step.next)
    workflow = ctx.workflow
    message = MessageIn.model_validate(
        {
            "contact_id": ctx.run.contact_id,
            "from": workflow.sender_address,
            "from_name": workflow.sender_name or None,
            "reply_to": workflow.reply_to,
            "template_id": step.template_id,
            "purpose": step.purpose,
            "priority": workflow.priority,
            "tags": ["workflow"],
            "metadata": {"workflow_id": str(workflow.id), "step_id": step.id},
        }
    )
    key = idempotency_key(ctx.run.id, step.id, ctx.seq)
    [result] = send_messages(
        ctx.session,
        ctx.keys,
        [(message, key)],
        SendContext(actor=ctx.actor, limits=ctx.limits),
        now=ctx.now,
    )
    return sent_transition(step, ctx, result)


def sent_transition(step: SendEmail, ctx: RunContext, result: SendOutcome) -> Transition:
    """Where a run goes once its email was handed to the outbox (one or a batch)."""
    if result.id is not None:
        ctx.run.sent = {**(ctx.run.sent or {}), step.id: str(result.id)}
    outcome = {"queued": "sent", "suppressed": "suppressed"}.get(result.state, "not_sent")
    detail: dict[str, Any] = {"message_id": str(result.id) if result.id else None}
    if result.reason:
        detail["reason"] = result.reason
    if result.errors:
        detail["errors"] = [e.field for e in result.errors]
    return Transition(outcome, step.next, detail=detail)


@register_handler("wait_duration")
def wait_duration(step: WaitDuration, ctx: RunContext, resumed: bool) -> Transition:
    if resumed:
        return Transition("waited", step.next)
    return Transition("waiting", wait_until=ctx.now + timedelta(seconds=step.duration.seconds))


def until_instant(until: Any, ctx: RunContext) -> datetime | None:
    """When a Wait until ends for this contact (None: no usable contact value)."""
    contact_zone = ctx.contact.timezone if ctx.contact is not None else None
    if isinstance(until, UntilDate):
        return until.at
    if isinstance(until, UntilField):
        tz = zone(contact_zone if until.contact_timezone else None, until.timezone)
        value = (ctx.contact.custom or {}).get(until.field) if ctx.contact is not None else None
        return field_wake_at(value, until, tz)
    assert isinstance(until, UntilWindow)
    tz = zone(contact_zone if until.contact_timezone else None, until.timezone)
    return next_window_open(ctx.now, until, tz)


@register_handler("wait_until")
def wait_until(step: WaitUntil, ctx: RunContext, resumed: bool) -> Transition:
    if resumed:
        return Transition("waited", step.next)
    instant = until_instant(step.until, ctx)
    if instant is None:
        return Transition("no_date", step.next)
    if instant <= ctx.now:
        return Transition("already_passed", step.next)
    return Transition("waiting", wait_until=instant)


def _awaited_message(step: WaitForEvent, ctx: RunContext) -> uuid.UUID | None:
    sent = ctx.run.sent or {}
    if step.event.step is not None:
        found = sent.get(step.event.step)
    else:
        # The run's latest email: the last email step in visiting order.
        found = next((sent[s] for s in reversed(ctx.run.visited or []) if s in sent), None)
    return uuid.UUID(found) if found else None


@register_handler("wait_for_event")
def wait_for_event(step: WaitForEvent, ctx: RunContext, resumed: bool) -> Transition:
    key = step.event.key()
    if ctx.dry_run:
        if key in ctx.events:
            return Transition("event", step.next)
        return Transition(
            "timeout",
            step.timeout_next or step.next,
            detail={"at": (ctx.now + timedelta(seconds=step.timeout.seconds)).isoformat()},
        )
    if resumed:
        if ctx.run.wake_reason == "event":
            return Transition("event", step.next)
        return Transition("timeout", step.timeout_next or step.next)
    message_id = _awaited_message(step, ctx) if step.event.kind in ("opened", "clicked") else None
    return Transition(
        "waiting",
        wait_until=ctx.now + timedelta(seconds=step.timeout.seconds),
        event_key=key,
        message_id=message_id,
    )


def _rule(ctx: RunContext, step: Branch, index: int) -> Node:
    cache_key = (ctx.run.version, step.id, index)
    if cache_key not in ctx.rules:
        vocabulary = load_vocabulary(ctx.session, ctx.keys.tenant_id)
        ctx.rules[cache_key] = parse_rule(step.conditions[index].rule, vocabulary, now=ctx.now)
    return ctx.rules[cache_key]


@register_handler("branch")
def branch(step: Branch, ctx: RunContext, resumed: bool) -> Transition:
    dialect = dialect_of(ctx.session)
    for index, condition in enumerate(step.conditions):
        predicate = compile_predicate(_rule(ctx, step, index), ctx.keys, dialect)
        matched = ctx.session.scalar(
            select(Contact.id).where(
                Contact.tenant_id == ctx.keys.tenant_id,
                Contact.id == ctx.run.contact_id,
                predicate,
            )
        )
        if matched is not None:
            return Transition(f"condition:{index}", condition.next)
    return Transition("fallback", step.fallback)


@register_handler("goto")
def goto(step: GoTo, ctx: RunContext, resumed: bool) -> Transition:
    return Transition("goto", step.target)


@register_handler("list_add")
def list_add(step: ListAdd, ctx: RunContext, resumed: bool) -> Transition:
    if not ctx.dry_run:
        lists.change_members(
            ctx.session,
            ctx.keys.tenant_id,
            step.list_id,
            add=[ctx.run.contact_id],
            remove=[],
            actor=ctx.actor,
            now=ctx.now,
        )
    return Transition("added", step.next)


@register_handler("list_remove")
def list_remove(step: ListRemove, ctx: RunContext, resumed: bool) -> Transition:
    if not ctx.dry_run:
        lists.change_members(
            ctx.session,
            ctx.keys.tenant_id,
            step.list_id,
            add=[],
            remove=[ctx.run.contact_id],
            actor=ctx.actor,
            now=ctx.now,
        )
    return Transition("removed", step.next)


@register_handler("set_stage")
def set_stage(step: SetStage, ctx: RunContext, resumed: bool) -> Transition:
    if not ctx.dry_run:
        stages.change_stage(
            ctx.session, ctx.keys.tenant_id, ctx.run.contact_id, step.stage, actor=ctx.actor
        )
    return Transition("stage_set", step.next)


WEBHOOK_EVENT = "workflow.step"


@register_handler("webhook")
def call_webhook(step: CallWebhook, ctx: RunContext, resumed: bool) -> Transition:
    """The delivery is written in the run's transaction (a crash loses or repeats
    neither); signing and retries are the webhook worker's (carepost/webhooks)."""
    if ctx.dry_run:
        return Transition("would_call", step.next)
    endpoint = webhooks.get_endpoint(ctx.session, ctx.keys.tenant_id, step.endpoint_id)
    event_id = new_id()
    data = {
        "workflow_id": str(ctx.workflow.id),
        "run_id": str(ctx.run.id),
        "step_id": step.id,
        "contact_id": str(ctx.run.contact_id),
    }
    delivery = WebhookDelivery(
        id=new_id(),
        tenant_id=ctx.keys.tenant_id,
        endpoint_id=endpoint.id,
        event_id=event_id,
        event_type=WEBHOOK_EVENT,
        payload={
            "id": str(event_id),
            "type": WEBHOOK_EVENT,
            "created_at": ctx.now.isoformat(),
            "organization_id": str(ctx.keys.tenant_id),
            "data": data,
        },
        state="pending",
        next_attempt_at=ctx.now,
    )
    ctx.session.add(delivery)
    return Transition("queued", step.next, detail={"delivery_id": str(delivery.id)})


@register_handler("exit")
def exit_step(step: Exit, ctx: RunContext, resumed: bool) -> Transition:
    return Transition("end", end="completed")


@register_handler("goto_workflow")
def goto_workflow(step: GoToWorkflow, ctx: RunContext, resumed: bool) -> Transition:
    """Start the contact's run of another workflow (its entry or ``step``) and complete
    this one. The target's no re-entry constraint decides (INSERT … ON CONFLICT DO
    NOTHING): a contact already in or once through it is not moved (``loop_prevented``),
    so workflows pointing at each other cannot loop. A target deleted, of another
    tenant or not active ends this run with ``target_unavailable``."""
    detail = {"workflow_id": str(step.workflow_id)}
    if ctx.dry_run:
        return Transition("would_move", end="completed", detail=detail)
    return _move_to_workflow(step, ctx, detail)


def handle(step: StepBase, ctx: RunContext, resumed: bool) -> Transition:
    handler = HANDLERS.get(getattr(step, "type", ""))
    if handler is None:
        return Transition("unknown_step", end="exited")
    return handler(step, ctx, resumed)


def _move_to_workflow(step: GoToWorkflow, ctx: RunContext, detail: dict[str, Any]) -> Transition:
    from carepost.workflows.models import RunStatus, WorkflowStatus
    from carepost.workflows.service import version_graph
    from carepost.workflows.triggers import _insert_ignoring_existing

    target = ctx.session.get(Workflow, step.workflow_id)
    if (
        target is None
        or target.tenant_id != ctx.keys.tenant_id
        or target.id == ctx.workflow.id
        or target.status != WorkflowStatus.ACTIVE
    ):
        return Transition("target_unavailable", end="completed", detail=detail)
    graph = version_graph(ctx.session, target.id, target.current_version)
    entry = step.step if step.step in graph.by_id() else graph.start
    inserted = _insert_ignoring_existing(
        ctx.session,
        [
            {
                "id": new_id(),
                "tenant_id": target.tenant_id,
                "workflow_id": target.id,
                "contact_id": ctx.run.contact_id,
                "version": target.current_version,
                "status": RunStatus.ACTIVE,
                "current_step": entry,
                "entered_at": ctx.now,
                "wake_at": ctx.now,
                "wake_reason": "",
                "visited": [],
                "sent": {},
                "source": "workflow_goto",
                "lease_owner": "",
            }
        ],
    )
    detail["step"] = entry
    return Transition("moved_to" if inserted else "loop_prevented", end="completed", detail=detail)


from carepost.workflows.update_field import update_field as _update_field  # noqa: E402

register_handler("update_field")(_update_field)

from carepost.workflows.segment_step import add_one as _segment_add  # noqa: E402

register_handler("segment_add")(_segment_add)
