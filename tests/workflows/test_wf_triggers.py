"""Triggers: a list join, a segment entry (periodic job), a date milestone (periodic
job over day tokens), a named event and a form submission enroll contacts on their
own; the trigger is validated and exposed at /workflows/{id}/trigger."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, lists, upserts
from carepost.segments import service as segments
from carepost.workflows import entry
from carepost.workflows.entry import DateMilestone, milestone_days
from carepost.workflows.models import RunStatus
from tests.workflows.conftest import T0

V1 = "/api/v1/workflows"
EXIT = [{"id": "hello", "type": "exit"}]


def _trigger(journey, workflow, trigger):
    with journey.session() as session:
        return entry.set_trigger(session, journey.tenant_id, workflow, trigger, actor=SYSTEM)


def _new_list(journey):
    with journey.session() as session:
        row = lists.create_list(
            session,
            journey.tenant_id,
            name=f"l-{uuid.uuid4().hex[:8]}",
            description="",
            actor=SYSTEM,
        )
        return row.id


def _add(journey, list_id, ids, now=T0):
    with journey.session() as session:
        return lists.change_members(
            session, journey.tenant_id, list_id, add=ids, remove=[], actor=SYSTEM, now=now
        )


def test_joining_a_list_enrolls_set_based_and_only_new_members(journey, client, make_api_key):
    workflow = journey.workflow(EXIT)
    list_id = _new_list(journey)
    headers = make_api_key(journey.tenant)
    put = client.put(
        f"{V1}/{workflow}/trigger",
        json={"trigger": {"kind": "list_join", "list_id": str(list_id)}},
        headers=headers,
    )
    assert put.status_code == 200, put.text
    assert client.get(f"{V1}/{workflow}/trigger", headers=headers).json() == {
        "trigger": {"kind": "list_join", "list_id": str(list_id)}
    }
    people = [journey.contact() for _ in range(30)]
    assert _add(journey, list_id, people[:20]).added == 20
    assert _add(journey, list_id, people).added == 10  # the 20 are members already
    for person in people:
        run = journey.run(workflow, person)
        assert (run.source, run.status) == ("list_join", RunStatus.ACTIVE)
    # Leaving and joining again: no re-entry.
    with journey.session() as session:
        lists.change_members(
            session, journey.tenant_id, list_id, add=[], remove=people[:1], actor=SYSTEM
        )
    _add(journey, list_id, people[:1])
    journey.advance(T0)
    assert journey.history(workflow, people[0]) == [("hello", "end")]


def test_an_inactive_workflow_takes_nobody_from_its_list(journey):
    workflow = journey.workflow(EXIT, activate=False)
    list_id = _new_list(journey)
    _trigger(journey, workflow, {"kind": "list_join", "list_id": str(list_id)})
    person = journey.contact()
    assert _add(journey, list_id, [person]).added == 1
    with journey.session() as session:
        from sqlalchemy import select

        from carepost.workflows.models import WorkflowRun

        assert (
            session.scalars(select(WorkflowRun).where(WorkflowRun.contact_id == person)).all() == []
        )


def _segment(journey, rule):
    with journey.session() as session:
        return segments.create_segment(
            session,
            journey.tenant_id,
            name=f"s-{uuid.uuid4().hex[:8]}",
            description="",
            rule=rule,
            actor=SYSTEM,
        ).id


def test_entering_a_segment_enrolls_at_the_next_evaluation(journey):
    vip = _new_list(journey)
    segment = _segment(journey, {"list": str(vip)})
    workflow = journey.workflow(EXIT)
    _trigger(journey, workflow, {"kind": "segment_entry", "segment_id": str(segment)})
    first, second, outsider = journey.contact(), journey.contact(), journey.contact()
    _add(journey, vip, [first])
    assert entry.run_periodic(journey.runtime, "segment_entry", now=T0) >= 1
    assert journey.run(workflow, first).source == "segment_entry"
    assert entry.run_periodic(journey.runtime, "segment_entry", now=T0) == 0  # nobody new
    _add(journey, vip, [second])
    entry.run_periodic(journey.runtime, "segment_entry", now=T0 + timedelta(minutes=1))
    assert journey.run(workflow, second).status == RunStatus.ACTIVE
    with pytest.raises(Exception):  # noqa: B017 - NotFound: never enrolled
        journey.run(workflow, outsider)


def test_skipping_existing_members_enrolls_only_contacts_who_enter_later(journey):
    vip = _new_list(journey)
    segment = _segment(journey, {"list": str(vip)})
    already, returning, newcomer = journey.contact(), journey.contact(), journey.contact()
    _add(journey, vip, [already, returning])
    workflow = journey.workflow(EXIT)
    trigger = {"kind": "segment_entry", "segment_id": str(segment), "existing_members": "skip"}
    assert _trigger(journey, workflow, trigger) == trigger
    # The members when the trigger was set are not enrolled while they stay.
    assert entry.run_periodic(journey.runtime, "segment_entry", now=T0) == 0
    _add(journey, vip, [newcomer])
    assert entry.run_periodic(journey.runtime, "segment_entry", now=T0) == 1
    assert journey.run(workflow, newcomer).source == "segment_entry"
    # One leaves: forgotten at the next evaluation; back again, that is an entry.
    with journey.session() as session:
        lists.change_members(
            session, journey.tenant_id, vip, add=[], remove=[returning], actor=SYSTEM
        )
    assert entry.run_periodic(journey.runtime, "segment_entry", now=T0) == 0
    _add(journey, vip, [returning])
    assert entry.run_periodic(journey.runtime, "segment_entry", now=T0) == 1
    assert journey.run(workflow, returning).status == RunStatus.ACTIVE
    with pytest.raises(Exception):  # noqa: B017 - NotFound: still a member since before
        journey.run(workflow, already)
    # Saving the trigger again unchanged keeps the baseline; enrolling everyone clears it.
    _trigger(journey, workflow, trigger)
    assert entry.run_periodic(journey.runtime, "segment_entry", now=T0) == 0
    _trigger(journey, workflow, {**trigger, "existing_members": "enroll"})
    assert entry.run_periodic(journey.runtime, "segment_entry", now=T0) == 1
    assert journey.run(workflow, already).source == "segment_entry"


def test_an_unknown_existing_members_choice_is_refused_on_its_field(journey, client, make_api_key):
    workflow = journey.workflow(EXIT)
    segment = _segment(journey, {"list": str(_new_list(journey))})
    answer = client.put(
        f"{V1}/{workflow}/trigger",
        json={
            "trigger": {
                "kind": "segment_entry",
                "segment_id": str(segment),
                "existing_members": "sometimes",
            }
        },
        headers=make_api_key(journey.tenant),
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    pointers = [e["pointer"] for e in answer.json()["errors"]]
    assert pointers == ["#/body/trigger/existing_members"]


def test_a_deleted_segment_is_skipped_by_the_job_without_stopping_others(journey):
    vip = _new_list(journey)
    gone = _segment(journey, {"list": str(vip)})
    kept = _segment(journey, {"list": str(vip)})
    broken, working = journey.workflow(EXIT), journey.workflow(EXIT)
    _trigger(journey, broken, {"kind": "segment_entry", "segment_id": str(gone)})
    _trigger(journey, working, {"kind": "segment_entry", "segment_id": str(kept)})
    with journey.session() as session:
        segments.delete_segment(session, journey.tenant_id, gone, actor=SYSTEM)
    person = journey.contact()
    _add(journey, vip, [person])
    entry.run_periodic(journey.runtime, "segment_entry", now=T0)
    assert journey.run(working, person).status == RunStatus.ACTIVE


def _date_field(journey, key, **options):
    with journey.session() as session:
        custom_fields.create_field(
            session,
            journey.tenant_id,
            key=key,
            label=key,
            type="date",
            actor=SYSTEM,
            **options,
        )


def _upsert(journey, **values):
    with journey.session() as session:
        [result] = upserts.upsert_contacts(
            session,
            journey.keys,
            [{"email": f"d-{uuid.uuid4().hex[:8]}@example.org", **values}],
            match="email",
            actor=SYSTEM,
        )
        assert result.status in ("created", "updated"), result.errors
        return result.id


def test_a_birthday_enrolls_every_year_and_a_date_n_days_ahead_once(journey):
    birthday = journey.workflow(EXIT)
    _trigger(journey, birthday, {"kind": "date_milestone", "field": "birth_date", "yearly": True})
    _date_field(journey, "renewal_on", granularity="day")
    renewal = journey.workflow(EXIT)
    _trigger(
        journey,
        renewal,
        {"kind": "date_milestone", "field": "renewal_on", "days_before": 7, "yearly": False},
    )
    today = T0  # 2026-03-02
    born = _upsert(journey, birth_date="1980-03-02")
    other = _upsert(journey, birth_date="1980-03-03")
    renews = _upsert(journey, custom={"renewal_on": "2026-03-09"})
    entry.run_periodic(journey.runtime, "date_milestone", now=today)
    assert journey.run(birthday, born).source == "date_milestone"
    assert journey.run(renewal, renews).source == "date_milestone"
    with pytest.raises(Exception):  # noqa: B017 - not their day
        journey.run(birthday, other)
    journey.advance(today)
    assert journey.run(birthday, born).status == RunStatus.COMPLETED
    # The hourly job again the same day: nobody twice.
    assert (
        entry.run_periodic(journey.runtime, "date_milestone", now=today + timedelta(hours=1)) == 0
    )
    # A year later: the completed birthday run is re-armed, visits keep counting.
    next_year = datetime(2027, 3, 2, 8, 0, tzinfo=UTC)
    entry.run_periodic(journey.runtime, "date_milestone", now=next_year)
    run = journey.run(birthday, born)
    assert (run.status, run.visited) == (RunStatus.ACTIVE, ["~hello"])
    journey.advance(next_year)
    assert journey.history(birthday, born) == [("hello", "end"), ("hello", "end")]


def test_leap_day_birthdays_come_on_the_28th_in_common_years():
    spec = DateMilestone(kind="date_milestone", field="birth_date")
    days = milestone_days(datetime(2027, 2, 28).date(), spec)
    assert datetime(2000, 2, 29).date() in days and datetime(1999, 2, 28).date() in days
    assert datetime(2000, 2, 29).date() not in milestone_days(datetime(2028, 2, 28).date(), spec)


def test_a_trigger_is_checked_with_pointers(journey, client, make_api_key):
    workflow = journey.workflow(EXIT, activate=False)
    _date_field(journey, "visit_month", granularity="month")
    headers = make_api_key(journey.tenant)
    cases = [
        ({"kind": "list_join", "list_id": str(uuid.uuid4())}, "#/body/trigger/list_id"),
        ({"kind": "segment_entry", "segment_id": str(uuid.uuid4())}, "#/body/trigger/segment_id"),
        ({"kind": "date_milestone", "field": "visit_month"}, "#/body/trigger/field"),
        ({"kind": "date_milestone", "field": "nothing_here"}, "#/body/trigger/field"),
        ({"kind": "date_milestone", "field": "birth_date", "days_before": -1}, None),
        ({"kind": "teleport"}, None),
    ]
    for trigger, pointer in cases:
        response = client.put(
            f"{V1}/{workflow}/trigger", json={"trigger": trigger}, headers=headers
        )
        assert response.status_code == 422, (trigger, response.text)
        if pointer:
            assert response.json()["errors"][0]["pointer"] == pointer
    cleared = client.put(f"{V1}/{workflow}/trigger", json={"trigger": None}, headers=headers)
    assert cleared.json() == {"trigger": None}


def test_a_named_event_and_a_form_submission_enroll_and_wake(journey, client, make_api_key):
    form_id = uuid.uuid4()
    on_event = journey.workflow(EXIT)
    _trigger(journey, on_event, {"kind": "event", "name": "appointment_booked"})
    on_form = journey.workflow(EXIT)
    _trigger(journey, on_form, {"kind": "form_submitted", "form_id": str(form_id)})
    waiting = journey.workflow(
        [
            {
                "id": "intake",
                "type": "wait_for_event",
                "event": {"kind": "form_submitted", "form_id": str(form_id)},
                "timeout": {"days": 3},
                "next": "done",
                "timeout_next": "nudge",
            },
            {"id": "done", "type": "exit"},
            {"id": "nudge", "type": "exit"},
        ]
    )
    person = journey.contact()
    now = datetime.now(UTC)
    journey.enroll(waiting, [person], now=now)
    journey.advance(now)
    headers = make_api_key(journey.tenant)
    # The contacts event API: a custom event enrolls workflows triggered by it.
    posted = client.post(
        "/api/v1/events",
        json={
            "contact_id": str(person),
            "kind": "appointment_booked",
            "occurred_at": now.isoformat(),
        },
        headers=headers,
    )
    assert posted.status_code == 201, posted.text
    assert journey.run(on_event, person).source == "event"
    # The form interface through the generic workflow event endpoint.
    submitted = client.post(
        f"{V1}/events",
        json={"contact_id": str(person), "name": "form_submitted", "form_id": str(form_id)},
        headers=headers,
    )
    assert submitted.json() == {"woke": 1}
    assert journey.run(on_form, person).source == "form_submitted"
    journey.advance(datetime.now(UTC))
    assert journey.history(waiting, person) == [("intake", "event"), ("done", "end")]
