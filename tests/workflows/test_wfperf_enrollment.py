"""Set-based enrollment of a list or a segment (INSERT … SELECT per page of
contact ids): exact counts, no second run, pages that split the audience, and
runs that the engine then walks like any other."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from carepost.audit.service import SYSTEM
from carepost.contacts import lists
from carepost.segments import service as segments
from carepost.workflows import triggers
from carepost.workflows.models import RunStatus, WorkflowRun
from tests.workflows.conftest import T0

STEPS = [
    {"id": "pause", "type": "wait_duration", "duration": {"hours": 1}, "next": "bye"},
    {"id": "bye", "type": "exit"},
]


def _runs(journey, workflow_id):
    with journey.session() as session:
        return dict(
            session.execute(
                select(WorkflowRun.status, func.count())
                .where(WorkflowRun.workflow_id == workflow_id)
                .group_by(WorkflowRun.status)
            ).all()
        )


@pytest.mark.parametrize("page", [2, 50_000])
def test_a_list_is_enrolled_once_whatever_the_pages(journey, monkeypatch, page):
    monkeypatch.setattr(triggers, "SELECT_PAGE", page)
    monkeypatch.setattr(triggers, "ANALYZE_AFTER", 1)  # exercised, even this small
    people = [journey.contact() for _ in range(7)]
    workflow_id = journey.workflow(STEPS)
    journey.enroll(workflow_id, people[:2])  # two are in already
    with journey.session() as session:
        members = lists.create_list(
            session, journey.tenant_id, name="all", description="", actor=SYSTEM
        )
        lists.change_members(
            session, journey.tenant_id, members.id, add=people, remove=[], actor=SYSTEM
        )
        lists.change_members(
            session, journey.tenant_id, members.id, add=[], remove=[people[6]], actor=SYSTEM
        )
        outcome = triggers.enroll_list(
            session, journey.tenant_id, workflow_id, members.id, actor=SYSTEM, now=T0
        )
    assert (outcome.enrolled, outcome.skipped) == (4, 2)  # the one who left is not asked
    with journey.session() as session:
        again = triggers.enroll_list(
            session, journey.tenant_id, workflow_id, members.id, actor=SYSTEM, now=T0
        )
    assert (again.enrolled, again.skipped) == (0, 6)
    assert _runs(journey, workflow_id) == {RunStatus.ACTIVE: 6}
    # The database's run ids are ids like any other: the engine walks the runs.
    journey.advance(T0)
    journey.advance(T0 + timedelta(hours=1))
    assert _runs(journey, workflow_id) == {RunStatus.COMPLETED: 6}
    assert journey.history(workflow_id, people[3]) == [("pause", "waited"), ("bye", "end")]


def test_a_segment_is_enrolled_set_based_with_its_rule(journey, monkeypatch):
    monkeypatch.setattr(triggers, "SELECT_PAGE", 3)
    spanish = [journey.contact(language="es") for _ in range(5)]
    others = [journey.contact(language="en") for _ in range(2)]
    workflow_id = journey.workflow(STEPS)
    with journey.session() as session:
        segment = segments.create_segment(
            session,
            journey.tenant_id,
            name="spanish",
            description="",
            rule={"field": "language", "op": "equals", "value": "es"},
            actor=SYSTEM,
        )
        outcome = triggers.enroll_segment(
            session, journey.keys, workflow_id, segment.id, actor=SYSTEM, now=T0
        )
    assert (outcome.enrolled, outcome.skipped) == (5, 0)
    with journey.session() as session:
        enrolled = set(
            session.scalars(
                select(WorkflowRun.contact_id).where(WorkflowRun.workflow_id == workflow_id)
            )
        )
    assert enrolled == set(spanish) and not enrolled & set(others)
