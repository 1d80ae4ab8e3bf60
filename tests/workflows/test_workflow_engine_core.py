"""The engine on a controlled clock: each core step type, loop prevention, no re-entry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from carepost.workflows.models import RunStatus, WorkflowRun
from tests.workflows.conftest import T0


def test_send_wait_send_end_walks_a_contact_through_on_the_clock(journey):
    template = str(journey.template_id)
    workflow = journey.workflow(
        [
            {"id": "hello", "type": "send_email", "template_id": template, "next": "pause"},
            {"id": "pause", "type": "wait_duration", "duration": {"days": 3}, "next": "again"},
            {"id": "again", "type": "send_email", "template_id": template, "next": "end"},
            {"id": "end", "type": "exit"},
        ]
    )
    person = journey.contact()
    assert journey.enroll(workflow, [person]).enrolled == 1
    journey.advance(T0)
    run = journey.run(workflow, person)
    assert (run.status, run.current_step) == (RunStatus.WAITING, "pause")
    assert run.wake_at == T0 + timedelta(days=3)
    assert journey.emails(person) == 1
    journey.advance(T0 + timedelta(days=2))
    assert journey.run(workflow, person).status == RunStatus.WAITING
    journey.advance(T0 + timedelta(days=3))
    run = journey.run(workflow, person)
    assert run.status == RunStatus.COMPLETED and run.wake_at is None
    assert journey.emails(person) == 2
    assert journey.history(workflow, person) == [
        ("hello", "sent"),
        ("pause", "waited"),
        ("again", "sent"),
        ("end", "end"),
    ]


def test_goto_to_a_visited_step_completes_the_run_instead_of_looping(journey):
    workflow = journey.workflow(
        [
            {"id": "a", "type": "send_email", "template_id": str(journey.template_id), "next": "b"},
            {"id": "b", "type": "goto", "target": "a"},
        ]
    )
    person = journey.contact()
    journey.enroll(workflow, [person])
    journey.advance(T0)
    run = journey.run(workflow, person)
    assert run.status == RunStatus.COMPLETED
    assert journey.emails(person) == 1
    assert journey.history(workflow, person)[-1] == ("a", "loop_prevented")


def test_branch_takes_the_first_matching_condition_else_the_fallback(journey):
    workflow = journey.workflow(
        [
            {
                "id": "which",
                "type": "branch",
                "conditions": [
                    {"rule": {"field": "language", "op": "equals", "value": "es"}, "next": "es"},
                ],
                "fallback": "other",
            },
            {"id": "es", "type": "exit"},
            {"id": "other", "type": "exit"},
        ]
    )
    spanish = journey.contact(language="es")
    english = journey.contact(language="en")
    journey.enroll(workflow, [spanish, english])
    journey.advance(T0)
    assert journey.history(workflow, spanish) == [("which", "condition:0"), ("es", "end")]
    assert journey.history(workflow, english) == [("which", "fallback"), ("other", "end")]


def test_a_contact_never_enters_the_same_workflow_twice(journey):
    workflow = journey.workflow([{"id": "end", "type": "exit"}])
    person = journey.contact()
    first = journey.enroll(workflow, [person, person, person])
    assert (first.enrolled, first.skipped) == (1, 2)
    journey.advance(T0)
    assert journey.run(workflow, person).status == RunStatus.COMPLETED
    again = journey.enroll(workflow, [person])
    assert (again.enrolled, again.skipped) == (0, 1)


def test_the_database_itself_refuses_a_second_run(journey):
    workflow = journey.workflow([{"id": "end", "type": "exit"}])
    person = journey.contact()
    journey.enroll(workflow, [person])
    with pytest.raises(IntegrityError), journey.session() as session:
        session.add(
            WorkflowRun(
                tenant_id=journey.tenant_id,
                workflow_id=workflow,
                contact_id=person,
                version=1,
                entered_at=T0,
                current_step="end",
            )
        )
        session.flush()


def test_concurrent_enrollments_of_the_same_contacts_start_one_run_each(journey):
    from concurrent.futures import ThreadPoolExecutor

    workflow = journey.workflow([{"id": "w", "type": "wait_duration", "duration": {"days": 1}}])
    people = [journey.contact() for _ in range(20)]

    def enroll(_: int) -> int:
        return journey.enroll(workflow, people).enrolled

    with ThreadPoolExecutor(max_workers=4) as pool:
        enrolled = sum(pool.map(enroll, range(8)))
    assert enrolled == 20
    with journey.session() as session:
        from carepost.workflows import service

        assert service.step_counts(session, journey.tenant_id, workflow).runs == {"active": 20}
