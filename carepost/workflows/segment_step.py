"""The Add to Segment step (``segment_add``): put the run's contact into a segment.

A segment is a rule, so a contact cannot be written into it; instead the segment
takes in the members of its *included list* besides those of its rule
(:func:`carepost.segments.service.add_to_segment`, docs/workflows.md "Add to
Segment"). The step adds the contact to that list, which is made on the segment's
first addition, so the contact counts as a member from then on in every count,
snapshot, campaign, branch or segment-entry trigger that uses the segment.

Design time: the segment must be the organization's (validation points at
``steps/N/segment_id``). Run time: a segment deleted under an active workflow is
not an error of the run: the step's outcome is ``segment_deleted`` and the run goes
on along ``next`` (nothing to add the contact to). A group of runs is one membership
change. A simulation (dry run) writes nothing (outcome ``would_add``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.core.errors import FieldError
from carepost.segments.models import Segment
from carepost.workflows.steps import GraphShape, Linear, register_step

if TYPE_CHECKING:  # handlers import the steps, which import this module
    from carepost.workflows.handlers import RunContext, Transition


class SegmentAdd(Linear):
    type: Literal["segment_add"]
    segment_id: uuid.UUID


register_step(SegmentAdd)


def graph_problems(
    session: Session, tenant_id: uuid.UUID, graph: GraphShape, pointer: str
) -> list[FieldError]:
    """Each Add to Segment step names one of the organization's segments."""
    steps = [(i, s) for i, s in enumerate(graph.steps) if isinstance(s, SegmentAdd)]
    if not steps:
        return []
    known = set(
        session.scalars(
            select(Segment.id).where(
                Segment.tenant_id == tenant_id,
                Segment.id.in_({step.segment_id for _, step in steps}),
            )
        )
    )
    return [
        FieldError(f"{pointer}/steps/{index}/segment_id", f"step {step.id}: no such segment")
        for index, step in steps
        if step.segment_id not in known
    ]


def add_group(step: SegmentAdd, contexts: Sequence[RunContext], resumed: bool) -> list[Transition]:
    from carepost.segments.service import add_to_segment
    from carepost.workflows.handlers import Transition

    first = contexts[0]
    if first.dry_run:
        return [Transition("would_add", step.next) for _ in contexts]
    session, tenant_id = first.session, first.keys.tenant_id
    present = session.scalar(
        select(Segment.id).where(Segment.tenant_id == tenant_id, Segment.id == step.segment_id)
    )
    if present is None:
        detail = {"segment_id": str(step.segment_id)}
        return [Transition("segment_deleted", step.next, detail=detail) for _ in contexts]
    add_to_segment(
        session,
        tenant_id,
        step.segment_id,
        [ctx.run.contact_id for ctx in contexts],
        actor=first.actor,
        now=first.now,
    )
    return [Transition("added", step.next) for _ in contexts]


def add_one(step: SegmentAdd, ctx: RunContext, resumed: bool) -> Transition:
    [transition] = add_group(step, [ctx], resumed)
    return transition
