"""Checking a workflow graph before it is activated or published.

Two passes, each collecting every problem with a pointer at the step at fault
(``#/body/draft/steps/3/template_id``) and a message naming the step's id:

* :func:`structural_problems` needs only the graph: duplicate ids, pointers to
  steps that do not exist, unreachable steps, branches without a fallback, wait
  windows that can never open;
* :func:`reference_problems` reads the tenant's data: templates, lists, stages,
  contact fields, segment rules and the sender address must all be the tenant's.
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.contacts.activity_models import ContactList
from carepost.contacts.tokens import FieldType
from carepost.core.database import utcnow
from carepost.core.errors import FieldError, ValidationFailed
from carepost.segments.rules import parse_rule
from carepost.segments.vocabulary import load_vocabulary
from carepost.templates.models import Template
from carepost.webhooks.models import WebhookEndpoint
from carepost.workflows.steps import (
    STEP_TYPES,
    Branch,
    CallWebhook,
    GraphShape,
    ListAdd,
    ListRemove,
    SendEmail,
    SetStage,
    UntilField,
    UntilWindow,
    WaitForEvent,
    WaitUntil,
    parse_graph,
)
from carepost.workflows.timing import window_problem

DRAFT_POINTER = "#/body/draft"
_TAGS = {"date", "field", "window"}


def _schema_pointer(base: str, loc: tuple[Any, ...]) -> str:
    # Pydantic puts the discriminator's value in the location (steps/0/send_email/...):
    # drop it so the pointer follows the document.
    parts = [str(part) for part in loc]
    kept = []
    for index, part in enumerate(parts):
        previous = parts[index - 1] if index else ""
        if (previous.isdigit() and part in STEP_TYPES) or (previous == "until" and part in _TAGS):
            continue
        kept.append(part)
    return base + "/" + "/".join(kept) if kept else base


def load_graph(raw: Any, *, pointer: str = DRAFT_POINTER) -> GraphShape:
    """The graph's models, or ValidationFailed naming each field at fault."""
    try:
        return parse_graph(raw)
    except ValidationError as invalid:
        errors = [
            FieldError(_schema_pointer(pointer, tuple(e["loc"])), _message(e))
            for e in invalid.errors()
        ]
        raise ValidationFailed(errors[0].message, errors=errors) from None


def _message(error: Any) -> str:
    # Pydantic messages may quote the input; keep the message, never the value.
    if error.get("type") == "extra_forbidden":
        return "unknown field"
    if error.get("type") == "missing":
        return "this field is required"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def _at(pointer: str, index: int, field: str) -> str:
    return f"{pointer}/steps/{index}" + (f"/{field}" if field else "")


def structural_problems(graph: GraphShape, *, pointer: str = DRAFT_POINTER) -> list[FieldError]:
    problems: list[FieldError] = []
    positions: dict[str, int] = {}
    for index, step in enumerate(graph.steps):
        if step.id in positions:
            problems.append(
                FieldError(_at(pointer, index, "id"), f"step {step.id}: this id is used twice")
            )
        else:
            positions[step.id] = index
    for index, step in enumerate(graph.steps):
        for field, target in step.successors():
            if target not in positions:
                problems.append(
                    FieldError(
                        _at(pointer, index, field),
                        f"step {step.id}: leads to step {target}, which does not exist",
                    )
                )
        if isinstance(step, Branch) and step.fallback is None:
            problems.append(
                FieldError(
                    _at(pointer, index, "fallback"),
                    f"step {step.id}: a branch needs a fallback path for contacts "
                    "no condition matches",
                )
            )
        if isinstance(step, WaitUntil) and isinstance(step.until, UntilWindow):
            why = window_problem(step.until)
            if why:
                problems.append(
                    FieldError(
                        _at(pointer, index, "until"),
                        f"step {step.id}: the wait can never end: {why}",
                    )
                )
    reached = reachable(graph)
    for index, step in enumerate(graph.steps):
        if step.id not in reached and positions.get(step.id) == index:
            problems.append(
                FieldError(
                    _at(pointer, index, ""),
                    f"step {step.id}: no path from the first step reaches it",
                )
            )
    return problems


def reachable(graph: GraphShape) -> set[str]:
    steps = graph.by_id()
    seen = {graph.start}
    queue = deque([graph.start])
    while queue:
        step = steps.get(queue.popleft())
        if step is None:
            continue
        for _field, target in step.successors():
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


