"""Wake-ups at the moment events are recorded (no engine round needed to find them):
opens and clicks through the real tracking routes, a given link's click, contact
field changes through the API and an import-style upsert; and Go To another workflow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from carepost.audit.service import SYSTEM
from carepost.contacts import upserts
from carepost.core.errors import ValidationFailed
from carepost.delivery.feedback_keys import cached_feedback_secret
from carepost.tracking.links import click_token, open_token
from carepost.workflows.models import RunStatus

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Safari/605.1.15"
)


def _email_then_wait(journey, event):
    return journey.workflow(
        [
            {
                "id": "mail",
                "type": "send_email",
                "template_id": str(journey.template_id),
                "next": "w",
            },
            {
                "id": "w",
                "type": "wait_for_event",
                "event": event,
                "timeout": {"days": 2},
                "next": "engaged",
                "timeout_next": "quiet",
            },
            {"id": "engaged", "type": "exit"},
            {"id": "quiet", "type": "exit"},
        ]
    )


def _sent(journey, workflow, person):
    now = datetime.now(UTC)
    journey.enroll(workflow, [person], now=now)
    journey.advance(now)
    run = journey.run(workflow, person)
    assert run.status == RunStatus.WAITING
    return uuid.UUID(run.sent["mail"])


def test_an_open_wakes_the_run_in_the_tracking_transaction(journey, client):
    workflow = _email_then_wait(journey, {"kind": "opened"})
    person = journey.contact()
    message_id = _sent(journey, workflow, person)
    secret = cached_feedback_secret(journey.runtime.settings)
    response = client.get(
        f"/t/o/{open_token(message_id, secret=secret)}.gif", headers={"User-Agent": BROWSER}
    )
    assert response.status_code == 200
    run = journey.run(workflow, person)
    assert run.wake_reason == "event"  # woken by the hit itself
    assert run.wake_at <= datetime.now(UTC)
    journey.advance(datetime.now(UTC))
    assert journey.history(workflow, person)[-2:] == [("w", "event"), ("engaged", "end")]


def test_only_a_click_of_the_given_link_wakes_a_link_wait(journey, client):
    workflow = _email_then_wait(journey, {"kind": "clicked", "link": 1})
    person = journey.contact()
    message_id = _sent(journey, workflow, person)
    secret = cached_feedback_secret(journey.runtime.settings)
    url = "https://portal.clinic.example/book"
    client.get(
        f"/t/c/{click_token(message_id, 0, url, secret=secret)}",
        headers={"User-Agent": BROWSER},
        follow_redirects=False,
    )
    assert journey.run(workflow, person).wake_reason == ""  # another link
    journey.advance(datetime.now(UTC))  # the engine's round-up of clicks does not match it
    assert journey.run(workflow, person).status == RunStatus.WAITING
    client.get(
        f"/t/c/{click_token(message_id, 1, url, secret=secret)}",
        headers={"User-Agent": BROWSER},
        follow_redirects=False,
    )
    assert journey.run(workflow, person).wake_reason == "event"
    journey.advance(datetime.now(UTC))
    assert journey.history(workflow, person)[-1] == ("engaged", "end")


def _field_wait(journey, field):
    return journey.workflow(
        [
            {
                "id": "w",
                "type": "wait_for_event",
                "event": {"kind": "field_changed", "field": field},
                "timeout": {"days": 2},
                "next": "changed",
            },
            {"id": "changed", "type": "exit"},
        ]
    )


def test_a_field_changed_through_the_api_wakes_its_waits(journey, client, make_api_key):
    from carepost.contacts import custom_fields

    with journey.session() as session:
        custom_fields.create_field(
            session, journey.tenant_id, key="tier", label="Tier", type="string", actor=SYSTEM
        )
    workflow = _field_wait(journey, "tier")
    email = f"t-{uuid.uuid4().hex[:8]}@example.org"
    person = journey.contact(email=email, custom={"tier": "a"})
    other = journey.contact()
    now = datetime.now(UTC)
    journey.enroll(workflow, [person, other], now=now)
    journey.advance(now)
    headers = make_api_key(journey.tenant)

    def upsert(tier):
        body = {"match": "email", "contact": {"email": email, "custom": {"tier": tier}}}
        response = client.put("/api/v1/contacts/upsert", json=body, headers=headers)
        assert response.status_code in (200, 201), response.text

    upsert("a")
    assert journey.run(workflow, person).wake_reason == ""  # nothing changed
    upsert("b")
    assert journey.run(workflow, person).wake_reason == "event"
    assert journey.run(workflow, other).wake_reason == ""
    journey.advance(datetime.now(UTC))
    assert journey.history(workflow, person) == [("w", "event"), ("changed", "end")]


def test_a_custom_field_changed_by_an_upsert_batch_wakes_only_its_contacts(journey):
    from carepost.contacts import custom_fields

    with journey.session() as session:
        custom_fields.create_field(
            session, journey.tenant_id, key="plan", label="Plan", type="string", actor=SYSTEM
        )
    emails = [f"u-{uuid.uuid4().hex[:8]}@example.org" for _ in range(3)]
    with journey.session() as session:
        created = upserts.upsert_contacts(
            session,
            journey.keys,
            [{"email": e, "custom": {"plan": "basic"}} for e in emails],
            match="email",
            actor=SYSTEM,
        )
    ids = [r.id for r in created]
    workflow = _field_wait(journey, "plan")
    now = datetime.now(UTC)
    journey.enroll(workflow, ids, now=now)
    journey.advance(now)
    with journey.session() as session:
        upserts.upsert_contacts(
            session,
            journey.keys,
            [
                {"email": emails[0], "custom": {"plan": "premium"}},
                {"email": emails[1], "custom": {"plan": "basic"}},
            ],
            match="email",
            actor=SYSTEM,
        )
    assert [journey.run(workflow, i).wake_reason for i in ids] == ["event", "", ""]


def test_go_to_another_workflow_moves_the_contact_and_never_loops(journey):
    gone = journey.workflow([{"id": "x", "type": "exit"}])
    target = journey.workflow(
        [
            {"id": "first", "type": "wait_duration", "duration": {"days": 1}, "next": "later"},
            {"id": "later", "type": "goto_workflow", "workflow_id": str(gone)},
        ]
    )
    with journey.session() as session:
        from carepost.workflows import service

        service.change_status(session, journey.tenant_id, gone, "archive", actor=SYSTEM)
    source = journey.workflow(
        [{"id": "move", "type": "goto_workflow", "workflow_id": str(target), "step": "later"}]
    )
    person = journey.contact()
    now = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    journey.enroll(source, [person], now=now)
    journey.advance(now)
    assert journey.history(source, person) == [("move", "moved_to")]
    assert journey.run(source, person).status == RunStatus.COMPLETED
    moved = journey.run(target, person)
    assert (moved.current_step, moved.source) == ("later", "workflow_goto")
    journey.advance(now)
    # The target's Go To names a workflow archived since: the run ends safely.
    assert journey.history(target, person) == [("later", "target_unavailable")]

    # A and B pointing at each other: the no re-entry rule stops the bounce.
    a_id, b_id = uuid.uuid4(), uuid.uuid4()
    del a_id, b_id
    b = journey.workflow([{"id": "x", "type": "exit"}])
    a = journey.workflow([{"id": "to_b", "type": "goto_workflow", "workflow_id": str(b)}])
    with journey.session() as session:
        service.update_workflow(
            session,
            journey.tenant_id,
            b,
            changes={
                "draft": {"steps": [{"id": "to_a", "type": "goto_workflow", "workflow_id": str(a)}]}
            },
            actor=SYSTEM,
        )
    journey.enroll(a, [person], now=now)
    journey.advance(now)
    journey.advance(now)
    assert journey.history(a, person) == [("to_b", "moved_to")]
    assert journey.history(b, person) == [("to_a", "loop_prevented")]
    assert journey.run(b, person).status == RunStatus.COMPLETED


def test_go_to_another_workflow_is_checked_before_activation(journey):
    archived = journey.workflow([{"id": "x", "type": "exit"}])
    live = journey.workflow([{"id": "a", "type": "exit"}])
    with journey.session() as session:
        from carepost.workflows import service, validation

        service.change_status(session, journey.tenant_id, archived, "archive", actor=SYSTEM)
        steps = [
            {"id": "one", "type": "goto_workflow", "workflow_id": str(uuid.uuid4())},
            {"id": "two", "type": "goto_workflow", "workflow_id": str(archived)},
            {"id": "three", "type": "goto_workflow", "workflow_id": str(live), "step": "nope"},
            {"id": "four", "type": "goto_workflow", "workflow_id": str(live), "step": "a"},
        ]
        with pytest.raises(ValidationFailed) as refused:
            validation.check_graph(session, journey.tenant_id, {"steps": steps})
    errors = {e.field: e.message for e in refused.value.errors}
    pointer = "#/body/draft/steps"
    assert errors[f"{pointer}/0/workflow_id"] == "step one: no such workflow"
    assert errors[f"{pointer}/1/workflow_id"] == "step two: that workflow is archived"
    assert "no step 'nope'" in errors[f"{pointer}/2/step"]
    # (steps two to four are also unreachable: a Go To ends its path)
    assert f"{pointer}/3/step" not in errors and f"{pointer}/3/workflow_id" not in errors
