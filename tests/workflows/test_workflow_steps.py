"""The other step types through the engine: lists, stages, Wait until (a date, a contact
date field, a window in the contact's own zone), pause/resume and archive, and a step
whose list was deleted since activation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, lists, stages
from carepost.contacts.activity_models import ContactList
from carepost.workflows import service
from carepost.workflows.models import RunStatus
from tests.workflows.conftest import T0


def _list(journey) -> str:
    with journey.session() as session:
        row = lists.create_list(
            session, journey.tenant_id, name="engaged", description="", actor=SYSTEM
        )
        return str(row.id)


def test_list_and_stage_steps_change_the_contact(journey):
    list_id = _list(journey)
    with journey.session() as session:
        stages.define_stage(session, journey.tenant_id, key="onboarded", label="Onboarded")
    workflow = journey.workflow(
        [
            {"id": "join", "type": "list_add", "list_id": list_id, "next": "stage"},
            {"id": "stage", "type": "set_stage", "stage": "onboarded", "next": "leave"},
            {"id": "leave", "type": "list_remove", "list_id": list_id},
        ]
    )
    person = journey.contact()
    journey.enroll(workflow, [person])
    journey.advance(T0)
    assert [o for _, o in journey.history(workflow, person)] == ["added", "stage_set", "removed"]
    with journey.session() as session:
        members = lists.memberships_of(session, journey.tenant_id, person)
        from carepost.contacts.service import get_contact

        assert get_contact(session, journey.tenant_id, person).journey_stage == "onboarded"
    assert all(m.left_at is not None for m in members)


def test_a_list_deleted_after_activation_ends_the_run_with_the_reason(journey):
    list_id = _list(journey)
    workflow = journey.workflow([{"id": "join", "type": "list_add", "list_id": list_id}])
    with journey.session() as session:
        session.execute(delete(ContactList).where(ContactList.tenant_id == journey.tenant_id))
    person = journey.contact()
    journey.enroll(workflow, [person])
    journey.advance(T0)
    assert journey.run(workflow, person).status == RunStatus.EXITED
    assert journey.history(workflow, person)[-1] == ("join", "error:not-found")


def test_wait_until_a_date_and_three_days_before_an_appointment(journey):
    with journey.session() as session:
        custom_fields.create_field(
            session,
            journey.tenant_id,
            key="appointment",
            label="Appointment",
            type="date",
            actor=SYSTEM,
        )
    workflow = journey.workflow(
        [
            {
                "id": "date",
                "type": "wait_until",
                "until": {"kind": "date", "at": "2026-03-03T00:00:00+00:00"},
                "next": "before",
            },
            {
                "id": "before",
                "type": "wait_until",
                "until": {
                    "kind": "field",
                    "field": "appointment",
                    "offset_minutes": -4320,
                    "timezone": "UTC",
                },
            },
        ]
    )
    chicago = journey.contact(timezone="America/Chicago", custom={"appointment": "2026-03-12"})
    missing = journey.contact()
    journey.enroll(workflow, [chicago, missing])
    journey.advance(T0)
    assert journey.run(workflow, chicago).wake_at == datetime(2026, 3, 3, tzinfo=UTC)
    journey.advance(datetime(2026, 3, 3, tzinfo=UTC))
    # 09:00 Chicago (CDT from March 8) on the 12th, less 72 hours.
    assert journey.run(workflow, chicago).wake_at == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)
    assert journey.history(workflow, missing)[-1] == ("before", "no_date")


def test_a_window_in_the_contacts_own_time_zone(journey):
    workflow = journey.workflow(
        [
            {
                "id": "noon",
                "type": "wait_until",
                "until": {
                    "kind": "window",
                    "days_of_week": [3],
                    "start": "12:00",
                    "end": "14:00",
                    "timezone": "America/Chicago",
                    "contact_timezone": True,
                },
            },
        ]
    )
    tokyo = journey.contact(timezone="Asia/Tokyo")
    unknown_zone = journey.contact(timezone="Not/AZone")
    journey.enroll(workflow, [tokyo, unknown_zone])
    journey.advance(T0)
    assert journey.run(workflow, tokyo).wake_at == datetime(2026, 3, 5, 3, 0, tzinfo=UTC)
    # A contact zone that does not exist falls back to the step's zone.
    assert journey.run(workflow, unknown_zone).wake_at == datetime(2026, 3, 5, 18, 0, tzinfo=UTC)


def test_a_paused_workflow_holds_its_runs_until_resumed_and_archive_ends_them(journey):
    workflow = journey.workflow([{"id": "w", "type": "wait_duration", "duration": {"hours": 1}}])
    person, other = journey.contact(), journey.contact()
    journey.enroll(workflow, [person, other])
    journey.advance(T0)
    with journey.session() as session:
        service.change_status(session, journey.tenant_id, workflow, "pause", actor=SYSTEM)
    journey.advance(T0 + timedelta(hours=2))
    assert journey.run(workflow, person).status == RunStatus.WAITING
    with journey.session() as session:
        service.change_status(session, journey.tenant_id, workflow, "resume", actor=SYSTEM)
        service.remove_contact(session, journey.tenant_id, workflow, other, actor=SYSTEM)
    journey.advance(T0 + timedelta(hours=2))
    assert journey.run(workflow, person).status == RunStatus.COMPLETED
    assert journey.run(workflow, other).status == RunStatus.EXITED
    with journey.session() as session:
        service.change_status(session, journey.tenant_id, workflow, "archive", actor=SYSTEM)
        assert service.step_counts(session, journey.tenant_id, workflow).runs == {
            "completed": 1,
            "exited": 1,
        }
