"""The engine's batch path as the 1M benchmark tuned it: contacts are read only for
the steps that need them, and a batch's rows (runs, history with and without
detail, waits) are written in one statement each and read back as they were."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, select

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields
from carepost.workflows.models import RunStatus, WorkflowRunStep, WorkflowWait
from tests.workflows.conftest import T0


def _contact_reads(journey, moment) -> int:
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    engine = journey.runtime.database.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        journey.advance(moment)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return sum("FROM contacts" in s and "contacts.custom" in s for s in statements)


def test_only_a_step_that_reads_the_contact_loads_it_and_the_batch_rows_round_trip(journey):
    with journey.session() as session:
        custom_fields.create_field(
            session, journey.tenant_id, key="seen_on", label="seen", type="date", actor=SYSTEM
        )
    workflow = journey.workflow(
        [
            {"id": "pause", "type": "wait_duration", "duration": {"hours": 1}, "next": "mail"},
            {
                "id": "mail",
                "type": "send_email",
                "template_id": str(journey.template_id),
                "next": "open",
            },
            {
                "id": "open",
                "type": "wait_for_event",
                "event": {"kind": "opened"},
                "timeout": {"days": 3},
                "next": "stamp",
                "timeout_next": "stamp",
            },
            {"id": "stamp", "type": "update_field", "field": "seen_on", "action": "today"},
        ]
    )
    people = [journey.contact() for _ in range(3)]
    journey.enroll(workflow, people)
    # The wait step reads nothing of the contact, although the graph holds a step that does.
    assert _contact_reads(journey, T0) == 0
    journey.advance(T0 + timedelta(hours=1))
    runs = [journey.run(workflow, person).id for person in people]
    with journey.session() as session:
        waits = session.execute(
            select(WorkflowWait.run_id, WorkflowWait.message_id, WorkflowWait.since).where(
                WorkflowWait.run_id.in_(runs)  # other tests' waits share the database
            )
        ).all()
    assert len(waits) == 3 and all(w.message_id is not None for w in waits)
    assert all(w.since == T0 + timedelta(hours=1) for w in waits)
    for person in people:
        run = journey.run(workflow, person)
        assert (run.status, run.current_step) == (RunStatus.WAITING, "open")
        assert run.visited == ["pause", "mail", "open"] and set(run.sent) == {"mail"}
    assert _contact_reads(journey, T0 + timedelta(hours=1, days=3)) == 1
    with journey.session() as session:
        details = dict(
            session.execute(
                select(WorkflowRunStep.step_id, WorkflowRunStep.detail).where(
                    WorkflowRunStep.run_id == journey.run(workflow, people[0]).id
                )
            ).all()
        )
    assert details["pause"] is None and details["mail"]["message_id"]
    for person in people:
        run = journey.run(workflow, person)
        assert run.status == RunStatus.COMPLETED and run.lease_owner == ""
        assert journey.history(workflow, person)[-1] == ("stamp", "updated")
