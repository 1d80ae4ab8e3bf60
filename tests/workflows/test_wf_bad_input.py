"""Issue 7's bad input: events for unknown contacts, a template deleted under an active
workflow, 10,000 concurrent enrollments of one contact, a time zone that does not exist."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from carepost.audit.service import SYSTEM
from carepost.templates import service as templates
from carepost.workflows import service, triggers
from carepost.workflows.models import RunStatus, WorkflowRun
from tests.workflows.conftest import T0

V1 = "/api/v1/workflows"
UNKNOWN = "01a241de-30a1-77e8-8a2a-f0cfd72a5532"


def test_events_for_an_unknown_contact_are_clear_422s(journey, client, make_api_key):
    headers = make_api_key(journey.tenant)
    stamp = datetime.now(UTC).isoformat()
    for url, body in (
        ("/api/v1/events", {"contact_id": UNKNOWN, "kind": "portal_login", "occurred_at": stamp}),
        (f"{V1}/events", {"contact_id": UNKNOWN, "name": "portal_login"}),
        (
            f"{V1}/events",
            {"contact_id": UNKNOWN, "name": "form_submitted", "form_id": str(uuid.uuid4())},
        ),
    ):
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["pointer"].startswith("#/body/")
    # A batch: the unknown contact's item fails alone; the known one is recorded.
    person = journey.contact()
    batch = client.post(
        "/api/v1/events",
        json={
            "items": [
                {"contact_id": UNKNOWN, "kind": "portal_login", "occurred_at": stamp},
                {"contact_id": str(person), "kind": "portal_login", "occurred_at": stamp},
            ]
        },
        headers=headers,
    )
    assert batch.status_code == 200 and batch.json()["created"] == 1


def test_a_template_deleted_under_an_active_workflow_is_an_error_outcome_not_a_crash(journey):
    workflow = journey.workflow(
        [
            {
                "id": "mail",
                "type": "send_email",
                "template_id": str(journey.template_id),
                "next": "after",
            },
            {"id": "after", "type": "exit"},
        ]
    )
    with journey.session() as session:
        templates.delete_template(session, journey.tenant_id, journey.template_id, actor=SYSTEM)
    people = [journey.contact() for _ in range(3)]
    journey.enroll(workflow, people)
    journey.advance(T0)
    for person in people:
        # The email step's outcome is the error (detail: the template_id field at
        # fault); the run goes on along its path instead of sticking or crashing.
        assert journey.history(workflow, person) == [("mail", "not_sent"), ("after", "end")]
    assert journey.emails() == 0


def test_a_time_zone_that_does_not_exist_is_a_422_on_the_field(journey, client, make_api_key):
    headers = make_api_key(journey.tenant)
    body = {
        "name": f"tz-{uuid.uuid4().hex[:6]}",
        "sender_address": "care@clinic.example",
        "draft": {
            "steps": [
                {
                    "id": "lunch",
                    "type": "wait_until",
                    "until": {"kind": "window", "timezone": "Mars/Olympus_Mons"},
                }
            ]
        },
    }
    response = client.post(V1, json=body, headers=headers)
    assert response.status_code == 422, response.text
    pointers = [error["pointer"] for error in response.json()["errors"]]
    assert any(p.startswith("#/body/draft/steps/0/") and p.endswith("/timezone") for p in pointers)


def test_ten_thousand_concurrent_enrollments_of_one_contact_make_one_run(journey):
    """Threads, each with its own connection, enroll the same contact 10,000 times in
    all (PostgreSQL runs them truly in parallel; SQLite serializes its writers)."""
    workflow = journey.workflow([{"id": "w", "type": "wait_duration", "duration": {"days": 1}}])
    person = journey.contact()
    if journey.runtime.database.engine.dialect.name == "postgresql":
        threads, per_thread, calls = 10, 1000, 1  # 10,000 transactions, 10 at a time
    else:
        threads, per_thread, calls = 8, 25, 50  # one writer at a time: 200 x 50 copies
    failures: list[BaseException] = []
    enrolled: list[int] = []
    start = threading.Barrier(threads)

    def enroll() -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                with journey.session() as session:
                    row = service.get_workflow(session, journey.tenant_id, workflow)
                    outcome = triggers.enroll_contacts(
                        session, row, [person] * calls, source="api", now=T0
                    )
                    enrolled.append(outcome.enrolled)
        except BaseException as failure:  # noqa: BLE001 - reported below
            failures.append(failure)

    workers = [threading.Thread(target=enroll) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert failures == []
    assert sum(enrolled) == 1 and len(enrolled) == threads * per_thread
    with journey.session() as session:
        count = session.scalar(
            select(func.count()).select_from(WorkflowRun).where(WorkflowRun.contact_id == person)
        )
    assert count == 1
    assert journey.run(workflow, person).status == RunStatus.ACTIVE
