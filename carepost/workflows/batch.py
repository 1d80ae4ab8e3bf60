"""Step handlers for a whole group of runs at once: the set-based half of the engine.

The engine (:mod:`carepost.workflows.engine`) moves claimed runs one step per
round and groups them by (workflow version, step). A step type whose work is a
database write or a query registers a *batch handler* here: one statement (or
one batch of the sending path) for the group instead of one per run. It returns
one :class:`~carepost.workflows.handlers.Transition` per context, in order, with
exactly what the per-run handler would have returned for that run.

Step types without a batch handler (waits, Go To, Exit: pure Python; or a new
type that plugs in with only :func:`~carepost.workflows.handlers.register_handler`)
run through their per-run handler, so the registry stays open.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select

from carepost.contacts import lists
from carepost.contacts.id_sets import dialect_of, id_in
from carepost.contacts.models import Contact
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, send_messages
from carepost.segments.compiler import compile_predicate
from carepost.workflows.handlers import (
    RunContext,
    Transition,
    _rule,
    handle,
    idempotency_key,
    sent_transition,
)
from carepost.workflows.steps import Branch, ListAdd, ListRemove, SendEmail, StepBase

BatchHandler = Callable[[Any, Sequence[RunContext], bool], list[Transition]]
BATCH_HANDLERS: dict[str, BatchHandler] = {}


def register_batch_handler(step_type: str) -> Callable[[BatchHandler], BatchHandler]:
    def decorate(handler: BatchHandler) -> BatchHandler:
        BATCH_HANDLERS[step_type] = handler
        return handler

    return decorate


def has_batch_handler(step: StepBase) -> bool:
    return getattr(step, "type", "") in BATCH_HANDLERS


def handle_group(step: StepBase, contexts: Sequence[RunContext], resumed: bool) -> list[Transition]:
    """The transitions of the group's runs, set-based when the step type allows."""
    handler = BATCH_HANDLERS.get(getattr(step, "type", ""))
    if handler is None:
        return [handle(step, context, resumed) for context in contexts]
    transitions = handler(step, contexts, resumed)
    if len(transitions) != len(contexts):  # a handler's bug must not shift outcomes
        raise AssertionError(f"the {step.type} batch handler lost runs")  # type: ignore[attr-defined]
    return transitions


@register_batch_handler("send_email")
def send_email_batch(
    step: SendEmail, contexts: Sequence[RunContext], resumed: bool
) -> list[Transition]:
    """One pass of the sending path (consent, suppression, rendering, one insert)
    for the whole group; each email's idempotency key is its run, step and visit."""
    first = contexts[0]
    workflow = first.workflow
    common = {
        "from": workflow.sender_address,
        "from_name": workflow.sender_name or None,
        "reply_to": workflow.reply_to,
        "template_id": step.template_id,
        "purpose": step.purpose,
        "priority": workflow.priority,
        "tags": ["workflow"],
        "metadata": {"workflow_id": str(workflow.id), "step_id": step.id},
    }
    requests = [
        (
            MessageIn.model_validate({**common, "contact_id": context.run.contact_id}),
            idempotency_key(context.run.id, step.id, context.seq),
        )
        for context in contexts
    ]
    results = send_messages(
        first.session,
        first.keys,
        requests,
        SendContext(actor=first.actor, limits=first.limits),
        now=first.now,
    )
    results = sorted(results, key=lambda result: result.index)
    return [
        sent_transition(step, context, result)
        for context, result in zip(contexts, results, strict=True)
    ]


@register_batch_handler("branch")
def branch_batch(step: Branch, contexts: Sequence[RunContext], resumed: bool) -> list[Transition]:
    """Each condition's rule compiled once and asked of the whole group in one
    query; a run takes the first condition its contact meets, else the fallback."""
    first = contexts[0]
    session, keys = first.session, first.keys
    dialect = dialect_of(session)
    chosen: list[Transition | None] = [None] * len(contexts)
    waiting = list(range(len(contexts)))
    for index, condition in enumerate(step.conditions):
        if not waiting:
            break
        predicate = compile_predicate(_rule(first, step, index), keys, dialect)
        asked = {contexts[i].run.contact_id for i in waiting}
        matched = set(
            session.scalars(
                select(Contact.id).where(
                    Contact.tenant_id == keys.tenant_id,
                    id_in(Contact.id, asked, dialect),
                    predicate,
                )
            )
        )
        still: list[int] = []
        for i in waiting:
            if contexts[i].run.contact_id in matched:
                chosen[i] = Transition(f"condition:{index}", condition.next)
            else:
                still.append(i)
        waiting = still
    return [found or Transition("fallback", step.fallback) for found in chosen]


def _change_members(
    step: ListAdd | ListRemove, contexts: Sequence[RunContext], *, adding: bool
) -> None:
    first = contexts[0]
    ids = [context.run.contact_id for context in contexts]
    lists.change_members(
        first.session,
        first.keys.tenant_id,
        step.list_id,
        add=ids if adding else [],
        remove=[] if adding else ids,
        actor=first.actor,
        now=first.now,
    )


@register_batch_handler("list_add")
def list_add_batch(
    step: ListAdd, contexts: Sequence[RunContext], resumed: bool
) -> list[Transition]:
    _change_members(step, contexts, adding=True)
    return [Transition("added", step.next) for _ in contexts]


@register_batch_handler("list_remove")
def list_remove_batch(
    step: ListRemove, contexts: Sequence[RunContext], resumed: bool
) -> list[Transition]:
    _change_members(step, contexts, adding=False)
    return [Transition("removed", step.next) for _ in contexts]


from carepost.workflows.update_field import update_group as _update_group  # noqa: E402

register_batch_handler("update_field")(_update_group)

from carepost.workflows.segment_step import add_group as _segment_add_group  # noqa: E402

register_batch_handler("segment_add")(_segment_add_group)