def reference_problems(
    session: Session, tenant_id: uuid.UUID, graph: GraphShape, *, pointer: str = DRAFT_POINTER
) -> list[FieldError]:
    problems: list[FieldError] = []
    template_ids = {s.template_id for s in graph.steps if isinstance(s, SendEmail)}
    list_ids = {s.list_id for s in graph.steps if isinstance(s, ListAdd | ListRemove)}
    templates = set(
        session.scalars(
            select(Template.id).where(
                Template.tenant_id == tenant_id, Template.id.in_(template_ids)
            )
        )
        if template_ids
        else []
    )
    lists = set(
        session.scalars(
            select(ContactList.id).where(
                ContactList.tenant_id == tenant_id, ContactList.id.in_(list_ids)
            )
        )
        if list_ids
        else []
    )
    endpoint_ids = {s.endpoint_id for s in graph.steps if isinstance(s, CallWebhook)}
    endpoints = set(
        session.scalars(
            select(WebhookEndpoint.id).where(
                WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id.in_(endpoint_ids)
            )
        )
        if endpoint_ids
        else []
    )
    vocabulary = load_vocabulary(session, tenant_id)
    now = utcnow()
    for index, step in enumerate(graph.steps):
        where = _at(pointer, index, "")
        if isinstance(step, SendEmail) and step.template_id not in templates:
            problems.append(FieldError(f"{where}/template_id", f"step {step.id}: no such template"))
        elif isinstance(step, CallWebhook) and step.endpoint_id not in endpoints:
            problems.append(
                FieldError(f"{where}/endpoint_id", f"step {step.id}: no such webhook endpoint")
            )
        elif isinstance(step, ListAdd | ListRemove) and step.list_id not in lists:
            problems.append(FieldError(f"{where}/list_id", f"step {step.id}: no such list"))
        elif isinstance(step, SetStage) and step.stage not in vocabulary.stages:
            problems.append(
                FieldError(
                    f"{where}/stage", f"step {step.id}: not one of the organization's stages"
                )
            )
        elif isinstance(step, WaitUntil) and isinstance(step.until, UntilField):
            spec = vocabulary.fields.get(step.until.field)
            if spec is None or spec.type not in (FieldType.DATE, FieldType.DATETIME):
                problems.append(
                    FieldError(
                        f"{where}/until/field",
                        f"step {step.id}: not a date or date-time contact field",
                    )
                )
        elif isinstance(step, WaitForEvent) and step.event.kind == "field_changed":
            if step.event.field not in vocabulary.fields:
                problems.append(
                    FieldError(f"{where}/event/field", f"step {step.id}: no such contact field")
                )
        elif isinstance(step, Branch):
            for number, condition in enumerate(step.conditions):
                try:
                    parse_rule(
                        condition.rule,
                        vocabulary,
                        now=now,
                        pointer=f"{where}/conditions/{number}/rule",
                    )
                except ValidationFailed as failed:
                    problems.extend(
                        FieldError(e.field, f"step {step.id}: {e.message}") for e in failed.errors
                    )
    return problems


def check_graph(
    session: Session, tenant_id: uuid.UUID, raw: Any, *, pointer: str = DRAFT_POINTER
) -> GraphShape:
    """The graph, ready to publish, or ValidationFailed with every problem found."""
    graph = load_graph(raw, pointer=pointer)
    problems = structural_problems(graph, pointer=pointer)
    problems += reference_problems(session, tenant_id, graph, pointer=pointer)
    problems += _update_field_problems(session, tenant_id, graph, pointer, utcnow())
    problems += _goto_workflow_problems(session, tenant_id, graph, pointer)
    problems += _segment_problems(session, tenant_id, graph, pointer)
    if problems:
        failed = ValidationFailed(
            f"the workflow has {len(problems)} problem(s): {problems[0].message}",
            errors=problems,
        )
        raise failed
    return graph


def _update_field_problems(
    session: Session, tenant_id: uuid.UUID, graph: GraphShape, pointer: str, now: Any
) -> list[FieldError]:
    from carepost.workflows.update_field import graph_problems

    return graph_problems(session, tenant_id, graph, pointer, now)


def _segment_problems(
    session: Session, tenant_id: uuid.UUID, graph: GraphShape, pointer: str
) -> list[FieldError]:
    from carepost.workflows.segment_step import graph_problems

    return graph_problems(session, tenant_id, graph, pointer)


def _goto_workflow_problems(
    session: Session, tenant_id: uuid.UUID, graph: GraphShape, pointer: str
) -> list[FieldError]:
    """Go To another workflow: the target is one of the organization's workflows, not
    archived, and the step named (if any) is in its current version. (A target
    still in draft or paused is accepted: until it runs, contacts reaching the step
    end with ``target_unavailable``.)"""
    from carepost.workflows.models import Workflow, WorkflowStatus, WorkflowVersion
    from carepost.workflows.steps import GoToWorkflow, parse_graph

    problems: list[FieldError] = []
    for index, step in enumerate(graph.steps):
        if not isinstance(step, GoToWorkflow):
            continue
        where = _at(pointer, index, "")
        target = session.get(Workflow, step.workflow_id)
        if target is None or target.tenant_id != tenant_id:
            problems.append(FieldError(f"{where}/workflow_id", f"step {step.id}: no such workflow"))
            continue
        if target.status == WorkflowStatus.ARCHIVED:
            problems.append(
                FieldError(f"{where}/workflow_id", f"step {step.id}: that workflow is archived")
            )
            continue
        if step.step is None:
            continue
        version = session.get(WorkflowVersion, (target.id, target.current_version))
        steps = parse_graph(version.graph).by_id() if version is not None else {}
        if step.step not in steps:
            problems.append(
                FieldError(
                    f"{where}/step",
                    f"step {step.id}: the target workflow's current version has no step "
                    f"{step.step!r}",
                )
            )
    return problems
