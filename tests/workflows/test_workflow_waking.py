"""Wait for Event: custom events posted to the API and email opens wake waiting runs
through the wait index; no event means the timeout path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from carepost.messages.models import MessageEvent
from carepost.workflows import engine
from carepost.workflows.models import RunStatus, WorkflowWait
from tests.workflows.conftest import T0

V1 = "/api/v1/workflows"


def _login_journey(journey):
    return journey.workflow(
        [
            {
                "id": "login",
                "type": "wait_for_event",
                "event": {"kind": "custom", "name": "portal_login"},
                "timeout": {"days": 7},
                "next": "welcome",
                "timeout_next": "reminder",
            },
            {"id": "welcome", "type": "exit"},
            {"id": "reminder", "type": "exit"},
        ]
    )


def test_a_custom_event_posted_to_the_api_wakes_the_waiting_run(journey, client, make_api_key):
    workflow = _login_journey(journey)
    waiting, other = journey.contact(), journey.contact()
    start = datetime.now(UTC)  # the API stamps events with the real clock
    journey.enroll(workflow, [waiting, other], now=start)
    journey.advance(start)
    assert journey.run(workflow, waiting).status == RunStatus.WAITING
    headers = make_api_key(journey.tenant)
    posted = client.post(
        f"{V1}/events", json={"contact_id": str(waiting), "name": "portal_login"}, headers=headers
    )
    assert posted.json() == {"woke": 1}
    with journey.session() as session:
        left = session.scalars(
            select(WorkflowWait.contact_id).where(WorkflowWait.tenant_id == journey.tenant_id)
        ).all()
    assert left == [other]  # the woken run's wait is gone, the other's stays
    journey.advance(datetime.now(UTC))
    assert journey.history(workflow, waiting) == [("login", "event"), ("welcome", "end")]
    assert journey.run(workflow, other).status == RunStatus.WAITING
    journey.advance(start + timedelta(days=7))
    assert journey.history(workflow, other) == [("login", "timeout"), ("reminder", "end")]


def test_an_event_for_an_unknown_contact_is_a_422(journey, client, make_api_key):
    headers = make_api_key(journey.tenant)
    response = client.post(
        f"{V1}/events",
        json={"contact_id": "01a241de-30a1-77e8-8a2a-f0cfd72a5532", "name": "portal_login"},
        headers=headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/body/contact_id"


def test_an_event_of_another_tenants_contact_wakes_nothing_here(make_journey):
    ours, theirs = make_journey(), make_journey()
    workflow = _login_journey(ours)
    person = ours.contact()
    ours.enroll(workflow, [person])
    ours.advance(T0)
    with theirs.session() as session:
        woke = engine.deliver_event(session, theirs.tenant_id, [person], "custom:portal_login")
    assert woke == 0
    assert ours.run(workflow, person).status == RunStatus.WAITING


def test_opening_the_workflow_email_takes_the_event_path(journey):
    workflow = journey.workflow(
        [
            {
                "id": "hello",
                "type": "send_email",
                "template_id": str(journey.template_id),
                "next": "opened",
            },
            {
                "id": "opened",
                "type": "wait_for_event",
                "event": {"kind": "opened", "step": "hello"},
                "timeout": {"days": 3},
                "next": "engaged",
                "timeout_next": "quiet",
            },
            {"id": "engaged", "type": "exit"},
            {"id": "quiet", "type": "exit"},
        ]
    )
    reader, ignorer = journey.contact(), journey.contact()
    journey.enroll(workflow, [reader, ignorer])
    journey.advance(T0)
    message_id = journey.run(workflow, reader).sent["hello"]
    with journey.session() as session:
        session.add(
            MessageEvent(
                tenant_id=journey.tenant_id,
                message_id=__import__("uuid").UUID(message_id),
                kind="opened",
                occurred_at=T0 + timedelta(hours=1),
                detail={},
            )
        )
    journey.advance(T0 + timedelta(hours=1))
    assert journey.history(workflow, reader)[-2:] == [("opened", "event"), ("engaged", "end")]
    assert journey.run(workflow, ignorer).status == RunStatus.WAITING
    journey.advance(T0 + timedelta(days=3))
    assert journey.history(workflow, ignorer)[-2:] == [("opened", "timeout"), ("quiet", "end")]
